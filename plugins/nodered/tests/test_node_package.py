"""node-red-iapflow's own tests (``node --test`` in plugins/nodered/node-red-iapflow) against a
real iapflow server started here, with real Node-RED 4.1 from npm: the websocket client, the
storage module, sign-in for the editor, Admin API and HTTP-in endpoints, and the nodes."""

from __future__ import annotations

import asyncio
import os
import shutil
from pathlib import Path
from typing import Any

import pytest

from iapflow.testing import make_test_config, running_server
from iapflow_nodered.install import PACKAGE_DIR, ensure_package

pytestmark = pytest.mark.slow


async def _run(*args: str, cwd: Path, env: dict[str, str] | None = None) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        *args,
        cwd=cwd,
        env=env,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, out.decode(errors="replace")


async def test_node_package_tests_pass(
    tmp_path: Path, mongo_storage: dict[str, Any], node_red_dir: Path
) -> None:
    node, npm = shutil.which("node"), shutil.which("npm")
    assert node is not None and npm is not None  # node_red_dir skipped otherwise
    if not (PACKAGE_DIR / "node_modules" / "ws").exists():
        # scripts/bootstrap --dev runs this; do it here for a checkout that skipped it.
        code, out = await _run(npm, "ci", "--no-audit", "--no-fund", cwd=PACKAGE_DIR)
        assert code == 0, out
    # Node-RED also finds the copy the process runtime installs beside it; keep it current, so
    # both copies are the code under test.
    await ensure_package(node_red_dir)
    config = make_test_config(tmp_path, mongo_storage)
    async with running_server(config) as base:
        env = {
            **os.environ,
            "IAPFLOW_URL": base + "/ws",
            "IAPFLOW_ADMIN_USER": "admin",
            "IAPFLOW_ADMIN_PASSWORD": "admin",
            "NODE_RED_DIR": str(node_red_dir),
        }
        files = sorted(str(path) for path in PACKAGE_DIR.glob("test/*.test.js"))
        assert files
        code, out = await _run(
            node, "--test", "--test-reporter=spec", *files, cwd=PACKAGE_DIR, env=env
        )
    print(out)  # shown with -s, and by pytest when the test fails
    assert code == 0, out
    assert " fail 0" in out, out
