"""Fixtures for tests of the assembled system: short names for the fixtures of iapflow's pytest
plugin (:mod:`iapflow.testing.plugin`), which serves every installed plugin on a fresh database
of the session's MongoDB-compatible server (:mod:`iapflow_mongo.testing`)."""

from __future__ import annotations

from typing import Any

import pytest

from iapflow.testing import JsonClient
from iapflow.testing.plugin import Connect, Served


@pytest.fixture
def config_overrides() -> dict[str, dict[str, Any]]:
    """Per-module config sections to merge over the test defaults (override this fixture)."""
    return {}


@pytest.fixture
def iapflow_config_overrides(config_overrides: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The suite's modules override ``config_overrides``."""
    return config_overrides


@pytest.fixture
def server(iapflow_server: Served) -> str:
    """A running server; its JSON websocket URL."""
    return iapflow_server.url


@pytest.fixture
def connect(iapflow_connect: Connect) -> Connect:
    """Open more (unsigned) clients to the server; all are closed at the end of the test."""
    return iapflow_connect


@pytest.fixture
def admin(iapflow_admin: JsonClient) -> JsonClient:
    """A client signed in as the configured admin."""
    return iapflow_admin


@pytest.fixture
def make_user(iapflow_user: Connect) -> Connect:
    """Create a user through the API (as admin) and return a client signed in as it."""
    return iapflow_user
