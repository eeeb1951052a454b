"""Installing Node-RED from npm into a folder, once, with progress in the log.

``python -m iapflow_nodered.install <folder>`` does the same as a set-up step, so a server's
first ``ensurenoderedinstance`` does not wait for npm. The npm package ``node-red-iapflow``
(storage module, sign-in through iapflow, nodes) is installed into the same folder from
``plugins/nodered/node-red-iapflow``, again whenever its files change.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
import shutil
import sys
from pathlib import Path

from iapflow.contracts.agents import AgentRuntimeError

log = logging.getLogger("iapflow.nodered.install")

DEFAULT_VERSION = "4.1"
MIN_NODE_MAJOR = 18
PACKAGE_NAME = "node-red-iapflow"
# The npm package with the storage module, sign-in and nodes: inside this package when it was
# installed from a wheel, beside its source in a checkout.
_SHIPPED = Path(__file__).resolve().parent / "node_red_iapflow"
PACKAGE_DIR = _SHIPPED if _SHIPPED.is_dir() else Path(__file__).resolve().parents[2] / PACKAGE_NAME

_locks: dict[Path, asyncio.Lock] = {}


def red_js(folder: Path) -> Path:
    """Where Node-RED's entry script is once installed into ``folder``."""
    return folder / "node_modules" / "node-red" / "red.js"


def find_node(node: str = "node") -> str:
    """The full path of the Node.js binary, or an error that says how to get it."""
    path = shutil.which(node)
    if path is None:
        raise AgentRuntimeError(
            f"Node.js is missing: {node!r} is not on PATH. Install Node.js 20 (for example "
            f"'apt-get install nodejs npm') or set [agents] node to its path"
        )
    return path


async def node_major(node: str) -> int:
    """The major version of the Node.js at ``node``."""
    proc = await asyncio.create_subprocess_exec(
        node, "--version", stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    out, _ = await proc.communicate()
    match = re.match(r"v(\d+)\.", out.decode(errors="replace").strip())
    if proc.returncode != 0 or match is None:
        raise AgentRuntimeError(f"{node} --version failed: {out.decode(errors='replace')!r}")
    return int(match.group(1))


async def ensure_installed(
    folder: Path, version: str = DEFAULT_VERSION, node: str = "node"
) -> Path:
    """Install ``node-red@<version>`` into ``folder`` unless it is there; return red.js's path.

    ``folder`` should be absolute. npm's output goes to the log line by line and to
    ``<folder>/install.log``. Concurrent callers for one folder wait for the same install.
    """
    target = red_js(folder)
    if target.exists():
        return target
    node_path = find_node(node)
    major = await node_major(node_path)
    if major < MIN_NODE_MAJOR:
        raise AgentRuntimeError(f"Node.js {major} is too old for Node-RED 4: install Node.js 20")
    npm = shutil.which("npm", path=str(Path(node_path).parent)) or shutil.which("npm")
    if npm is None:
        raise AgentRuntimeError("npm is missing: install it beside Node.js to fetch Node-RED")
    lock = _locks.setdefault(folder, asyncio.Lock())
    async with lock:
        if target.exists():
            return target
        await asyncio.to_thread(folder.mkdir, parents=True, exist_ok=True)
        log.info("installing node-red@%s into %s (about 15 s, 120 MB)", version, folder)
        proc = await asyncio.create_subprocess_exec(
            npm,
            "install",
            "--prefix",
            ".",
            "--no-audit",
            "--no-fund",
            "--omit=dev",
            "--loglevel=http",
            f"node-red@{version}",
            cwd=folder,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        assert proc.stdout is not None
        lines: list[str] = []
        with (folder / "install.log").open("a", encoding="utf-8") as out:
            async for raw in proc.stdout:
                line = raw.decode(errors="replace").rstrip()
                lines.append(line)
                out.write(line + "\n")
                log.info("npm: %s", line)
        code = await proc.wait()
        if code != 0 or not target.exists():
            tail = "\n".join(lines[-5:])
            raise AgentRuntimeError(f"npm install node-red@{version} failed (exit {code}): {tail}")
        log.info("node-red@%s installed in %s", version, folder)
    return target


def package_hash(source: Path) -> str:
    """A digest of the package's own files (not node_modules), as npm copies them."""
    digest = hashlib.sha256()
    files = [source / "package.json", *sorted(source.glob("*.js"))]
    files += sorted(source.glob("lib/*")) + sorted(source.glob("nodes/*"))
    for path in files:
        if path.is_file():
            digest.update(path.relative_to(source).as_posix().encode() + b"\0")
            digest.update(path.read_bytes())
    return digest.hexdigest()


def package_current(folder: Path, source: Path = PACKAGE_DIR) -> bool:
    """True if ``folder`` (a Node-RED install) holds node-red-iapflow with the same files as
    ``source`` (or any copy, when there is no source to compare with)."""
    installed = folder / "node_modules" / PACKAGE_NAME
    if not (installed / "settings.js").exists():
        return False
    return not source.is_dir() or package_hash(installed) == package_hash(source)


async def ensure_package(folder: Path, node: str = "node", source: Path = PACKAGE_DIR) -> Path:
    """Install node-red-iapflow from ``source`` into the Node-RED install ``folder`` (a copy,
    with its dependency ``ws``) unless that version is there; return its ``settings.js``."""
    target = folder / "node_modules" / PACKAGE_NAME / "settings.js"
    if package_current(folder, source):
        return target
    if not (source / "package.json").exists():
        raise AgentRuntimeError(
            f"the {PACKAGE_NAME} npm package is not at {source}: set [agents] package_dir to "
            f"the plugins/nodered/{PACKAGE_NAME} folder of an iapflow checkout"
        )
    node_path = find_node(node)
    npm = shutil.which("npm", path=str(Path(node_path).parent)) or shutil.which("npm")
    if npm is None:
        raise AgentRuntimeError(f"npm is missing: install it beside Node.js to add {PACKAGE_NAME}")
    lock = _locks.setdefault(folder / PACKAGE_NAME, asyncio.Lock())
    async with lock:
        if package_current(folder, source):
            return target
        # npm keeps a copy of the same name and version as it is: remove it to get the new files.
        await asyncio.to_thread(shutil.rmtree, folder / "node_modules" / PACKAGE_NAME, True)
        log.info("installing %s from %s into %s", PACKAGE_NAME, source, folder)
        proc = await asyncio.create_subprocess_exec(
            npm,
            "install",
            "--prefix",
            ".",
            "--no-audit",
            "--no-fund",
            "--omit=dev",
            "--install-links",
            str(source),
            cwd=folder,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        out, _ = await proc.communicate()
        text = out.decode(errors="replace")
        with (folder / "install.log").open("a", encoding="utf-8") as log_file:
            log_file.write(text)
        if proc.returncode != 0 or not target.exists():
            tail = "\n".join(text.splitlines()[-5:])
            raise AgentRuntimeError(
                f"npm install of {PACKAGE_NAME} failed (exit {proc.returncode}): {tail}"
            )
        log.info("%s installed in %s", PACKAGE_NAME, folder)
    return target


def main(argv: list[str] | None = None) -> int:
    """``python -m iapflow_nodered.install <folder> [version]``."""
    args = sys.argv[1:] if argv is None else argv
    if not args:
        print("usage: python -m iapflow_nodered.install <folder> [version]", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    version = args[1] if len(args) > 1 else DEFAULT_VERSION
    try:
        folder = Path(args[0]).absolute()
        print(asyncio.run(ensure_installed(folder, version)))
        print(asyncio.run(ensure_package(folder)))
    except AgentRuntimeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
