"""The agent runtime contract suite: what every runtime must do, as the Node-RED commands use it.

Subclass :class:`AgentRuntimeContract` in the runtime's tests and provide a ``runtime`` fixture
that yields a started :class:`iapflow.contracts.agents.AgentRuntime`::

    class TestMyRuntime(AgentRuntimeContract):
        ready_within = 60.0

        @pytest.fixture
        async def runtime(self): ...

Instance names are unique per test, and every test removes what it created.
"""

from __future__ import annotations

import uuid

import pytest

from iapflow.contracts.agents import AgentRuntime, AgentRuntimeError, InstanceNotFound, InstanceSpec


def _name() -> str:
    return f"contract{uuid.uuid4().hex[:10]}"


class AgentRuntimeContract:
    """Behaviour every agent runtime shares."""

    ready_within = 30.0
    """Seconds an instance may take to answer after it was started."""

    async def test_ensure_starts_an_instance_that_becomes_ready(
        self, runtime: AgentRuntime
    ) -> None:
        name = _name()
        try:
            status = await runtime.ensure(InstanceSpec(name=name, owner_id="u1"))
            assert status.name == name
            assert status.state in ("installing", "starting", "running")
            ready = await runtime.wait_ready(name, self.ready_within)
            assert ready.state == "running"
            assert ready.url
            assert ready.owner_id == "u1"
        finally:
            await runtime.remove(name)

    async def test_ensure_twice_keeps_one_instance(self, runtime: AgentRuntime) -> None:
        name = _name()
        try:
            await runtime.ensure(InstanceSpec(name=name))
            await runtime.wait_ready(name, self.ready_within)
            again = await runtime.ensure(InstanceSpec(name=name))
            assert again.state == "running"
            assert [s.name for s in await runtime.list()].count(name) == 1
        finally:
            await runtime.remove(name)

    async def test_stop_then_start(self, runtime: AgentRuntime) -> None:
        name = _name()
        try:
            await runtime.ensure(InstanceSpec(name=name))
            await runtime.wait_ready(name, self.ready_within)
            stopped = await runtime.stop_instance(name)
            assert stopped.state == "stopped"
            assert (await runtime.status(name)).state == "stopped"
            with pytest.raises(AgentRuntimeError):
                await runtime.wait_ready(name, 1.0)
            await runtime.start_instance(name)
            assert (await runtime.wait_ready(name, self.ready_within)).state == "running"
        finally:
            await runtime.remove(name)

    async def test_restart_comes_back(self, runtime: AgentRuntime) -> None:
        name = _name()
        try:
            await runtime.ensure(InstanceSpec(name=name))
            await runtime.wait_ready(name, self.ready_within)
            await runtime.restart(name)
            status = await runtime.wait_ready(name, self.ready_within)
            assert status.state == "running"
        finally:
            await runtime.remove(name)

    async def test_logs_are_text(self, runtime: AgentRuntime) -> None:
        name = _name()
        try:
            await runtime.ensure(InstanceSpec(name=name))
            await runtime.wait_ready(name, self.ready_within)
            text = await runtime.logs(name, 50)
            assert isinstance(text, str)
            assert text.strip()
            assert len(text.splitlines()) <= 50
        finally:
            await runtime.remove(name)

    async def test_remove_forgets_the_instance(self, runtime: AgentRuntime) -> None:
        name = _name()
        await runtime.ensure(InstanceSpec(name=name))
        assert await runtime.remove(name) is True
        assert (await runtime.status(name)).state == "absent"
        assert name not in [s.name for s in await runtime.list()]
        assert await runtime.remove(name) is False

    async def test_unknown_instance(self, runtime: AgentRuntime) -> None:
        name = _name()
        assert (await runtime.status(name)).state == "absent"
        for call in (runtime.stop_instance, runtime.start_instance, runtime.restart):
            with pytest.raises(InstanceNotFound):
                await call(name)
        with pytest.raises(InstanceNotFound):
            await runtime.logs(name)

    async def test_node_labels_is_a_mapping_or_none(self, runtime: AgentRuntime) -> None:
        labels = await runtime.node_labels()
        assert labels is None or isinstance(labels, dict)
