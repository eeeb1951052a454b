"""Rules for ``workitems`` and for work item queues in ``mq`` as the generic document commands
see them: no item is inserted, moved to another queue, given files or chained elsewhere, and no
queue is changed, except through the work item commands."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from iapflow.builtin.files.service import secure_files
from iapflow.contracts.storage import Document
from iapflow.errors import AccessDenied, ApiError
from iapflow.secure.guards import updated_fields
from iapflow.secure.principal import Principal
from iapflow.secure.rules import CollectionRules

if TYPE_CHECKING:
    from iapflow.platform import Platform

from iapflow.builtin.workitems.parse import (
    QUEUE_TYPE,
)

# Item fields only the work item commands set: which queue, which files, where it goes next.
PROTECTED_ITEM_FIELDS = (
    "wiq", "wiqid", "files", "success_wiq", "success_wiqid", "failed_wiq", "failed_wiqid",
)  # fmt: skip
# Queue fields that route items elsewhere or name the queue's role.
PROTECTED_QUEUE_FIELDS = (
    "success_wiq", "success_wiqid", "failed_wiq", "failed_wiqid", "usersrole",
)  # fmt: skip


def _aces(doc: Mapping[str, Any]) -> set[tuple[Any, Any, bool]]:
    acl = doc.get("_acl")
    return {
        (a.get("_id"), a.get("rights"), bool(a.get("deny")))
        for a in (acl if isinstance(acl, list) else [])
        if isinstance(a, Mapping)
    }


class WorkitemRules(CollectionRules):
    """``workitems`` through ``insertone``/``updateone``/``deleteone``: items are added with
    ``addworkitem``; an item's queue, files, chaining targets and ACL change only through the
    work item commands; a deleted item takes its own files along."""

    wants_deleted = True

    def __init__(self, platform: Platform) -> None:
        self.platform = platform

    async def check_insert(self, principal: Principal, doc: Document, *, client_id: bool) -> None:
        """Only admins insert items directly (imports); others use ``addworkitem``."""
        if not principal.is_admin:
            raise AccessDenied(
                "work items are added with addworkitem (pushworkitem), not insertone"
            )

    async def check_replace(
        self, principal: Principal, original: Mapping[str, Any], new: Document
    ) -> None:
        """The protected fields and the ACL stay as they are."""
        if principal.is_admin:
            return
        for field in PROTECTED_ITEM_FIELDS:
            if new.get(field) != original.get(field):
                raise AccessDenied(f"a work item's {field} changes only through updateworkitem")
        if _aces(new) != _aces(original):
            raise AccessDenied(
                "a work item's _acl is its queue's: change it with updateworkitemqueue"
            )

    def check_update(self, principal: Principal, update: dict[str, Any]) -> None:
        """Operators may not touch the protected fields."""
        if principal.is_admin:
            return
        touched = sorted(updated_fields(update) & set(PROTECTED_ITEM_FIELDS))
        if touched:
            raise AccessDenied(
                f"a work item's {', '.join(touched)} changes only through updateworkitem"
            )

    async def after_delete(self, principal: Principal, docs: Sequence[Document]) -> None:
        """The deleted items' own files go too."""
        files = secure_files(self.platform)
        for doc in docs:
            await files.remove(await files.attached(doc))


class QueueRules(CollectionRules):
    """Work item queues in ``mq``: made with ``addworkitemqueue`` and changed with
    ``updateworkitemqueue`` (which keeps the items' ACL and name in step and checks the invoke
    right on chaining targets)."""

    async def check_insert(self, principal: Principal, doc: Document, *, client_id: bool) -> None:
        """Only admins insert queue documents directly."""
        if doc.get("_type") == QUEUE_TYPE and not principal.is_admin:
            raise AccessDenied("work item queues are made with addworkitemqueue, not insertone")

    async def check_replace(
        self, principal: Principal, original: Mapping[str, Any], new: Document
    ) -> None:
        """Nothing becomes, or stops being, a queue; queues change with updateworkitemqueue."""
        if principal.is_admin:
            return
        if QUEUE_TYPE in (original.get("_type"), new.get("_type")):
            raise AccessDenied(
                "work item queues are changed with updateworkitemqueue, not updateone"
            )

    async def check_delete(self, principal: Principal, doc: Document) -> None:
        """A queue goes with its items and role."""
        if doc.get("_type") == QUEUE_TYPE:
            raise ApiError(
                "a work item queue goes with its items and role: use deleteworkitemqueue"
            )

    def delete_filter(self, principal: Principal) -> Mapping[str, Any] | None:
        """Bulk deletes leave queues alone (they go with ``deleteworkitemqueue``)."""
        return {"_type": {"$ne": QUEUE_TYPE}}

    def check_update(self, principal: Principal, update: dict[str, Any]) -> None:
        """Operators may not re-route a queue's items or change its role."""
        if principal.is_admin:
            return
        touched = sorted(updated_fields(update) & set(PROTECTED_QUEUE_FIELDS))
        if touched:
            raise AccessDenied(
                f"{', '.join(touched)} of a work item queue changes only through "
                "updateworkitemqueue"
            )
