"""A connection's session: its signed-in user and token refresh, whatever the transport."""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from iapflow.errors import ApiError, NotSignedIn
from iapflow.ids import new_id

if TYPE_CHECKING:
    from iapflow.auth.service import SigninResult
    from iapflow.platform import Platform
    from iapflow.secure.principal import Principal

log = logging.getLogger("iapflow.session")

CURRENT: contextvars.ContextVar[Session | None] = contextvars.ContextVar(
    "iapflow_session", default=None
)
"""The connection whose command is running (set by the dispatcher)."""

Push = Callable[[str, dict[str, Any]], Awaitable[None]]
Close = Callable[[int, str], Awaitable[None]]
Ask = Callable[[str, dict[str, Any]], Awaitable[tuple[str, dict[str, Any]]]]


class Session:
    """State of one client connection."""

    def __init__(
        self,
        platform: Platform,
        push: Push,
        close: Close,
        remote: dict[str, str],
        protocol: str,
        ask: Ask | None = None,
    ) -> None:
        self.id = new_id()
        self.platform = platform
        self.push = push
        self._ask = ask
        self.close = close
        self.remote = remote
        self.protocol = protocol
        self.connected_at = time.time()
        self.principal: Principal | None = None
        self.jwt = ""
        self.expires = 0
        self.long = False
        self.epoch = ""
        """The token epoch the connection signed in with (see iapflow.secure.users)."""
        self.impostor_epoch = ""
        self.clientagent = ""
        self.clientversion = ""
        self._refresh_task: asyncio.Task[None] | None = None

    async def opened(self) -> None:
        """Count the connection as open (``platform.sessions``) and tell the observers; a
        transport calls this once, before the connection's first message."""
        self.platform.sessions[self.id] = self
        await self.platform.plugins.on_session_opened(self.platform, self)

    async def push_and_wait(self, command: str, data: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        """Push ``command`` and wait for the client's reply to it: ``(reply command, data)``.

        Raises ConnectionError when the connection closes first. A transport that cannot carry
        replies to pushes returns ``(command, {})`` once the push is sent.
        """
        if self._ask is None:
            await self.push(command, data)
            return command, {}
        return await self._ask(command, data)

    def check_token(self) -> None:
        """Refuse requests once the session's token has expired without a refresh."""
        if self.principal is not None and self.expires and self.expires <= time.time():
            raise NotSignedIn("token expired: sign in again")

    def bind(self, result: SigninResult, clientagent: str = "", clientversion: str = "") -> None:
        """Make this connection act as the signed-in user and schedule token refreshes."""
        self.principal = result.principal
        self.jwt = result.jwt
        self.expires = result.claims.expires
        self.long = result.claims.long
        self.epoch = result.claims.epoch
        self.impostor_epoch = result.claims.impostor_epoch
        self.clientagent = clientagent or self.clientagent
        self.clientversion = clientversion or self.clientversion
        self._schedule_refresh()

    def _schedule_refresh(self) -> None:
        if self._refresh_task is not None:
            self._refresh_task.cancel()
        self._refresh_task = None
        if self.long:
            return
        before = self.platform.config.auth.refresh_before_seconds
        lifetime = self.platform.config.auth.token_lifetime_seconds
        delay = max(self.expires - time.time() - min(before, lifetime / 2), 0.5)
        self._refresh_task = asyncio.get_running_loop().create_task(self._refresh_later(delay))

    async def renew(self) -> None:
        """Sign this connection in again as its own user with a token of the user's current
        epoch, and push it (``refreshtoken``): the connection that changed its own password
        stays signed in while every other token ends."""
        assert self.principal is not None
        result = await self.platform.auth.reissue(self.principal.id, self.long)
        self.bind(result)
        await self.push("refreshtoken", {"jwt": result.jwt, "user": result.principal.token_user()})

    async def _refresh_later(self, delay: float) -> None:
        await asyncio.sleep(delay)
        try:
            result = await self.platform.auth.signin({"jwt": self.jwt}, self.remote)
        except ApiError as exc:
            log.info("closing session %s: token refresh refused: %s", self.id, exc)
            await self.close(1008, "token refresh refused: sign in again")
            return
        self._refresh_task = None
        self.bind(result)
        await self.push("refreshtoken", {"jwt": result.jwt, "user": result.principal.token_user()})

    async def closed(self) -> None:
        """Release what the connection held (timers now; queues and watches later)."""
        if self._refresh_task is not None:
            self._refresh_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._refresh_task
        self.platform.sessions.pop(self.id, None)
        await self.platform.plugins.on_session_closed(self.platform, self)

    def revoked_by(self, user: dict[str, Any]) -> bool:
        """True when the stored ``user`` (disabled, or in a new token epoch) ends this
        connection's sign-in, as that user or as its impersonator."""
        principal = self.principal
        if principal is None:
            return False
        user_id = str(user.get("_id"))
        epoch = str(user.get("_tokenepoch") or "")
        if principal.id == user_id:
            return bool(user.get("disabled")) or epoch != self.epoch
        if principal.impostor == user_id:
            return bool(user.get("disabled")) or epoch != self.impostor_epoch
        return False

    def describe(self) -> dict[str, Any]:
        """What ``getclients`` and the UI show for this connection."""
        return {
            "id": self.id,
            "protocol": self.protocol,
            "remoteip": self.remote.get("remoteip"),
            "clientagent": self.clientagent,
            "clientversion": self.clientversion,
            "user": self.principal.token_user() if self.principal else None,
            "connected": self.connected_at,
        }
