"""Document ids: 24 hex characters laid out like a MongoDB ObjectId, stored as strings.

OpenFlow stores ids as strings too, so its data moves over unchanged.
"""

from __future__ import annotations

import hashlib
import itertools
import os
import threading
import time

_process_random = os.urandom(5)
_counter = itertools.count(int.from_bytes(os.urandom(3), "big"))
_lock = threading.Lock()


def new_id() -> str:
    """Return a new unique id: 4 bytes of seconds, 5 random bytes per process, a 3-byte counter."""
    with _lock:
        count = next(_counter) & 0xFFFFFF
    raw = int(time.time()).to_bytes(4, "big") + _process_random + count.to_bytes(3, "big")
    return raw.hex()


def name_id(kind: str, name: str) -> str:
    """The id of the one document that claims ``name`` for ``kind`` (an ``mq`` queue, exchange
    or work item queue): the same on every server, so a store's unique ``_id`` settles a race
    between API replicas creating the same name."""
    return hashlib.sha256(f"{kind}\0{name}".encode()).hexdigest()[:24]


def is_id(value: object) -> bool:
    """True when ``value`` is a string of 24 hex digits."""
    if not isinstance(value, str) or len(value) != 24:
        return False
    try:
        int(value, 16)
    except ValueError:
        return False
    return True
