"""Collections and indexes (admins; the server's own collections refused), and the raw
change stream and file store for the capabilities that secure them."""

from __future__ import annotations

from typing import Any

from iapflow.contracts.files import FileStore
from iapflow.contracts.storage import ChangeStream, Document
from iapflow.errors import AccessDenied, ApiError
from iapflow.secure.base import LayerBase
from iapflow.secure.documents import (
    RESERVED_COLLECTIONS,
)
from iapflow.secure.history import history_collection
from iapflow.secure.principal import Principal


class Collections(LayerBase):
    """Collections, indexes, the change stream and the file store."""

    async def list_collections(self, principal: Principal, include_hist: bool) -> list[Document]:
        """Collections, hiding history and GridFS chunks unless asked."""
        found = await self.storage.list_collections()
        result = []
        for info in sorted(found, key=lambda c: c["name"]):
            name = info["name"]
            if name.startswith("system."):
                continue
            if not include_hist and (name.endswith("_hist") or name.endswith(".chunks")):
                continue
            result.append(info)
        return result

    def _check_admin_collection(self, principal: Principal, name: str, action: str) -> None:
        if not principal.is_admin:
            raise AccessDenied(f"only admins can {action} collections")
        base = name[: -len("_hist")] if name.endswith("_hist") else name
        if base in RESERVED_COLLECTIONS or name.startswith("fs."):
            raise AccessDenied(f"{name!r} is a reserved collection and cannot be {action}d here")

    async def create_collection(
        self, principal: Principal, name: str, options: dict[str, Any]
    ) -> None:
        """Create a collection (admins; reserved names refused)."""
        self._check_admin_collection(principal, name, "create")
        await self.storage.create_collection(name, options)

    async def drop_collection(self, principal: Principal, name: str) -> None:
        """Drop a collection and its history (admins; reserved names refused)."""
        self._check_admin_collection(principal, name, "drop")
        await self.storage.drop_collection(name)
        await self.storage.drop_collection(history_collection(name))
        self.history.forget(name)

    async def create_index(
        self,
        principal: Principal,
        collection: str,
        keys: list[tuple[str, int | str]],
        *,
        unique: bool = False,
        sparse: bool = False,
        options: dict[str, Any] | None = None,
    ) -> str:
        """Create an index (admins); its name."""
        self._check_admins(principal, "create indexes")
        return await self.storage.create_index(
            collection, keys, unique=unique, sparse=sparse, options=options
        )

    async def drop_index(self, principal: Principal, collection: str, name: str) -> None:
        """Drop an index by name (admins); never ``_id_``."""
        self._check_admins(principal, "drop indexes")
        if name == "_id_":
            raise ApiError("the _id index cannot be dropped")
        await self.storage.drop_index(collection, name)

    async def list_indexes(self, principal: Principal, collection: str) -> list[Document]:
        """The indexes of a collection (admins)."""
        self._check_admins(principal, "list indexes")
        return await self.storage.list_indexes(collection)

    @staticmethod
    def _check_admins(principal: Principal, action: str) -> None:
        if not principal.is_admin:
            raise AccessDenied(f"only admins can {action}")

    async def watch_changes(self, resume_after: Any = None) -> ChangeStream:
        """The store's change stream, for the watch capability, which checks each event
        against each watcher's rights before it sends it."""
        return await self.storage.watch_changes(resume_after)

    def file_store(self) -> FileStore:
        """The store's file store, for the files capability, which applies the ACL kept in
        each file's ``metadata``; StorageError when the backend has none."""
        return self.storage.file_store()
