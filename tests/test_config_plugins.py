"""Configuration loading and the plugin system."""

from __future__ import annotations

import re
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from typing import Any

import pluggy
import pytest

from iapflow import hookimpl, hookspecs
from iapflow.builtin import BUILTINS
from iapflow.config import load_config
from iapflow.errors import ConfigError, PluginError, StartupError
from iapflow.platform import Platform
from iapflow.plugins import Plugins


def test_defaults_without_a_file() -> None:
    config = load_config(None, environ={})
    assert config.server.port == 3000
    assert config.storage.backend == "mongo"
    assert config.storage.options() == {}


def test_toml_file_and_environment_overrides(tmp_path: Path) -> None:
    file = tmp_path / "iapflow.toml"
    file.write_text('[server]\nport = 4000\n[storage]\nurl = "mongodb://db:27017"\n')
    config = load_config(
        file,
        environ={
            "IAPFLOW_SERVER__PORT": "4001",
            "IAPFLOW_AUTH__BCRYPT_ROUNDS": "10",
            "IAPFLOW_ADMIN_USERNAME": "root2",
            "IAPFLOW_PLUGINS__BLOCKED": '["x"]',
        },
    )
    assert config.server.port == 4001
    assert config.auth.bcrypt_rounds == 10
    assert config.auth.admin_username == "root2"
    assert config.plugins.blocked == ["x"]
    assert config.storage.options() == {"url": "mongodb://db:27017"}


@pytest.mark.parametrize(
    ("toml", "key", "reason"),
    [
        ("[server]\nport = 70000\n", "server.port", "less than or equal to 65535"),
        ("[server]\nprot = 1\n", "server.prot", "unknown key"),
        ('[auth]\nbcrypt_rounds = "many"\n', "auth.bcrypt_rounds", "valid integer"),
        (
            "[websocket]\npackage_size = 1\n",
            "websocket.package_size",
            "greater than or equal to 100",
        ),
        ("[server]\nprot = 1\n", "server.prot", "did you mean 'port'?"),
        ("[nosuch]\nx = 1\n", "nosuch", "unknown section"),
        ("[queus]\nprefetch = 1\n", "queus", "unknown section (did you mean 'queues'?)"),
        ("[queues]\nprefetc = 1\n", "queues.prefetc", "unknown key (did you mean 'prefetch'?)"),
        ("[queues]\nprefetch = 0\n", "queues.prefetch", "greater than or equal to 1"),
        ("queues = 3\n", "queues", "must be a table"),
        ("[grpc]\nport = -1\n", "grpc.port", "greater than or equal to 0"),
    ],
)
def test_bad_values_name_the_key_and_reason(
    tmp_path: Path, toml: str, key: str, reason: str
) -> None:
    file = tmp_path / "bad.toml"
    file.write_text(toml)
    with pytest.raises(ConfigError) as error:
        # the kernel's sections are checked on loading, the plugins' once plugins are known
        Platform(load_config(file, environ={}), Plugins(load_entry_points=False))
    assert error.value.key == key
    assert reason in error.value.reason


def test_broken_toml_is_reported(tmp_path: Path) -> None:
    file = tmp_path / "broken.toml"
    file.write_text("[server\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(file, environ={})


def test_configured_but_missing_backend_says_what_to_install(tmp_path: Path) -> None:
    config = load_config(
        None,
        environ={},
        overrides={"storage": {"backend": "rabbit"}, "server": {"data_dir": str(tmp_path)}},
    )
    with pytest.raises(PluginError, match="pip install iapflow-rabbit"):
        Platform(config, Plugins(load_entry_points=False)).prepare()


def test_storage_options_are_validated_by_the_plugin(tmp_path: Path) -> None:
    for options, key in (
        ({"url": "http://x"}, "storage.url"),
        ({"colour": 1}, "storage.colour"),
        ({"database": "a/b"}, "storage.database"),
    ):
        config = load_config(
            None, environ={}, overrides={"storage": options, "server": {"data_dir": str(tmp_path)}}
        )
        with pytest.raises(ConfigError) as error:
            Platform(config).prepare()
        assert error.value.key == key


def test_builtins_are_plugins_and_mongo_is_found_by_entry_point() -> None:
    infos = {info.name: info for info in Plugins().info({"storage": "mongo"})}
    assert set(BUILTINS) <= set(infos)
    assert all(infos[name].builtin for name in BUILTINS)
    assert all(infos[name].dist == "iapflow" for name in BUILTINS)
    mongo = infos["mongo"]
    assert mongo.hooks == ["register_storage"]
    assert not mongo.builtin
    assert (mongo.dist, mongo.version) == ("iapflow-mongo", metadata.version("iapflow-mongo"))
    assert mongo.provides == {"storage": ["mongo"]}
    assert mongo.selected == {"storage": "mongo"}
    assert infos["iapflow.builtin.memory"].provides == {"messaging": ["memory"]}
    assert infos["iapflow.builtin.memory"].selected == {}


def test_blocked_plugins_do_not_load() -> None:
    names = {info.name for info in Plugins(blocked=["mongo"]).info()}
    assert "mongo" not in names


def test_misspelled_hook_fails_loudly() -> None:
    class Typo:
        @hookimpl
        def register_storag(self, register: Callable[..., None]) -> None:
            """A hook name that does not exist."""

    plugins = Plugins(load_entry_points=False)
    with pytest.raises(pluggy.PluginValidationError):
        plugins.register(Typo(), name="typo")


def test_two_plugins_registering_one_backend_name_fail_naming_both() -> None:
    class One:
        @hookimpl
        def register_storage(self, register: Callable[..., None]) -> None:
            register("mongo", object())

    plugins = Plugins()
    plugins.register(One(), name="impostor-store")
    with pytest.raises(StartupError, match=r"'mongo'.*'impostor-store'|'impostor-store'.*'mongo'"):
        plugins.storage_backends()


def test_failing_observer_is_logged_not_raised(caplog: pytest.LogCaptureFixture) -> None:
    import asyncio

    class Broken:
        @hookimpl
        def on_signin(self, platform: Any, event: dict[str, Any]) -> None:
            raise RuntimeError("observer bug")

    plugins = Plugins(load_entry_points=False)
    plugins.register(Broken(), name="broken")
    asyncio.run(plugins.on_signin(None, {"success": True}))  # type: ignore[arg-type]
    assert "observer bug" in caplog.text


def test_hook_names_follow_the_naming_rule() -> None:
    names = [n for n in dir(hookspecs) if hasattr(getattr(hookspecs, n), "iapflow_spec")]
    assert names
    for name in names:
        assert re.match(r"^(register_\w+|prepare|startup|shutdown|wrap_\w+|on_\w+)$", name), name
