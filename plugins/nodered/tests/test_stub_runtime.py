"""The stub runtime passes the agent runtime contract, and fails on purpose when named so."""

from __future__ import annotations

from pathlib import Path

import pytest

from iapflow.contracts.agents import AgentRuntimeError, InstanceSpec, RuntimeContext
from iapflow.errors import ConfigError
from iapflow.testing.agent_runtime_contract import AgentRuntimeContract
from iapflow_nodered.stub import StubRuntime, build_stub


class TestStubRuntime(AgentRuntimeContract):
    ready_within = 5.0

    @pytest.fixture
    async def runtime(self, tmp_path: Path) -> StubRuntime:
        runtime = build_stub({"start_delay": 0.05}, RuntimeContext(tmp_path))
        await runtime.start()
        return runtime


async def test_a_name_starting_stubfailstart_crashes(tmp_path: Path) -> None:
    runtime = build_stub({}, RuntimeContext(tmp_path))
    await runtime.ensure(InstanceSpec(name="stubfailstartx"))
    with pytest.raises(AgentRuntimeError, match="crashed"):
        await runtime.wait_ready("stubfailstartx", 1.0)


def test_unknown_option_names_its_key(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"agents\.colour"):
        build_stub({"colour": "red"}, RuntimeContext(tmp_path))


def test_a_runtime_nobody_provides_stops_startup_with_what_to_install(tmp_path: Path) -> None:
    from iapflow.config import build_config
    from iapflow.errors import PluginError
    from iapflow.platform import Platform

    config = build_config({"server": {"data_dir": str(tmp_path)}, "agents": {"runtime": "x"}})
    with pytest.raises(PluginError, match=r"agent backend 'x' is not installed.*stub"):
        Platform(config).prepare()
