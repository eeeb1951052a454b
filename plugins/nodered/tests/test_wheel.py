"""The built iapflow-nodered wheel carries the node-red-iapflow npm package, file for file as
npm packs it, and an install from that wheel finds it without a checkout."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from iapflow_nodered.install import PACKAGE_DIR, package_hash

pytestmark = pytest.mark.slow

PLUGIN = Path(__file__).resolve().parents[1]


def test_the_wheel_ships_node_red_iapflow(tmp_path: Path) -> None:
    # Built from a copy: pip builds a local folder in place, leaving build/ in the checkout.
    source = tmp_path / "source"
    shutil.copytree(
        PLUGIN, source, ignore=shutil.ignore_patterns("node_modules", "build", "*.egg-info")
    )
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(tmp_path), str(source)],
        check=True,
        timeout=300,
    )
    [wheel] = tmp_path.glob("iapflow_nodered-*.whl")
    site = tmp_path / "site"
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(site)
    shipped = site / "iapflow_nodered" / "node_red_iapflow"
    assert (shipped / "package.json").is_file() and (shipped / "nodes" / "api.html").is_file()
    assert package_hash(shipped) == package_hash(PACKAGE_DIR)
    assert not (shipped / "node_modules").exists() and not (shipped / "test").exists()
    # Installed from the wheel (first on the path), the plugin uses its own copy.
    found = subprocess.run(
        [sys.executable, "-c", "from iapflow_nodered import install; print(install.PACKAGE_DIR)"],
        env={**os.environ, "PYTHONPATH": str(site)},
        capture_output=True,
        text=True,
        check=True,
    )
    assert Path(found.stdout.strip()) == shipped.resolve()
