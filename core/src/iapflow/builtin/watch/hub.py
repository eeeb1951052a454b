"""The watch hub: one change stream per server process, fanned out to every watch.

The stream opens when the first watch is registered (``watch`` replies only once it is open,
so every change after the reply is delivered) and stays open until the server stops. Each event
is checked once per connection against the connection's user (read right on the document;
admins see everything), then against each of that connection's watches on the collection, and
queued for that connection. Every connection has its own outbox and sender, so a slow client
never holds up the stream or the others.

Which version of a document an event is checked against: the document after the change for
inserts, updates and replaces; for deletes (and for updates whose document was gone by the time
the stream read them) the store's pre-image when the collection keeps them
(``changeStreamPreAndPostImages``), else the last version this hub saw change while the
collection was watched (a bounded memory of recently changed documents), else nothing: then
only admins get the event.

When the stream breaks (the store restarted, the network failed), the hub opens a new one
after the last event it handled, retrying with a growing delay and logging each failure, so
no event is lost or delivered twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from iapflow import jsonutil
from iapflow.builtin.watch.paths import WatchFilter
from iapflow.contracts.storage import ChangeStream, ResumeTokenLost
from iapflow.errors import ApiError, StorageError
from iapflow.ids import new_id
from iapflow.secure.acl import READ, acl_field, has_right

if TYPE_CHECKING:
    from iapflow.secure.principal import Principal
    from iapflow.session import Session

log = logging.getLogger("iapflow.watch")

RolesOf = Callable[[str], Awaitable[list[dict[str, str]]]]
OpenStream = Callable[[Any], Awaitable[ChangeStream]]
"""``open_stream(resume_after)``: the store's change stream, from the secure data layer."""

DOCUMENT_OPERATIONS = frozenset({"insert", "update", "replace", "delete"})
# Fields of a change event a client gets; the resume token and pre-image stay in the server.
PUBLIC_FIELDS = ("operationType", "ns", "documentKey", "fullDocument", "updateDescription")
SECRET_FIELD = "passwordhash"
MAX_WATCHES_PER_CONNECTION = 256
# Never kept as "last versions": file bytes (large, no ACL) and history (insert-only).
UNREMEMBERED_SUFFIXES = (".chunks", "_hist")


@dataclass(eq=False)
class Watch:
    """One registered watch."""

    id: str
    session: Session
    owner: str
    """Id of the user that registered it; events stop if the connection signs in as another."""
    collection: str
    filter: WatchFilter


