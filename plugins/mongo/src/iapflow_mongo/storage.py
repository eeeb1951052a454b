"""MongoStorage: the iapflow storage contract on pymongo's async client."""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from bson import ObjectId
from bson.errors import BSONError, InvalidDocument
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from pymongo import AsyncMongoClient, ReturnDocument
from pymongo import errors as mongo_errors

from iapflow.contracts.storage import ChangeStream, Document, Filter, Storage, StorageContext
from iapflow.errors import (
    ConfigError,
    DuplicateKeyError,
    InvalidQuery,
    StorageError,
    TimeLimitExceeded,
)
from iapflow.ids import is_id
from iapflow_mongo.changes import open_change_stream
from iapflow_mongo.embedded import EmbeddedServer

CREDENTIALS_FILE = "embedded-store.json"
"""The embedded store's user and password, in the data directory, for the server's OS user only."""

if TYPE_CHECKING:
    from iapflow_mongo.files import MongoFileStore


_TIME_LIMIT_CODES = frozenset({50})  # MaxTimeMSExpired
_CAUSED_BY = " :: caused by :: "
_STORE_NAMES = re.compile(r"\b(collection|ns|namespace): \S+|\bindex: \S+|\bdup key: \{.*?\}")


@contextlib.contextmanager
def map_pymongo_errors(database: str = "") -> Iterator[None]:
    """Turn pymongo's exceptions into iapflow's storage errors, with messages that name no
    database, collection or index of the store and no stored value (see :func:`clean`)."""
    try:
        yield
    except mongo_errors.DuplicateKeyError as exc:
        raise _duplicate(exc.details or {}) from exc
    except mongo_errors.BulkWriteError as exc:
        errors = exc.details.get("writeErrors") or [{}]
        if errors[0].get("code") == 11000:
            raise _duplicate(errors[0]) from exc
        raise InvalidQuery(clean(str(errors[0].get("errmsg", exc)), database)) from exc
    except mongo_errors.ExecutionTimeout as exc:
        raise TimeLimitExceeded("the store stopped the operation at its time limit") from exc
    except (mongo_errors.ConnectionFailure, mongo_errors.ServerSelectionTimeoutError) as exc:
        raise StorageError(f"storage unavailable: {exc.__class__.__name__}") from exc
    except mongo_errors.OperationFailure as exc:
        if exc.code in _TIME_LIMIT_CODES:
            raise TimeLimitExceeded("the store stopped the operation at its time limit") from exc
        raise InvalidQuery(clean(_message(exc), database)) from exc
    except (InvalidDocument, BSONError, OverflowError) as exc:
        raise InvalidQuery(f"value cannot be stored: {exc}") from exc
    except mongo_errors.PyMongoError as exc:
        raise StorageError(clean(str(exc), database)) from exc


def _duplicate(details: Mapping[str, Any]) -> DuplicateKeyError:
    pattern = details.get("keyPattern")
    fields = tuple(str(k) for k in pattern) if isinstance(pattern, Mapping) else ()
    shown = ", ".join(fields) or "a unique field"
    return DuplicateKeyError(f"another document has the same {shown}", fields)


def clean(message: str, database: str = "") -> str:
    """A store's error message for a client: the innermost cause, without the store's own
    names (``collection: db.coll``, ``index: name``, ``dup key: {...}``, ``db.`` prefixes)."""
    text = message.split(", full error:")[0]
    if _CAUSED_BY in text:
        text = text.rsplit(_CAUSED_BY, 1)[1]
    text = _STORE_NAMES.sub("", text)
    if database:
        text = text.replace(f"{database}.", "")
    return " ".join(text.split())[:500]


def _message(exc: mongo_errors.OperationFailure) -> str:
    details = exc.details or {}
    return str(details.get("errmsg") or exc)


def _expand_id_lists(filter: Filter) -> dict[str, Any]:
    """In ``_id: {$in: [...]}``, let each 24-hex string id match an ObjectId too."""
    result = dict(filter)
    value = result.get("_id")
    if isinstance(value, Mapping) and isinstance(value.get("$in"), list):
        ids = value["$in"]
        result["_id"] = dict(value, **{"$in": ids + [ObjectId(i) for i in ids if is_id(i)]})
    clauses = result.get("$and")
    if isinstance(clauses, list):
        result["$and"] = [_expand_id_lists(c) if isinstance(c, Mapping) else c for c in clauses]
    return result


