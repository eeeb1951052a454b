"""The plugin entry point: registers the ``rabbit`` messaging backend."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from iapflow import hookimpl
from iapflow_rabbit.broker import build_broker


@hookimpl
def register_brokers(register: Callable[[str, Any], None]) -> None:
    """Provide messaging backend ``rabbit`` (``amqp_url`` names the RabbitMQ server)."""
    register("rabbit", build_broker)
