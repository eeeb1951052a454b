"""Rules for queue and exchange claims in ``mq``, as the generic document commands see them.

A claim (``_type: queue`` or ``exchange``) decides who may consume a name and who may send to
it, so only ``registerqueue`` and ``registerexchange`` make claims, under the id
:func:`iapflow.ids.name_id` gives the name, and a claim's ``name`` and ``_type`` never change
through ``updateone``. Its ``_acl`` (who else may consume or send) stays the claimant's to
change, as before. Work item queues (``_type: workitemqueue``) follow the same idea; their rules
are in :mod:`iapflow.builtin.workitems.service`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from iapflow.contracts.storage import Document
from iapflow.errors import AccessDenied
from iapflow.ids import name_id
from iapflow.secure.guards import updated_fields
from iapflow.secure.principal import Principal
from iapflow.secure.rules import CollectionRules

MQ = "mq"
CLAIM_TYPES = ("queue", "exchange")
_COMMANDS = {"queue": "registerqueue", "exchange": "registerexchange"}


class ClaimRules(CollectionRules):
    """``mq`` claims change only through the queue commands (admins may insert them)."""

    async def check_insert(self, principal: Principal, doc: Document, *, client_id: bool) -> None:
        """Claims are made by registering the name; an admin's goes under its name's id."""
        kind = doc.get("_type")
        if kind not in CLAIM_TYPES:
            return
        if not principal.is_admin:
            raise AccessDenied(
                f"a {kind} name is claimed with {_COMMANDS[kind]}, not by inserting into mq"
            )
        name = doc.get("name")
        if not isinstance(name, str) or not name.strip():
            raise AccessDenied(f"an mq {kind} needs its name")
        doc["name"] = name.strip().lower()
        wanted = name_id(kind, doc["name"])
        if client_id and doc["_id"] != wanted:
            raise AccessDenied(f"an mq {kind} claim's _id is {wanted}, from its name: leave it out")
        doc["_id"] = wanted

    async def check_replace(
        self, principal: Principal, original: Mapping[str, Any], new: Document
    ) -> None:
        """A claim keeps its name and kind, and nothing becomes a claim."""
        if principal.is_admin:
            return
        before, after = original.get("_type"), new.get("_type")
        if before in CLAIM_TYPES or after in CLAIM_TYPES:
            if before != after:
                raise AccessDenied("the _type of a queue or exchange claim cannot change")
            if new.get("name") != original.get("name"):
                raise AccessDenied(
                    f"the name of a {before} claim cannot change: register the new name"
                )

    def check_update(self, principal: Principal, update: dict[str, Any]) -> None:
        """Operators cannot rename what ``mq`` holds."""
        if not principal.is_admin and "name" in updated_fields(update):
            raise AccessDenied("update operators may not change name in mq")