def _objectid_variant(filter: Filter) -> dict[str, Any] | None:
    """The filter with its 24-hex string ``_id`` as an ObjectId, or ``None`` if it has none.

    iapflow stores ids as strings; data brought over from older OpenFlow installations may hold
    ObjectIds. A lookup by id tries the string first and this variant only when that found
    nothing, so the common case costs the store one plain ``_id`` match.
    """
    value = filter.get("_id")
    if is_id(value):
        return {**filter, "_id": ObjectId(value)}
    clauses = filter.get("$and")
    if isinstance(clauses, list):
        for index, clause in enumerate(clauses):
            if isinstance(clause, Mapping) and (variant := _objectid_variant(clause)) is not None:
                return {**filter, "$and": [*clauses[:index], variant, *clauses[index + 1 :]]}
    return None


class MongoStorage(Storage):
    """Storage on a MongoDB server, or on the embedded server when ``url = "embedded"``."""

    def __init__(
        self,
        url: str,
        database: str,
        embedded: EmbeddedServer | None = None,
        server_selection_timeout_ms: int = 10000,
    ) -> None:
        self.url = url
        self.database_name = database
        self.embedded = embedded
        self.timeout_ms = server_selection_timeout_ms
        self._client: AsyncMongoClient[Document] | None = None
        self._collections: dict[str, Any] = {}
        self._file_store: MongoFileStore | None = None

    def _c(self, name: str) -> Any:
        collection = self._collections.get(name)
        if collection is None:
            collection = self._collections[name] = self.db[name]
        return collection

    async def _by_id_or_objectid(self, run: Any, filter: Filter) -> Any:
        """``run(filter)``; when it finds nothing, ``run`` again with the ObjectId variant."""
        primary = _expand_id_lists(filter)
        result = await run(primary)
        if not result:
            variant = _objectid_variant(primary)
            if variant is not None:
                result = await run(variant)
        return result

    @property
    def db(self) -> Any:
        """The pymongo database (for this plugin's own use and tests)."""
        if self._client is None:
            raise StorageError("storage is not started")
        return self._client[self.database_name]

    async def start(self) -> None:
        """Start the embedded server if configured, connect and ping."""
        url = self.url
        if self.embedded is not None:
            # In the calling thread: the child is tied to it (PR_SET_PDEATHSIG).
            self.embedded.start()
            url = self.embedded.uri
        self._client = AsyncMongoClient(
            url, serverSelectionTimeoutMS=self.timeout_ms, tz_aware=True
        )
        with map_pymongo_errors(self.database_name):
            await self._client.admin.command("ping")

    async def stop(self) -> None:
        """Disconnect and stop the embedded server."""
        if self._client is not None:
            await self._client.close()
            self._client = None
            self._collections.clear()
            self._file_store = None
        if self.embedded is not None:
            self.embedded.stop()

    async def find(
        self,
        collection: str,
        filter: Filter,
        *,
        projection: Mapping[str, Any] | None = None,
        sort: Sequence[tuple[str, int]] | None = None,
        skip: int = 0,
        limit: int = 0,
        max_time_ms: int = 0,
    ) -> list[Document]:
        """See :meth:`iapflow.contracts.storage.Storage.find`."""

        async def run(query: Filter) -> list[Document]:
            cursor = self._c(collection).find(
                query, projection or None, skip=skip, limit=limit, max_time_ms=max_time_ms or None
            )
            if sort:
                cursor = cursor.sort(list(sort))
            return [doc async for doc in cursor]

        with map_pymongo_errors(self.database_name):
            found: list[Document] = await self._by_id_or_objectid(run, filter)
            return found

    async def find_one(self, collection: str, filter: Filter) -> Document | None:
        """See :meth:`iapflow.contracts.storage.Storage.find_one`."""
        with map_pymongo_errors(self.database_name):
            doc: Document | None = await self._by_id_or_objectid(
                self._c(collection).find_one, filter
            )
            return doc

    async def count(self, collection: str, filter: Filter, *, max_time_ms: int = 0) -> int:
        """See :meth:`iapflow.contracts.storage.Storage.count`."""

        async def run(query: Filter) -> int:
            options = {"maxTimeMS": max_time_ms} if max_time_ms else {}
            return int(await self._c(collection).count_documents(query, **options))

        with map_pymongo_errors(self.database_name):
            return int(await self._by_id_or_objectid(run, filter))

    async def distinct(
        self, collection: str, field: str, filter: Filter, *, max_time_ms: int = 0
    ) -> list[Any]:
        """See :meth:`iapflow.contracts.storage.Storage.distinct`."""

        async def run(query: Filter) -> list[Any]:
            options = {"maxTimeMS": max_time_ms} if max_time_ms else {}
            return list(await self._c(collection).distinct(field, query, **options))

        with map_pymongo_errors(self.database_name):
            values: list[Any] = await self._by_id_or_objectid(run, filter)
            return values

    async def aggregate(
        self,
        collection: str,
        pipeline: Sequence[Mapping[str, Any]],
        *,
        max_time_ms: int = 0,
    ) -> list[Document]:
        """See :meth:`iapflow.contracts.storage.Storage.aggregate`."""
        options = {"maxTimeMS": max_time_ms} if max_time_ms else {}
        with map_pymongo_errors(self.database_name):
            cursor = await self._c(collection).aggregate(list(pipeline), **options)
            return [doc async for doc in cursor]

    async def insert_one(self, collection: str, document: Document) -> None:
        """See :meth:`iapflow.contracts.storage.Storage.insert_one`."""
        with map_pymongo_errors(self.database_name):
            await self._c(collection).insert_one(document)

    async def insert_many(self, collection: str, documents: Sequence[Document]) -> None:
        """See :meth:`iapflow.contracts.storage.Storage.insert_many`."""
        with map_pymongo_errors(self.database_name):
            await self._c(collection).insert_many(list(documents), ordered=True)

    async def replace_one(self, collection: str, filter: Filter, document: Document) -> int:
        """See :meth:`iapflow.contracts.storage.Storage.replace_one`."""

        async def run(query: Filter) -> int:
            return int((await self._c(collection).replace_one(query, document)).matched_count)

        with map_pymongo_errors(self.database_name):
            return int(await self._by_id_or_objectid(run, filter))

    async def update_one(
        self, collection: str, filter: Filter, update: Mapping[str, Any]
    ) -> Document | None:
        """See :meth:`iapflow.contracts.storage.Storage.update_one`."""

        async def run(query: Filter) -> Document | None:
            doc: Document | None = await self._c(collection).find_one_and_update(
                query, dict(update), return_document=ReturnDocument.AFTER
            )
            return doc

        with map_pymongo_errors(self.database_name):
            found: Document | None = await self._by_id_or_objectid(run, filter)
            return found

    async def find_one_and_update(
        self,
        collection: str,
        filter: Filter,
        update: Mapping[str, Any],
        *,
        sort: Sequence[tuple[str, int]],
    ) -> Document | None:
        """See :meth:`iapflow.contracts.storage.Storage.find_one_and_update`."""
        with map_pymongo_errors(self.database_name):
            doc: Document | None = await self._c(collection).find_one_and_update(
                dict(filter),
                dict(update),
                sort=list(sort),
                return_document=ReturnDocument.AFTER,
            )
            return doc

    async def update_many(
        self, collection: str, filter: Filter, update: Mapping[str, Any]
    ) -> tuple[int, int]:
        """See :meth:`iapflow.contracts.storage.Storage.update_many`."""

        async def run(query: Filter) -> tuple[int, int] | None:
            result = await self._c(collection).update_many(query, dict(update))
            counts = int(result.matched_count), int(result.modified_count)
            return counts if counts[0] else None

        with map_pymongo_errors(self.database_name):
            return await self._by_id_or_objectid(run, filter) or (0, 0)

    async def delete_one(self, collection: str, filter: Filter) -> int:
        """See :meth:`iapflow.contracts.storage.Storage.delete_one`."""

        async def run(query: Filter) -> int:
            return int((await self._c(collection).delete_one(query)).deleted_count)

        with map_pymongo_errors(self.database_name):
            return int(await self._by_id_or_objectid(run, filter))

    async def delete_many(self, collection: str, filter: Filter) -> int:
        """See :meth:`iapflow.contracts.storage.Storage.delete_many`."""

        async def run(query: Filter) -> int:
            return int((await self._c(collection).delete_many(query)).deleted_count)

        with map_pymongo_errors(self.database_name):
            return int(await self._by_id_or_objectid(run, filter))

    async def watch_changes(self, resume_after: Any | None = None) -> ChangeStream:
        """See :meth:`iapflow.contracts.storage.Storage.watch_changes` and
        :mod:`iapflow_mongo.changes`."""
        return await open_change_stream(self.db, resume_after)

    async def list_collections(self) -> list[Document]:
        """See :meth:`iapflow.contracts.storage.Storage.list_collections`."""
        with map_pymongo_errors(self.database_name):
            cursor = await self.db.list_collections()
            return [{"name": c["name"], "type": c.get("type", "collection")} async for c in cursor]

    async def create_collection(self, name: str, options: Mapping[str, Any]) -> None:
        """See :meth:`iapflow.contracts.storage.Storage.create_collection`."""
        with map_pymongo_errors(self.database_name):
            await self.db.create_collection(name, **dict(options))

    async def drop_collection(self, name: str) -> None:
        """See :meth:`iapflow.contracts.storage.Storage.drop_collection`."""
        with map_pymongo_errors(self.database_name):
            await self.db.drop_collection(name)

    async def create_index(
        self,
        collection: str,
        keys: Sequence[tuple[str, int | str]],
        *,
        unique: bool = False,
        sparse: bool = False,
        options: Mapping[str, Any] | None = None,
    ) -> str:
        """See :meth:`iapflow.contracts.storage.Storage.create_index`."""
        extra = dict(options or {})
        with map_pymongo_errors(self.database_name):
            return str(
                await self._c(collection).create_index(
                    list(keys), unique=unique, sparse=sparse, **extra
                )
            )

    async def drop_index(self, collection: str, name: str) -> None:
        """See :meth:`iapflow.contracts.storage.Storage.drop_index`."""
        with map_pymongo_errors(self.database_name):
            await self._c(collection).drop_index(name)

    async def list_indexes(self, collection: str) -> list[Document]:
        """See :meth:`iapflow.contracts.storage.Storage.list_indexes`."""
        with map_pymongo_errors(self.database_name):
            cursor = await self._c(collection).list_indexes()
            return [dict(index) async for index in cursor]

    def file_store(self) -> MongoFileStore:
        """See :meth:`iapflow.contracts.storage.Storage.file_store`: GridFS bucket ``fs``."""
        if self._file_store is None:
            from iapflow_mongo.files import MongoFileStore

            self._file_store = MongoFileStore(self.db)
        return self._file_store


