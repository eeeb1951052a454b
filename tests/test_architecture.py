"""The layout holds the architecture (docs/architecture.md), read from the source itself:

- the kernel imports no backend plugin and no built-in capability, and names no command a
  plugin registers;
- backend plugins import only ``iapflow.contracts``, ``errors``, ``ids`` and ``jsonutil``;
- only the secure data layer (and the platform, which wires it) holds the storage backend;
- every built-in capability is one package registered through hooks;
- no module is over 500 lines without the reason written here and in docs/architecture.md.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

from iapflow.builtin import BUILTINS
from iapflow.plugins import Plugins

ROOT = Path(__file__).resolve().parents[1]
CORE = ROOT / "core" / "src" / "iapflow"
BACKENDS = [ROOT / "plugins" / name / "src" for name in ("mongo", "rabbit", "nodered")]

# The kernel: everything in core but the built-in capabilities and the test support.
KERNEL = [
    p
    for p in CORE.rglob("*.py")
    if p.relative_to(CORE).parts[0] not in ("builtin", "testing") and not p.name.endswith("_pb2.py")
]
BACKEND_MAY_IMPORT = ("iapflow.contracts", "iapflow.errors", "iapflow.ids", "iapflow.jsonutil")
LONG_MODULES = {
    "plugins/nodered/src/iapflow_nodered/process.py": (
        "ProcessRuntime is one supervisor of local instances: start, adopt after a restart, "
        "crash back-off, sandbox and API bridge share its per-instance state; what stands on "
        "its own is in instances.py, sandbox.py and install.py"
    ),
}
MAX_LINES = 500


def _tree(path: Path) -> ast.Module:
    return ast.parse(path.read_text("utf-8"), str(path))


def _imports(path: Path) -> Iterator[str]:
    """Every module ``path`` imports, as dotted names (``from a import b`` gives ``a.b``)."""
    for node in ast.walk(_tree(path)):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            yield node.module
            yield from (f"{node.module}.{alias.name}" for alias in node.names)


def _name(path: Path) -> str:
    return str(path.relative_to(ROOT))


def test_the_kernel_imports_no_plugin_and_no_capability() -> None:
    assert len(KERNEL) > 30
    found = []
    for path in KERNEL:
        for module in _imports(path):
            if module.startswith("iapflow_"):
                found.append(f"{_name(path)} imports {module}")
            if module.startswith("iapflow.builtin.") and module != "iapflow.builtin.BUILTINS":
                found.append(f"{_name(path)} imports {module}")
    assert not found, found


def test_the_kernel_names_no_command_a_plugin_registers() -> None:
    commands = set(Plugins(load_entry_points=False).commands().names())
    assert {"query", "signin", "watch", "startagent"} <= commands
    found = []
    for path in KERNEL:
        for node in ast.walk(_tree(path)):
            if isinstance(node, ast.Constant) and node.value in commands:
                found.append(f"{_name(path)}:{node.lineno} names {node.value!r}")
    assert not found, found


def test_backend_plugins_import_only_the_contracts_and_helpers() -> None:
    found = []
    for src in BACKENDS:
        for path in src.rglob("*.py"):
            for module in _imports(path):
                if not module.startswith("iapflow.") or module == "iapflow.hookimpl":
                    continue
                if not module.startswith(BACKEND_MAY_IMPORT):
                    found.append(f"{_name(path)} imports {module}")
    assert not found, found


def test_only_the_secure_data_layer_holds_the_storage_backend() -> None:
    allowed = {CORE / "platform.py"}
    found = []
    for path in CORE.rglob("*.py"):
        part = path.relative_to(CORE).parts[0]
        if part in ("secure", "testing", "contracts") or path in allowed:
            continue
        for node in ast.walk(_tree(path)):
            if isinstance(node, ast.Attribute) and node.attr in ("storage", "_storage"):
                owner = node.value
                if (isinstance(owner, ast.Name) and owner.id == "config") or (
                    isinstance(owner, ast.Attribute) and owner.attr == "config"
                ):
                    continue  # the [storage] config section
                found.append(f"{_name(path)}:{node.lineno} uses .{node.attr}")
    assert not found, found


def test_each_builtin_is_one_package_registered_as_a_plugin() -> None:
    packages = {p.name for p in (CORE / "builtin").iterdir() if (p / "__init__.py").exists()}
    assert {f"iapflow.builtin.{name}" for name in packages} == set(BUILTINS)
    registered = {name for name, _plugin in Plugins(load_entry_points=False).pm.list_name_plugin()}
    assert set(BUILTINS) <= registered


@pytest.mark.parametrize(
    "path",
    [
        p
        for src in (CORE.parent, *BACKENDS, ROOT / "tests" / "plugins" / "hello" / "src")
        for p in src.rglob("*.py")
        if not p.name.endswith("_pb2.py")
    ],
    ids=_name,
)
def test_no_module_is_long_without_a_written_reason(path: Path) -> None:
    lines = len(path.read_text("utf-8").splitlines())
    if lines > MAX_LINES:
        assert _name(path) in LONG_MODULES, f"{_name(path)} has {lines} lines: split it"
        written = " ".join((ROOT / "docs" / "architecture.md").read_text("utf-8").split())
        assert LONG_MODULES[_name(path)].split(":")[0] in written, "say why in architecture.md"
