"""``[queues]``: the section of the queues package."""

from __future__ import annotations

from pydantic import Field

from iapflow.config import Section


class QueuesConfig(Section):
    """``[queues]``: the queue commands' policy, whatever the broker."""

    default_expiration_ms: int = Field(60000, ge=1)
    requeue_delay_seconds: float = Field(1.0, ge=0)
    prefetch: int = Field(25, ge=1, le=65535)
    sender_needs_invoke: bool = False
    consumer_needs_update: bool = False
    lookup_cache_seconds: float = Field(5.0, ge=0)