class LastVersions:
    """The last version seen of recently changed documents, at most ``limit`` of them."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._docs: OrderedDict[tuple[str, str], Mapping[str, Any]] = OrderedDict()

    def remember(self, key: tuple[str, str], doc: Mapping[str, Any]) -> None:
        """Keep ``doc`` as the latest version of ``key``, forgetting the oldest beyond the limit."""
        self._docs[key] = doc
        self._docs.move_to_end(key)
        while len(self._docs) > self.limit:
            self._docs.popitem(last=False)

    def get(self, key: tuple[str, str]) -> Mapping[str, Any] | None:
        """The remembered version, or ``None``."""
        return self._docs.get(key)

    def forget(self, key: tuple[str, str]) -> Mapping[str, Any] | None:
        """Drop and return the remembered version."""
        return self._docs.pop(key, None)

    def keys(self) -> list[tuple[str, str]]:
        """``(collection, id)`` of every remembered document, oldest first."""
        return list(self._docs)

    def __len__(self) -> int:
        return len(self._docs)


class _Outbox:
    """Pushes for one connection, in order, sent by its own task."""

    def __init__(self, hub: WatchHub, session: Session, limit: int) -> None:
        self.hub = hub
        self.session = session
        self.limit = limit
        self.queue: asyncio.Queue[tuple[str, dict[str, Any]]] = asyncio.Queue()
        self.task = asyncio.get_running_loop().create_task(self._send())

    def put(self, watch_id: str, result: dict[str, Any]) -> bool:
        """Queue an event; False when the connection has fallen ``limit`` events behind."""
        if self.queue.qsize() >= self.limit:
            return False
        self.queue.put_nowait((watch_id, result))
        return True

    async def _send(self) -> None:
        while True:
            watch_id, result = await self.queue.get()
            if watch_id not in self.hub.watches:
                continue  # unwatched while the event waited
            try:
                await self.session.push("watchevent", {"id": watch_id, "result": result})
            except Exception:
                log.exception("could not push a watch event to connection %s", self.session.id)

    async def close(self) -> None:
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task


class WatchHub:
    """Watches of every connection of one server, fed by one change stream."""

    def __init__(
        self,
        open_stream: OpenStream,
        roles_of: RolesOf,
        *,
        retry_initial_seconds: float = 0.1,
        retry_max_seconds: float = 5.0,
        remember: int = 10_000,
        outbox_limit: int = 10_000,
    ) -> None:
        self.open_stream = open_stream
        self.roles_of = roles_of
        self.retry_initial = retry_initial_seconds
        self.retry_max = retry_max_seconds
        self.outbox_limit = outbox_limit
        self.watches: dict[str, Watch] = {}
        self.last_versions = LastVersions(remember)
        self._by_collection: dict[str, dict[str, Watch]] = {}
        self._outboxes: dict[str, _Outbox] = {}
        self._token: Any = None
        self._task: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()
        self._stopped = False
        self._closing: set[asyncio.Task[None]] = set()

    # -- watches --------------------------------------------------------------------------------

    async def add(
        self, session: Session, principal: Principal, collection: str, selection: WatchFilter
    ) -> Watch:
        """Register a watch for ``session``; opens the change stream first if it is not open.

        The cap is counted after the last ``await``, so that concurrent requests of one
        connection cannot all pass it while the stream opens."""
        self._check_cap(session)
        await self._ensure_stream()
        if session.platform.sessions.get(session.id) is not session:
            raise ApiError("watch: the connection closed")  # while the stream was opening
        self._check_cap(session)
        watch = Watch(new_id(), session, principal.id, collection, selection)
        self.watches[watch.id] = watch
        self._by_collection.setdefault(collection, {})[watch.id] = watch
        if session.id not in self._outboxes:
            self._outboxes[session.id] = _Outbox(self, session, self.outbox_limit)
        return watch

    def _check_cap(self, session: Session) -> None:
        if len(self.of_session(session)) >= MAX_WATCHES_PER_CONNECTION:
            raise ApiError(
                f"a connection can hold at most {MAX_WATCHES_PER_CONNECTION} watches; "
                "unwatch some first"
            )

    def remove(self, session: Session, watch_id: str) -> bool:
        """Remove a watch of ``session``; False when it has no watch with that id."""
        watch = self.watches.get(watch_id)
        if watch is None or watch.session is not session:
            return False
        self._forget(watch)
        return True

    async def drop_session(self, session: Session) -> None:
        """Remove every watch of a closed connection and stop its sender."""
        for watch in [w for w in self.watches.values() if w.session is session]:
            self._forget(watch)
        outbox = self._outboxes.pop(session.id, None)
        if outbox is not None:
            await outbox.close()

    def _forget(self, watch: Watch) -> None:
        self.watches.pop(watch.id, None)
        by_id = self._by_collection.get(watch.collection)
        if by_id is not None:
            by_id.pop(watch.id, None)
            if not by_id:
                del self._by_collection[watch.collection]

    def of_session(self, session: Session) -> list[Watch]:
        """The watches a connection holds."""
        return [w for w in self.watches.values() if w.session is session]

    def streaming(self) -> bool:
        """True while the change stream task runs (open, or reopening after a failure)."""
        return self._task is not None and not self._task.done()

    # -- the stream -----------------------------------------------------------------------------

    async def _ensure_stream(self) -> None:
        if self.streaming():
            return
        async with self._lock:
            if self.streaming():
                return
            if self._stopped:
                raise ApiError("the server is stopping")
            try:
                stream = await self.open_stream(self._token)
            except StorageError as exc:
                raise ApiError(
                    f"watch: the store's change stream could not be opened: {exc}"
                ) from exc
            self._token = stream.resume_token if stream.resume_token is not None else self._token
            self._task = asyncio.get_running_loop().create_task(self._run(stream))
            log.info("change stream opened")

    async def _run(self, stream: ChangeStream) -> None:
        while True:
            try:
                async for event in stream:
                    try:
                        await self._deliver(event)
                    except Exception:
                        log.exception("could not deliver a change event; it is skipped")
                    token = stream.resume_token
                    if token is not None:
                        self._token = token
                return  # the stream was closed on purpose
            except StorageError as exc:
                log.warning("change stream broke (%s); resuming after the last event", exc)
            except Exception:
                log.exception("change stream failed; resuming after the last event")
            finally:
                token = stream.resume_token
                if token is not None:
                    self._token = token
                with contextlib.suppress(Exception):
                    await stream.close()
            stream = await self._reopen()

    async def _reopen(self) -> ChangeStream:
        """Open a new stream after the last handled event, retrying with a growing delay."""
        started = time.monotonic()
        attempt = 0
        while True:
            delay = min(self.retry_initial * 2**attempt, self.retry_max)
            attempt += 1
            await asyncio.sleep(delay)
            try:
                stream = await self.open_stream(self._token)
            except ResumeTokenLost as exc:
                log.error(
                    "change stream cannot resume (%s): watches go on from now, and the changes "
                    "made while it was down are not delivered",
                    exc,
                )
                self._token = None
                attempt = 0
                continue
            except StorageError as exc:
                log.warning(
                    "change stream still down after %.1fs (attempt %d, next in %.1fs): %s",
                    time.monotonic() - started,
                    attempt,
                    min(self.retry_initial * 2**attempt, self.retry_max),
                    exc,
                )
                continue
            log.info(
                "change stream resumed after %.1fs (%d attempts)",
                time.monotonic() - started,
                attempt,
            )
            return stream

    async def stop(self) -> None:
        """Close the stream and every sender."""
        self._stopped = True
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for outbox in list(self._outboxes.values()):
            await outbox.close()
        self._outboxes.clear()
        self.watches.clear()
        self._by_collection.clear()

    # -- delivery -------------------------------------------------------------------------------

    def _known_version(
        self, operation: str, key: tuple[str, str], event: Mapping[str, Any], remember: bool
    ) -> Any:
        """The version of the document this event is checked against (see the module doc)."""
        current = event.get("fullDocument")
        before = event.get("fullDocumentBeforeChange")
        if operation in ("insert", "update", "replace"):
            if isinstance(current, Mapping):
                if remember:
                    self.last_versions.remember(key, current)
                return current
            return before if isinstance(before, Mapping) else self.last_versions.get(key)
        if operation == "delete":
            remembered = self.last_versions.forget(key)
            return before if isinstance(before, Mapping) else remembered
        return None

    async def _deliver(self, event: Mapping[str, Any]) -> None:
        operation = str(event.get("operationType", ""))
        ns = event.get("ns")
        collection = ns.get("coll") if isinstance(ns, Mapping) else None
        if not isinstance(collection, str):
            return  # dropDatabase and the like: no collection to watch
        document_key = event.get("documentKey")
        if not isinstance(document_key, Mapping):
            document_key = {}
        key = (collection, str(document_key.get("_id")))
        watches = self._by_collection.get(collection)
        remember = bool(watches) and not collection.endswith(UNREMEMBERED_SUFFIXES)
        known = self._known_version(operation, key, event, remember)
        if not watches:
            return
        result = public_event(collection, event)
        target: Mapping[str, Any] = known if known is not None else document_key
        plain: Any = None
        sessions: dict[str, list[Watch]] = {}
        for watch in watches.values():
            sessions.setdefault(watch.session.id, []).append(watch)
        allowed: dict[str, bool] = {}  # per user: connections of one user share the answer
        for session_watches in sessions.values():
            session = session_watches[0].session
            principal = session.principal
            if principal is None:
                continue
            may_read = allowed.get(principal.id)
            if may_read is None:
                may_read = await self._may_read(principal, collection, operation, known)
                allowed[principal.id] = may_read
            if not may_read:
                continue
            for watch in session_watches:
                if principal.id != watch.owner:
                    continue
                if not watch.filter.everything:
                    if plain is None:
                        plain = jsonutil.loads(jsonutil.dumps(target))
                    if not watch.filter.passes(target, plain):
                        continue
                self._queue(session, watch.id, result)

    def _queue(self, session: Session, watch_id: str, result: dict[str, Any]) -> None:
        outbox = self._outboxes.get(session.id)
        if outbox is None:
            return
        if not outbox.put(watch_id, result):
            log.warning(
                "closing connection %s: %d watch events waiting, it does not read them",
                session.id,
                self.outbox_limit,
            )
            for watch in self.of_session(session):
                self._forget(watch)
            task = asyncio.get_running_loop().create_task(self._close_slow(session))
            self._closing.add(task)
            task.add_done_callback(self._closing.discard)

    @staticmethod
    async def _close_slow(session: Session) -> None:
        await session.close(1008, "watch events were not read fast enough")

    async def _may_read(
        self, principal: Principal, collection: str, operation: str, known: Any
    ) -> bool:
        try:
            principal.roles = await self.roles_of(principal.id)
        except Exception:
            log.warning("could not refresh the roles of %s; using the ones it had", principal.id)
        if principal.is_admin:
            return True
        if operation not in DOCUMENT_OPERATIONS or not isinstance(known, Mapping):
            return False
        if collection == "users" and known.get("_id") == principal.id:
            return True  # a user may always read its own user document
        holder = known.get("metadata") if acl_field(collection) != "_acl" else known
        return isinstance(holder, Mapping) and has_right(principal, holder, READ)


def public_event(collection: str, event: Mapping[str, Any]) -> dict[str, Any]:
    """The part of a change event a client gets, without ``passwordhash`` anywhere."""
    result = {name: event[name] for name in PUBLIC_FIELDS if name in event}
    if collection == "users" or collection.startswith("users_"):
        result = _without_secret(result)
        description = result.get("updateDescription")
        if isinstance(description, dict):
            updated = description.get("updatedFields")
            if isinstance(updated, dict):
                description["updatedFields"] = {
                    k: v for k, v in updated.items() if not _is_secret_path(k)
                }
            removed = description.get("removedFields")
            if isinstance(removed, list):
                description["removedFields"] = [
                    k for k in removed if not (isinstance(k, str) and _is_secret_path(k))
                ]
    return result


def _is_secret_path(path: str) -> bool:
    return SECRET_FIELD in path.split(".")


def _without_secret(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _without_secret(v) for k, v in value.items() if k != SECRET_FIELD}
    if isinstance(value, list):
        return [_without_secret(v) for v in value]
    return value
