#!/usr/bin/env python
"""The JSON websocket API against pymongo straight to the same store.

Measures "query one document by ``_id``" and "insertone" with 1 and with 20 concurrent clients,
through iapflow's JSON websocket protocol (``iapflow serve`` in a subprocess) and through
pymongo's ``AsyncMongoClient`` directly, and prints ops/s and the ratio API/direct.

Run from the repository root:  ``.venv/bin/python bench/bench_api.py``  (``--help`` for options;
bench/README.md says what is measured and how to read it).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pymongo import AsyncMongoClient

from iapflow import wellknown
from iapflow.ids import new_id
from iapflow.jsonutil import utcnow
from iapflow.secure.acl import FULL_CONTROL, READ, access_filter, fold
from iapflow.secure.principal import Principal
from iapflow.testing.client import JsonClient
from iapflow_mongo.embedded import EmbeddedServer, free_port
from iapflow_mongo.storage import _expand_id_lists

HOST = "127.0.0.1"  # everything stays on loopback
QUERY_COLLECTION = "bench"
INSERT_COLLECTION = "bench_writes"
BENCH_USER = "benchuser"
BENCH_PASSWORD = "bench-password"
ADMIN_USER = "admin"
ADMIN_PASSWORD = "admin-bench"
SEED_BATCH = 250

Op = Callable[[], Awaitable[None]]


# -- processes ------------------------------------------------------------------------------------


def cpu_seconds(pid: int | None) -> float:
    """User + system CPU time of process ``pid`` (all its threads); 0 when unknown."""
    if pid is None:
        return 0.0
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    fields = stat[stat.rfind(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def self_cpu_seconds() -> float:
    """CPU time of this (load generator) process."""
    times = os.times()
    return times.user + times.system


def _die_with_parent() -> None:  # child side of fork: get SIGTERM if the bench dies
    with contextlib.suppress(Exception):
        import ctypes

        ctypes.CDLL("libc.so.6").prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def stored_document(item: dict[str, Any], doc_id: str, uid: str, uname: str) -> dict[str, Any]:
    """``item`` as the server stores an insert by that user: system fields and ``_acl``."""
    now = utcnow()
    return {
        **item,
        "_id": doc_id,
        "_type": "unknown",
        "_acl": [
            {"_id": uid, "name": uname, "rights": FULL_CONTROL},
            {"_id": wellknown.ADMINS, "name": "admins", "rights": FULL_CONTROL},
        ],
        "_created": now,
        "_createdby": uname,
        "_createdbyid": uid,
        "_modified": now,
        "_modifiedby": uname,
        "_modifiedbyid": uid,
        "_version": 0,
    }


class ServerProcess:
    """``iapflow serve`` as a subprocess with a temporary TOML config."""

    def __init__(
        self,
        workdir: Path,
        mongo_uri: str,
        database: str,
        cprofile: str | None = None,
        extra_config: str = "",
    ) -> None:
        """``extra_config`` is TOML appended to the config, e.g. a ``[messaging]`` section."""
        self.port = free_port()
        self.workdir = workdir
        self.config = workdir / "iapflow.toml"
        self.log = workdir / "server.log"
        self.config.write_text(
            "[server]\n"
            f'host = "{HOST}"\n'
            f"port = {self.port}\n"
            f"data_dir = {json.dumps(str(workdir / 'data'))}\n"
            'log_level = "warning"\n'
            "[storage]\n"
            f"url = {json.dumps(mongo_uri)}\n"
            f"database = {json.dumps(database)}\n"
            "[auth]\n"
            f'admin_username = "{ADMIN_USER}"\n'
            f'admin_password = "{ADMIN_PASSWORD}"\n'
            "bcrypt_rounds = 4\n" + extra_config
        )
        command = [sys.executable]
        if cprofile:
            # Profile the server without touching its code: run its CLI under cProfile.
            command += ["-m", "cProfile", "-o", str(Path(cprofile).resolve())]
        command += ["-m", "iapflow.cli", "serve", "--config", str(self.config)]
        self.command = command
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"ws://{HOST}:{self.port}/ws"

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    def start(self, timeout: float = 60.0) -> None:
        """Start the server and wait until it listens (it binds after its startup is done)."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("IAPFLOW_")}
        with open(self.log, "wb") as log:
            self.process = subprocess.Popen(
                self.command,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
                preexec_fn=_die_with_parent if sys.platform == "linux" else None,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"iapflow serve exited with code {self.process.returncode}:\n{self.log_tail()}"
                )
            with contextlib.suppress(OSError), socket.create_connection((HOST, self.port), 0.2):
                return
            time.sleep(0.05)
        raise RuntimeError(
            f"iapflow serve did not listen within {timeout:.0f}s:\n{self.log_tail()}"
        )

    def log_tail(self, lines: int = 30) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        return ""

    def stop(self) -> None:
        """SIGINT (a clean uvicorn shutdown, which also lets cProfile write), then SIGKILL."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGINT)
        try:
            self.process.wait(20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


class PySpy:
    """``py-spy record`` attached to the server for the measured part of the run."""

    def __init__(self, pid: int, output: str, rate: int) -> None:
        exe = Path(sys.executable).with_name("py-spy")
        program = str(exe) if exe.exists() else "py-spy"
        fmt = "raw" if output.endswith((".txt", ".raw", ".collapsed")) else "speedscope"
        if output.endswith(".svg"):
            fmt = "flamegraph"
        self.process = subprocess.Popen(
            [
                program,
                "record",
                "--pid",
                str(pid),
                "--rate",
                str(rate),
                "--format",
                fmt,
                "--output",
                output,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.process.returncode not in (0, -signal.SIGINT, None):
            err = self.process.stderr.read().decode(errors="replace") if self.process.stderr else ""
            print(f"py-spy exited with {self.process.returncode}: {err.strip()}", file=sys.stderr)


# -- measuring ------------------------------------------------------------------------------------


@dataclass
class Phase:
    """One side of a comparison: how many operations completed in how long, and CPU spent."""

    mode: str
    ops: int = 0
    errors: int = 0
    seconds: float = 0.0
    cpu: dict[str, float] = field(default_factory=dict)
    first_error: str = ""

    @property
    def rate(self) -> float:
        return self.ops / self.seconds if self.seconds else 0.0

    def add(self, other: Phase) -> None:
        self.ops += other.ops
        self.errors += other.errors
        self.seconds += other.seconds
        for name, value in other.cpu.items():
            self.cpu[name] = self.cpu.get(name, 0.0) + value
        self.first_error = self.first_error or other.first_error

    def summary(self) -> dict[str, Any]:
        per_op = {
            name: round(value * 1000 / self.ops, 3) if self.ops else None
            for name, value in self.cpu.items()
        }
        return {
            "ops": self.ops,
            "errors": self.errors,
            "seconds": round(self.seconds, 3),
            "ops_per_s": round(self.rate, 1),
            "cpu_ms_per_op": per_op,
            **({"first_error": self.first_error} if self.first_error else {}),
        }


async def run_phase(mode: str, ops: list[Op], seconds: float, pids: dict[str, int | None]) -> Phase:
    """Run every op in its own task in a loop for ``seconds``; count completions."""
    counts = [0] * len(ops)
    errors = [0] * len(ops)
    first: list[str] = []

    async def worker(index: int, op: Op, deadline: float) -> None:
        while time.perf_counter() < deadline:
            try:
                await op()
            except Exception as exc:  # counted and reported, the run goes on
                errors[index] += 1
                if not first:
                    first.append(f"{type(exc).__name__}: {exc}")
                if errors[index] > 1000:
                    return
            else:
                counts[index] += 1

    cpu_before = {name: cpu_seconds(pid) for name, pid in pids.items()}
    cpu_before["bench"] = self_cpu_seconds()
    start = time.perf_counter()
    await asyncio.gather(*(worker(i, op, start + seconds) for i, op in enumerate(ops)))
    elapsed = time.perf_counter() - start
    cpu = {name: cpu_seconds(pid) - cpu_before[name] for name, pid in pids.items()}
    cpu["bench"] = self_cpu_seconds() - cpu_before["bench"]
    return Phase(mode, sum(counts), sum(errors), elapsed, cpu, first[0] if first else "")


async def interleaved(
    sides: dict[str, list[Op]], seconds: float, warmup: float, pids: dict[str, int | None]
) -> dict[str, Phase]:
    """Give each side ``seconds`` in two halves, in A-B-C-C-B-A order, so that drift (other
    load on the machine, a growing collection) falls on every side alike."""
    for mode, ops in sides.items():  # unmeasured: fill connection pools, warm caches
        await run_phase(mode, ops, warmup, pids)
    totals = {mode: Phase(mode) for mode in sides}
    order = [*sides, *reversed(sides)]
    for mode in order:
        totals[mode].add(await run_phase(mode, sides[mode], seconds / 2, pids))
    return totals


# -- the workload ---------------------------------------------------------------------------------


class Workload:
    """Clients and operations for both sides."""

    def __init__(self, args: argparse.Namespace, api_url: str, mongo_uri: str, database: str):
        self.args = args
        self.api_url = api_url
        self.mongo_uri = mongo_uri
        self.database = database
        self.ids: list[str] = []
        self.user: dict[str, Any] = {}
        self.principal: Principal | None = None
        self._counter = 0

    async def setup(self) -> None:
        """Create the bench user and seed the query collection as that user, via the API."""
        async with JsonClient(self.api_url) as admin:
            await admin.signin(ADMIN_USER, ADMIN_PASSWORD)
            await admin.call(
                "insertone",
                collectionname="users",
                item={
                    "_type": "user",
                    "username": BENCH_USER,
                    "name": "Bench User",
                    "newpassword": BENCH_PASSWORD,
                },
            )
        async with JsonClient(self.api_url) as client:
            reply = await client.signin(BENCH_USER, BENCH_PASSWORD)
            self.user = reply["user"]
            if any(r["_id"] == wellknown.ADMINS for r in self.user.get("roles", [])):
                raise RuntimeError("the bench user must not be an admin")
            for start in range(0, self.args.docs, SEED_BATCH):
                items = [
                    {"_type": "benchdoc", "name": f"doc {i}", "n": i, "tags": ["bench", "seed"]}
                    for i in range(start, min(start + SEED_BATCH, self.args.docs))
                ]
                result = await client.call(
                    "insertmany", collectionname=QUERY_COLLECTION, items=items
                )
                self.ids.extend(doc["_id"] for doc in result["results"])
        self.principal = Principal(
            id=self.user["_id"],
            name=self.user.get("name", ""),
            username=self.user.get("username", ""),
            roles=self.user.get("roles", []),
        )

    # API side: one JsonClient per client, signed in as the (non-admin) bench user.

    async def api_clients(self, count: int) -> list[JsonClient]:
        clients = [JsonClient(self.api_url) for _ in range(count)]
        for client in clients:
            await client.connect()
            await client.signin(BENCH_USER, BENCH_PASSWORD)
        return clients

    def api_query(self, client: JsonClient, rng: random.Random) -> Op:
        ids = self.ids

        async def op() -> None:
            reply = await client.call(
                "query", collectionname=QUERY_COLLECTION, query={"_id": rng.choice(ids)}, top=1
            )
            if len(reply["result"]) != 1:
                raise LookupError("query by _id did not return the document")

        return op

    def api_insert(self, client: JsonClient) -> Op:
        async def op() -> None:
            self._counter += 1
            await client.call(
                "insertone",
                collectionname=INSERT_COLLECTION,
                item={"name": f"write {self._counter}", "n": self._counter, "tags": ["bench"]},
            )

        return op

    # Direct side: AsyncMongoClient(s) to the same store.

    def mongo_clients(self, count: int) -> list[AsyncMongoClient[dict[str, Any]]]:
        """One shared client with a pool (as the server has), or one per simulated client."""
        number = count if self.args.direct_pool == "per-client" else 1
        return [AsyncMongoClient(self.mongo_uri, tz_aware=True) for _ in range(number)]

    def direct_filter(self, doc_id: str) -> dict[str, Any]:
        """The filter the server's data layer hands pymongo for ``query {_id}`` by this user."""
        assert self.principal is not None
        clause = access_filter(self.principal, READ, QUERY_COLLECTION)
        return _expand_id_lists(fold({"_id": doc_id}, clause))

    def direct_query(
        self, mongo: AsyncMongoClient[dict[str, Any]], rng: random.Random, plain: bool
    ) -> Op:
        collection = mongo[self.database][QUERY_COLLECTION]
        ids = self.ids

        async def op() -> None:
            doc_id = rng.choice(ids)
            query = {"_id": doc_id} if plain else self.direct_filter(doc_id)
            docs = [doc async for doc in collection.find(query, None, limit=1)]
            if len(docs) != 1:
                raise LookupError("find by _id did not return the document")

        return op

    def direct_insert(self, mongo: AsyncMongoClient[dict[str, Any]]) -> Op:
        """Insert the document the server would store for the same item (system fields, _acl)."""
        collection = mongo[self.database][INSERT_COLLECTION]
        uid, uname = self.user["_id"], self.user.get("name", "")

        async def op() -> None:
            self._counter += 1
            item = {"name": f"write {self._counter}", "n": self._counter, "tags": ["bench"]}
            await collection.insert_one(stored_document(item, new_id(), uid, uname))

        return op

    async def measure(
        self, operation: str, count: int, pids: dict[str, int | None]
    ) -> dict[str, Phase]:
        clients = await self.api_clients(count)
        mongos = self.mongo_clients(count)
        try:
            for mongo in mongos:
                await mongo.admin.command("ping")
            pick = [mongos[i % len(mongos)] for i in range(count)]
            rngs = [random.Random(self.args.seed + i) for i in range(count)]
            sides: dict[str, list[Op]]
            if operation == "query":
                sides = {
                    "api": [self.api_query(c, r) for c, r in zip(clients, rngs, strict=True)],
                    "direct": [
                        self.direct_query(m, r, False) for m, r in zip(pick, rngs, strict=True)
                    ],
                    "direct-plain": [
                        self.direct_query(m, r, True) for m, r in zip(pick, rngs, strict=True)
                    ],
                }
            else:
                sides = {
                    "api": [self.api_insert(c) for c in clients],
                    "direct": [self.direct_insert(m) for m in pick],
                }
            return await interleaved(sides, self.args.seconds, self.args.warmup, pids)
        finally:
            for client in clients:
                await client.close()
            for mongo in mongos:
                await mongo.close()


