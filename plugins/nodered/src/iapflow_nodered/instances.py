"""One Node-RED instance on this machine, apart from the runtime that supervises it: its state
on disk (``state.json``), whether its process still runs (and is really that instance), its
process group, its settings file, and how to end every instance a runtime left behind."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from iapflow.contracts.agents import (
    InstanceSpec,
)
from iapflow_nodered import sandbox

INSTANCE_ENV = "IAPFLOW_NODERED_INSTANCE"


@dataclass
class Instance:
    spec: InstanceSpec
    folder: Path
    port: int
    wanted: str = "running"
    pid: int | None = None
    started: str = ""
    restarts: int = 0
    reason: str = ""
    crashed: bool = False
    installing: bool = False
    ready: bool = False
    sandboxed: bool = False
    uid: int | None = None
    """The instance's own OS user (a sandboxed instance of a server running as root)."""
    bridge: sandbox.ApiBridge | None = field(default=None, repr=False)
    proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    watcher: asyncio.Task[None] | None = field(default=None, repr=False)
    crash_times: list[float] = field(default_factory=list)

    def save(self) -> None:
        if not self.folder.is_dir():
            return  # removed by another runtime object (the server that adopted it)
        state = {
            "spec": asdict(self.spec),
            "port": self.port,
            "wanted": self.wanted,
            "pid": self.pid,
            "started": self.started,
            "restarts": self.restarts,
            "sandboxed": self.sandboxed,
            "uid": self.uid,
        }
        tmp = self.folder / "state.json.tmp"
        tmp.write_text(json.dumps(state, indent=1), encoding="utf-8")
        tmp.replace(self.folder / "state.json")


def pid_alive(pid: int, marker: str) -> bool:
    """True if ``pid`` runs (not a zombie) and, where /proc exists, it is the instance whose
    folder is ``marker`` (its working directory, or its ``IAPFLOW_NODERED_INSTANCE``), so a
    reused PID is never taken for an instance. Node-RED renames its process title, so the
    command line cannot tell."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return False
    proc = Path(f"/proc/{pid}")
    if proc.exists():
        try:
            stat = (proc / "stat").read_text()
            if stat.rsplit(")", 1)[1].split()[0] in ("Z", "X"):
                return False
        except OSError:
            return False
        try:
            if os.readlink(proc / "cwd") == marker:
                return True
        except OSError:
            pass
        try:
            environ = (proc / "environ").read_bytes().split(b"\0")
        except OSError:
            return False
        return f"{INSTANCE_ENV}={marker}".encode() in environ
    return True


def port_free(host: str, port: int) -> bool:
    """True if nothing listens on ``host:port`` (a bind test, as Node-RED will bind it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def settings_js(host: str, port: Any, secret: str, extra: dict[str, Any]) -> str:
    """Settings of an instance that is not connected to an iapflow server (no owner, or a
    runtime used on its own): flows in its userdir, no sign-in, loopback only."""
    settings = {
        "uiHost": host,
        "uiPort": port,
        "flowFile": "flows.json",
        "credentialSecret": secret,
        "logging": {"console": {"level": "info", "metrics": False, "audit": False}},
        "editorTheme": {"projects": {"enabled": False}, "tours": False},
        "diagnostics": {"enabled": False},
        "telemetry": {"enabled": False, "updateNotification": False},
        "externalModules": {"autoInstall": False},
        **extra,
    }
    return (
        "// Written by iapflow for this instance; it is rewritten on every start.\n"
        f"module.exports = {json.dumps(settings, indent=2)};\n"
    )


def iapflow_settings_js(package: Path, options: dict[str, Any]) -> str:
    """Settings of an instance on iapflow: node-red-iapflow's storage module (flows in the
    ``nodered`` collection), sign-in through iapflow and its nodes. The token comes from the
    ``jwt`` environment variable, so it is not written to disk."""
    return (
        "// Written by iapflow for this instance; it is rewritten on every start.\n"
        f"module.exports = require({json.dumps(str(package))})(\n"
        f"{json.dumps(options, indent=2)}\n);\n"
    )


def group_members(group: int) -> list[int]:
    """The live processes of process group ``group`` (from /proc)."""
    members = []
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if len(fields) > 3 and fields[0] not in ("Z", "X") and fields[2] == str(group):
            members.append(int(entry.name))
    return members


async def end_group(group: int, within: float = 5.0) -> None:
    """SIGKILL what is left of an instance's process group (its leader, bubblewrap, may be
    gone while Node-RED still runs inside) and wait until it is gone."""
    deadline = time.monotonic() + within
    while group_members(group) and time.monotonic() < deadline:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(group, signal.SIGKILL)
        await asyncio.sleep(0.05)


def reap(data_dir: Path) -> list[int]:
    """Kill every Node-RED process that a process runtime on ``data_dir`` recorded, without a
    runtime: instances outlive their server on purpose (the next one adopts them), so a test
    that fails half-way, or a machine being cleaned up, needs this. Returns the PIDs killed."""
    killed = []
    for state_file in (data_dir / "nodered" / "instances").glob("*/state.json"):
        try:
            pid = json.loads(state_file.read_text(encoding="utf-8")).get("pid")
        except (OSError, ValueError, AttributeError):
            continue
        if isinstance(pid, int) and pid_alive(pid, str(state_file.parent)):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)  # its own session: Node-RED and its children
            killed.append(pid)
    return killed
