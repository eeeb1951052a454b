"""Collection rules: what a capability adds to the generic document commands for its collection.

The data layer runs every write that comes through ``insertone`` ... ``deletemany`` and
``restoredocument`` past the rules registered for that collection (``users`` for principals,
``mq`` for queue claims and work item queues, ``workitems`` for items). A rule refuses with an
:class:`~iapflow.errors.ApiError` naming the command to use instead, or changes the document on
its way in. Rules bind admins too; a rule that should not checks ``principal.is_admin``.

The capability's own service writes past its rules (``rules=False`` on the data layer's
methods, or :class:`iapflow.secure.layer.ServiceWrites`) after checking the caller's rights the
way its commands promise.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from iapflow.contracts.storage import Document
from iapflow.secure.principal import Principal

if TYPE_CHECKING:
    from iapflow.platform import Platform


class CollectionRules:
    """Rules for the documents of one collection; each method's default allows."""

    wants_deleted = False
    """True when :meth:`after_delete` needs the deleted documents (a bulk delete then reads
    them first)."""

    async def check_insert(self, principal: Principal, doc: Document, *, client_id: bool) -> None:
        """Before ``doc`` (with its system fields and ACL) is inserted; ``client_id`` is true
        when the client chose its ``_id``. May change ``doc``."""

    async def check_replace(
        self, principal: Principal, original: Mapping[str, Any], new: Document
    ) -> None:
        """Before ``original`` is replaced by ``new`` (already merged with the original's
        system fields). May change ``new``."""

    def check_update(self, principal: Principal, update: dict[str, Any]) -> None:
        """Before operators ``update`` (with the system fields' ``$set``) run on matching
        documents, which are not known yet. May add operators."""

    async def delete_one(self, principal: Principal, doc_id: str) -> int | None:
        """Delete the document ``doc_id`` the capability's own way (a file with its bytes) and
        return how many were deleted; ``None`` lets the data layer delete it."""
        return None

    async def check_delete(self, principal: Principal, doc: Document) -> None:
        """Before ``doc``, found by ``deleteone`` with delete right, is deleted; refuse with a
        sentence that names the command to use instead."""

    def delete_filter(self, principal: Principal) -> Mapping[str, Any] | None:
        """A filter clause every bulk delete (``deletemany``) of ``principal`` is narrowed by
        (what :meth:`check_delete` refuses, left alone), or ``None``."""
        return None

    async def after_delete(self, principal: Principal, docs: Sequence[Document]) -> None:
        """After ``docs`` were deleted (only called with them when :attr:`wants_deleted`)."""

    async def after_restore(self, principal: Principal, doc: Document) -> None:
        """After a deleted document was put back by ``restoredocument``."""


RulesFactory = Callable[["Platform"], CollectionRules]
"""What ``register_collection_rules`` registers: ``factory(platform)`` returns the rules."""


class RuleSet(CollectionRules):
    """Several capabilities' rules on one collection, applied in registration order."""

    def __init__(self, rules: Sequence[CollectionRules] = ()) -> None:
        self.rules = list(rules)

    def add(self, rules: CollectionRules) -> None:
        """Apply ``rules`` after the ones already here."""
        self.rules.append(rules)

    @property
    def wants_deleted(self) -> bool:  # type: ignore[override]
        """True when any of the rules wants the deleted documents."""
        return any(rule.wants_deleted for rule in self.rules)

    async def check_insert(self, principal: Principal, doc: Document, *, client_id: bool) -> None:
        """Every rule's :meth:`CollectionRules.check_insert`."""
        for rule in self.rules:
            await rule.check_insert(principal, doc, client_id=client_id)

    async def check_replace(
        self, principal: Principal, original: Mapping[str, Any], new: Document
    ) -> None:
        """Every rule's :meth:`CollectionRules.check_replace`."""
        for rule in self.rules:
            await rule.check_replace(principal, original, new)

    def check_update(self, principal: Principal, update: dict[str, Any]) -> None:
        """Every rule's :meth:`CollectionRules.check_update`."""
        for rule in self.rules:
            rule.check_update(principal, update)

    async def delete_one(self, principal: Principal, doc_id: str) -> int | None:
        """The first rule's own delete, or ``None``."""
        for rule in self.rules:
            deleted = await rule.delete_one(principal, doc_id)
            if deleted is not None:
                return deleted
        return None

    async def check_delete(self, principal: Principal, doc: Document) -> None:
        """Every rule's :meth:`CollectionRules.check_delete`."""
        for rule in self.rules:
            await rule.check_delete(principal, doc)

    def delete_filter(self, principal: Principal) -> Mapping[str, Any] | None:
        """The rules' delete clauses together."""
        clauses = [c for c in (rule.delete_filter(principal) for rule in self.rules) if c]
        if not clauses:
            return None
        return clauses[0] if len(clauses) == 1 else {"$and": clauses}

    async def after_delete(self, principal: Principal, docs: Sequence[Document]) -> None:
        """Every rule's :meth:`CollectionRules.after_delete`."""
        for rule in self.rules:
            await rule.after_delete(principal, docs)

    async def after_restore(self, principal: Principal, doc: Document) -> None:
        """Every rule's :meth:`CollectionRules.after_restore`."""
        for rule in self.rules:
            await rule.after_restore(principal, doc)
