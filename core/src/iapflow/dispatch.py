"""One table of command handlers that every transport reaches.

A transport decodes a frame into ``(command, data)`` and calls :meth:`Dispatcher.dispatch`; the
reply is the request's data with the handler's result fields added and secrets removed, as
OpenFlow replies. Errors come back as :class:`~iapflow.errors.ApiError` with a readable message.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from iapflow.errors import ApiError, IapflowError, NotSignedIn, StorageError, TimeLimitExceeded
from iapflow.registry import Registry
from iapflow.secure.principal import Principal
from iapflow.session import CURRENT
from iapflow.telemetry import CommandCall, Wrapper, run

if TYPE_CHECKING:
    from iapflow.platform import Platform
    from iapflow.session import Session

log = logging.getLogger("iapflow.dispatch")

Handler = Callable[["Request"], Awaitable[dict[str, Any] | None]]
CustomHandler = Callable[["Request"], Awaitable[Any]]
"""A ``customcommand`` sub-command: what it returns is the reply's ``result``."""
# Request fields never echoed back in a reply, at any depth.
_NOT_ECHOED = frozenset({"jwt", "password", "newpassword", "passwordhash"})


def without_secrets(value: Any) -> Any:
    """A copy of ``value`` without :data:`_NOT_ECHOED` keys anywhere (the input when clean)."""
    if isinstance(value, dict):
        if not any(key in _NOT_ECHOED or isinstance(v, dict | list) for key, v in value.items()):
            return value
        return {k: without_secrets(v) for k, v in value.items() if k not in _NOT_ECHOED}
    if isinstance(value, list):
        return [without_secrets(v) for v in value]
    return value


@dataclass(frozen=True)
class ProtoPush:
    """How a push the server sends on a connection travels in the protobuf protocol:
    ``session.push(<push name>, data)`` goes out as an Envelope with command ``command``
    holding ``message`` filled from ``values(data)``."""

    command: str
    message: str | type[Any]
    """The schema's message name in package ``openiap`` (``"QueueEvent"``), or the message
    class of a plugin's own compiled schema."""
    values: Callable[[dict[str, Any]], dict[str, Any]]


@dataclass(frozen=True)
class Proto:
    """How a command travels in the OpenIAP protobuf protocol (``/ws/v2`` and gRPC): the
    Envelope's ``command`` and the request and response messages. Without one, a command is
    on the JSON protocol only.

    ``name`` is the schema's base name: ``Proto("Query")`` means Envelope command ``query``,
    ``openiap.QueryRequest`` in and ``openiap.QueryResponse`` out. A plugin with a schema of
    its own passes its message classes as ``request`` and ``response``.
    """

    name: str
    request: str | type[Any] | None = None
    """Message name in the ``openiap`` schema or a message class (default ``<name>Request``)."""
    response: str | type[Any] | None = None
    """Message name in the ``openiap`` schema or a message class (default ``<name>Response``)."""
    to_dict: Callable[[dict[str, Any]], dict[str, Any]] | None = None
    """Reshapes the decoded request into what the handler expects (JSON-protocol shape)."""
    from_reply: Callable[[dict[str, Any]], dict[str, Any]] | None = None
    """Reshapes the handler's reply into the response message's fields."""
    pushes: tuple[tuple[str, ProtoPush], ...] = ()
    """``(push name, ProtoPush)`` for the pushes this command leads to (``watchevent``)."""

    @property
    def command(self) -> str:
        """The Envelope's ``command`` for this command."""
        return self.name.lower()


def results(reply: dict[str, Any]) -> dict[str, Any]:
    """A proto ``from_reply`` for commands whose JSON reply says ``result`` where the response
    message has ``results``."""
    return {"results": reply.get("result", reply.get("results"))}


@dataclass(frozen=True)
class CommandSpec:
    """A registered command."""

    name: str
    handler: Handler
    signed_in: bool = True
    authenticates: bool = False
    """True for a command whose ``jwt`` is a credential to check (``signin``), not the
    caller's identity."""
    proto: Proto | None = None
    plugin: str = ""
    """The plugin that registered it."""


class RegisterCommand(Protocol):
    """The ``register`` callback of the ``register_commands`` hook."""

    def __call__(
        self,
        name: str,
        handler: Handler,
        aliases: Iterable[str] = (),
        signed_in: bool = True,
        authenticates: bool = False,
        proto: Proto | None = None,
    ) -> None:
        """Register ``handler`` under ``name`` and ``aliases``."""


@dataclass
class Request:
    """One command call as a handler sees it."""

    command: str
    data: dict[str, Any]
    platform: Platform
    session: Session | None
    principal: Principal | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def user(self) -> Principal:
        """The signed-in caller; handlers of ``signed_in`` commands can rely on it."""
        if self.principal is None:
            raise NotSignedIn("Not signed in, and missing jwt")
        return self.principal


class Dispatcher:
    """Finds the handler for a command, resolves the caller and shapes the reply."""

    def __init__(
        self,
        platform: Platform,
        commands: Registry[CommandSpec],
        wrappers: list[Wrapper] | None = None,
    ) -> None:
        self.platform = platform
        self.commands = commands
        self._wrappers = wrappers or []

    async def _principal(self, data: dict[str, Any], session: Session | None) -> Principal | None:
        token = data.get("jwt")
        if token:
            principal, _claims = await self.platform.auth.principal_from_token(token)
            return principal
        if session is None or session.principal is None:
            return None
        session.check_token()
        # Roles can change while a socket is open: resolve them again (cached).
        principal = session.principal
        principal.roles = await self.platform.auth.roles.roles_of(principal.id)
        return principal

    async def dispatch(
        self, command: str, data: dict[str, Any], session: Session | None
    ) -> dict[str, Any]:
        """Run ``command`` and return the reply data; raise ApiError with the reason on refusal.

        With ``wrap_command`` implementations, the whole call runs inside them."""
        if not self._wrappers:
            return await self._dispatch(command, data, session, None)
        call = CommandCall(
            command, session.protocol if session else "", session.id if session else ""
        )
        return await run(self._wrappers, call, lambda: self._dispatch(command, data, session, call))

    async def _dispatch(
        self,
        command: str,
        data: dict[str, Any],
        session: Session | None,
        call: CommandCall | None,
    ) -> dict[str, Any]:
        spec = self.commands.get(command)
        if spec is None:
            raise ApiError(f"Unknown command {command[:64]!r}")
        principal = None
        if not spec.authenticates:
            principal = await self._principal(data, session)
            if spec.signed_in and principal is None:
                raise NotSignedIn("Not signed in, and missing jwt")
            if call is not None:
                call.principal = principal
        request = Request(command, data, self.platform, session, principal)
        running = CURRENT.set(session)
        try:
            result = await spec.handler(request)
        except TimeLimitExceeded as exc:
            limit = self.platform.config.query.max_time_ms
            raise ApiError(
                f"{command} took longer than the {limit} ms the server allows a read "
                "([query] max_time_ms): narrow the filter, add an index, or ask for fewer "
                "documents"
            ) from exc
        except IapflowError as exc:
            if isinstance(exc, StorageError) and not isinstance(exc, ApiError):
                log.warning("storage error in %s: %s", command, exc)
                raise ApiError(f"storage error: {exc}") from exc
            raise
        finally:
            CURRENT.reset(running)
        reply = without_secrets(data)
        reply = dict(reply) if reply is data else reply
        if result:
            reply.update(result)
        return reply
