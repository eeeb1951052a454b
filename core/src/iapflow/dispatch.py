"""One table of command handlers that every transport reaches.

A transport decodes a frame into ``(command, data)`` and calls :meth:`Dispatcher.dispatch`; the
reply is the request's data with the handler's result fields added and secrets removed, as
OpenFlow replies. Errors come back as :class:`~iapflow.errors.ApiError` with a readable message.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from iapflow.errors import ApiError, IapflowError, NotSignedIn, StorageError, TimeLimitExceeded
from iapflow.registry import Registry
from iapflow.security.principal import Principal
from iapflow.session import CURRENT

if TYPE_CHECKING:
    from iapflow.platform import Platform
    from iapflow.session import Session

log = logging.getLogger("iapflow.dispatch")

Handler = Callable[["Request"], Awaitable[dict[str, Any] | None]]
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
class CommandSpec:
    """A registered command."""

    name: str
    handler: Handler
    signed_in: bool = True


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

    def __init__(self, platform: Platform, commands: Registry[CommandSpec]) -> None:
        self.platform = platform
        self.commands = commands

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
        """Run ``command`` and return the reply data; raise ApiError with the reason on refusal."""
        spec = self.commands.get(command)
        if spec is None:
            raise ApiError(f"Unknown command {command[:64]!r}")
        principal = None
        if command != "signin":
            principal = await self._principal(data, session)
            if spec.signed_in and principal is None:
                raise NotSignedIn("Not signed in, and missing jwt")
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
