"""The iapflow command, run as a user would: subprocesses on the embedded store."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from iapflow.testing import JsonClient, ReplyError, make_test_config, running_server

IAPFLOW = [sys.executable, "-m", "iapflow.cli"]


def run(
    *args: str, env: dict[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*IAPFLOW, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(port: int, process: subprocess.Popen[bytes], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, "iapflow serve exited while starting"
        try:
            with socket.create_connection(("127.0.0.1", port), 0.2):
                return
        except OSError:
            time.sleep(0.1)
    raise AssertionError(f"port {port} never opened")


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    return (
        Path(f"/proc/{pid}").exists()
        and "zombie" not in Path(f"/proc/{pid}/status").read_text().lower()
    )


def test_version() -> None:
    result = run("--version")
    assert result.returncode == 0
    assert result.stdout.startswith("iapflow ")


def test_plugins_lists_builtins_and_mongo() -> None:
    result = run("plugins")
    assert result.returncode == 0
    assert re.search(r"^iapflow.builtin.documents\s+iapflow 0\.\S+\s+built-in", result.stdout, re.M)
    assert re.search(
        r"^mongo\s+iapflow-mongo \S+\s+installed\s+storage mongo\*$", result.stdout, re.M
    )
    assert re.search(r"^iapflow.builtin.memory .* messaging memory\*$", result.stdout, re.M)
    assert re.search(r"^rabbit .* messaging rabbit$", result.stdout, re.M)
    assert re.search(r"^\s+hooks: register_storage$", result.stdout, re.M)


def test_bad_config_fails_with_key_and_reason(tmp_path: Path) -> None:
    config = tmp_path / "bad.toml"
    config.write_text("[server]\nport = -1\n")
    result = run("serve", "--config", str(config))
    assert result.returncode == 2
    assert "config server.port" in result.stderr and "greater than or equal to 0" in result.stderr


def test_missing_plugin_fails_with_pip_line(tmp_path: Path) -> None:
    config = tmp_path / "rabbit.toml"
    config.write_text('[storage]\nbackend = "rabbit"\n')
    result = run("serve", "--config", str(config), "--data-dir", str(tmp_path))
    assert result.returncode == 2
    assert "pip install iapflow-rabbit" in result.stderr


async def signin(port: int, username: str, password: str) -> dict[str, Any]:
    async with JsonClient(f"ws://127.0.0.1:{port}/ws") as client:
        return await client.signin(username, password)


@pytest.mark.slow
def test_user_add_serve_crash_and_restart_on_the_embedded_store(tmp_path: Path) -> None:
    data = tmp_path / "data"
    added = run("user", "add", "Boss", "--password", "pw", "--admin", "--data-dir", str(data))
    assert added.returncode == 0, added.stderr
    assert "user boss (admin) saved" in added.stdout

    port = free_port()
    serve = subprocess.Popen(
        [*IAPFLOW, "serve", "--data-dir", str(data), "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_port(port, serve)
        reply = asyncio.run(signin(port, "boss", "pw"))
        assert "admins" in {r["name"] for r in reply["user"]["roles"]}
        child = int((data / "mongo" / "iapflow-embedded.pid").read_text().split()[0])
        assert alive(child)
        # The running server's store is not taken from under it.
        busy = run("user", "add", "other", "--password", "pw", "--data-dir", str(data))
        assert busy.returncode == 2
        assert f"in use by iapflow process {serve.pid}" in busy.stderr
        assert asyncio.run(signin(port, "boss", "pw"))["user"]["username"] == "boss"
        serve.send_signal(signal.SIGKILL)  # a crash: no clean shutdown
        serve.wait(10)
        # The kernel kills the store with its parent.
        deadline = time.monotonic() + 10
        while alive(child) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not alive(child), "the embedded store outlived the crashed server"
    finally:
        if serve.poll() is None:
            serve.kill()

    # The data survived; the next start reuses the directory.
    port = free_port()
    serve = subprocess.Popen(
        [*IAPFLOW, "serve", "--data-dir", str(data), "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_port(port, serve)
        assert asyncio.run(signin(port, "boss", "pw"))["user"]["username"] == "boss"
    finally:
        serve.send_signal(signal.SIGTERM)
        # uvicorn re-raises the signal it handled once shutdown is done.
        assert serve.wait(20) in (0, -signal.SIGTERM)
    # A clean stop removes the pid file along with the store process.
    assert not (data / "mongo" / "iapflow-embedded.pid").exists()


@pytest.mark.slow
def test_admin_from_environment(tmp_path: Path, mongo_storage: dict[str, str]) -> None:
    port = free_port()
    env = {
        "IAPFLOW_ADMIN_USERNAME": "envadmin",
        "IAPFLOW_ADMIN_PASSWORD": "envpw",
        "IAPFLOW_STORAGE__URL": mongo_storage["url"],
        "IAPFLOW_STORAGE__DATABASE": mongo_storage["database"],
        "IAPFLOW_AUTH__BCRYPT_ROUNDS": "4",
    }
    serve = subprocess.Popen(
        [*IAPFLOW, "serve", "--data-dir", str(tmp_path), "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, **env},
    )
    try:
        wait_for_port(port, serve)
        reply = asyncio.run(signin(port, "envadmin", "envpw"))
        assert "admins" in {r["name"] for r in reply["user"]["roles"]}
    finally:
        serve.terminate()
        serve.wait(20)


@pytest.mark.parametrize(("host", "becomes_admin"), [("127.0.0.1", True), ("0.0.0.0", False)])
async def test_first_signin_becomes_admin_only_when_enabled_on_loopback(
    tmp_path: Path, mongo_storage: dict[str, str], host: str, becomes_admin: bool
) -> None:
    config = make_test_config(
        tmp_path,
        mongo_storage,
        auth={"admin_username": "", "first_signin_becomes_admin": True},
        server={"host": host},
    )
    async with running_server(config):
        url = f"ws://127.0.0.1:{config.server.port}/ws"
        async with JsonClient(url) as first:
            if not becomes_admin:
                with pytest.raises(ReplyError):
                    await first.signin("founder", "pw")
                return
            reply = await first.signin("founder", "pw")
            assert "admins" in {r["name"] for r in reply["user"]["roles"]}
        async with JsonClient(url) as second:
            with pytest.raises(ReplyError):
                await second.signin("latecomer", "pw")
