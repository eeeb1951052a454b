"""The web interface's files ship in the wheel and load: the shell's assets and every built-in
page module match core/pyproject.toml's package-data, and every page module in a package's
``ui`` folder is registered (``register_ui``), so ``/ui/pages/index.js`` imports it."""

from __future__ import annotations

import fnmatch
import tomllib
from pathlib import Path

import iapflow.web
from iapflow.plugins import Plugins
from iapflow.web import index_module

ROOT = Path(__file__).resolve().parents[2]
SRC = ROOT / "core" / "src"
WEB = Path(iapflow.web.__file__).parent
BUILTIN = SRC / "iapflow" / "builtin"


def _package_data() -> dict[str, list[str]]:
    pyproject = tomllib.loads((ROOT / "core" / "pyproject.toml").read_text("utf-8"))
    data: dict[str, list[str]] = pyproject["tool"]["setuptools"]["package-data"]
    return data


def _shipped(path: Path, data: dict[str, list[str]]) -> bool:
    """Whether setuptools puts ``path`` in the wheel: a glob of its package (the nearest
    folder with an ``__init__.py``) or of ``"*"`` matches it."""
    package = path.parent
    while not (package / "__init__.py").exists():
        package = package.parent
    name = package.relative_to(SRC).as_posix().replace("/", ".")
    relative = path.relative_to(package).as_posix()
    globs = [*data.get(name, []), *data.get("*", [])]
    return any(fnmatch.fnmatch(relative, g) for g in globs)


def test_every_asset_and_page_is_package_data() -> None:
    data = _package_data()
    assets = [p for p in WEB.rglob("*") if p.is_file() and p.suffix not in (".py", ".pyc")]
    pages = list(BUILTIN.glob("*/ui/*"))
    assert (WEB / "index.html") in assets and (BUILTIN / "documents/ui/entities.js") in pages
    missing = [p.relative_to(SRC) for p in [*assets, *pages] if not _shipped(p, data)]
    assert not missing, f"not in package-data, so not in the wheel: {missing}"


def test_every_page_module_is_registered_and_imported() -> None:
    packages = Plugins(load_entry_points=False).ui_packages()
    registered = {p.directory / m for p in packages for m in p.modules}
    modules = set(BUILTIN.glob("*/ui/*.js"))
    assert modules == registered
    index = index_module(packages)
    for package in packages:
        for module in package.modules:
            assert f'import "./{package.name}/{module}";' in index