class MongoOptions(BaseModel):
    """The ``[storage]`` keys of the mongo backend (environment values are converted)."""

    model_config = ConfigDict(extra="forbid")
    url: str = "embedded"
    database: str = "openflow"
    server_selection_timeout_ms: int = Field(10000, gt=0)
    sync_on_commit: bool = True
    embedded_cache_size: str = "256M"

    @field_validator("url")
    @classmethod
    def _url(cls, url: str) -> str:
        if url != "embedded" and not url.startswith(("mongodb://", "mongodb+srv://")):
            raise ValueError('must be "embedded" or a mongodb:// URL')
        return url

    @field_validator("database")
    @classmethod
    def _database(cls, name: str) -> str:
        if not name or any(c in name for c in '/\\. "$\x00'):
            raise ValueError("is not a valid database name")
        return name


def build_storage(options: Mapping[str, Any], context: StorageContext) -> MongoStorage:
    """The ``mongo`` backend factory: validates the ``[storage]`` options."""
    try:
        parsed = MongoOptions.model_validate(dict(options))
    except ValidationError as exc:
        error = exc.errors()[0]
        key = "storage." + ".".join(str(p) for p in error["loc"])
        reason = "unknown key" if error["type"] == "extra_forbidden" else error["msg"]
        reason = reason.removeprefix("Value error, ")
        raise ConfigError(key, f"{reason} (got {error.get('input')!r})") from None
    embedded = None
    if parsed.url == "embedded":
        embedded = EmbeddedServer(
            str(context.data_dir / "mongo"),
            sync_on_commit=parsed.sync_on_commit,
            cache_size=parsed.embedded_cache_size,
            credentials=context.data_dir / CREDENTIALS_FILE,
        )
    return MongoStorage(parsed.url, parsed.database, embedded, parsed.server_selection_timeout_ms)
