"""The sandbox Node-RED instances of the ``process`` runtime run in (bubblewrap).

Inside, an instance sees only what it needs, read-only: the Node.js binary and the system's
shared libraries, the Node-RED install (with node-red-iapflow), its settings; and writable: its
own ``home`` folder (the Node-RED user directory). No shell or other program of the host, no
data directory, no secrets, no store files, no other instance. It has a network of its own with
nothing in it: it serves its editor and HTTP-in endpoints on a listening socket the runtime
opens on the host and hands it, and it reaches iapflow through a unix socket the runtime
forwards to the API (``/iapflow/iapflow.sock``, in a folder only the runtime writes). Every
mount is ``nosuid`` and the process has ``no_new_privs``.

When the server runs as root, each instance runs as an OS user of its own (a uid from
``[agents] uid_base``, with no login): bubblewrap sets the sandbox up as root, keeping only the
right to change user, and a preloaded script drops to that uid before Node-RED loads (and exits
if it could not; no capability is left after). Otherwise the instance runs as the server's own
user, in a user namespace, confined the same way.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import socket
import subprocess
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger("iapflow.nodered.sandbox")

INSIDE_HOME = "/instance"
INSIDE_INSTALL = "/node-red"
INSIDE_NODE = "/usr/bin/node"
INSIDE_RUN = "/iapflow"
INSIDE_SETTINGS = "/settings.js"
INSIDE_DROP = "/drop-privileges.js"
API_SOCKET = "iapflow.sock"
DROP_FAILED = 70
"""Exit code of an instance whose privileges could not be dropped."""
# Where the system's shared libraries are: the loader and libc of Node.js, and what it opens.
_LIBRARY_DIRS = ("/usr/lib", "/usr/lib64", "/usr/lib32", "/lib", "/lib64", "/lib32")
# Read-only extras Node.js reads when they are there (time zones).
_OPTIONAL_FILES = ("/etc/localtime", "/usr/share/zoneinfo")


def find_bwrap() -> str | None:
    """Path of ``bwrap`` (Debian's ``bubblewrap`` package), or ``None``."""
    return shutil.which("bwrap")


def drop_script(uid: int) -> str:
    """The script Node.js preloads to become ``uid`` (group ``uid``, no other groups) and to
    stop if it still holds any capability."""
    return (
        f"process.setgroups([]); process.setgid({uid}); process.setuid({uid});\n"
        'const status = require("fs").readFileSync("/proc/self/status", "utf8");\n'
        f"if (process.getuid() !== {uid} || process.geteuid() !== {uid} ||\n"
        "    !/^CapEff:\\s*0+$/m.test(status) || !/^CapPrm:\\s*0+$/m.test(status)) {\n"
        '    console.error("iapflow: could not drop privileges; stopping");\n'
        f"    process.exit({DROP_FAILED});\n"
        "}\n"
    )


def data_fd(text: str) -> int:
    """A pipe's read end holding ``text`` (for ``--ro-bind-data``); the caller closes it."""
    read, write = os.pipe()
    try:
        os.write(write, text.encode("utf-8"))
    finally:
        os.close(write)
    os.set_inheritable(read, True)
    return read


def inside_install(path: Path, install_dir: Path) -> str:
    """Where ``path``, inside the Node-RED install ``install_dir``, is in the sandbox."""
    return f"{INSIDE_INSTALL}/{path.relative_to(install_dir).as_posix()}"


def _library_args() -> list[str]:
    # Folders bubblewrap makes on the way to a mount are 0700 when it runs as root: make the
    # ones a dropped user walks through first.
    args: list[str] = []
    for folder in ("/usr", "/usr/bin", "/usr/share", "/etc"):
        args += ["--perms", "0755", "--dir", folder]
    for path in _LIBRARY_DIRS:
        if os.path.islink(path):
            args += ["--symlink", os.readlink(path), path]
        elif os.path.isdir(path):
            args += ["--ro-bind", path, path]
    return args


def _isolation(uid: int | None) -> list[str]:
    """Namespaces and capabilities: as root, set up without a user namespace and keep only
    the right to change user (the preload drops it); otherwise a user namespace, no rights."""
    if uid is None:
        return ["--unshare-all"]
    return [
        "--unshare-ipc", "--unshare-pid", "--unshare-net", "--unshare-uts",
        "--unshare-cgroup-try", "--cap-drop", "ALL",
        "--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID",
    ]  # fmt: skip


def probe(bwrap: str, node: str, uid: int | None) -> str | None:
    """Run ``node -e ""`` in a sandbox as ``uid`` would run; ``None`` when it works, else why
    not."""
    real_node = os.path.realpath(node)
    fds: list[int] = []
    args = [bwrap, *_isolation(uid), *_library_args(), "--ro-bind", real_node, INSIDE_NODE]
    args += ["--proc", "/proc", "--dev", "/dev", "--clearenv"]
    node_args = ["-e", ""]
    if uid is not None:
        fds.append(data_fd(drop_script(uid)))
        args += ["--ro-bind-data", str(fds[0]), INSIDE_DROP]
        node_args = ["-r", INSIDE_DROP, *node_args]
    try:
        done = subprocess.run(
            [*args, "--", INSIDE_NODE, *node_args],
            capture_output=True,
            timeout=15,
            pass_fds=fds,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"{bwrap} could not run: {exc}"
    finally:
        for fd in fds:
            os.close(fd)
    if done.returncode:
        reason = done.stderr.decode(errors="replace").strip() or f"exit code {done.returncode}"
        return f"{bwrap} cannot make a sandbox here: {reason}"
    return None


@dataclass(frozen=True)
class Layout:
    """Where one instance's parts are on the host."""

    home: Path
    """Writable inside, as :data:`INSIDE_HOME`."""
    run: Path
    """The runtime's folder for the API socket, read-only inside as :data:`INSIDE_RUN`."""


@dataclass
class Command:
    """A ``bwrap`` command line and the descriptors it must inherit (closed by
    :meth:`close` once the child started)."""

    args: list[str]
    fds: list[int]

    def close(self) -> None:
        """Close the descriptors that carried data into the sandbox."""
        for fd in self.fds:
            with contextlib.suppress(OSError):
                os.close(fd)
        self.fds.clear()


def command(
    bwrap: str,
    node: str,
    install_dir: Path,
    layout: Layout,
    settings: str,
    env: dict[str, str],
    node_args: list[str],
    uid: int | None,
) -> Command:
    """The ``bwrap`` command line that runs ``node node_args`` in an instance's sandbox, with
    ``settings`` as :data:`INSIDE_SETTINGS`, as ``uid`` when given (the server is root). The
    install is at :data:`INSIDE_INSTALL` and Node.js at :data:`INSIDE_NODE` there."""
    fds = [data_fd(settings)]
    args = [bwrap, *_isolation(uid), "--hostname", "nodered", *_library_args()]
    args += ["--ro-bind", os.path.realpath(node), INSIDE_NODE]
    args += ["--ro-bind", str(install_dir), INSIDE_INSTALL]
    for path in _OPTIONAL_FILES:
        args += ["--ro-bind-try", path, path]
    args += ["--bind", str(layout.home), INSIDE_HOME]
    args += ["--ro-bind", str(layout.run), INSIDE_RUN]
    args += ["--perms", "0444", "--ro-bind-data", str(fds[0]), INSIDE_SETTINGS]
    if uid is not None:
        fds.append(data_fd(drop_script(uid)))
        args += ["--perms", "0444", "--ro-bind-data", str(fds[1]), INSIDE_DROP]
        node_args = ["-r", INSIDE_DROP, *node_args]
    args += ["--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp", "--chdir", INSIDE_HOME]
    args += ["--clearenv"]
    for key, value in sorted(env.items()):
        args += ["--setenv", key, value]
    return Command([*args, "--", INSIDE_NODE, *node_args], fds)


def listening_socket(host: str, port: int) -> socket.socket:
    """The instance's editor socket, bound and listening on the host (handed to Node-RED)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(128)
    except OSError:
        sock.close()
        raise
    sock.set_inheritable(True)
    return sock


class ApiBridge:
    """A unix socket in an instance's ``run`` folder that forwards each connection to
    iapflow's API port: the one way out of the sandbox's network."""

    def __init__(self, run: Path, target: tuple[str, int], uid: int | None) -> None:
        self.run = run
        self.target = target
        self.uid = uid
        self._server: asyncio.AbstractServer | None = None
        self._streams: set[asyncio.StreamWriter] = set()

    async def start(self) -> None:
        """Listen on ``run/iapflow.sock`` (owned by the instance's user, mode 0600)."""
        self.run.mkdir(parents=True, exist_ok=True)
        os.chmod(self.run, 0o755)
        # The path may be longer than a unix socket address allows: bind it through the
        # folder's descriptor instead.
        folder = os.open(self.run, os.O_RDONLY | os.O_DIRECTORY)
        try:
            path = f"/proc/self/fd/{folder}/{API_SOCKET}"
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
            self._server = await asyncio.start_unix_server(self._forward, path=path)
            os.chmod(path, 0o600)
            if self.uid is not None:
                os.chown(path, self.uid, self.uid)
        finally:
            os.close(folder)

    async def stop(self) -> None:
        """Stop listening and end the open connections."""
        if self._server is not None:
            self._server.close()
            self._server = None
        for writer in list(self._streams):
            writer.close()
        self._streams.clear()

    async def _forward(self, inner_r: asyncio.StreamReader, inner_w: asyncio.StreamWriter) -> None:
        try:
            outer_r, outer_w = await asyncio.open_connection(*self.target)
        except OSError as exc:
            log.info("API bridge of %s: iapflow unreachable: %s", self.run, exc)
            inner_w.close()
            return
        self._streams.update((inner_w, outer_w))
        try:
            await asyncio.gather(_pump(inner_r, outer_w), _pump(outer_r, inner_w))
        finally:
            for writer in (inner_w, outer_w):
                self._streams.discard(writer)
                writer.close()


async def _pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        with contextlib.suppress(OSError, RuntimeError):
            writer.write_eof()
