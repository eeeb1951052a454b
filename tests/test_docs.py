"""The user documentation in docs/ keeps up with the code: hooks, config keys and defaults,
commands, and the hookspec docstrings the hook reference is written from."""

from __future__ import annotations

import inspect
import re
from pathlib import Path
from typing import Any

import pluggy
import pytest
from pydantic import BaseModel

from iapflow import config, hookspecs
from iapflow.plugins import Plugins

DOCS = Path(__file__).resolve().parents[1] / "docs"


def _sections() -> dict[str, type[BaseModel]]:
    """Every config section: the kernel's and the built-in plugins' (``register_config``)."""
    kernel = {name: field.annotation for name, field in config.Config.model_fields.items()}
    owned = dict(Plugins(load_entry_points=False).config_sections().items())
    return {**kernel, **owned}  # type: ignore[dict-item]


SECTIONS = _sections()


def _doc(name: str) -> str:
    return (DOCS / name).read_text(encoding="utf-8")


def _hooks() -> dict[str, Any]:
    """Hook name -> pluggy HookCaller, straight from iapflow.hookspecs."""
    pm = pluggy.PluginManager("iapflow")
    pm.add_hookspecs(hookspecs)
    return {name: caller for name, caller in vars(pm.hook).items() if not name.startswith("_")}


def test_hookspecs_are_found() -> None:
    assert "startup" in _hooks()
    assert len(_hooks()) >= 8


@pytest.mark.parametrize("name", sorted(_hooks()))
def test_every_hook_has_a_heading_in_plugins_md(name: str) -> None:
    assert re.search(rf"^### {re.escape(name)}\s*$", _doc("plugins.md"), re.MULTILINE), (
        f"docs/plugins.md has no '### {name}' section"
    )


@pytest.mark.parametrize("name", sorted(_hooks()))
def test_plugins_md_shows_the_real_signature(name: str) -> None:
    function = _hooks()[name].spec.function
    signature = str(inspect.signature(function)).replace("'", "")
    assert f"def {name}{signature}" in _doc("plugins.md"), f"signature of {name} is {signature}"


@pytest.mark.parametrize("name", sorted(_hooks()))
def test_every_hookspec_documents_its_arguments_and_return(name: str) -> None:
    spec = _hooks()[name].spec
    doc = spec.function.__doc__ or ""
    for arg in spec.argnames:
        assert f":param {arg}:" in doc, f"hookspec {name} does not document :param {arg}:"
    assert re.search(r"^\s*:return", doc, re.MULTILINE), f"hookspec {name} has no :return line"


def _fields() -> list[tuple[str, str]]:
    return [(section, key) for section, model in SECTIONS.items() for key in model.model_fields]


def test_the_plugins_sections_are_found() -> None:
    assert {"server", "storage", "queues", "files", "grpc", "agents"} <= set(SECTIONS)


@pytest.mark.parametrize(("section", "key"), _fields())
def test_every_config_key_is_in_configuration_md(section: str, key: str) -> None:
    assert f"`{key}`" in _doc("configuration.md"), f"{section}.{key} is missing"


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str | Path):
        return f'"{value}"'
    if isinstance(value, list):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    return repr(value)


def _table_rows(text: str, heading: str) -> dict[str, list[str]]:
    """Rows of the first table under ``heading``: key -> cells after the key."""
    start = text.index(heading)
    rows: dict[str, list[str]] = {}
    for line in text[start:].splitlines()[1:]:
        if line.startswith("#"):
            break
        match = re.match(r"^\| `(\w+)` \|(.*)\|\s*$", line)
        if match:
            rows[match.group(1)] = [cell.strip() for cell in match.group(2).split(" | ")]
    return rows


@pytest.mark.parametrize(("section", "key"), _fields())
def test_configuration_md_states_the_real_default(section: str, key: str) -> None:
    rows = _table_rows(_doc("configuration.md"), f"## `[{section}]`")
    assert key in rows, f"no table row for {section}.{key} under ## `[{section}]`"
    field = SECTIONS[section].model_fields[key]
    default = field.get_default(call_default_factory=True)
    assert rows[key][1] == f"`{_toml(default)}`", f"default of {section}.{key} is {default!r}"


def test_every_command_is_in_protocol_json_md() -> None:
    text = _doc("protocol-json.md")
    names = Plugins(load_entry_points=False).commands().names()
    assert "signin" in names
    missing = [name for name in names if f"`{name}`" not in text]
    assert not missing, f"docs/protocol-json.md does not mention {missing}"


def test_doc_links_point_at_existing_pages() -> None:
    for page in DOCS.glob("*.md"):
        for target in re.findall(r"\]\(([\w-]+\.md)(?:#[\w-]+)?\)", page.read_text("utf-8")):
            assert (DOCS / target).exists(), f"{page.name} links to missing {target}"


def _threat_model_tests() -> list[tuple[str, str]]:
    """``(file, test)`` for every test the threat model in security.md names; a name without
    a file of its own belongs to the last file named before it in the same cell."""
    text = _doc("security.md").split("## Threat model", 1)[1]
    found = []
    for row in re.findall(r"^\|(.*)\|\s*$", text, re.MULTILINE):
        current = ""
        for ref in re.findall(r"`([^`]*test_\w+)`", row):
            path, _, name = ref.rpartition("::")
            if path:
                current = path if "/" in path else f"tests/security/{path}"
            found.append((current, name))
    return found


def test_the_threat_model_names_tests() -> None:
    assert len(_threat_model_tests()) >= 30


@pytest.mark.parametrize(("path", "name"), _threat_model_tests())
def test_every_test_the_threat_model_names_exists(path: str, name: str) -> None:
    assert path, f"{name}: no test file named before it in its row"
    source = (DOCS.parent / path).read_text(encoding="utf-8")
    assert re.search(rf"^(async )?def {name}\(", source, re.MULTILINE), f"{path}::{name}"
