#!/usr/bin/env python
"""Time from an insert to its change event: iapflow's watchevent against a raw pymongo stream.

For 1 and for 50 watchers (``--watchers``), measures how long it takes from sending an insert
until the change event reaches the first watcher and until it has reached all of them:

- **api**: the watchers are JSON websocket clients of ``iapflow serve`` (a subprocess), each
  signed in as a non-admin user and holding a ``watch`` on the collection; the writer sends
  ``insertone`` through the API. The server reads one change stream and fans it out.
- **raw**: the watchers are pymongo change streams (``collection.watch(full_document=
  "updateLookup")``, one per watcher, as if each client watched the store itself); the writer
  inserts the same document with pymongo.

Both sides run on the same store in the same run, interleaved. Run from the repository root:
``.venv/bin/python bench/bench_watch.py`` (``--help``; bench/README.md says how to read it).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench_api import (
    ADMIN_PASSWORD,
    ADMIN_USER,
    BENCH_PASSWORD,
    BENCH_USER,
    ServerProcess,
    _raise_interrupt,
    cpu_seconds,
    self_cpu_seconds,
    stored_document,
)
from pymongo import AsyncMongoClient

from iapflow import wellknown
from iapflow.ids import new_id
from iapflow.testing.client import JsonClient
from iapflow_mongo.embedded import EmbeddedServer

API_COLLECTION = "watch_api"
RAW_COLLECTION = "watch_raw"


@dataclass
class Samples:
    """Latencies of one side: per insert, to the first and to the last watcher, and the ack."""

    first: list[float] = field(default_factory=list)
    last: list[float] = field(default_factory=list)
    ack: list[float] = field(default_factory=list)
    missing: int = 0
    extra: int = 0
    cpu: dict[str, float] = field(default_factory=dict)

    def add(self, other: Samples) -> None:
        self.first += other.first
        self.last += other.last
        self.ack += other.ack
        self.missing += other.missing
        self.extra += other.extra
        for name, value in other.cpu.items():
            self.cpu[name] = self.cpu.get(name, 0.0) + value

    def summary(self) -> dict[str, Any]:
        def ms(values: list[float], q: float) -> float | None:
            if not values:
                return None
            ordered = sorted(values)
            return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000, 2)

        count = len(self.first)
        return {
            "inserts": count,
            "first_median_ms": ms(self.first, 0.5),
            "first_p95_ms": ms(self.first, 0.95),
            "all_median_ms": ms(self.last, 0.5),
            "all_p95_ms": ms(self.last, 0.95),
            "ack_median_ms": ms(self.ack, 0.5),
            "missing_events": self.missing,
            "unexpected_events": self.extra,
            "cpu_ms_per_insert": {
                name: round(value * 1000 / count, 2) if count else None
                for name, value in self.cpu.items()
            },
        }


class Arrivals:
    """When each document's event reached each watcher."""

    def __init__(self, watchers: int) -> None:
        self.watchers = watchers
        self.times: dict[str, list[float]] = {}
        self.done: dict[str, asyncio.Event] = {}
        self.unexpected = 0

    def expect(self, doc_id: str) -> asyncio.Event:
        self.times[doc_id] = []
        event = self.done[doc_id] = asyncio.Event()
        return event

    def arrived(self, doc_id: str) -> None:
        now = time.perf_counter()
        times = self.times.get(doc_id)
        if times is None:
            self.unexpected += 1
            return
        times.append(now)
        if len(times) == self.watchers:
            self.done[doc_id].set()
        elif len(times) > self.watchers:
            self.unexpected += 1


class Side:
    """The watchers and the writer of one side; watchers report to an :class:`Arrivals`."""

    name = ""

    async def open(self, watchers: int, arrivals: Arrivals) -> None:
        raise NotImplementedError

    async def insert(self, doc_id: str) -> float:
        """Insert one document; return when it was acknowledged (perf_counter)."""
        raise NotImplementedError

    async def close(self) -> None:
        raise NotImplementedError


class ApiSide(Side):
    name = "api"

    def __init__(self, url: str) -> None:
        self.url = url
        self.clients: list[JsonClient] = []
        self.tasks: list[asyncio.Task[None]] = []
        self.writer: JsonClient | None = None

    async def open(self, watchers: int, arrivals: Arrivals) -> None:
        async def consume(client: JsonClient) -> None:
            while True:
                command, data = await client.pushes.get()
                if command == "watchevent":
                    arrivals.arrived(data["result"]["documentKey"]["_id"])

        for _ in range(watchers):
            client = JsonClient(self.url)
            await client.connect()
            await client.signin(BENCH_USER, BENCH_PASSWORD)
            await client.call("watch", collectionname=API_COLLECTION)
            self.clients.append(client)
            self.tasks.append(asyncio.get_running_loop().create_task(consume(client)))
        self.writer = JsonClient(self.url)
        await self.writer.connect()
        await self.writer.signin(BENCH_USER, BENCH_PASSWORD)

    async def insert(self, doc_id: str) -> float:
        assert self.writer is not None
        await self.writer.call(
            "insertone",
            collectionname=API_COLLECTION,
            item={"_id": doc_id, "name": f"write {doc_id}", "tags": ["bench"]},
        )
        return time.perf_counter()

    async def close(self) -> None:
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        for client in [*self.clients, *([self.writer] if self.writer else [])]:
            await client.close()