# -- the run --------------------------------------------------------------------------------------


def print_table(rows: list[dict[str, Any]]) -> None:
    header = (
        f"{'operation':<10} {'clients':>7} {'API ops/s':>10} {'direct ops/s':>13} "
        f"{'ratio':>6}   {'plain {_id} direct':>18}"
    )
    print(header)
    print("-" * len(header))
    for row in rows:
        plain = row["phases"].get("direct-plain")
        plain_text = ""
        if plain and plain["ops_per_s"]:
            ratio = row["api_ops_per_s"] / plain["ops_per_s"]
            plain_text = f"{plain['ops_per_s']:>10.0f} ({ratio:.2f})"
        print(
            f"{row['operation']:<10} {row['clients']:>7} {row['api_ops_per_s']:>10.0f} "
            f"{row['direct_ops_per_s']:>13.0f} {row['ratio']:>6.2f}   {plain_text:>18}"
        )
    print()
    print("CPU ms per operation (server = iapflow serve, store = SecantusDB, bench = this process)")
    for row in rows:
        for mode, phase in row["phases"].items():
            cpu = "  ".join(
                f"{name} {ms:.2f}" for name, ms in phase["cpu_ms_per_op"].items() if ms is not None
            )
            errors = ""
            if phase["errors"]:
                errors = f"  errors {phase['errors']} ({phase.get('first_error', '')})"
            print(f"  {row['operation']:<7} {row['clients']:>3} {mode:<13} {cpu}{errors}")


