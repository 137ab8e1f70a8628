"""Ingest into PostgreSQL with 1, 2 and 4 queue partitions, SQLite beside it, in one run, with the
CPU time each part spends per event.

Each configuration drains the same N realistic wire events over 50 tasks (benchmarks/workload.py)
with the real worker, `python -m taskevents.ingest --partition P`, one process per partition: into
a fresh SQLite file (one partition, as SQLite allows), or into a fresh database on a private
PostgreSQL server (tests/pgserver.py: initdb and pg_ctl of the installed server on a free port; never
the machine's own on 5432). The events are routed as a producer routes them (crc32(task_id) % N) into
staging lists first; the workers start, make the schema and take their partitions over; then the
lists are renamed into place at once and the clock runs until every event is stored (the workers'
own counters in Redis, so the measurement does not query the store). Both servers keep their shipped
durability (Redis: append-only, fsync every second; PostgreSQL: fsync and synchronous_commit on).

CPU per event is measured per part, so the figures carry to machines with more cores than this one's
two: the workers (their processes), Redis (the redis-server process) and PostgreSQL (the postmaster
and every backend), from their user + system CPU time across the drain; and a producer's, apart: the
same events emitted with `Emitter.emit` (validated, encoded, routed to their partition, pushed), its
process's CPU time. On two cores, more
partitions than cores cannot go faster: the CPU per event is what a projection uses.

    .venv/bin/python benchmarks/pg_ingest_bench.py [--events 200000] [--reps 3] [--partitions 1,2,4]

Prints a markdown table; every figure, each repetition included, goes to
benchmarks/results/pg_ingest.json. Throughputs and CPU figures are medians over the repetitions.
"""

import argparse
import os
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import psutil
import redis
import workload
from report import publish, say

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # tests/pgserver.py: the suite's own way of starting PostgreSQL

import psycopg  # noqa: E402

from taskevents.ingest.localredis import RedisServer  # noqa: E402
from taskevents.keys import QueueKeys, partition_of, partition_queue  # noqa: E402
from taskevents.settings import Settings  # noqa: E402
from tests.pgserver import PostgresServer  # noqa: E402

QUEUE = "bench:pg"


def _cpu(procs: list[psutil.Process]) -> dict[int, float]:
    """User + system CPU seconds of each process still running, by pid."""
    seconds = {}
    for proc in procs:
        try:
            times = proc.cpu_times()
        except psutil.NoSuchProcess:
            continue
        seconds[proc.pid] = times.user + times.system
    return seconds


def _spent(before: dict[int, float], after: dict[int, float]) -> float:
    """CPU seconds spent between two samples by the processes of the second (one that started in
    between counts from zero; one that ended in between is left out: an idle backend of an earlier
    run, whose time is not this run's)."""
    return sum(cpu - before.get(pid, 0.0) for pid, cpu in after.items())


def _pg_procs(server: PostgresServer) -> list[psutil.Process]:
    pid = server.pid()
    assert pid is not None
    postmaster = psutil.Process(pid)
    return [postmaster, *postmaster.children(recursive=True)]


def _stored(store: str, db: str) -> int:
    if store == "sqlite":
        with sqlite3.connect(db) as conn:
            return int(conn.execute("SELECT count(*) FROM task_events").fetchone()[0])
    with psycopg.connect(db) as pg:
        row = pg.execute("SELECT count(*) FROM task_events").fetchone()
        assert row is not None
        return int(row[0])


def _ingested(client: redis.Redis, lists: list[str]) -> int:
    return sum(int(client.hget(QueueKeys(name).stats, "ingested") or 0) for name in lists)


