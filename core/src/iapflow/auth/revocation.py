"""Ending the connections of users whose tokens were revoked on another server.

A password change or a disable gives the user a new token epoch (:mod:`iapflow.secure.users`)
and stamps the time of it. The server that made the change closes its own connections of that
user at once; every server sharing the store also looks, every ``[auth]
revocation_check_seconds``, for users whose epoch changed in the last minute and closes its
connections that were signed in with an older one. Tokens themselves are checked against the
stored epoch on every use, so a revoked token is refused everywhere at once; this only ends
connections that signed in before.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from iapflow.contracts.storage import Document
from iapflow.errors import StorageError
from iapflow.jsonutil import utcnow
from iapflow.secure.principals import PrincipalStore

log = logging.getLogger("iapflow.auth")

WINDOW = dt.timedelta(seconds=60)
"""How far back each look reaches: revocations written by a server whose clock is behind by
less than this are still seen."""

Revoke = Callable[[Document], Awaitable[Any]]


class RevocationWatch:
    """Polls ``users`` for recent revocations and hands each user document to ``revoke``."""

    def __init__(self, principals: PrincipalStore, revoke: Revoke, interval: float) -> None:
        self.principals = principals
        self.revoke = revoke
        self.interval = interval
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Start polling (nothing when the interval is 0)."""
        if self.interval > 0 and self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        """Stop polling."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def check(self) -> None:
        """Look once."""
        for doc in await self.principals.revoked_since(utcnow() - WINDOW):
            await self.revoke(doc)

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                await self.check()
            except StorageError as exc:
                log.warning("could not look for revoked tokens: %s", exc)
            except Exception:
                log.exception("looking for revoked tokens failed")