async def bench(
    args: argparse.Namespace,
    api_url: str,
    mongo_uri: str,
    database: str,
    pids: dict[str, int | None],
    on_measure_start: Callable[[], None],
) -> list[dict[str, Any]]:
    workload = Workload(args, api_url, mongo_uri, database)
    await workload.setup()
    roles = ", ".join(r["name"] for r in workload.user.get("roles", []))
    print(f"seeded {len(workload.ids)} documents as {BENCH_USER} (roles: {roles})", file=sys.stderr)
    on_measure_start()
    rows = []
    for operation in args.ops:
        for count in args.clients:
            phases = await workload.measure(operation, count, pids)
            api, direct = phases["api"], phases["direct"]
            row = {
                "operation": operation,
                "clients": count,
                "api_ops_per_s": round(api.rate, 1),
                "direct_ops_per_s": round(direct.rate, 1),
                "ratio": round(api.rate / direct.rate, 3) if direct.rate else None,
                "phases": {mode: phase.summary() for mode, phase in phases.items()},
            }
            rows.append(row)
            print(
                f"  {operation} x{count}: API {api.rate:.0f}/s, direct {direct.rate:.0f}/s, "
                f"ratio {row['ratio']}",
                file=sys.stderr,
            )
    return rows


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument(
        "--seconds",
        type=float,
        default=5.0,
        help="measured time of each side of each comparison (default 5)",
    )
    parser.add_argument(
        "--warmup", type=float, default=0.5, help="unmeasured seconds per side first (0.5)"
    )
    parser.add_argument("--docs", type=int, default=2000, help="documents seeded for queries")
    parser.add_argument("--clients", default="1,20", help="concurrent clients, comma-separated")
    parser.add_argument("--ops", default="query,insert", help="query, insert or both")
    parser.add_argument("--mongo-uri", help="use this MongoDB instead of starting SecantusDB")
    parser.add_argument(
        "--direct-pool",
        choices=["shared", "per-client"],
        default="shared",
        help="direct side: one AsyncMongoClient with a pool shared by all clients "
        "(as the server does; default) or one AsyncMongoClient per client",
    )
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    parser.add_argument("--seed", type=int, default=1, help="random seed for the ids queried")
    parser.add_argument(
        "--no-uvloop", action="store_true", help="run the load generator on asyncio's default loop"
    )
    parser.add_argument(
        "--cprofile",
        metavar="FILE",
        help="run the server under cProfile and write its stats to FILE",
    )
    parser.add_argument(
        "--py-spy",
        dest="py_spy",
        metavar="FILE",
        help="sample the server with py-spy during the measurements (FILE.txt = "
        "collapsed stacks, .svg = flame graph, else speedscope JSON)",
    )
    parser.add_argument("--py-spy-rate", type=int, default=200, help="py-spy samples per second")
    args = parser.parse_args(argv)
    args.clients = [int(c) for c in args.clients.split(",") if c.strip()]
    args.ops = [o.strip() for o in args.ops.split(",") if o.strip()]
    if not args.clients or min(args.clients) < 1:
        parser.error("--clients needs positive numbers")
    if not set(args.ops) <= {"query", "insert"} or not args.ops:
        parser.error("--ops takes query and/or insert")
    if args.mongo_uri and not args.mongo_uri.startswith("mongodb://"):
        parser.error("--mongo-uri must be a mongodb:// URL")
    return args


