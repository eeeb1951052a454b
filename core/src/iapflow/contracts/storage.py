"""The storage contract: what a storage plugin implements.

Only the data layer (:mod:`iapflow.data`) calls a storage backend. Filters, updates and pipelines
are MongoDB's query language; documents are plain dicts. A backend maps its driver's errors to
:class:`iapflow.errors.StorageError`, :class:`~iapflow.errors.DuplicateKeyError` (naming the
fields of the unique index, never the values or the store's own names),
:class:`~iapflow.errors.TimeLimitExceeded` and, for filters or pipelines the store refuses,
:class:`~iapflow.errors.InvalidQuery` with a message that names no database or collection of
the store's own.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from iapflow.errors import StorageError

if TYPE_CHECKING:
    from iapflow.contracts.files import FileStore

Document = dict[str, Any]
Filter = Mapping[str, Any]


@dataclass(frozen=True)
class StorageContext:
    """What the core tells a storage factory besides the backend's own options."""

    data_dir: Path
    """The server's data directory; an embedded store keeps its files below it."""


class ResumeTokenLost(StorageError):
    """A change stream cannot continue from its resume token: the store no longer has that
    part of its history, so the events in between are gone."""


class ChangeStream(AsyncIterator[Document]):
    """An open change stream (see :meth:`Storage.watch_changes`): iterate it for events."""

    @property
    @abstractmethod
    def resume_token(self) -> Any:
        """Where a new stream continues after everything this one has returned: the last
        event's ``_id``, or the store's position when it has returned none (``None`` only if
        the store does not say)."""

    @abstractmethod
    async def __anext__(self) -> Document:
        """The next event, waiting as long as it takes; StorageError when the stream broke
        (open a new one from :attr:`resume_token`)."""

    @abstractmethod
    async def close(self) -> None:
        """Stop the stream; closing twice is fine."""


