"""Housekeeping, on demand (admins) and every ``housekeeping.interval_seconds``.

It ensures the built-in users, roles and indexes (audit, and every ``*_hist`` collection's),
clears the role cache, and closes sessions whose token expired without being refreshed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import TYPE_CHECKING, Any

from iapflow.builtin.admin.config import HousekeepingConfig
from iapflow.secure import audit
from iapflow.stash import StashKey

if TYPE_CHECKING:
    from iapflow.platform import Platform

log = logging.getLogger("iapflow.housekeeping")
TIMER = StashKey["asyncio.Task[None]"]("housekeeping timer")
LAST = StashKey[dict[str, Any]]("last housekeeping pass")


async def run(platform: Platform) -> dict[str, Any]:
    """One housekeeping pass; returns what it did."""
    started = time.monotonic()
    await platform.auth.ensure_builtins()
    await audit.ensure_indexes(platform)
    history_indexed = await platform.data.history.ensure_indexes()
    platform.auth.roles.invalidate()
    now = time.time()
    stale = [
        s
        for s in platform.sessions.values()
        if s.principal is not None and s.expires and s.expires <= now
    ]
    for session in stale:
        await session.close(1008, "token expired: sign in again")
    report = {
        "stale_sessions_closed": len(stale),
        "history_collections_indexed": len(history_indexed),
        "seconds": round(time.monotonic() - started, 3),
    }
    platform.stash[LAST] = {**report, "at": now}
    log.info("housekeeping: %s", report)
    return report


async def _every(platform: Platform, interval: float) -> None:
    while True:
        await asyncio.sleep(interval)
        try:
            await run(platform)
        except Exception:
            log.exception("housekeeping failed; trying again in %ss", interval)


def start(platform: Platform) -> None:
    """Start the timer unless ``housekeeping.interval_seconds`` is 0."""
    interval = platform.config.section(HousekeepingConfig).interval_seconds
    if interval > 0:
        platform.stash[TIMER] = asyncio.get_running_loop().create_task(_every(platform, interval))


async def stop(platform: Platform) -> None:
    """Stop the timer."""
    task = platform.stash.pop(TIMER)
    if task is not None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