def _raise_interrupt(_signum: int, _frame: Any) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _raise_interrupt)  # clean up on SIGTERM like on Ctrl-C
    load_start = os.getloadavg()[0]
    started = time.monotonic()
    out = sys.stderr
    print(f"load average (1 min) at start: {load_start:.2f} on {os.cpu_count()} cores", file=out)
    with contextlib.ExitStack() as stack:
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="iapflow-bench-")))
        store: EmbeddedServer | None = None
        if args.mongo_uri:
            mongo_uri = args.mongo_uri
            database = f"bench_{secrets.token_hex(4)}"  # a throw-away database, dropped at the end
        else:
            store = EmbeddedServer(str(workdir / "mongo"), sync_on_commit=True)
            store.start()
            stack.callback(store.stop)
            mongo_uri, database = store.uri, "bench"
        server = ServerProcess(workdir, mongo_uri, database, args.cprofile)
        stack.callback(server.stop)
        try:
            server.start()
        except RuntimeError as exc:
            print(f"bench: {exc}", file=sys.stderr)
            return 1
        print(f"server pid {server.pid} on {server.url}; store {mongo_uri}", file=out)
        pids: dict[str, int | None] = {"server": server.pid}
        if store is not None and store.process is not None:
            pids["store"] = store.process.pid
        spy: list[PySpy] = []

        def start_profiling() -> None:
            if args.py_spy and server.pid:
                spy.append(PySpy(server.pid, args.py_spy, args.py_spy_rate))

        if args.mongo_uri:
            stack.callback(drop_database, mongo_uri, database)
        runner: Callable[..., Any] = asyncio.run
        if not args.no_uvloop:
            with contextlib.suppress(ImportError):
                import uvloop

                runner = uvloop.run
        try:
            rows = runner(bench(args, server.url, mongo_uri, database, pids, start_profiling))
        except Exception:
            print(f"bench failed; server log tail:\n{server.log_tail()}", file=sys.stderr)
            raise
        finally:
            for profiler in spy:
                profiler.stop()
    load_end = os.getloadavg()[0]
    total = time.monotonic() - started
    if args.json:
        print(
            json.dumps(
                {
                    "load_average_1min": {"start": load_start, "end": load_end},
                    "cores": os.cpu_count(),
                    "seconds_per_side": args.seconds,
                    "docs": args.docs,
                    "direct_pool": args.direct_pool,
                    "store": "external"
                    if args.mongo_uri
                    else "secantusdb (embedded, sync_on_commit)",
                    "total_seconds": round(total, 1),
                    "results": rows,
                },
                indent=2,
            )
        )
    else:
        print()
        print_table(rows)
        print()
    print(f"load average (1 min) at end: {load_end:.2f}; total {total:.0f}s", file=out)
    return 0


def drop_database(uri: str, database: str) -> None:
    from pymongo import MongoClient

    with contextlib.suppress(Exception), MongoClient(uri, serverSelectionTimeoutMS=3000) as client:
        client.drop_database(database)


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("interrupted; stopped the server and the store", file=sys.stderr)
        sys.exit(130)
