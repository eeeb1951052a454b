"""Secure file operations: the backend's file store behind the ACL in ``metadata._acl``.

The only code that calls a :class:`iapflow.contracts.files.FileStore`. The file commands and the
HTTP routes both come through here, so they share the ACL defaults, the checks and the size limit:

- a new file's ACL is the client's ``metadata._acl`` cleaned like a document ACL, or by default
  (OpenFlow's) full control for ``filestore admins`` and read for ``filestore users``; the
  uploader and ``admins`` always get full control;
- reads are narrowed by the ACL condition on ``metadata._acl``, in the store's filter;
- changing metadata needs update right on the stored metadata and on the new one;
- a file larger than ``files.max_file_bytes`` is refused while it streams in, and nothing of it
  is kept;
- ``metadata.uniquename`` and the work item fields ``wi``, ``wiq`` and ``wiqid`` are the
  server's: a client's values are replaced (a planted ``uniquename`` would make ``getfile`` by
  name return the planter's bytes; planted work item fields would tie a file to another user's
  item). A work item's files are touched (copied, deleted) only when their metadata says they
  belong to that item.
"""

from __future__ import annotations

import logging
import re
import secrets
from collections.abc import AsyncIterable, AsyncIterator, Mapping
from typing import TYPE_CHECKING, Any

from iapflow import wellknown
from iapflow.builtin.files.config import FilesConfig
from iapflow.contracts.files import FILES_COLLECTION, FileDownload, FileStore
from iapflow.contracts.storage import Document
from iapflow.errors import AccessDenied, ApiError, StorageError
from iapflow.jsonutil import utcnow
from iapflow.secure.acl import (
    DELETE,
    FULL_CONTROL,
    READ,
    UPDATE,
    access_filter,
    clean_acl,
    ensure_ace,
    fold,
    has_right,
)
from iapflow.secure.principal import Principal
from iapflow.stash import StashKey

if TYPE_CHECKING:
    from iapflow.platform import Platform

from iapflow.builtin.files.content import (
    DEFAULT_CONTENT_TYPE,
    MAX_NAME,
    FileTooLarge,
    check_content_type,
    check_filename,
    parse_metadata,
)

log = logging.getLogger("iapflow.files")

# Metadata fields the server sets; a client's values are replaced.
_SERVER_FIELDS = (
    "_created",
    "_createdby",
    "_createdbyid",
    "_modified",
    "_modifiedby",
    "_modifiedbyid",
)
# Metadata fields ``updatefile`` keeps from the stored file.
_KEPT_ON_UPDATE = (
    "_created", "_createdby", "_createdbyid", "filename", "path", "uniquename", "wi", "wiq",
    "wiqid",
)  # fmt: skip
WORKITEM_FIELDS = ("wi", "wiq", "wiqid")
"""Metadata tying a file to a work item: set by the work item service only."""


class FileNotFound(ApiError):
    """No such file, or the caller lacks the right on it (the two are not told apart)."""


FILES = StashKey["SecureFiles"]("secure files")


def secure_files(platform: Platform) -> SecureFiles:
    """The platform's :class:`SecureFiles` (made on first use)."""
    found = platform.stash.get(FILES)
    if found is None:
        found = platform.stash.setdefault(FILES, SecureFiles(platform))
    return found


