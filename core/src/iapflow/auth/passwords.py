"""bcrypt password hashes, computed off the event loop (a hash takes ~0.25 s at 12 rounds)."""

from __future__ import annotations

import asyncio

import bcrypt

# Real hashes, one per cost, to compare against when the user does not exist, so that a wrong
# username costs as long as a wrong password and usernames cannot be found by timing.
_dummy_hashes: dict[int, bytes] = {}


async def hash_password(password: str, rounds: int) -> str:
    """The bcrypt hash of ``password`` as text."""
    salt = bcrypt.gensalt(rounds=rounds)
    hashed = await asyncio.to_thread(bcrypt.hashpw, password.encode("utf-8"), salt)
    return hashed.decode("ascii")


async def _dummy_hash(rounds: int) -> bytes:
    if rounds not in _dummy_hashes:
        salt = bcrypt.gensalt(rounds=rounds)
        _dummy_hashes[rounds] = await asyncio.to_thread(bcrypt.hashpw, b"not a password", salt)
    return _dummy_hashes[rounds]


async def check_password(password: str, hashed: str | None, rounds: int) -> bool:
    """True when ``password`` matches ``hashed``; always spends a bcrypt check of ``rounds``
    cost, also when there is no hash (unknown user)."""
    target = hashed.encode("ascii") if hashed else await _dummy_hash(rounds)
    try:
        ok = await asyncio.to_thread(bcrypt.checkpw, password.encode("utf-8"), target)
    except ValueError:  # a malformed stored hash
        return False
    return ok and bool(hashed)
