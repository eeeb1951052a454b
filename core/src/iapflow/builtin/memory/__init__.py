"""Built-in plugin: the in-process broker, messaging backend ``memory`` (the default)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from iapflow import hookimpl
from iapflow.builtin.memory.broker import build_memory_broker


@hookimpl
def register_brokers(register: Callable[[str, Any], None]) -> None:
    """Provide messaging backend ``memory``."""
    register("memory", build_memory_broker)
