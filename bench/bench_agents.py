#!/usr/bin/env python
"""Node-RED through iapflow's process runtime against Node-RED started by hand, in one run.

- **api**: a user of an in-process iapflow server (embedded store, ``[agents] runtime =
  "process"``) sends ``ensurenoderedinstance``; the clock stops when the instance's editor
  answers ``GET /`` with 200. Each round uses a new user, so a new instance (new user dir).
- **raw**: ``node red.js -u <new dir> -p <free port>`` started directly, the same poll.

Rounds alternate raw, api, api, raw... so load drifts hit both sides. After the api rounds all
their instances are left idle for ``--settle`` seconds and the resident memory (VmRSS) of each
is read from /proc. Run from the repository root: ``.venv/bin/python bench/bench_agents.py``.
Node-RED is installed once into ``--node-red-dir`` (default ``~/.cache/iapflow-bench``).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from iapflow import wellknown
from iapflow.testing import JsonClient, make_test_config, running_server
from iapflow_mongo.embedded import free_port
from iapflow_nodered.install import DEFAULT_VERSION, ensure_installed, find_node


async def _until_answers(http: httpx.AsyncClient, url: str, started: float) -> float:
    while True:
        try:
            if (await http.get(url)).status_code == 200:
                return time.perf_counter() - started
        except httpx.HTTPError:
            pass
        if time.perf_counter() - started > 120:
            raise RuntimeError(f"{url} did not answer within 120 s")
        await asyncio.sleep(0.02)


async def raw_round(red: Path, node: str, work: Path, http: httpx.AsyncClient) -> float:
    """Start Node-RED by hand, time until its editor answers, stop it."""
    port = free_port()
    userdir = Path(tempfile.mkdtemp(dir=work))
    started = time.perf_counter()
    proc = await asyncio.to_thread(
        subprocess.Popen,
        [node, str(red), "-u", str(userdir), "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        return await _until_answers(http, f"http://127.0.0.1:{port}/", started)
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        await asyncio.to_thread(proc.wait)


async def api_round(admin: JsonClient, base: str, index: int, http: httpx.AsyncClient) -> Any:
    """Create a user, sign it in, time ensurenoderedinstance until the editor answers."""
    name = f"benchnr{index}"
    reply = await admin.call(
        "insertone",
        collectionname="users",
        item={"_type": "user", "username": name, "name": name, "newpassword": "pw"},
    )
    await admin.call(
        "updateone",
        collectionname="users",
        query={"_id": wellknown.PERSONAL_NODERED_USERS},
        item={"$push": {"members": {"_id": reply["result"]["_id"], "name": name}}},
    )
    user = JsonClient(base + "/ws")
    await user.connect()
    await user.signin(name, "pw")
    started = time.perf_counter()
    instance = (await user.call("ensurenoderedinstance"))["result"]
    seconds = await _until_answers(http, instance["url"], started)
    await user.close()
    return seconds, reply["result"]["_id"]


def rss_mb(pid: int) -> float:
    """Resident memory of ``pid`` in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=6, help="rounds per side (default 6)")
    parser.add_argument("--settle", type=float, default=10.0, help="idle seconds before RSS")
    parser.add_argument(
        "--node-red-dir", default=str(Path.home() / ".cache" / "iapflow-bench"), type=Path
    )
    args = parser.parse_args()
    node = find_node()
    red = await ensure_installed(args.node_red_dir.absolute() / f"node-red-{DEFAULT_VERSION}")
    with tempfile.TemporaryDirectory(prefix="bench-agents-") as tmp:
        work = Path(tmp)
        storage = {"backend": "mongo", "url": "embedded"}
        agents = {"runtime": "process", "install_dir": str(red.parents[2]), "base_port": 19500}
        config = make_test_config(work / "data", storage, agents=agents)
        raw: list[float] = []
        api: list[float] = []
        users: list[str] = []
        async with running_server(config) as base, httpx.AsyncClient(timeout=2) as http:
            admin = JsonClient(base + "/ws")
            await admin.connect()
            await admin.signin("admin", "admin")
            order = ["raw", "api", "api", "raw"] * ((args.rounds + 1) // 2)
            for side in order[: 2 * args.rounds]:
                if side == "raw":
                    raw.append(await raw_round(red, node, work, http))
                else:
                    seconds, user_id = await api_round(admin, base, len(api), http)
                    api.append(seconds)
                    users.append(user_id)
                print(f"{side}: {(raw if side == 'raw' else api)[-1]:.2f} s", file=sys.stderr)
            await asyncio.sleep(args.settle)
            pods = [(await admin.call("getnoderedinstance", _id=u))["result"] for u in users]
            memory = [rss_mb(pod["pid"]) for pod in pods]
            for user_id in users:
                await admin.call("deletenoderedinstance", _id=user_id)
            await admin.close()
    version = await asyncio.to_thread(subprocess.check_output, [node, "--version"])
    print(f"Node-RED {DEFAULT_VERSION}, node {version.decode().strip()}")
    print(f"start to editor answering, {args.rounds} rounds per side (median, min-max):")
    print(
        f"  raw node red.js          {statistics.median(raw):.2f} s ({min(raw):.2f}-{max(raw):.2f})"
    )
    print(
        f"  ensurenoderedinstance    {statistics.median(api):.2f} s ({min(api):.2f}-{max(api):.2f})"
    )
    print(f"  ratio api/raw            {statistics.median(api) / statistics.median(raw):.2f}")
    print(
        f"idle RSS per instance after {args.settle:g} s, {len(memory)} instances: "
        f"median {statistics.median(memory):.0f} MB ({min(memory):.0f}-{max(memory):.0f})"
    )


if __name__ == "__main__":
    asyncio.run(main())