class RawSide(Side):
    name = "raw"

    def __init__(self, mongo_uri: str, database: str, user: dict[str, Any]) -> None:
        self.mongo_uri = mongo_uri
        self.database = database
        self.user = user
        self.watch_client: AsyncMongoClient[dict[str, Any]] | None = None
        self.write_client: AsyncMongoClient[dict[str, Any]] | None = None
        self.streams: list[Any] = []
        self.tasks: list[asyncio.Task[None]] = []

    async def open(self, watchers: int, arrivals: Arrivals) -> None:
        self.watch_client = AsyncMongoClient(
            self.mongo_uri, tz_aware=True, maxPoolSize=max(100, watchers + 10)
        )
        self.write_client = AsyncMongoClient(self.mongo_uri, tz_aware=True)
        collection = self.watch_client[self.database][RAW_COLLECTION]

        async def consume(stream: Any) -> None:
            async for change in stream:
                arrivals.arrived(change["documentKey"]["_id"])

        for _ in range(watchers):
            stream = await collection.watch(full_document="updateLookup")
            self.streams.append(stream)
            self.tasks.append(asyncio.get_running_loop().create_task(consume(stream)))

    async def insert(self, doc_id: str) -> float:
        """The document the server would store for the same item: system fields and _acl."""
        assert self.write_client is not None
        uid, uname = self.user["_id"], self.user.get("name", "")
        item = {"name": f"write {doc_id}", "tags": ["bench"]}
        await self.write_client[self.database][RAW_COLLECTION].insert_one(
            stored_document(item, doc_id, uid, uname)
        )
        return time.perf_counter()

    async def close(self) -> None:
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        for stream in self.streams:
            with contextlib.suppress(Exception):
                await stream.close()
        for client in (self.watch_client, self.write_client):
            if client is not None:
                await client.close()


async def run_inserts(
    side: Side,
    arrivals: Arrivals,
    count: int,
    gap: float,
    wait: float,
    pids: dict[str, int | None],
) -> Samples:
    """``count`` inserts one after the other, each waiting until every watcher has its event."""
    samples = Samples()
    cpu_before = {name: cpu_seconds(pid) for name, pid in pids.items()}
    cpu_before["bench"] = self_cpu_seconds()
    for _ in range(count):
        doc_id = new_id()
        done = arrivals.expect(doc_id)
        sent = time.perf_counter()
        acked = await side.insert(doc_id)
        try:
            await asyncio.wait_for(done.wait(), wait)
        except TimeoutError:
            samples.missing += arrivals.watchers - len(arrivals.times[doc_id])
        times = arrivals.times.pop(doc_id)
        arrivals.done.pop(doc_id)
        samples.ack.append(acked - sent)
        if times:
            samples.first.append(min(times) - sent)
            samples.last.append(max(times) - sent)
        if gap:
            await asyncio.sleep(gap)
    samples.cpu = {name: cpu_seconds(pid) - cpu_before[name] for name, pid in pids.items()}
    samples.cpu["bench"] = self_cpu_seconds() - cpu_before["bench"]
    return samples


