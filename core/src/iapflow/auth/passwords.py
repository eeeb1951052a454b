"""bcrypt password hashes, computed off the event loop (a hash takes ~0.25 s at 12 rounds)."""

from __future__ import annotations

import asyncio

import bcrypt

# A real hash to compare against when the user does not exist, so that a wrong username
# costs as long as a wrong password and usernames cannot be found by timing.
_DUMMY_HASH = bcrypt.hashpw(b"not a password", bcrypt.gensalt(rounds=4))


async def hash_password(password: str, rounds: int) -> str:
    """The bcrypt hash of ``password`` as text."""
    salt = bcrypt.gensalt(rounds=rounds)
    hashed = await asyncio.to_thread(bcrypt.hashpw, password.encode("utf-8"), salt)
    return hashed.decode("ascii")


async def check_password(password: str, hashed: str | None) -> bool:
    """True when ``password`` matches ``hashed``; always spends a bcrypt check."""
    target = hashed.encode("ascii") if hashed else _DUMMY_HASH
    try:
        ok = await asyncio.to_thread(bcrypt.checkpw, password.encode("utf-8"), target)
    except ValueError:  # a malformed stored hash
        return False
    return ok and bool(hashed)
