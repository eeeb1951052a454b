"""The audit log: who signed in (or failed to), impersonated, created or dropped collections.

Entries live in ``audit``. Each is readable by admins and by the user it concerns, and nobody
can change it: the data layer refuses inserts and updates there (admins may delete entries).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from iapflow import wellknown
from iapflow.ids import new_id
from iapflow.jsonutil import utcnow
from iapflow.secure.acl import FULL_CONTROL, READ

if TYPE_CHECKING:
    from iapflow.platform import Platform
    from iapflow.secure.principal import Principal

log = logging.getLogger("iapflow.audit")

COLLECTION = "audit"


def _entry(
    kind: str, name: str, user_id: str | None, user_name: str, fields: dict[str, Any]
) -> dict[str, Any]:
    acl = [{"_id": wellknown.ADMINS, "name": "admins", "rights": FULL_CONTROL}]
    if user_id:
        acl.append({"_id": user_id, "name": user_name, "rights": READ})
    return {
        "_id": new_id(),
        "_type": kind,
        "name": name,
        "_acl": acl,
        **fields,
        **wellknown.server_stamp(utcnow()),
    }


async def record(
    platform: Platform, kind: str, name: str, user_id: str | None, user_name: str, **fields: Any
) -> None:
    """Write one audit entry; a failure is logged, never raised into the request."""
    try:
        await platform.storage.insert_one(
            COLLECTION, _entry(kind, name, user_id, user_name, fields)
        )
    except Exception:
        log.exception("could not write audit entry %s %s", kind, name)


async def record_action(
    platform: Platform, principal: Principal, kind: str, name: str, **fields: Any
) -> None:
    """Audit an action a signed-in user took (collection created, dropped...)."""
    await record(
        platform,
        kind,
        name,
        principal.id,
        principal.name,
        userid=principal.id,
        username=principal.username,
        impostorid=principal.impostor or None,
        **fields,
    )


async def ensure_indexes(platform: Platform) -> None:
    """Indexes the audit pages and per-user reads rely on."""
    await platform.storage.create_index(COLLECTION, [("_created", -1)])
    await platform.storage.create_index(COLLECTION, [("userid", 1), ("_created", -1)])
