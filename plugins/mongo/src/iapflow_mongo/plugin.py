"""The plugin entry point: registers the ``mongo`` storage backend."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from iapflow import hookimpl
from iapflow_mongo.storage import build_storage


@hookimpl
def register_storage(register: Callable[[str, Any], None]) -> None:
    """Provide storage backend ``mongo`` (``url = "embedded"`` or a ``mongodb://`` URL)."""
    register("mongo", build_storage)
