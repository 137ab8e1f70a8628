"""What the durability settings cost: Redis `appendfsync` everysec vs always, SQLite `synchronous` NORMAL
vs FULL, measured side by side in one run on private redis-servers (never the one on port 6379).

  1. producer  N events through `Emitter.emit()` + `flush()` into Redis with each `appendfsync`: the
               rate at which the emitter gets them acknowledged by Redis
  2. ingest    the same N events drained by an in-process `Worker.drain()` into a fresh store, for each
               pair of settings (the worker's claim and acknowledgement are Redis writes too)
  3. commit    the latency of committing a batch of one event (a quiet system: each event is its own
               batch), with each `synchronous`

Prints a markdown table and writes every figure to benchmarks/results/durability.json. What each
setting risks is in docs/reliability.md; this script measures what it costs.
"""

import argparse
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import redis
import workload
from report import publish, say

from taskevents.db import open_writer
from taskevents.emitter import Emitter
from taskevents.event import decode
from taskevents.ingest.localredis import RedisServer
from taskevents.ingest.worker import Worker
from taskevents.ingest.writer import Decoded, StoreWriter
from taskevents.settings import Settings

HERE = Path(__file__).resolve().parent
QUEUE = "bench:events"
FSYNC = ("everysec", "always")
SYNCHRONOUS = ("NORMAL", "FULL")


def produce(url: str, calls: list[workload.Event]) -> float:
    """Events/s from the first emit() to the moment Redis has acknowledged the last one."""
    emitter = Emitter(url, queue=QUEUE, buffer_size=len(calls) + 1)
    started = time.perf_counter()
    for e in calls:
        emitter.emit(e.task_id, e.event_type, span_id=e.span_id, actor=e.actor, phase=e.phase,
                     parent_span_id=e.parent_span_id, payload=e.payload)  # fmt: skip
    if not emitter.flush(120):
        raise RuntimeError("the emitter did not deliver every event")
    seconds = time.perf_counter() - started
    emitter.close(5)
    return len(calls) / seconds


def drain(url: str, db: Path, synchronous: str) -> float:
    # FULL makes every COMMIT wait for the WAL's fsync (TASKEVENTS_SQLITE_SYNCHRONOUS).
    worker = Worker(Settings(redis_url=url, db=db, queue=QUEUE, sqlite_synchronous=synchronous))
    started = time.perf_counter()
    worker.drain()
    return worker.totals.ingested / (time.perf_counter() - started)


def commit_latency(db: Path, synchronous: str, commits: int = 300) -> dict[str, float]:
    """Milliseconds to commit a one-event batch: what a quiet system adds to every event's latency."""
    writer = StoreWriter(open_writer(db, synchronous))
    times = []
    for batch_id, e in enumerate(workload.events(commits, 5, 13), start=1):
        body = workload.body(e)
        decoded = Decoded(*decode(body, 65536))
        started = time.perf_counter()
        writer.commit(batch_id, [decoded])
        times.append((time.perf_counter() - started) * 1000)
    times.sort()
    return {"median_ms": statistics.median(times), "p99_ms": times[int(len(times) * 0.99) - 1]}


def run(n: int, reps: int, workdir: Path) -> dict[str, Any]:
    calls = list(workload.events(n, 50, 11))
    producer: dict[str, list[float]] = {f: [] for f in FSYNC}
    ingest: dict[str, list[float]] = {f"{f}/{s}": [] for f in FSYNC for s in SYNCHRONOUS}
    for rep in range(reps):
        for fsync in FSYNC:
            server = RedisServer(workdir / f"redis-{fsync}-{rep}", None, "--appendfsync", fsync).start()
            client = redis.Redis.from_url(server.url)
            try:
                for sync in SYNCHRONOUS:
                    client.flushall()
                    rate = produce(server.url, calls)
                    producer[fsync].append(rate)
                    ingested = drain(server.url, workdir / f"{fsync}-{sync}-{rep}.db", sync)
                    ingest[f"{fsync}/{sync}"].append(ingested)
                    say(f"rep {rep + 1}/{reps} appendfsync {fsync}, synchronous {sync}: "
                        f"producer {rate:,.0f} events/s, worker {ingested:,.0f} events/s")  # fmt: skip
            finally:
                client.close()
                server.stop()
    latency = {s: commit_latency(workdir / f"latency-{s}.db", s) for s in SYNCHRONOUS}
    return {
        "events": n,
        "reps": reps,
        "one_event_commit": latency,
        "producer_events_per_s": {
            k: {"runs": v, "median": statistics.median(v)} for k, v in producer.items()
        },
        "ingest_events_per_s": {k: {"runs": v, "median": statistics.median(v)} for k, v in ingest.items()},
    }


def _medians(runs: dict[str, list[float]]) -> dict[str, dict[str, Any]]:
    return {k: {"runs": v, "median": statistics.median(v)} for k, v in runs.items()}


def table(results: dict[str, Any]) -> str:
    p, i = results["producer_events_per_s"], results["ingest_events_per_s"]
    base = i["everysec/NORMAL"]["median"]
    lines = [
        "| Redis appendfsync | SQLite synchronous | producer events/s (emit + flush) | worker events/s "
        "| worker vs shipped |",
        "|---|---|---|---|---|",
    ]
    for fsync in FSYNC:
        for sync in SYNCHRONOUS:
            w = i[f"{fsync}/{sync}"]["median"]
            shipped = " (shipped)" if (fsync, sync) == ("everysec", "NORMAL") else ""
            lines.append(
                f"| {fsync}{shipped} | {sync} | {p[fsync]['median']:,.0f} | {w:,.0f} | {w / base:.2f}× |"
            )
    lat = results["one_event_commit"]
    lines += ["", "| SQLite synchronous | commit of a one-event batch, median / p99 |", "|---|---|"]
    lines += [f"| {s} | {lat[s]['median_ms']:.2f} / {lat[s]['p99_ms']:.2f} ms |" for s in SYNCHRONOUS]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=100_000, help="events per run (default 100,000)")
    parser.add_argument("--reps", type=int, default=3, help="repetitions (default 3)")
    parser.add_argument("--output", type=Path, default=HERE / "results" / "durability.json")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="durability-bench-") as tmp:
        results = run(args.events, args.reps, Path(tmp))
    publish(results, args.output, table(results))


if __name__ == "__main__":
    main()