def _wait(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(0.01)


_EMIT_FIELDS = (
    "task_id",
    "event_type",
    "span_id",
    "actor",
    "phase",
    "parent_span_id",
    "payload",
    "event_uid",
)


def producer_us(server: RedisServer, frames: list[bytes], partitions: int) -> float:
    """CPU µs per event of a producer: `Emitter.emit` (validation, encoding, routing to its partition)
    and its background pushes, this process's CPU time (all its threads) from the first emit to the
    last push; into scratch lists, deleted after."""
    from taskevents.emitter import Emitter

    calls = [{k: v for k, v in orjson.loads(f).items() if k in _EMIT_FIELDS} for f in frames]
    # A buffer for all of them: emitting outruns the pushes, and a full buffer would drop events.
    emitter = Emitter(server.url, queue="producer:bench", partitions=partitions, buffer_size=len(calls) + 1)
    started = time.process_time()
    for call in calls:
        emitter.emit(**call)
    if not emitter.close(120):
        raise RuntimeError("the producer could not deliver every event")
    spent = time.process_time() - started
    client = redis.Redis.from_url(server.url)
    lists = [partition_queue("producer:bench", p, partitions) for p in range(partitions)]
    if sum(int(client.llen(name)) for name in lists) != len(calls):
        raise RuntimeError("the producer did not deliver every event once")
    client.delete(*lists)
    client.close()
    return spent / len(frames) * 1e6


def one(config: str, rep: int, server: RedisServer, redis_proc: psutil.Process, pg: PostgresServer,
        frames: list[bytes], tasks: list[str], workdir: Path) -> dict[str, float]:  # fmt: skip
    store, partitions = ("sqlite", 1) if config == "sqlite" else ("postgresql", int(config.split("-")[1]))
    client = redis.Redis.from_url(server.url)
    client.flushall()
    db = str(workdir / f"sqlite-{rep}.db") if store == "sqlite" else pg.database(f"bench_{config}_{rep}")
    Settings(redis_url=server.url, db=db, queue=QUEUE, partitions=partitions)  # refused if not valid
    lists = [partition_queue(QUEUE, p, partitions) for p in range(partitions)]
    for p, name in enumerate(lists):  # routed as a producer routes, staged under another name
        mine = [f for f, t in zip(frames, tasks, strict=True) if partition_of(t, partitions) == p]
        for first in range(0, len(mine), 10_000):
            client.rpush(f"staging:{name}", *mine[first : first + 10_000])
    env = {**os.environ, "TASKEVENTS_REDIS_URL": server.url, "TASKEVENTS_DB": db, "TASKEVENTS_QUEUE": QUEUE,
           "TASKEVENTS_PARTITIONS": str(partitions), "TASKEVENTS_LOG_LEVEL": "WARNING",
           "TASKEVENTS_ARCHIVE_DIR": str(workdir / "archive")}  # fmt: skip
    workers = [
        subprocess.Popen([sys.executable, "-m", "taskevents.ingest", "--partition", str(p)], env=env)
        for p in range(partitions)
    ]
    try:
        _wait(lambda: all(client.exists(QueueKeys(n).heartbeat) for n in lists), 60, "the workers")
        procs = [psutil.Process(w.pid) for w in workers]
        pg_procs = _pg_procs(pg)
        before = (_cpu(procs), _cpu([redis_proc]), _cpu(pg_procs))
        started = time.perf_counter()
        with client.pipeline(transaction=True) as pipe:
            for name in lists:
                pipe.rename(f"staging:{name}", name)
            pipe.execute()
        n = len(frames)
        _wait(lambda: _ingested(client, lists) >= n, 600, "every event stored")
        seconds = time.perf_counter() - started
        after = (_cpu(procs), _cpu([redis_proc]), _cpu(_pg_procs(pg)))
    finally:
        for w in workers:
            w.terminate()
        for w in workers:
            w.wait(30)
    if any(client.llen(QueueKeys(name).dead) for name in lists) or _stored(store, db) != n:
        raise RuntimeError(f"{config}: not every event stored once")
    client.close()
    us = [_spent(b, a) / n * 1e6 for b, a in zip(before, after, strict=True)]
    producer = producer_us(server, frames, partitions)
    row = {"events_per_s": n / seconds, "worker_us": us[0], "redis_us": us[1], "postgres_us": us[2],
           "producer_us": producer}  # fmt: skip
    say(
        f"{config} rep {rep + 1}: {row['events_per_s']:,.0f} events/s; CPU per event: producer "
        f"{producer:.1f} µs, workers {us[0]:.1f} µs, Redis {us[1]:.1f} µs, PostgreSQL {us[2]:.1f} µs"
    )
    return row


def table(results: dict[str, Any]) -> str:
    lines = [
        f"{results['events']:,} events over 50 tasks, {results['reps']} repetitions alternating, medians:",
        "",
        "| store, partitions | events/s | CPU µs per event: producer | workers | Redis | PostgreSQL server"
        " | all but the producer |",
        "|---|---|---|---|---|---|---|",
    ]
    for config in results["configs"]:
        m = results[config]["median"]
        parts = m["worker_us"] + m["redis_us"] + m["postgres_us"]
        name = "SQLite, 1" if config == "sqlite" else f"PostgreSQL, {config.split('-')[1]}"
        lines.append(f"| {name} | {m['events_per_s']:,.0f} | {m['producer_us']:.1f} | {m['worker_us']:.1f} | "
                     f"{m['redis_us']:.1f} | {m['postgres_us']:.1f} | {parts:.1f} |")  # fmt: skip
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(prog="pg_ingest_bench.py", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument(
        "--partitions", default="1,2,4", help="PostgreSQL partition counts (default %(default)s)"
    )
    parser.add_argument("--quick", action="store_true", help="20,000 events, one repetition: checks it runs")
    parser.add_argument("--output", type=Path, default=ROOT / "benchmarks/results/pg_ingest.json")
    args = parser.parse_args()
    if args.quick:
        args.events, args.reps, args.partitions = 20_000, 1, "1,2"
    configs = ["sqlite", *(f"postgresql-{int(n)}" for n in args.partitions.split(","))]
    with tempfile.TemporaryDirectory(prefix="pg-ingest-bench-") as tmp:
        workdir = Path(tmp)
        server = RedisServer(workdir / "redis").start()
        pg = PostgresServer()
        pg.start()
        try:
            assert server.proc is not None
            redis_proc = psutil.Process(server.proc.pid)
            say(f"building {args.events:,} wire events over 50 tasks")
            frames = list(workload.frames(args.events, 50, 7))
            tasks = [orjson.loads(f)["task_id"] for f in frames]
            runs: dict[str, list[dict[str, float]]] = {config: [] for config in configs}
            for rep in range(args.reps):
                for config in configs:
                    runs[config].append(one(config, rep, server, redis_proc, pg, frames, tasks, workdir))
        finally:
            pg.close()
            server.stop()
    results: dict[str, Any] = {"events": args.events, "reps": args.reps, "configs": configs}
    for config, rows in runs.items():
        median = {key: statistics.median(r[key] for r in rows) for key in rows[0]}
        results[config] = {"runs": rows, "median": median}
    publish(results, args.output, table(results))


if __name__ == "__main__":
    main()
