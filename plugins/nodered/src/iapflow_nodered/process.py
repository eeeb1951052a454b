"""The ``process`` agent runtime: each Node-RED instance is a child process on this machine.

Layout under ``<data_dir>/nodered/``: ``node-red-<version>/`` (Node-RED from npm, installed on
first use) and ``instances/<name>/`` with ``state.json`` (spec, port, PID, wanted state, its
OS user), ``settings.js``, ``home/userdir/`` (the only folder the instance writes), ``run/``
(the socket it reaches iapflow through) and ``node-red.log``. A child runs in its own session
with its output going straight to the log file, so it outlives the server; the next server
reads ``state.json`` and adopts the process if it still runs, or starts it again if it should
run. A crash restarts the instance after a back-off; too many crashes in a window leave it
``crashed`` with the reason.

Instances run in a sandbox (:mod:`iapflow_nodered.sandbox`, bubblewrap) when the machine has
one. Without it, instances of owners who are not admins are refused unless ``[agents]
trusted_owners = true`` says every owner may run code as the server's OS user. Nodes that reach
the host (exec, file, watch) and modules in function nodes are given to the owners that
``[agents] host_nodes`` names (``admins`` by default, ``everyone`` or ``nobody``).

An instance of a user on this server gets the npm package ``node-red-iapflow`` (installed into
the Node-RED folder from ``plugins/nodered/node-red-iapflow``): its settings file keeps flows in
the ``nodered`` collection and signs users in through iapflow, and the ``jwt`` environment
variable carries a long-lived token for the owner that the server issues at every start.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import secrets
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx

from iapflow.contracts.agents import (
    AgentRuntimeError,
    InstanceNotFound,
    InstanceSpec,
    InstanceStatus,
    RuntimeContext,
    absent,
    poll_until_ready,
)
from iapflow.contracts.private import write_secret
from iapflow.errors import ConfigError, StartupError
from iapflow_nodered import sandbox
from iapflow_nodered.install import (
    DEFAULT_VERSION,
    PACKAGE_DIR,
    ensure_installed,
    ensure_package,
    find_node,
    package_current,
)
from iapflow_nodered.instances import (
    INSTANCE_ENV,
    Instance,
    end_group,
    iapflow_settings_js,
    pid_alive,
    port_free,
    settings_js,
)

log = logging.getLogger("iapflow.nodered.process")

OPTIONS = {
    "node": "node",
    "install_dir": "",
    "node_red_version": DEFAULT_VERSION,
    "host": "127.0.0.1",
    "base_port": 1880,
    "port_count": 1000,
    "heap_mb": 256,
    "max_restarts": 5,
    "restart_window_seconds": 300.0,
    "restart_backoff_seconds": 1.0,
    "stop_timeout_seconds": 10.0,
    "package_dir": "",
    "sandbox": "auto",
    "trusted_owners": False,
    "host_nodes": "admins",
    "uid_base": 200000,
}
SANDBOX_MODES = ("auto", "bubblewrap", "none")
HOST_NODES = ("admins", "everyone", "nobody")
# Core nodes that reach the machine they run on: run commands, read and write files.
HOST_NODE_FILES = ["90-exec.js", "10-file.js", "23-watch.js"]
UID_COUNT = 10000
LOG_KEEP_BYTES = 5 * 1024 * 1024


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


class ProcessRuntime:
    """Node-RED instances as supervised child processes; see the module docstring."""

    name = "process"

    def __init__(self, options: dict[str, Any], context: RuntimeContext) -> None:
        self.options = {**OPTIONS, **options}
        self.context = context
        root = context.data_dir.absolute() / "nodered"
        version = str(self.options["node_red_version"])
        install_dir = str(self.options["install_dir"])
        self.install_dir = (
            Path(install_dir).expanduser() if install_dir else root / f"node-red-{version}"
        )
        self.instances_dir = root / "instances"
        self.host = str(self.options["host"])
        self.bwrap: str | None = None
        self.sandbox_problem: str | None = "not checked yet"
        """Why instances cannot run in a sandbox here (``None`` when they can)."""
        self._instances: dict[str, Instance] = {}
        self._lock = asyncio.Lock()
        self._http: httpx.AsyncClient | None = None
        self._tasks: set[asyncio.Task[Any]] = set()

    # -- lifecycle ----------------------------------------------------------------------------

    async def start(self) -> None:
        """Check the sandbox, then load every ``state.json``: adopt live processes, restart
        those that should run."""
        await self._check_sandbox()
        self._http = httpx.AsyncClient(timeout=2.0)
        self.instances_dir.mkdir(parents=True, exist_ok=True)
        for state_file in sorted(self.instances_dir.glob("*/state.json")):
            try:
                state = json.loads(state_file.read_text(encoding="utf-8"))
                spec = InstanceSpec(**state["spec"])
            except (OSError, ValueError, TypeError, KeyError) as exc:
                log.warning("skipping %s: %s", state_file, exc)
                continue
            inst = Instance(spec, state_file.parent, int(state["port"]), wanted=state["wanted"])
            inst.restarts = int(state.get("restarts", 0))
            inst.started = str(state.get("started", ""))
            inst.sandboxed = bool(state.get("sandboxed"))
            uid = state.get("uid")
            inst.uid = uid if isinstance(uid, int) else None
            self._instances[spec.name] = inst
            pid = state.get("pid")
            if isinstance(pid, int) and pid_alive(pid, str(inst.folder)):
                inst.pid = pid
                log.info(
                    "adopted Node-RED instance %s (pid %d, port %d)", spec.name, pid, inst.port
                )
                if inst.sandboxed and inst.wanted == "running":
                    await self._open_bridge(inst)
                if inst.wanted == "running":
                    self._watch(inst)
                else:
                    await self._terminate(inst)
            elif inst.wanted == "running":
                log.info("Node-RED instance %s is not running; starting it again", spec.name)
                inst.pid = None
                self._spawn_task(self._launch_safely(inst))

    async def stop(self) -> None:
        """Stop watching; the instances keep running and are adopted by the next server."""
        for inst in self._instances.values():
            if inst.watcher is not None:
                inst.watcher.cancel()
            await self._close_bridge(inst)
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for inst in self._instances.values():
            if inst.watcher is not None:
                with contextlib.suppress(asyncio.CancelledError):
                    await inst.watcher
                inst.watcher = None
        if self._http is not None:
            await self._http.aclose()
            self._http = None

    # -- the sandbox ----------------------------------------------------------------------------

    async def _check_sandbox(self) -> None:
        """Find out whether instances can run in bubblewrap here (``[agents] sandbox``)."""
        mode = str(self.options["sandbox"])
        if mode == "none":
            self.sandbox_problem = '[agents] sandbox is "none"'
            return
        self.bwrap = sandbox.find_bwrap()
        if self.bwrap is None:
            self.sandbox_problem = (
                "bubblewrap is not installed (apt-get install bubblewrap gives the bwrap command)"
            )
        else:
            probe_uid = int(self.options["uid_base"]) if os.geteuid() == 0 else None
            try:
                node = find_node(str(self.options["node"]))
            except AgentRuntimeError as exc:
                self.sandbox_problem = str(exc)
            else:
                self.sandbox_problem = await asyncio.to_thread(
                    sandbox.probe, self.bwrap, node, probe_uid
                )
        if self.sandbox_problem is None:
            log.info("Node-RED instances run in a bubblewrap sandbox (%s)", self.bwrap)
        elif mode == "bubblewrap":
            raise StartupError(
                f'[agents] sandbox = "bubblewrap", but {self.sandbox_problem}; install it, or '
                'set sandbox = "auto" to run the owners you trust without one'
            )
        else:
            log.warning(
                "Node-RED instances run without a sandbox: %s. Instances of users who are not "
                "admins are refused unless [agents] trusted_owners = true",
                self.sandbox_problem,
            )

    async def _owner_is_admin(self, spec: InstanceSpec) -> bool:
        """Whether the owner is an admin; an instance without an owner, or a runtime used
        without a server, belongs to whoever runs the runtime."""
        check = self.context.owner_is_admin
        if check is None or not spec.owner_id:
            return True
        return await check(spec.owner_id)

    def _allocate_uid(self, inst: Instance) -> int | None:
        """The instance's own OS user when the server runs as root (kept across starts)."""
        if os.geteuid() != 0:
            return None
        if inst.uid is not None:
            return inst.uid
        base = int(self.options["uid_base"])
        taken = {other.uid for other in self._instances.values()}
        for uid in range(base, base + UID_COUNT):
            if uid not in taken:
                return uid
        raise AgentRuntimeError(
            f"no free user id for an instance between {base} and {base + UID_COUNT}"
        )

    async def _open_bridge(self, inst: Instance) -> None:
        """Listen on the instance's API socket (again, after a restart of the server)."""
        await self._close_bridge(inst)
        inst.bridge = sandbox.ApiBridge(inst.folder / "run", self._api_address(), inst.uid)
        await inst.bridge.start()

    async def _close_bridge(self, inst: Instance) -> None:
        if inst.bridge is not None:
            await inst.bridge.stop()
            inst.bridge = None

    def _api_address(self) -> tuple[str, int]:
        """Host and port of iapflow's API, from the URL instances are given."""
        address = urlsplit(self.context.api_ws_url)
        host = address.hostname or "127.0.0.1"
        if host in ("0.0.0.0", "::"):
            host = "127.0.0.1"
        return host, address.port or 80

    def _spawn_task(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- ports --------------------------------------------------------------------------------

    def _allocate_port(self) -> int:
        taken = {inst.port for inst in self._instances.values()}
        base, count = int(self.options["base_port"]), int(self.options["port_count"])
        for port in range(base, base + count):
            if port not in taken and port_free(self.host, port):
                return port
        raise AgentRuntimeError(f"no free port for Node-RED between {base} and {base + count - 1}")

    # -- launching ----------------------------------------------------------------------------

    async def _launch_safely(self, inst: Instance) -> None:
        try:
            await self._launch(inst)
        except AgentRuntimeError as exc:
            inst.crashed, inst.reason = True, str(exc)
            log.warning("Node-RED instance %s did not start: %s", inst.spec.name, exc)

    async def _launch(self, inst: Instance) -> None:
        """Install Node-RED if needed, write settings and start the child process (in its
        sandbox when the machine has one)."""
        node = find_node(str(self.options["node"]))
        admin_owner = await self._owner_is_admin(inst.spec)
        if self.sandbox_problem is not None and not (admin_owner or self.options["trusted_owners"]):
            raise AgentRuntimeError(
                f"Node-RED instances of users who are not admins run only in a sandbox, and "
                f"this server has none: {self.sandbox_problem}. Install bubblewrap, or set "
                "[agents] trusted_owners = true if every instance owner may run code as the "
                "server's OS user"
            )
        inst.installing = True
        try:
            red = await ensure_installed(
                self.install_dir, str(self.options["node_red_version"]), node
            )
        finally:
            inst.installing = False
        if inst.wanted != "running":
            return
        sandboxed = self.sandbox_problem is None
        listener = self._listen(inst) if sandboxed else None
        try:
            await self._spawn(inst, node, red, admin_owner, listener)
        finally:
            if listener is not None:
                listener.close()  # the child holds its own copy
        self._watch(inst)

    def _listen(self, inst: Instance) -> socket.socket:
        """The editor's socket, bound on the host for the sandboxed instance to serve on."""
        try:
            return sandbox.listening_socket(self.host, inst.port)
        except OSError:
            raise AgentRuntimeError(
                f"port {inst.port} on {self.host} is busy: another program listens there; "
                f"stop it or delete and recreate the instance to get another port"
            ) from None

    def _extra_settings(self, admin_owner: bool) -> dict[str, Any]:
        """What the owner may use: nodes that reach the host and modules in function nodes
        (``[agents] host_nodes``)."""
        allowed = str(self.options["host_nodes"])
        if allowed == "everyone" or (allowed == "admins" and admin_owner):
            return {}
        return {
            "nodesExcludes": list(HOST_NODE_FILES),
            "functionExternalModules": False,
            "externalModules": {"autoInstall": False, "palette": {"allowInstall": False}},
        }

    def _prepare_home(self, inst: Instance, uid: int | None) -> Path:
        """The instance's writable folder (``home``, holding ``userdir``), owned by its user."""
        home = inst.folder / "home"
        userdir = home / "userdir"
        old = inst.folder / "userdir"  # before the sandbox, the user directory was here
        if old.is_dir() and not userdir.exists():
            home.mkdir(parents=True, exist_ok=True)
            old.rename(userdir)
        userdir.mkdir(parents=True, exist_ok=True)
        if not (userdir / "package.json").exists():  # Node-RED logs ENOENT without one
            (userdir / "package.json").write_text('{"name": "node-red-project", "private": true}\n')
        if uid is not None and home.stat().st_uid != uid:
            for path in [home, *home.rglob("*")]:
                with contextlib.suppress(OSError):
                    os.lchown(path, uid, uid)
        return userdir

    async def _spawn(
        self,
        inst: Instance,
        node: str,
        red: Path,
        admin_owner: bool,
        listener: socket.socket | None,
    ) -> None:
        if listener is None and not port_free(self.host, inst.port):
            raise AgentRuntimeError(
                f"port {inst.port} on {self.host} is busy: another program listens there; "
                f"stop it or delete and recreate the instance to get another port"
            )
        uid = self._allocate_uid(inst) if listener is not None else None
        userdir = self._prepare_home(inst, uid)
        settings = inst.folder / "settings.js"
        secret = self._credential_secret(inst)
        owner = await self.context.owner_env(inst.spec) if self._on_iapflow(inst.spec) else {}
        token = owner.get("jwt", "")
        extra = self._extra_settings(admin_owner)
        inside = listener is not None
        port: Any = {"fd": listener.fileno()} if listener is not None else inst.port
        api_url = (
            f"ws+unix://{sandbox.INSIDE_RUN}/{sandbox.API_SOCKET}:/ws"
            if inside
            else self.context.api_ws_url
        )
        if token:
            package = await ensure_package(self.install_dir, node, self._package_dir())
            if inside:
                package = Path(sandbox.inside_install(package, self.install_dir))
            options = {
                "uiHost": self.host,
                "uiPort": port,
                "credentialSecret": secret,
                "name": inst.spec.name,
                "ownerId": inst.spec.owner_id,
                "ownerName": inst.spec.owner_name,
                "extra": extra,
            }
            text = iapflow_settings_js(package, options)
        else:
            text = settings_js(self.host, port, secret, extra)
        settings.unlink(missing_ok=True)
        write_secret(settings, text)  # it holds the credential key; a sandbox gets a copy
        log_file = inst.folder / "node-red.log"
        if log_file.exists() and log_file.stat().st_size > LOG_KEEP_BYTES:
            log_file.replace(inst.folder / "node-red.log.1")
        heap = inst.spec.memory_mb or int(self.options["heap_mb"])
        env = {key: os.environ[key] for key in ("PATH", "HOME", "LANG", "TZ") if key in os.environ}
        home_inside = sandbox.INSIDE_HOME if inside else str(userdir.parent)
        userdir_inside = f"{home_inside}/userdir"
        # The runtime's own variables win over the spec's: an agent's environment must not lift
        # the heap cap, hide the process from re-adoption or point the owner's token elsewhere.
        child_env = {
            **inst.spec.env,
            "NODE_RED_HOME": userdir_inside,
            "NODE_OPTIONS": f"--max-old-space-size={heap}",
            "nodered_id": inst.spec.name,
            "api_ws_url": api_url,
        }
        if token:
            child_env["jwt"] = token
        red_path = sandbox.inside_install(red, self.install_dir) if inside else str(red)
        node_args = [red_path, "--settings", "", "--userDir", userdir_inside]
        jail: sandbox.Command | None = None
        if inside:
            assert self.bwrap is not None and listener is not None
            node_args[2] = sandbox.INSIDE_SETTINGS
            child_env.update({k: env[k] for k in ("LANG", "TZ") if k in env})
            child_env.update(HOME=sandbox.INSIDE_HOME, PATH="/usr/bin")
            layout = sandbox.Layout(inst.folder / "home", inst.folder / "run")
            await self._open_bridge_for(inst, uid)
            jail = sandbox.command(
                self.bwrap, node, self.install_dir, layout, text, child_env, node_args, uid
            )
            env[INSTANCE_ENV] = str(inst.folder)
            args = jail.args
            pass_fds: tuple[int, ...] = (listener.fileno(), *jail.fds)
        else:
            node_args[2] = str(settings)
            node_args += ["--port", str(inst.port)]
            env.update(child_env)
            env[INSTANCE_ENV] = str(inst.folder)
            args, pass_fds = [node, *node_args], ()
        how = "without a sandbox"
        if inside:
            how = f"in a sandbox as uid {uid}" if uid is not None else "in a sandbox"
        with log_file.open("ab") as out:
            out.write(f"[iapflow] {_now()} starting Node-RED on port {inst.port} {how}\n".encode())
            out.flush()

            def spawn() -> subprocess.Popen[bytes]:
                return subprocess.Popen(
                    args,
                    cwd=inst.folder,
                    env=env,
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                    pass_fds=pass_fds,
                )

            try:
                inst.proc = await asyncio.to_thread(spawn)
            finally:
                if jail is not None:
                    jail.close()
        inst.pid, inst.started, inst.ready, inst.crashed = inst.proc.pid, _now(), False, False
        inst.sandboxed, inst.uid = inside, uid
        inst.reason = ""
        inst.save()
        log.info(
            "started Node-RED instance %s (pid %d, port %d, %s)",
            inst.spec.name, inst.pid, inst.port, how,
        )  # fmt: skip

    async def _open_bridge_for(self, inst: Instance, uid: int | None) -> None:
        inst.uid = uid
        await self._open_bridge(inst)

    def _credential_secret(self, inst: Instance) -> str:
        """The key Node-RED encrypts the instance's credentials with: the server's key for this
        instance name, so a re-created instance reads the credentials kept in ``nodered``; a
        random one kept in the instance folder when the runtime runs without a server."""
        if self.context.instance_secret is not None:
            return self.context.instance_secret(inst.spec.name)
        secret_file = inst.folder / "credential-secret"
        if not secret_file.exists():
            write_secret(secret_file, secrets.token_hex(24))
        return secret_file.read_text(encoding="utf-8").strip()

    def _package_dir(self) -> Path:
        configured = str(self.options["package_dir"])
        return Path(configured).expanduser().absolute() if configured else PACKAGE_DIR

    def _on_iapflow(self, spec: InstanceSpec) -> bool:
        """True when the instance runs on this server's API: flows in the ``nodered``
        collection, sign-in through iapflow. Not so for a runtime used without a server."""
        return bool(self.context.issue_token and spec.owner_id and self.context.api_ws_url)

    def _watch(self, inst: Instance) -> None:
        if inst.watcher is not None and not inst.watcher.done():
            inst.watcher.cancel()
        inst.watcher = asyncio.get_running_loop().create_task(self._supervise(inst))

    def _alive(self, inst: Instance) -> bool:
        if inst.proc is not None and inst.proc.pid == inst.pid:
            return inst.proc.poll() is None
        return inst.pid is not None and pid_alive(inst.pid, str(inst.folder))

    async def _supervise(self, inst: Instance) -> None:
        """Poll readiness until the editor answers, then liveness; restart after a crash."""
        while self._alive(inst):
            if not inst.ready:
                inst.ready = await self._answers(inst)
            await asyncio.sleep(0.2 if not inst.ready else 0.5)
        code = inst.proc.returncode if inst.proc is not None else None
        if inst.pid is not None:
            await end_group(inst.pid)  # what the leader left behind must not hold the port
        inst.proc, inst.pid, inst.ready = None, None, False
        if inst.wanted != "running":
            inst.save()
            return
        self._append_log(inst, f"Node-RED exited unexpectedly (code {code})")
        now = time.monotonic()
        window = float(self.options["restart_window_seconds"])
        inst.crash_times = [t for t in inst.crash_times if now - t < window] + [now]
        if len(inst.crash_times) > int(self.options["max_restarts"]):
            inst.crashed = True
            inst.reason = (
                f"crashed {len(inst.crash_times)} times within {window:g} s; not restarted "
                f"(see getnoderedinstancelog); start it again when fixed"
            )
            inst.save()
            log.warning("Node-RED instance %s: %s", inst.spec.name, inst.reason)
            return
        delay = min(
            30.0, float(self.options["restart_backoff_seconds"]) * 2 ** (len(inst.crash_times) - 1)
        )
        inst.restarts += 1
        inst.reason = f"restarting after a crash (exit code {code}) in {delay:g} s"
        inst.save()
        await asyncio.sleep(delay)
        if inst.wanted == "running" and inst.pid is None:
            inst.watcher = None
            await self._launch_safely(inst)

    def _append_log(self, inst: Instance, line: str) -> None:
        with contextlib.suppress(OSError), (inst.folder / "node-red.log").open("a") as out:
            out.write(f"[iapflow] {_now()} {line}\n")

    async def _answers(self, inst: Instance) -> bool:
        if self._http is None:
            return False
        try:
            reply = await self._http.get(f"http://{self.host}:{inst.port}/")
        except httpx.HTTPError:
            return False
        return reply.status_code == 200

    async def _terminate(self, inst: Instance) -> None:
        """SIGTERM the process group, SIGKILL it after ``stop_timeout_seconds``."""
        pid = inst.pid
        if pid is None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGTERM)
        deadline = time.monotonic() + float(self.options["stop_timeout_seconds"])
        # Polling: an adopted process is not our child, so there is nothing to await.
        while self._alive(inst) and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.05)
        if self._alive(inst):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)
            while self._alive(inst):  # noqa: ASYNC110
                await asyncio.sleep(0.05)
        if inst.proc is not None:
            inst.proc.poll()
        await end_group(pid)
        inst.pid, inst.proc, inst.ready = None, None, False

    async def _halt(self, inst: Instance) -> None:
        inst.wanted = "stopped"
        await self._terminate(inst)
        if inst.watcher is not None:
            inst.watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await inst.watcher
            inst.watcher = None
        await self._close_bridge(inst)
        inst.crash_times.clear()
        inst.save()

    # -- the runtime interface ----------------------------------------------------------------

    def _get(self, name: str) -> Instance:
        inst = self._instances.get(name)
        if inst is None:
            raise InstanceNotFound(f"no Node-RED instance named {name!r}")
        return inst

    def _status(self, inst: Instance) -> InstanceStatus:
        alive = inst.pid is not None and self._alive(inst)
        if inst.installing:
            state = "installing"
        elif alive and inst.ready:
            state = "running"
        elif alive:
            state = "starting" if inst.wanted == "running" else "stopping"
        elif inst.crashed:
            state = "crashed"
        elif inst.wanted == "running":
            state = "starting"
        else:
            state = "stopped"
        return InstanceStatus(
            name=inst.spec.name,
            state=state,
            owner_id=inst.spec.owner_id,
            url=f"http://{self.host}:{inst.port}/",
            port=inst.port,
            pid=inst.pid if alive else None,
            restarts=inst.restarts,
            reason=inst.reason,
            started=inst.started,
        )

    async def ensure(self, spec: InstanceSpec) -> InstanceStatus:
        """Create the instance (folder, port) if new and start it unless it runs."""
        find_node(str(self.options["node"]))
        async with self._lock:
            inst = self._instances.get(spec.name)
            if inst is None:
                folder = self.instances_dir / spec.name
                folder.mkdir(parents=True, exist_ok=True)
                inst = Instance(spec, folder, self._allocate_port())
                self._instances[spec.name] = inst
            else:
                inst.spec = spec
            inst.save()
            return await self._start(inst)

    async def _start(self, inst: Instance) -> InstanceStatus:
        inst.wanted = "running"
        if inst.pid is None or not self._alive(inst):
            inst.pid, inst.crashed, inst.reason = None, False, ""
            inst.crash_times.clear()
            inst.installing = not (self.install_dir / "node_modules" / "node-red").exists() or (
                self._on_iapflow(inst.spec)
                and not package_current(self.install_dir, self._package_dir())
            )
            if inst.installing:
                self._spawn_task(self._launch_safely(inst))
            else:
                await self._launch(inst)
        inst.save()
        return self._status(inst)

    async def start_instance(self, name: str) -> InstanceStatus:
        """Start the instance from its saved spec."""
        return await self._start(self._get(name))

    async def stop_instance(self, name: str) -> InstanceStatus:
        """Stop the process; the port, data and spec stay."""
        inst = self._get(name)
        await self._halt(inst)
        self._append_log(inst, "stopped")
        return self._status(inst)

    async def restart(self, name: str) -> InstanceStatus:
        """Stop and start again."""
        inst = self._get(name)
        await self._halt(inst)
        return await self._start(inst)

    async def remove(self, name: str) -> bool:
        """Stop the process, free the port, delete the folder."""
        inst = self._instances.get(name)
        if inst is None:
            return False
        await self._halt(inst)
        del self._instances[name]
        await asyncio.to_thread(shutil.rmtree, inst.folder, True)
        return True

    async def status(self, name: str) -> InstanceStatus:
        """The instance's state, ``absent`` if there is none."""
        inst = self._instances.get(name)
        if inst is None:
            return absent(name)
        return self._status(inst)

    async def list(self) -> list[InstanceStatus]:
        """Every instance."""
        return [self._status(inst) for inst in self._instances.values()]

    async def wait_ready(self, name: str, within: float = 60.0) -> InstanceStatus:
        """Wait until the editor answers HTTP 200."""
        return await poll_until_ready(self, name, within, interval=0.1)

    async def logs(self, name: str, lines: int = 50) -> str:
        """The last ``lines`` lines of the instance's log file."""
        inst = self._get(name)
        path = inst.folder / "node-red.log"
        if not path.exists():
            return ""
        with path.open("rb") as handle:
            handle.seek(max(0, path.stat().st_size - 256 * 1024))
            text = handle.read().decode(errors="replace")
        return "\n".join(text.splitlines()[-lines:])

    async def node_labels(self) -> dict[str, dict[str, str]] | None:
        """A single machine has no cluster nodes."""
        return None


def build_process(options: Mapping[str, Any], context: RuntimeContext) -> ProcessRuntime:
    """The ``process`` runtime's factory; checks option names, types and choices."""
    for key, value in options.items():
        if key not in OPTIONS:
            known = ", ".join(sorted(OPTIONS))
            raise ConfigError(f"agents.{key}", f"not an option of the process runtime ({known})")
        default = OPTIONS[key]
        if isinstance(default, float) and isinstance(value, int):
            continue
        if type(value) is not type(default):
            raise ConfigError(f"agents.{key}", f"must be {type(default).__name__}")
    for key, choices in (("sandbox", SANDBOX_MODES), ("host_nodes", HOST_NODES)):
        if key in options and options[key] not in choices:
            raise ConfigError(f"agents.{key}", f"must be one of {', '.join(choices)}")
    return ProcessRuntime(dict(options), context)
