"""pytest plugin (entry point ``pytest11``): one MongoDB-compatible server for the whole test
session.

``mongo_uri`` is the session's server: the embedded server with ``--storage-path :memory:``,
or the server named by the ``MONGO_URI`` environment variable (e.g. a real mongod replica set).
``mongo_storage`` (and ``iapflow_storage``, what iapflow's own pytest plugin serves on) gives each
test its own database name on it.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from iapflow_mongo.embedded import EmbeddedServer


@pytest.fixture(scope="session")
def mongo_uri() -> Iterator[str]:
    """URI of the session's MongoDB-compatible server."""
    configured = os.environ.get("MONGO_URI")
    if configured:
        yield configured
        return
    server = EmbeddedServer(":memory:", sync_on_commit=False)
    server.start()
    try:
        yield server.uri
    finally:
        server.stop()


@pytest.fixture
def mongo_storage(mongo_uri: str) -> dict[str, Any]:
    """``[storage]`` options for a fresh database on the session's server."""
    return {"backend": "mongo", "url": mongo_uri, "database": "t" + uuid.uuid4().hex[:12]}


@pytest.fixture
def iapflow_storage(mongo_storage: dict[str, Any]) -> dict[str, Any]:
    """What iapflow's pytest plugin serves on: a fresh database here."""
    return mongo_storage
