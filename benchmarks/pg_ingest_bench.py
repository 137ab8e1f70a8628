"""Ingest into PostgreSQL beside SQLite, in one run, with the CPU time each part spends per event.

A Redis list pre-filled with N realistic wire events over 50 tasks (benchmarks/workload.py) is
drained by an in-process `Worker` (the production loop, `drain()`), alternately into a fresh SQLite
file and into a fresh database on a private PostgreSQL server (tests/pgserver.py: initdb and pg_ctl
of the installed server, a free port; never the machine's own on 5432). Both servers run their
shipped durability (Redis: append-only, fsync every second; PostgreSQL: fsync and
synchronous_commit on).

CPU per event is measured per part, so the figures carry to machines with more cores than this
one's two: the worker (this process: its main and writer threads), Redis (the redis-server
process) and PostgreSQL (the postmaster and every backend, the worker's included), from their
user + system CPU time across the drain.

    .venv/bin/python benchmarks/pg_ingest_bench.py [--events 200000] [--reps 3]

Prints a markdown table; every figure, each repetition included, goes to
benchmarks/results/pg_ingest.json. Throughputs and CPU figures are medians over the repetitions.
"""

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil
import redis
import workload
from report import publish, say

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # tests/pgserver.py: the suite's own way of starting PostgreSQL

import psycopg  # noqa: E402

from taskevents.ingest.localredis import RedisServer  # noqa: E402
from taskevents.ingest.worker import Worker  # noqa: E402
from taskevents.keys import QueueKeys  # noqa: E402
from taskevents.settings import Settings  # noqa: E402
from tests.pgserver import PostgresServer  # noqa: E402

QUEUE = "bench:pg"
STORES = ("sqlite", "postgresql")


def _cpu(procs: list[psutil.Process]) -> float:
    total = 0.0
    for proc in procs:
        try:
            times = proc.cpu_times()
        except psutil.NoSuchProcess:
            continue  # a backend that ended: its time is lost, which only flatters PostgreSQL a little
        total += times.user + times.system
    return total


def _pg_procs(server: PostgresServer) -> list[psutil.Process]:
    pid = server.pid()
    assert pid is not None
    postmaster = psutil.Process(pid)
    return [postmaster, *postmaster.children(recursive=True)]


def _stored(store: str, db: str) -> int:
    if store == "sqlite":
        import sqlite3

        with sqlite3.connect(db) as conn:
            return int(conn.execute("SELECT count(*) FROM task_events").fetchone()[0])
    with psycopg.connect(db) as pg:
        row = pg.execute("SELECT count(*) FROM task_events").fetchone()
        assert row is not None
        return int(row[0])


def one(store: str, rep: int, client: redis.Redis, redis_proc: psutil.Process, pg: PostgresServer,
        frames: list[bytes], workdir: Path) -> dict[str, float]:  # fmt: skip
    client.flushall()
    for first in range(0, len(frames), 10_000):
        client.rpush(QUEUE, *frames[first : first + 10_000])
    db = str(workdir / f"{store}-{rep}.db") if store == "sqlite" else pg.database(f"bench_{rep}")
    worker = Worker(Settings(redis_url=client_url(client), db=db, queue=QUEUE))
    worker.take_over()  # the store made (schema) before the clock starts, as for a running worker
    me = psutil.Process()
    pg_procs = _pg_procs(pg)
    before = (_cpu([me]), _cpu([redis_proc]), _cpu(pg_procs))
    started = time.perf_counter()
    worker.drain()
    seconds = time.perf_counter() - started
    after = (_cpu([me]), _cpu([redis_proc]), _cpu(pg_procs))
    worker.close()
    n = len(frames)
    if client.llen(QueueKeys(QUEUE).dead) or _stored(store, db) != n:
        raise RuntimeError(f"{store}: not every event stored once")
    us = [(a - b) / n * 1e6 for a, b in zip(after, before, strict=True)]
    row = {"events_per_s": n / seconds, "worker_us": us[0], "redis_us": us[1], "postgres_us": us[2]}
    say(f"{store} rep {rep + 1}: {row['events_per_s']:,.0f} events/s; CPU per event: worker "
        f"{us[0]:.1f} µs, Redis {us[1]:.1f} µs, PostgreSQL {us[2]:.1f} µs")  # fmt: skip
    return row


def client_url(client: redis.Redis) -> str:
    kw = client.connection_pool.connection_kwargs
    return f"redis://{kw['host']}:{kw['port']}/0"


def table(results: dict[str, Any]) -> str:
    lines = [
        f"{results['events']:,} events over 50 tasks, {results['reps']} repetitions alternating, medians:",
        "",
        "| store | events/s | CPU µs per event: worker | Redis | PostgreSQL server | all |",
        "|---|---|---|---|---|---|",
    ]
    for store in STORES:
        m = results[store]["median"]
        parts = m["worker_us"] + m["redis_us"] + m["postgres_us"]
        lines.append(f"| {store} | {m['events_per_s']:,.0f} | {m['worker_us']:.1f} | {m['redis_us']:.1f} | "
                     f"{m['postgres_us']:.1f} | {parts:.1f} |")  # fmt: skip
    ratio = results["postgresql"]["median"]["events_per_s"] / results["sqlite"]["median"]["events_per_s"]
    lines += ["", f"PostgreSQL / SQLite throughput: {ratio:.2f}"]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(prog="pg_ingest_bench.py", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="20,000 events, one repetition: checks it runs")
    parser.add_argument("--output", type=Path, default=ROOT / "benchmarks/results/pg_ingest.json")
    args = parser.parse_args()
    if args.quick:
        args.events, args.reps = 20_000, 1
    with tempfile.TemporaryDirectory(prefix="pg-ingest-bench-") as tmp:
        workdir = Path(tmp)
        server = RedisServer(workdir / "redis").start()
        pg = PostgresServer()
        pg.start()
        try:
            client = redis.Redis.from_url(server.url)
            assert server.proc is not None
            redis_proc = psutil.Process(server.proc.pid)
            say(f"building {args.events:,} wire events over 50 tasks")
            frames = list(workload.frames(args.events, 50, 7))
            runs: dict[str, list[dict[str, float]]] = {store: [] for store in STORES}
            for rep in range(args.reps):
                for store in STORES:
                    runs[store].append(one(store, rep, client, redis_proc, pg, frames, workdir))
            client.close()
        finally:
            pg.close()
            server.stop()
    results: dict[str, Any] = {"events": args.events, "reps": args.reps}
    for store, rows in runs.items():
        median = {key: statistics.median(r[key] for r in rows) for key in rows[0]}
        results[store] = {"runs": rows, "median": median}
    publish(results, args.output, table(results))


if __name__ == "__main__":
    main()
