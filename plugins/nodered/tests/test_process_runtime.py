"""The process runtime on the real Node-RED 4.1 from npm: the contract suite, and what only a
process runtime has to prove (port and data freed on delete, a busy port refused, crash restart,
adoption by the next server, clear errors when Node.js is missing)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from iapflow.contracts.agents import AgentRuntimeError, InstanceSpec, RuntimeContext
from iapflow.errors import ConfigError
from iapflow.testing.agent_runtime_contract import AgentRuntimeContract
from iapflow_nodered.instances import group_members, pid_alive, port_free, reap
from iapflow_nodered.process import ProcessRuntime, build_process

pytestmark = pytest.mark.slow


def _options(node_red_dir: Path, **extra: Any) -> dict[str, Any]:
    return {
        "install_dir": str(node_red_dir),
        "base_port": 18800,
        "restart_backoff_seconds": 0.2,
        "stop_timeout_seconds": 5.0,
        **extra,
    }


@pytest.fixture
async def process_runtime(tmp_path: Path, node_red_dir: Path) -> AsyncIterator[ProcessRuntime]:
    runtime = build_process(_options(node_red_dir), RuntimeContext(tmp_path))
    await runtime.start()
    yield runtime
    for status in await runtime.list():
        await runtime.remove(status.name)
    await runtime.stop()


class TestProcessRuntime(AgentRuntimeContract):
    ready_within = 60.0

    @pytest.fixture
    async def runtime(self, process_runtime: ProcessRuntime) -> ProcessRuntime:
        return process_runtime


def _node_process(group: int) -> int:
    """The Node.js process of an instance: in its process group, running node (the group's
    leader is bubblewrap when the instance runs in a sandbox)."""
    for pid in group_members(group):
        with contextlib.suppress(OSError):
            if os.path.basename(os.readlink(f"/proc/{pid}/exe")) == "node":
                return pid
    raise AssertionError(f"no node process in process group {group}")


def _environ(pid: int) -> list[bytes]:
    return Path(f"/proc/{_node_process(pid)}/environ").read_bytes().split(b"\0")


def _name() -> str:
    return f"proc{uuid.uuid4().hex[:8]}"


async def test_editor_answers_and_delete_frees_process_port_and_data(
    process_runtime: ProcessRuntime,
) -> None:
    name = _name()
    hostile = {"NODE_OPTIONS": "--max-old-space-size=99999", "api_ws_url": "ws://evil:1/ws"}
    await process_runtime.ensure(InstanceSpec(name=name, memory_mb=200, env=hostile))
    status = await process_runtime.wait_ready(name, 60)
    assert status.pid is not None and status.port is not None
    async with httpx.AsyncClient() as http:
        page = await http.get(status.url)
    assert page.status_code == 200
    assert "Node-RED" in page.text
    folder = process_runtime.instances_dir / name
    assert (folder / "state.json").exists()
    environ = _environ(status.pid)
    assert b"NODE_OPTIONS=--max-old-space-size=200" in environ
    assert not [line for line in environ if b"evil" in line or b"99999" in line]
    assert "Server now running" in await process_runtime.logs(name, 200)
    assert await process_runtime.remove(name)
    assert not pid_alive(status.pid, str(folder))
    assert port_free("127.0.0.1", status.port)
    assert not folder.exists()


async def test_a_crashed_instance_is_restarted(process_runtime: ProcessRuntime) -> None:
    name = _name()
    await process_runtime.ensure(InstanceSpec(name=name))
    first = await process_runtime.wait_ready(name, 60)
    assert first.pid is not None
    os.kill(_node_process(first.pid), signal.SIGKILL)  # Node-RED dies, as in a crash
    for _ in range(300):
        status = await process_runtime.status(name)
        if status.pid not in (None, first.pid):
            break
        await asyncio.sleep(0.1)
    again = await process_runtime.wait_ready(name, 60)
    assert again.pid != first.pid
    assert again.restarts == 1
    assert "exited unexpectedly" in await process_runtime.logs(name, 500)


async def _kill_and_wait_for_exit(runtime: ProcessRuntime, name: str, pid: int) -> None:
    os.kill(pid, signal.SIGKILL)
    for _ in range(300):
        if (await runtime.status(name)).pid != pid:
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"the runtime still reports pid {pid} after SIGKILL")


async def test_a_crash_loop_stops_at_the_restart_limit(tmp_path: Path, node_red_dir: Path) -> None:
    runtime = build_process(_options(node_red_dir, max_restarts=1), RuntimeContext(tmp_path))
    await runtime.start()
    name = _name()
    try:
        await runtime.ensure(InstanceSpec(name=name))
        first = await runtime.wait_ready(name, 60)
        assert first.pid is not None
        await _kill_and_wait_for_exit(runtime, name, first.pid)
        second = await runtime.wait_ready(name, 60)
        assert second.pid not in (None, first.pid) and second.restarts == 1
        assert second.pid is not None
        await _kill_and_wait_for_exit(runtime, name, second.pid)
        for _ in range(100):
            status = await runtime.status(name)
            if status.state == "crashed":
                break
            await asyncio.sleep(0.1)
        assert status.state == "crashed", status
        assert status.pid is None and status.restarts == 1
        assert "crashed 2 times within 300 s; not restarted" in status.reason
        await asyncio.sleep(1.0)  # longer than the back-off: still no new process
        assert (await runtime.status(name)).pid is None
        again = await runtime.start_instance(name)  # a user's start clears the crash
        assert again.state != "crashed"
        assert (await runtime.wait_ready(name, 60)).pid is not None
    finally:
        await runtime.remove(name)
        await runtime.stop()


async def test_a_busy_port_is_refused_with_its_number(
    process_runtime: ProcessRuntime,
) -> None:
    name = _name()
    await process_runtime.ensure(InstanceSpec(name=name))
    status = await process_runtime.wait_ready(name, 60)
    await process_runtime.stop_instance(name)
    assert status.port is not None
    with socket.socket() as squatter:
        squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        squatter.bind(("127.0.0.1", status.port))
        squatter.listen()
        with pytest.raises(AgentRuntimeError, match=rf"port {status.port} .* is busy"):
            await process_runtime.start_instance(name)


async def test_the_next_runtime_adopts_running_instances(
    tmp_path: Path, node_red_dir: Path
) -> None:
    first = build_process(_options(node_red_dir), RuntimeContext(tmp_path))
    await first.start()
    name = _name()
    try:
        await first.ensure(InstanceSpec(name=name, owner_id="owner1"))
        before = await first.wait_ready(name, 60)
        await first.stop()
        folder = str(first.instances_dir / name)
        assert before.pid is not None and pid_alive(before.pid, folder)
        second = build_process(_options(node_red_dir), RuntimeContext(tmp_path))
        await second.start()
        try:
            adopted = await second.wait_ready(name, 10)
            assert adopted.pid == before.pid
            assert adopted.owner_id == "owner1"
            await second.stop_instance(name)
            assert not pid_alive(before.pid, folder)
        finally:
            await second.remove(name)
            await second.stop()
    finally:
        await first.remove(name)


async def test_reap_kills_instances_a_stopped_runtime_left_running(
    tmp_path: Path, node_red_dir: Path
) -> None:
    runtime = build_process(_options(node_red_dir), RuntimeContext(tmp_path))
    await runtime.start()
    name = _name()
    await runtime.ensure(InstanceSpec(name=name))
    status = await runtime.wait_ready(name, 60)
    await runtime.stop()  # leaves the instance running, for the next server to adopt
    assert status.pid is not None
    folder = str(runtime.instances_dir / name)
    assert pid_alive(status.pid, folder)
    assert reap(tmp_path) == [status.pid]
    for _ in range(50):
        if not pid_alive(status.pid, folder):
            break
        await asyncio.sleep(0.1)
    assert not pid_alive(status.pid, folder)
    assert reap(tmp_path) == []


async def test_node_missing_is_a_clear_error(tmp_path: Path) -> None:
    runtime = build_process({"node": "no-such-node-binary"}, RuntimeContext(tmp_path))
    await runtime.start()
    try:
        with pytest.raises(AgentRuntimeError, match=r"Node\.js is missing"):
            await runtime.ensure(InstanceSpec(name="x"))
    finally:
        await runtime.stop()


def test_bad_options_name_their_key(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"agents\.heap_mb"):
        build_process({"heap_mb": "lots"}, RuntimeContext(tmp_path))
    with pytest.raises(ConfigError, match=r"agents\.colour"):
        build_process({"colour": 1}, RuntimeContext(tmp_path))
