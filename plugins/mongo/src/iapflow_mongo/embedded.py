"""The embedded store: a MongoDB-compatible server (SecantusDB) run as a child process.

It is a separate GPL program: started by its command line, never imported. It listens on a
free loopback port, keeps its files in ``<data_dir>/mongo``, commits with ``--sync-on-commit``,
and dies with the server: on Linux the kernel sends it SIGKILL when the parent dies, even on
``kill -9`` (a hard stop is safe: with ``--sync-on-commit`` every acknowledged write is on
disk, and the store recovers at its next start); a pid file lets the next start clean up a
survivor elsewhere.

With a ``credentials`` file (the server's embedded store; the tests' store stays open) the
store runs with ``--auth``: only the user in that file (``0600``, made on the first start) may
talk to it, so another process on the machine cannot read or write documents around the API.
The first start (and a start that finds the file gone) provisions that user while the store
accepts nothing but TLS with a client certificate made for the occasion, so no other local
process can slip in between; the certificates are deleted right after. The store's folder is
``0700``.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import quote

from iapflow.contracts.private import check_private, private_dir, write_secret
from iapflow.errors import StorageError

EXECUTABLE = "secantusd-py"
INSTALL_HINT = "pip install 'iapflow-mongo[embedded]'  (it provides secantusd-py)"
_PR_SET_PDEATHSIG = 1


def find_executable() -> str:
    """Path of ``secantusd-py``: next to this Python first, then on PATH."""
    beside = Path(sys.executable).with_name(EXECUTABLE)
    if beside.exists():
        return str(beside)
    found = shutil.which(EXECUTABLE)
    if found is None:
        raise StorageError(
            f"the embedded store needs {EXECUTABLE}, which is not installed: {INSTALL_HINT}"
        )
    return found


def free_port() -> int:
    """A free TCP port on 127.0.0.1."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _die_with_parent() -> None:  # runs in the child between fork and exec
    with contextlib.suppress(Exception):
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def _alive(pid: int) -> bool:
    """True for a running process (a zombie waiting to be reaped does not count)."""
    try:
        os.kill(pid, 0)
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"


