"""The telemetry hooks, composed once per platform: wrappers around command dispatch and around
every storage, file store and broker call.

A plugin implements ``wrap_command(call, proceed)`` (or ``wrap_storage``, ``wrap_broker``):
it gets a description of the call and ``proceed``, an argument-less function returning the
awaitable of the call itself, and returns an awaitable of the result::

    @hookimpl
    async def wrap_command(call: CommandCall, proceed):
        started = time.perf_counter()
        try:
            return await proceed()
        finally:
            record(call.command, call.transport, time.perf_counter() - started)

The first registered plugin's wrapper is outermost. With no implementation the kernel calls
the handler, the store and the broker directly: no wrapper object exists, nothing is paid.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar, cast

from iapflow.contracts.broker import Broker, BrokerSession
from iapflow.contracts.files import FileStore
from iapflow.contracts.storage import Storage

if TYPE_CHECKING:
    from iapflow.secure.principal import Principal

T = TypeVar("T")
Proceed = Callable[[], Awaitable[T]]
Wrapper = Callable[..., Awaitable[Any]]


@dataclass
class CommandCall:
    """One command as a ``wrap_command`` implementation sees it."""

    command: str
    """The command's name as the client sent it (``query``, ``pushworkitem``...)."""
    transport: str
    """``json``, ``proto`` (websocket ``/ws/v2``), ``grpc``, or ``""`` for calls made inside
    the server."""
    session_id: str
    """The connection's id (``""`` when there is none)."""
    principal: Principal | None = None
    """The caller, once resolved (``None`` before sign-in and for refused tokens)."""


@dataclass(frozen=True)
class BackendCall:
    """One call to a backend as ``wrap_storage`` and ``wrap_broker`` see it."""

    backend: str
    """``storage``, ``files`` (the file store), ``broker`` or ``broker session``."""
    method: str
    """The contract method: ``find``, ``insert_one``, ``publish``, ``declare_queue``..."""
    target: str
    """The collection, queue or exchange it is about (``""`` when none)."""


def _contract_methods(*contracts: type, leave_out: tuple[str, ...] = ()) -> frozenset[str]:
    """The abstract (contract) methods of ``contracts``: what a wrapper sees called."""
    return frozenset(
        name
        for contract in contracts
        for name, value in vars(contract).items()
        if getattr(value, "__isabstractmethod__", False) and name not in leave_out
    )


# Contract methods that run inside the wrappers (starting and stopping a backend do not).
STORAGE_METHODS = _contract_methods(Storage, leave_out=("start", "stop")) | {"watch_changes"}
FILE_METHODS = _contract_methods(FileStore)
BROKER_METHODS = _contract_methods(Broker, leave_out=("start", "stop"))
SESSION_METHODS = _contract_methods(BrokerSession, leave_out=("close",))


def run(wrappers: list[Wrapper], call: Any, proceed: Proceed[T]) -> Awaitable[T]:
    """``proceed()`` inside every wrapper, the first one outermost."""
    for wrapper in reversed(wrappers):
        proceed = functools.partial(wrapper, call=call, proceed=proceed)
    return proceed()


class _Traced:
    """A backend whose contract methods run inside the wrappers; everything else passes."""

    def __init__(
        self, inner: Any, backend: str, methods: frozenset[str], wrappers: list[Wrapper]
    ) -> None:
        self._inner = inner
        self._backend = backend
        self._methods = methods
        self._wrappers = wrappers

    def __getattr__(self, name: str) -> Any:
        value = getattr(self._inner, name)
        if name not in self._methods:
            return value
        backend, wrappers = self._backend, self._wrappers

        async def traced(*args: Any, **kwargs: Any) -> Any:
            target = args[0] if args and isinstance(args[0], str) else ""
            if not target:
                target = str(kwargs.get("queue") or kwargs.get("exchange") or "")
            result = await run(
                wrappers, BackendCall(backend, name, target), lambda: value(*args, **kwargs)
            )
            return self._wrap_result(name, result)

        return traced

    def _wrap_result(self, name: str, result: Any) -> Any:
        if name == "open_session":
            return _Traced(result, "broker session", SESSION_METHODS, self._wrappers)
        return result


class _TracedStorage(_Traced):
    def file_store(self) -> Any:
        return _Traced(self._inner.file_store(), "files", FILE_METHODS, self._wrappers)


def traced_storage(storage: Storage, wrappers: list[Wrapper]) -> Storage:
    """``storage`` with its calls (and its file store's) inside ``wrappers``; itself when
    there are none."""
    if not wrappers:
        return storage
    return cast("Storage", _TracedStorage(storage, "storage", STORAGE_METHODS, wrappers))


def traced_broker(broker: Broker, wrappers: list[Wrapper]) -> Broker:
    """``broker`` with its calls (and its sessions') inside ``wrappers``; itself when there
    are none."""
    if not wrappers:
        return broker
    return cast("Broker", _Traced(broker, "broker", BROKER_METHODS, wrappers))