class Storage(ABC):
    """A document store speaking MongoDB's query language."""

    @abstractmethod
    async def start(self) -> None:
        """Connect (and start an embedded server if configured); fail with StorageError."""

    @abstractmethod
    async def stop(self) -> None:
        """Disconnect and stop anything :meth:`start` started."""

    @abstractmethod
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
        """Return the matching documents.

        ``max_time_ms`` (also on :meth:`count`, :meth:`distinct` and :meth:`aggregate`), when
        not 0, is how long the store may work on the request; past it the backend raises
        :class:`~iapflow.errors.TimeLimitExceeded`. The data layer sets it on every client
        read (``[query] max_time_ms``)."""

    @abstractmethod
    async def find_one(self, collection: str, filter: Filter) -> Document | None:
        """Return the first matching document or ``None``."""

    @abstractmethod
    async def count(self, collection: str, filter: Filter, *, max_time_ms: int = 0) -> int:
        """Count the matching documents."""

    @abstractmethod
    async def distinct(
        self, collection: str, field: str, filter: Filter, *, max_time_ms: int = 0
    ) -> list[Any]:
        """Distinct values of ``field`` among the matching documents."""

    @abstractmethod
    async def aggregate(
        self,
        collection: str,
        pipeline: Sequence[Mapping[str, Any]],
        *,
        max_time_ms: int = 0,
    ) -> list[Document]:
        """Run an aggregation pipeline and return all its output documents."""

    @abstractmethod
    async def insert_one(self, collection: str, document: Document) -> None:
        """Insert one document (its ``_id`` is already set)."""

    @abstractmethod
    async def insert_many(self, collection: str, documents: Sequence[Document]) -> None:
        """Insert documents in order, stopping at the first failure."""

    @abstractmethod
    async def replace_one(self, collection: str, filter: Filter, document: Document) -> int:
        """Replace the first matching document; return how many matched (0 or 1)."""

    @abstractmethod
    async def update_one(
        self, collection: str, filter: Filter, update: Mapping[str, Any]
    ) -> Document | None:
        """Apply update operators to the first match; return the document after, or ``None``."""

    @abstractmethod
    async def find_one_and_update(
        self,
        collection: str,
        filter: Filter,
        update: Mapping[str, Any],
        *,
        sort: Sequence[tuple[str, int]],
    ) -> Document | None:
        """Atomically apply update operators to the first match in ``sort`` order and return
        the document after, or ``None`` when nothing matches.

        One step in the store: two concurrent calls never update the same document unless it
        still matches ``filter`` after the first update (work item pops rely on this).
        """

    @abstractmethod
    async def update_many(
        self, collection: str, filter: Filter, update: Mapping[str, Any]
    ) -> tuple[int, int]:
        """Apply update operators to every match; return ``(matched, modified)``."""

    @abstractmethod
    async def delete_one(self, collection: str, filter: Filter) -> int:
        """Delete the first match; return how many were deleted."""

    @abstractmethod
    async def delete_many(self, collection: str, filter: Filter) -> int:
        """Delete every match; return how many were deleted."""

    @abstractmethod
    async def list_collections(self) -> list[Document]:
        """Return ``{"name", "type"}`` for every collection."""

    @abstractmethod
    async def create_collection(self, name: str, options: Mapping[str, Any]) -> None:
        """Create a collection with store-specific options (e.g. ``timeseries``)."""

    @abstractmethod
    async def drop_collection(self, name: str) -> None:
        """Drop a collection; dropping one that does not exist is not an error."""

    @abstractmethod
    async def create_index(
        self,
        collection: str,
        keys: Sequence[tuple[str, int | str]],
        *,
        unique: bool = False,
        sparse: bool = False,
        options: Mapping[str, Any] | None = None,
    ) -> str:
        """Ensure an index exists; return its name. ``options`` are store-specific
        (``name``, ``expireAfterSeconds``, ``partialFilterExpression``...)."""

    @abstractmethod
    async def drop_index(self, collection: str, name: str) -> None:
        """Drop the index called ``name``; InvalidQuery when there is none."""

    @abstractmethod
    async def list_indexes(self, collection: str) -> list[Document]:
        """The collection's indexes as ``{"name", "key", ...}`` documents."""

    # -- change streams (watches) -----------------------------------------------------------

    async def watch_changes(self, resume_after: Any | None = None) -> ChangeStream:
        """Open one change stream over every collection of the database.

        Returns once the stream is open, so every change committed from then on is delivered.
        Events come oldest first. Each has ``_id`` (its resume token), ``operationType``
        (``insert``, ``update``, ``replace``, ``delete``, and events such as ``drop`` that
        have no document), ``ns`` (``{"db", "coll"}``) and ``documentKey``; inserts, updates
        and replaces have ``fullDocument`` (the document as it is when the event is read,
        ``None`` if it is gone by then); updates have ``updateDescription``; updates, replaces
        and deletes have ``fullDocumentBeforeChange`` where the store keeps pre-images for the
        collection (otherwise it is missing or ``None``).

        ``resume_after`` is the :attr:`ChangeStream.resume_token` of an earlier stream: the new
        one continues right after what that one delivered, with no event lost or repeated,
        across restarts of the store too. :class:`ResumeTokenLost` when the store no longer
        reaches back that far; StorageError when the store cannot be reached, or (this
        default) when the backend has no change streams.
        """
        raise StorageError(f"{type(self).__name__} has no change streams")

    # -- files (GridFS-like) -------------------------------------------------------------------

    def file_store(self) -> FileStore:
        """The backend's file store (see :class:`iapflow.contracts.files.FileStore`), or
        StorageError."""
        raise StorageError(f"{type(self).__name__} has no file store")


StorageFactory = Callable[[Mapping[str, Any], StorageContext], Storage]
"""What ``register_storage`` registers: ``factory(options, context)`` returns an unstarted
backend from the ``[storage]`` keys besides ``backend``; it raises ConfigError on a bad
option."""
