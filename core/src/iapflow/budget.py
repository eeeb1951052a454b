"""The server-wide budget for unfinished incoming messages.

A client may send a long message in pieces (JSON ``count``/``index``, a protobuf envelope across
websocket frames, an upload in ``stream`` envelopes); the server holds the pieces until the
message is whole. Each connection has its own limit (small before sign-in), and all
connections together draw on one budget of ``[websocket] max_pending_bytes``: when it is spent,
the message that would go over it is refused (the newest offender), never the server.
"""

from __future__ import annotations


class BufferBudget:
    """Bytes held for unfinished messages by every connection of one server."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0

    def take(self, count: int) -> bool:
        """Reserve ``count`` bytes; False (nothing reserved) when that would pass the limit."""
        if count < 0 or self.used + count > self.limit:
            return False
        self.used += count
        return True

    def give(self, count: int) -> None:
        """Return ``count`` bytes reserved before."""
        self.used = max(self.used - count, 0)


BUSY = (
    "the server is holding too many unfinished messages right now (its [websocket] "
    "max_pending_bytes); send this message again later"
)