class EmbeddedServer:
    """Starts and stops one ``secantusd-py`` process.

    ``port`` fixes the port across restarts (clients then reconnect by themselves); by default
    each start picks a free one.
    """

    def __init__(
        self,
        storage_path: str,
        sync_on_commit: bool = True,
        cache_size: str = "256M",
        port: int = 0,
        credentials: Path | None = None,
    ) -> None:
        self.storage_path = storage_path
        self.sync_on_commit = sync_on_commit
        self.cache_size = cache_size
        self.fixed_port = port  # listen here on every start; 0 = a free port each time
        self.port = port
        self.credentials = credentials
        self.process: subprocess.Popen[bytes] | None = None
        self._log: Path | None = None
        self._user: tuple[str, str] | None = None

    @property
    def uri(self) -> str:
        """Connection string; retryable writes are off (they slow this server down tenfold)."""
        login = ""
        if self._user is not None:
            login = f"{quote(self._user[0], safe='')}:{quote(self._user[1], safe='')}@"
        options = "retryWrites=false&directConnection=true"
        if self._user is not None:
            options += "&authSource=admin"
        return f"mongodb://{login}127.0.0.1:{self.port}/?{options}"

    def _pid_file(self) -> Path | None:
        return (
            None
            if self.storage_path == ":memory:"
            else Path(self.storage_path) / "iapflow-embedded.pid"
        )

    def _reap_survivor(self) -> None:
        """Stop a store left behind by a crashed server; refuse if its server still runs."""
        pid_file = self._pid_file()
        if pid_file is None or not pid_file.exists():
            return
        try:
            fields = pid_file.read_text().split()
            pid, owner = int(fields[0]), int(fields[2]) if len(fields) > 2 else 0
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
        except (ValueError, OSError, IndexError):
            pid_file.unlink(missing_ok=True)
            return
        if not (_alive(pid) and EXECUTABLE in cmdline and self.storage_path in cmdline):
            pid_file.unlink(missing_ok=True)
            return
        if owner and owner != os.getpid() and _alive(owner):
            raise StorageError(
                f"the embedded store in {self.storage_path} is in use by iapflow process {owner}; "
                f"stop that server first, or make the change through its API"
            )
        os.kill(pid, signal.SIGTERM)
        for _ in range(100):
            if not _alive(pid):
                break
            time.sleep(0.1)
        pid_file.unlink(missing_ok=True)

    def start(self, timeout: float = 30.0) -> None:
        """Start the server and wait until it accepts connections."""
        if self.storage_path != ":memory:":
            private_dir(Path(self.storage_path))
            self._log = Path(self.storage_path) / "embedded.log"
        self._reap_survivor()
        extra: list[str] = []
        if self.credentials is not None:
            self._user = self._load_credentials()
            if self._user is None:
                self._user = self._provision(timeout)
            extra = ["--auth"]
        self._run(extra, timeout)

    def _run(self, extra: list[str], timeout: float) -> None:
        executable = find_executable()
        self.port = self.fixed_port or free_port()
        command = [
            executable,
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--storage-path",
            self.storage_path,
            "--cache-size",
            self.cache_size,
        ]
        if self.sync_on_commit:
            command.append("--sync-on-commit")
        command += extra
        log_file = open(self._log, "ab") if self._log else subprocess.DEVNULL  # noqa: SIM115
        try:
            self.process = subprocess.Popen(
                command,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                preexec_fn=_die_with_parent if sys.platform == "linux" else None,
            )
        finally:
            if log_file is not subprocess.DEVNULL:
                log_file.close()  # type: ignore[union-attr]
        pid_file = self._pid_file()
        if pid_file is not None:
            pid_file.write_text(f"{self.process.pid} {self.port} {os.getpid()}\n")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise StorageError(
                    f"{EXECUTABLE} exited with code {self.process.returncode} while starting; "
                    f"see {self._log or 'its output'}"
                )
            with (
                contextlib.suppress(OSError),
                socket.create_connection(("127.0.0.1", self.port), 0.2),
            ):
                return
            time.sleep(0.05)
        self.stop()
        raise StorageError(f"{EXECUTABLE} did not open port {self.port} within {timeout:.0f}s")

    # -- credentials ----------------------------------------------------------------------------

    def _load_credentials(self) -> tuple[str, str] | None:
        """The stored user, or ``None`` when there is none yet (or the store is new)."""
        assert self.credentials is not None
        if not self.credentials.exists():
            return None
        check_private(self.credentials)
        if not (Path(self.storage_path) / "WiredTiger").exists():
            return None  # a new, empty store: its user must be made again
        try:
            found = json.loads(self.credentials.read_text(encoding="utf-8"))
            return str(found["username"]), str(found["password"])
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise StorageError(
                f"{self.credentials} is not readable ({exc}); remove it and start again to "
                "give the embedded store a new user"
            ) from None

    def _provision(self, timeout: float) -> tuple[str, str]:
        """Give the store its one user while it accepts only our client certificate."""
        from iapflow_mongo import provision  # cryptography and pymongo: only needed here

        assert self.credentials is not None
        user = ("iapflow", secrets.token_urlsafe(32))
        folder = Path(self.storage_path) / "provision"
        shutil.rmtree(folder, ignore_errors=True)
        private_dir(folder)
        try:
            files = provision.make_certificates(folder)
            self._run(provision.server_options(files), timeout)
            try:
                provision.set_user(self.port, files, *user)
            finally:
                self.stop()
        finally:
            shutil.rmtree(folder, ignore_errors=True)
        self.credentials.unlink(missing_ok=True)
        write_secret(self.credentials, json.dumps({"username": user[0], "password": user[1]}))
        return user

    def stop(self) -> None:
        """Stop the server (SIGTERM, then SIGKILL after 10 s)."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None
        pid_file = self._pid_file()
        if pid_file is not None:
            pid_file.unlink(missing_ok=True)
