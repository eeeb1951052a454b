"""Fixtures for iapflow-nodered's tests: Node-RED from npm, installed once into pytest's cache.

The first run on a fresh machine installs ``node-red@4.1`` with npm (about 15 s); later runs
reuse ``.pytest_cache/d/iapflow-nodered/``. Tests that need Node-RED skip, saying why, when
Node.js or npm is missing.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from iapflow_nodered.install import DEFAULT_VERSION, ensure_installed
from iapflow_nodered.instances import reap


@pytest.fixture(scope="session")
async def node_red_dir(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """A folder with Node-RED installed (``node_modules/node-red/red.js``)."""
    if shutil.which("node") is None or shutil.which("npm") is None:
        pytest.skip("Node.js and npm are needed to run Node-RED (apt-get install nodejs npm)")
    cache = request.config.cache
    # Without pytest's cache (-p no:cacheprovider) install into this session's temp folder.
    parent = cache.mkdir("iapflow-nodered") if cache else tmp_path_factory.mktemp("nodered")
    folder = parent / f"node-red-{DEFAULT_VERSION}"
    await ensure_installed(folder.absolute())
    return folder.absolute()


@pytest.fixture(autouse=True)
def reap_instances(tmp_path: Path) -> Iterator[None]:
    """After each test, kill the Node-RED processes a process runtime left under its temporary
    folder (a test that fails half-way never deletes its instance, and instances outlive
    their server by design)."""
    yield
    for folder in tmp_path.rglob("nodered"):
        if (folder / "instances").is_dir():
            reap(folder.parent)