async def measure(
    args: argparse.Namespace,
    watchers: int,
    make: dict[str, Callable[[], Side]],
    pids: dict[str, int | None],
) -> dict[str, Samples]:
    """Run the sides A-B-B-A so that drift hits both; each run opens its own watchers and
    closes them after, so one side's watchers never load the store during the other's run."""
    totals = {name: Samples() for name in make}
    half = max(1, args.inserts // 2)
    for name in [*make, *reversed(make)]:
        side, arrivals = make[name](), Arrivals(watchers)
        try:
            await side.open(watchers, arrivals)
            await run_inserts(side, arrivals, args.warmup, args.gap, args.timeout, pids)
            run = await run_inserts(side, arrivals, half, args.gap, args.timeout, pids)
            run.extra += arrivals.unexpected
            totals[name].add(run)
        finally:
            await side.close()
    return totals


async def setup_user(api_url: str) -> dict[str, Any]:
    async with JsonClient(api_url) as admin:
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
    async with JsonClient(api_url) as client:
        reply = await client.signin(BENCH_USER, BENCH_PASSWORD)
    user: dict[str, Any] = reply["user"]
    if any(role["_id"] == wellknown.ADMINS for role in user.get("roles", [])):
        raise RuntimeError("the bench user must not be an admin")
    return user


async def bench(
    args: argparse.Namespace, api_url: str, mongo_uri: str, database: str, pids: dict[str, Any]
) -> list[dict[str, Any]]:
    user = await setup_user(api_url)
    rows = []
    for watchers in args.watchers:
        make: dict[str, Callable[[], Side]] = {
            "api": lambda: ApiSide(api_url),
            "raw": lambda: RawSide(mongo_uri, database, user),
        }
        totals = await measure(args, watchers, make, pids)
        api, raw = totals["api"].summary(), totals["raw"].summary()

        def ratio(key: str, api: dict[str, Any] = api, raw: dict[str, Any] = raw) -> Any:
            return round(api[key] / raw[key], 2) if api[key] and raw[key] else None

        row = {
            "watchers": watchers,
            "api": api,
            "raw": raw,
            "ratio_first_median": ratio("first_median_ms"),
            "ratio_all_median": ratio("all_median_ms"),
        }
        rows.append(row)
        print(
            f"  {watchers} watchers: api {api['first_median_ms']} / {api['all_median_ms']} ms, "
            f"raw {raw['first_median_ms']} / {raw['all_median_ms']} ms (first / all, median)",
            file=sys.stderr,
        )
    return rows


def print_table(rows: list[dict[str, Any]]) -> None:
    header = (
        f"{'watchers':>8} {'side':<5} {'first med':>10} {'first p95':>10} {'all med':>9} "
        f"{'all p95':>9} {'ack med':>8} {'missing':>8}"
    )
    print("milliseconds from sending the insert to the event arriving")
    print(header)
    print("-" * len(header))
    for row in rows:
        for side in ("api", "raw"):
            s = row[side]
            print(
                f"{row['watchers']:>8} {side:<5} {s['first_median_ms']:>10} "
                f"{s['first_p95_ms']:>10} {s['all_median_ms']:>9} {s['all_p95_ms']:>9} "
                f"{s['ack_median_ms']:>8} "
                f"{s['missing_events'] + s['unexpected_events']:>8}"
            )
        print(
            f"{'':>8} ratio api/raw: first {row['ratio_first_median']}, "
            f"all {row['ratio_all_median']} (medians)"
        )
    print()
    print("CPU ms per insert (server = iapflow serve, store = SecantusDB, bench = this process)")
    for row in rows:
        for side in ("api", "raw"):
            cpu = "  ".join(
                f"{name} {value}" for name, value in row[side]["cpu_ms_per_insert"].items()
            )
            print(f"  {row['watchers']:>3} {side:<4} {cpu}")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--watchers", default="1,50", help="watcher counts, comma-separated")
    parser.add_argument(
        "--inserts", type=int, default=200, help="measured inserts per side and watcher count"
    )
    parser.add_argument("--warmup", type=int, default=20, help="unmeasured inserts per side first")
    parser.add_argument(
        "--gap",
        type=float,
        default=0.005,
        help="seconds between one insert's last event and the next",
    )
    parser.add_argument(
        "--timeout", type=float, default=10.0, help="seconds to wait for an insert's events"
    )
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    parser.add_argument(
        "--no-uvloop", action="store_true", help="run the load generator on asyncio's default loop"
    )
    args = parser.parse_args(argv)
    args.watchers = [int(w) for w in args.watchers.split(",") if w.strip()]
    if not args.watchers or min(args.watchers) < 1:
        parser.error("--watchers needs positive numbers")
    if args.inserts < 2:
        parser.error("--inserts must be at least 2")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _raise_interrupt)
    load_start = os.getloadavg()[0]
    started = time.monotonic()
    out = sys.stderr
    print(f"load average (1 min) at start: {load_start:.2f} on {os.cpu_count()} cores", file=out)
    with contextlib.ExitStack() as stack:
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="iapflow-bench-")))
        store = EmbeddedServer(str(workdir / "mongo"), sync_on_commit=True)
        store.start()
        stack.callback(store.stop)
        mongo_uri, database = store.uri, "bench"
        server = ServerProcess(workdir, mongo_uri, database, None)
        stack.callback(server.stop)
        try:
            server.start()
        except RuntimeError as exc:
            print(f"bench: {exc}", file=out)
            return 1
        print(f"server pid {server.pid} on {server.url}; store {mongo_uri}", file=out)
        pids: dict[str, int | None] = {"server": server.pid}
        if store.process is not None:
            pids["store"] = store.process.pid
        runner: Callable[..., Any] = asyncio.run
        if not args.no_uvloop:
            with contextlib.suppress(ImportError):
                import uvloop

                runner = uvloop.run
        try:
            rows = runner(bench(args, server.url, mongo_uri, database, pids))
        except Exception:
            print(f"bench failed; server log tail:\n{server.log_tail()}", file=out)
            raise
    load_end = os.getloadavg()[0]
    total = time.monotonic() - started
    if args.json:
        print(
            json.dumps(
                {
                    "load_average_1min": {"start": load_start, "end": load_end},
                    "cores": os.cpu_count(),
                    "inserts_per_side": args.inserts,
                    "store": "secantusdb (embedded, sync_on_commit)",
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


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("interrupted; stopped the server and the store", file=sys.stderr)
        sys.exit(130)
