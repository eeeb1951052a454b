"""The web interface's files ship in the wheel: every asset matches core/pyproject.toml's
package-data for iapflow.web, and every page module is imported by pages/index.js."""

from __future__ import annotations

import fnmatch
import re
import tomllib
from pathlib import Path

import iapflow.web

ROOT = Path(__file__).resolve().parents[2]
WEB = Path(iapflow.web.__file__).parent


def test_every_asset_is_package_data() -> None:
    pyproject = tomllib.loads((ROOT / "core" / "pyproject.toml").read_text("utf-8"))
    globs = pyproject["tool"]["setuptools"]["package-data"]["iapflow.web"]
    assets = [
        p.relative_to(WEB).as_posix()
        for p in WEB.rglob("*")
        if p.is_file() and p.suffix not in (".py", ".pyc")
    ]
    assert "index.html" in assets and "pages/index.js" in assets
    missing = [a for a in assets if not any(fnmatch.fnmatch(a, g) for g in globs)]
    assert not missing, f"not in package-data, so not in the wheel: {missing}"


def test_every_page_module_is_listed_in_pages_index() -> None:
    listed = set(
        re.findall(r'^import "\./([\w-]+\.js)";', (WEB / "pages" / "index.js").read_text(), re.M)
    )
    modules = {p.name for p in (WEB / "pages").glob("*.js")} - {"index.js"}
    assert modules == listed