class SecureFiles:
    """File operations for a platform's storage, with ACL checks and the size limit."""

    def __init__(self, platform: Platform) -> None:
        self.platform = platform

    @property
    def store(self) -> FileStore:
        """The storage backend's file store (StorageError when it has none)."""
        return self.platform.data.file_store()

    @property
    def max_bytes(self) -> int:
        """``files.max_file_bytes``."""
        return self.platform.config.section(FilesConfig).max_file_bytes

    # -- saving ---------------------------------------------------------------------------------

    async def save(
        self,
        principal: Principal,
        chunks: AsyncIterable[bytes],
        *,
        filename: Any,
        content_type: Any,
        metadata: Any,
        workitem: Mapping[str, Any] | None = None,
    ) -> Document:
        """Store a new file from ``chunks``; return its stored ``fs.files`` document.
        ``workitem`` (``wi``, ``wiq``, ``wiqid``) is set by the work item service only."""
        name = check_filename(filename)
        mime = check_content_type(content_type)
        meta = await self.new_metadata(principal, name, metadata, workitem)
        return await self.store.upload(
            self._limited(chunks), filename=name, content_type=mime, metadata=meta
        )

    async def new_metadata(
        self,
        principal: Principal,
        filename: str,
        metadata: Any,
        workitem: Mapping[str, Any] | None = None,
    ) -> Document:
        """The metadata of a new file: the client's fields, a clean ACL, the system fields
        (``uniquename`` always new; the work item fields only from ``workitem``)."""
        meta = parse_metadata(metadata)
        for key in WORKITEM_FIELDS:
            meta.pop(key, None)
        meta.update({k: v for k, v in (workitem or {}).items() if k in WORKITEM_FIELDS})
        if meta.get("_acl") is None:
            acl = [
                {
                    "_id": wellknown.FILESTORE_ADMINS,
                    "name": "filestore admins",
                    "rights": FULL_CONTROL,
                },
                {"_id": wellknown.FILESTORE_USERS, "name": "filestore users", "rights": READ},
            ]
        else:
            acl = clean_acl(meta["_acl"])
            await self._name_aces(acl)
        ensure_ace(acl, principal.id, principal.name, FULL_CONTROL)
        ensure_ace(acl, wellknown.ADMINS, "admins", FULL_CONTROL)
        for key in _SERVER_FIELDS:
            meta.pop(key, None)
        now = utcnow()
        basename = re.split(r"[\\/]", filename)[-1] or filename
        meta.setdefault("name", filename)
        meta["filename"] = filename
        meta.setdefault("path", "")
        meta["uniquename"] = f"{secrets.token_hex(6)}-{basename}"
        meta.update(
            _acl=acl,
            _created=now,
            _createdby=principal.name,
            _createdbyid=principal.id,
            _modified=now,
            _modifiedby=principal.name,
            _modifiedbyid=principal.id,
        )
        return meta

    async def _limited(self, chunks: AsyncIterable[bytes]) -> AsyncIterator[bytes]:
        limit, total = self.max_bytes, 0
        async for piece in chunks:
            total += len(piece)
            if total > limit:
                raise FileTooLarge(limit)
            yield piece

    async def _name_aces(self, acl: list[dict[str, Any]]) -> None:
        for ace in acl:
            if not ace.get("name"):
                ace["name"] = await self.platform.auth.roles.name_of(ace["_id"]) or ""

    # -- reading --------------------------------------------------------------------------------

    def _filter(self, principal: Principal, rights: int, query: Mapping[str, Any]) -> Document:
        return fold(query, access_filter(principal, rights, FILES_COLLECTION))

    async def find(
        self, principal: Principal, *, file_id: Any = None, filename: Any = None, rights: int = READ
    ) -> Document:
        """The file document by ``file_id``, or by ``filename`` (``metadata.uniquename`` first,
        then ``filename``: the caller's own newest upload, else the newest readable one), if the
        caller has ``rights`` on it."""
        if file_id not in (None, ""):
            if not isinstance(file_id, str) or len(file_id) > 256:
                raise ApiError("id must be the id of a file (a string)")
            found = await self.store.find(
                self._filter(principal, rights, {"_id": file_id}), limit=1
            )
            if found:
                return found[0]
            raise FileNotFound(f"file {file_id} not found, or you lack {_right(rights)} on it")
        if filename in (None, ""):
            raise ApiError("give the id of the file, or its filename")
        if not isinstance(filename, str) or len(filename) > MAX_NAME:
            raise ApiError("filename must be a string")
        own = {"metadata._createdbyid": principal.id}
        for query in (
            {"metadata.uniquename": filename},
            {"filename": filename, **own},
            {"filename": filename},
        ):
            found = await self.store.find(
                self._filter(principal, rights, query), sort=[("uploadDate", -1)], limit=1
            )
            if found:
                return found[0]
        raise FileNotFound(f"file {filename!r} not found, or you lack {_right(rights)} on it")

    async def open(
        self, principal: Principal, *, file_id: Any = None, filename: Any = None
    ) -> FileDownload:
        """Open a file the caller may read; its bytes stream from the store."""
        document = await self.find(principal, file_id=file_id, filename=filename)
        download = await self.store.open(document["_id"])
        if download is None:  # deleted in between
            raise FileNotFound(f"file {document['_id']} not found, or you lack read right on it")
        return download

    async def read(
        self,
        principal: Principal,
        *,
        file_id: Any = None,
        filename: Any = None,
        max_bytes: int | None = None,
    ) -> tuple[Document, bytes]:
        """A readable file's document and all its bytes (for the websocket commands); files
        longer than ``max_bytes`` are refused before any byte is read."""
        document = await self.find(principal, file_id=file_id, filename=filename)
        length = int(document.get("length") or 0)
        if max_bytes is not None and length > max_bytes:
            raise ApiError(
                f"file {document['_id']} has {length} bytes, more than files.max_file_bytes "
                f"({max_bytes}) allows over the websocket; download it with GET /download/<id>"
            )
        download = await self.store.open(document["_id"])
        if download is None:  # deleted in between
            raise FileNotFound(f"file {document['_id']} not found, or you lack read right on it")
        content = bytearray()
        async with download:
            async for chunk in download.chunks:
                content += chunk
        return download.document, bytes(content)

    # -- changing -------------------------------------------------------------------------------

    async def update_metadata(self, principal: Principal, file_id: Any, metadata: Any) -> Document:
        """Replace a file's metadata; needs update right on the stored and on the new metadata.

        Fields starting with ``_`` that the new metadata leaves out are kept (so leaving out
        ``_acl`` keeps the ACL); ``_created*``, ``filename``, ``path`` and ``uniquename`` always
        stay; the file's name, length, type and bytes are not touched.
        """
        if file_id in (None, ""):
            raise ApiError("updatefile needs id: the id of the file")
        stored = await self.find(principal, file_id=file_id, rights=UPDATE)
        old = stored.get("metadata")
        old = dict(old) if isinstance(old, Mapping) else {}
        new = parse_metadata(metadata)
        for key, value in old.items():
            if key.startswith("_") and key not in new:
                new[key] = value
        for key in [k for k, v in new.items() if k.startswith("_") and v is None]:
            del new[key]
        for key in _KEPT_ON_UPDATE:
            if key in old:
                new[key] = old[key]
            else:
                new.pop(key, None)
        acl = clean_acl(new.get("_acl"))
        await self._name_aces(acl)
        ensure_ace(acl, wellknown.ADMINS, "admins", FULL_CONTROL)
        new["_acl"] = acl
        if not principal.is_admin and not has_right(principal, new, UPDATE):
            raise AccessDenied("the new _acl would take away your own update right")
        new.update(_modified=utcnow(), _modifiedby=principal.name, _modifiedbyid=principal.id)
        updated = await self.store.update_metadata(stored["_id"], new)
        if updated is None:
            raise FileNotFound(f"file {file_id} not found, or you lack update right on it")
        return updated

    # -- work item files ------------------------------------------------------------------------

    async def attached(self, item: Mapping[str, Any]) -> list[Document]:
        """The stored files work item ``item`` lists that also belong to it (their metadata
        names the item): the only files its copies and its deletion may touch."""
        listed = [f.get("_id") for f in item.get("files") or [] if isinstance(f, Mapping)]
        ids = [i for i in listed if isinstance(i, str) and i]
        if not ids:
            return []
        return await self.store.find(
            {"_id": {"$in": ids}, "metadata.wi": item["_id"], "metadata.wiqid": item.get("wiqid")}
        )

    async def of_queue(self, queue_id: str) -> list[Document]:
        """The files of every item of work item queue ``queue_id``."""
        return await self.store.find({"metadata.wiqid": queue_id})

    async def remove(self, documents: list[Document]) -> None:
        """Delete these stored files (the caller checked why); failures are logged."""
        for document in documents:
            try:
                await self.store.delete(document["_id"])
            except StorageError as exc:
                log.warning("could not delete file %s: %s", document["_id"], exc)

    async def copy(
        self,
        principal: Principal,
        document: Document,
        *,
        filename: str,
        metadata: Mapping[str, Any],
        workitem: Mapping[str, Any],
    ) -> Document | None:
        """A new file with the bytes of the stored ``document`` (``None`` when it is gone)."""
        download = await self.store.open(document["_id"])
        if download is None:
            return None
        meta = await self.new_metadata(principal, filename, dict(metadata), workitem)

        async def chunks() -> AsyncIterator[bytes]:
            async with download:
                async for chunk in download.chunks:
                    yield chunk

        return await self.store.upload(
            chunks(),
            filename=filename,
            content_type=str(download.document.get("contentType") or DEFAULT_CONTENT_TYPE),
            metadata=meta,
        )

    async def delete(self, principal: Principal, file_id: Any) -> None:
        """Delete a file and its bytes; needs delete right."""
        stored = await self.find(principal, file_id=file_id, rights=DELETE)
        if not await self.store.delete(stored["_id"]):
            raise FileNotFound(f"file {file_id} not found, or you lack delete right on it")


def _right(rights: int) -> str:
    return {READ: "read right", UPDATE: "update right", DELETE: "delete right"}.get(
        rights, "the right"
    )
