"""Ingest benchmark: our batching worker against the original design and against one RQ job per event.

Measures, in one run, on private redis-servers (never the one on port 6379) with their shipped
configuration (append-only file, fsync every second):

  1. ingest    end-to-end: a Redis list pre-filled with N realistic wire events over 50 tasks is
               drained into a fresh SQLite store (all the schema's indexes) by an in-process
               `ingest.worker.Worker`, both with a `step()` loop (one batch at a time) and with
               `drain()` (the production loop: batch n + 1 validated while batch n commits)
  2. original  the original design: the same events, the original table, indexes and triggers,
               one transaction per event (counter, next_seq, insert, update, commit)
  3. rq        one RQ job per event (each stores its event the original way), drained by a burst
               RQ worker in its own process; SimpleWorker and the forking Worker, the faster counts
  4. emit      `Emitter.emit()` latency on the caller's thread, the background sender running
  5. memory    RSS of `python -m taskevents.ingest` (a subprocess) while a backlog drains, sampled
               every 0.5 s;
               flat = the highest RSS of the second half less RSS at 50 % drained < 10 MB: a
               worker whose memory grew with the events it has processed fails it. The store's
               page cache (64 MiB) and the allocator's arenas fill first, over the first ~300k
               events, so --quick's 100k backlog is too small to judge

Settings not given by the benchmark (batch_size, ...) come from TASKEVENTS_* as for the worker, so
`TASKEVENTS_BATCH_SIZE=5000 ingest_bench.py --only ingest` measures another batch size.

Prints a markdown table with the issue's targets and writes every figure, each repetition
included, to benchmarks/results/ingest.json. Throughputs are medians over --reps repetitions.
"""

import argparse
import gc
import os
import platform
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from functools import partial
from itertools import islice
from pathlib import Path
from typing import Any

import ingest_ceiling
import original_design
import orjson
import psutil
import redis
import rq
import rq_baseline
import workload
from report import publish, say

from taskevents.emitter import Emitter
from taskevents.ingest.localredis import RedisServer
from taskevents.ingest.worker import Worker
from taskevents.keys import QueueKeys
from taskevents.settings import Settings

HERE = Path(__file__).resolve().parent
QUEUE = "bench:events"
RQ_QUEUE = "bench-rq"
SECTIONS = ("ingest", "original", "rq", "emit", "memory")
INGEST_MODES = ("step", "drain", "ceiling", "ceiling_thread", "ceiling_process")
ORIGINAL_VARIANTS = ("as_designed", "favoured")
TARGETS = {
    "ingest_events_per_s": 50_000,
    "ratio_vs_original": 10,
    "ratio_vs_rq": 100,
    "emit_median_us": 10,
    "memory_growth_mb": 10,
}
NOTES = (
    "Ratios use 1b, the loop `python -m taskevents.ingest` runs. 2a is the original as its report",
    "describes it;",
    "2b favours it (our pragmas, no per-event writer-thread hand-off). Choices that favour RQ: each",
    "job stores its event the favoured way (2b), an RQ process keeps one SQLite connection, RQ logs",
    "at WARNING, RQ time excludes the worker's start-up. emit(): the buffer holds every call, so the",
    "drop path is never timed. RSS: the store's 64 MiB page cache fills first, then RSS stays level.",
)
# (full run, --quick)
DEFAULTS = {
    "events": (200_000, 20_000),
    "rq_events": (3_000, 500),
    "rq_fork_events": (300, 100),
    "emit_events": (200_000, 20_000),
    "backlog": (1_000_000, 100_000),
    "reps": (3, 2),
}


@dataclass(frozen=True)
class Config:
    events: int
    rq_events: int
    rq_fork_events: int
    emit_events: int
    backlog: int
    reps: int
    tasks: int
    seed: int
    sections: tuple[str, ...]
    output: Path


def parse_args(argv: list[str] | None = None) -> Config:
    parser = argparse.ArgumentParser(
        prog="ingest_bench.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    full = {name: full for name, (full, _) in DEFAULTS.items()}
    parser.add_argument(
        "--events", type=int, help=f"events for ingest and original (default {full['events']:,})"
    )
    parser.add_argument(
        "--rq-events", type=int, help=f"jobs for RQ SimpleWorker (default {full['rq_events']:,})"
    )
    parser.add_argument(
        "--rq-fork-events",
        type=int,
        help=f"jobs for the forking RQ Worker (default {full['rq_fork_events']:,})",
    )
    parser.add_argument(
        "--emit-events", type=int, help=f"emit() calls per repetition (default {full['emit_events']:,})"
    )
    parser.add_argument(
        "--backlog", type=int, help=f"events drained in the memory test (default {full['backlog']:,})"
    )
    parser.add_argument("--reps", type=int, help=f"repetitions per measurement (default {full['reps']})")
    parser.add_argument(
        "--quick", action="store_true", help="small sizes for a smoke run (explicit flags still win)"
    )
    parser.add_argument(
        "--tasks", type=int, default=50, help="concurrent tasks the events belong to (default 50)"
    )
    parser.add_argument("--seed", type=int, default=7, help="seed of the generated workload (default 7)")
    parser.add_argument(
        "--only", default=",".join(SECTIONS), help=f"comma-separated subset of {','.join(SECTIONS)}"
    )
    parser.add_argument(
        "--output",
        type=Path,
        default=HERE / "results" / "ingest.json",
        help="JSON results file (default %(default)s)",
    )
    args = parser.parse_args(argv)
    sections = tuple(s for s in args.only.split(",") if s)
    if unknown := set(sections) - set(SECTIONS):
        parser.error(f"--only: unknown sections {sorted(unknown)}")
    pick = 1 if args.quick else 0
    sizes = {name: getattr(args, name) or values[pick] for name, values in DEFAULTS.items()}
    return Config(**sizes, tasks=args.tasks, seed=args.seed, sections=sections, output=args.output)


# --- helpers ---------------------------------------------------------------------------------------


def chunks(items: Iterable[Any], size: int) -> Iterator[list[Any]]:
    it = iter(items)
    while chunk := list(islice(it, size)):
        yield chunk


def fill(client: redis.Redis, queue: str, items: Iterable[bytes]) -> int:
    """RPUSH pre-built elements, 1,000 per command and 20 commands per round trip."""
    count = 0
    for group in chunks(chunks(items, 1000), 20):
        pipe = client.pipeline(transaction=False)
        for chunk in group:
            pipe.rpush(queue, *chunk)
            count += len(chunk)
        pipe.execute()
    return count


def percentile(ordered: list[int], q: float) -> int:
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def check_store(db: Path, n: int) -> None:
    """All n events stored, and every task's seq is 1..count with no gap (both designs)."""
    conn = sqlite3.connect(db)
    try:
        stored = conn.execute("SELECT count(*) FROM task_events").fetchone()[0]
        broken = conn.execute(
            "SELECT count(*) FROM (SELECT task_id FROM task_events GROUP BY task_id"
            " HAVING min(seq) != 1 OR max(seq) != count(*) OR count(DISTINCT seq) != count(*))"
        ).fetchone()[0]
    finally:
        conn.close()
    if stored != n or broken:
        raise RuntimeError(f"{db.name}: {stored} of {n} events stored, {broken} tasks with bad seqs")


def throughput(runs: list[dict[str, float]]) -> float:
    return statistics.median(r["events_per_s"] for r in runs)


# --- 1. our worker ---------------------------------------------------------------------------------


def drain_with(worker: Worker, mode: str) -> None:
    """`step`: the loop the issue names, one batch at a time. `drain`: the production loop (`run()`
    without the waiting), which validates batch n + 1 while batch n commits on a writer thread."""
    if mode == "step":
        while worker.step():
            pass
    else:
        worker.drain()


def bench_ingest(client: redis.Redis, url: str, frames: list[bytes], workdir: Path, reps: int) -> dict:
    runs: dict[str, list[dict[str, float]]] = {mode: [] for mode in INGEST_MODES}
    settings = Settings(redis_url=url, db=workdir / "unused.db", queue=QUEUE)
    # SQLite's ceiling: the same rows and batches, planned before the clock starts (ingest_ceiling.py).
    prepared = ingest_ceiling.prepare(frames, settings.batch_size, settings.max_payload_bytes)
    for rep in range(reps):
        for mode in INGEST_MODES:
            db = workdir / f"ingest-{mode}-{rep}.db"
            if mode == "ceiling":
                gc.collect()
                seconds = ingest_ceiling.insert(prepared, db, settings)
            elif mode.startswith("ceiling_"):  # the same, the other core busy with Python
                gc.collect()
                beside: ingest_ceiling.Beside = "thread" if mode == "ceiling_thread" else "process"
                seconds = ingest_ceiling.insert_beside(prepared, db, settings, frames, beside)
            else:
                client.flushall()
                fill(client, QUEUE, frames)
                worker = Worker(settings.model_copy(update={"db": db}))
                started = time.perf_counter()
                drain_with(worker, mode)
                seconds = time.perf_counter() - started
                if client.llen(QueueKeys(QUEUE).dead):
                    raise RuntimeError("the worker dead-lettered benchmark events")
                # Its lease given up and its renewing thread stopped: left running, the thread found
                # the lease gone at the next round's FLUSHALL and said so ("the lease ... was lost").
                worker.close()
                del worker
                gc.collect()
            check_store(db, len(frames))
            runs[mode].append({"seconds": seconds, "events_per_s": len(frames) / seconds})
            say(f"ingest {mode} rep {rep + 1}/{reps}: {len(frames) / seconds:,.0f} events/s")
    by_mode = {mode: {"runs": r, "events_per_s": throughput(r)} for mode, r in runs.items()}

    # The production loop is the one compared with the baselines, and with SQLite's ceiling (its
    # ratio per repetition, each pair run back to back, and the median of those).
    def ratios(of: str, to: str) -> list[float]:
        return [c["seconds"] / d["seconds"] for d, c in zip(runs[of], runs[to], strict=True)]

    per_rep = ratios("drain", "ceiling")
    return {
        "events": len(frames),
        "batch_size": settings.batch_size,
        **by_mode,
        "events_per_s": by_mode["drain"]["events_per_s"],
        "ratio_to_ceiling": statistics.median(per_rep),
        "ratio_to_ceiling_runs": per_rep,
        # The ceiling with the other core busy, as a share of the bare one: the most that moving
        # work off the writer's path can reach here (a thread shares the GIL; a process does not).
        "ceiling_thread_share": statistics.median(ratios("ceiling_thread", "ceiling")),
        "ceiling_process_share": statistics.median(ratios("ceiling_process", "ceiling")),
    }


# --- 2. the original design ------------------------------------------------------------------------


def drain_one_per_transaction(client: redis.Redis, conn: sqlite3.Connection, *, favoured: bool) -> int:
    """Read the list in batches of 1,000 (kind to the original), store each event in its own transaction:
    through the original's SQLiteWriter hand-off, or (favoured) directly on this thread."""
    writer = None if favoured else original_design.SQLiteWriter(conn)
    stored = 0
    try:
        while items := client.lpop(QUEUE, 1000):
            for raw in items:
                assert isinstance(raw, bytes)
                event = orjson.loads(raw)
                if writer is None:
                    original_design.emit_event(conn, event)
                else:
                    writer.submit(partial(original_design.emit_event, event=event), timeout=10.0)
            stored += len(items)
    finally:
        if writer is not None:
            writer.close()
    return stored


def bench_original(client: redis.Redis, frames: list[bytes], workdir: Path, reps: int) -> dict[str, Any]:
    runs: dict[str, list[dict[str, float]]] = {variant: [] for variant in ORIGINAL_VARIANTS}
    for rep in range(reps):
        for variant in ORIGINAL_VARIANTS:
            favoured = variant == "favoured"
            client.flushall()
            fill(client, QUEUE, frames)
            db = workdir / f"original-{variant}-{rep}.db"
            conn = original_design.connect(db, favoured=favoured)
            started = time.perf_counter()
            drain_one_per_transaction(client, conn, favoured=favoured)
            seconds = time.perf_counter() - started
            conn.close()
            check_store(db, len(frames))
            runs[variant].append({"seconds": seconds, "events_per_s": len(frames) / seconds})
            say(f"original ({variant}) rep {rep + 1}/{reps}: {len(frames) / seconds:,.0f} events/s")
    by_variant = {v: {"runs": r, "events_per_s": throughput(r)} for v, r in runs.items()}
    # The design as the seed describes it is the one the ratio is about.
    return {"events": len(frames), **by_variant, "events_per_s": by_variant["as_designed"]["events_per_s"]}


# --- 3. one RQ job per event -----------------------------------------------------------------------


def enqueue_jobs(client: redis.Redis, db: Path, frames: list[bytes]) -> None:
    queue = rq.Queue(RQ_QUEUE, connection=client)
    for chunk in chunks(frames, 500):
        queue.enqueue_many(
            [rq.Queue.prepare_data(rq_baseline.store_one, args=(str(db), f.decode())) for f in chunk]
        )


def run_rq_worker(url: str, kind: str) -> dict[str, Any]:
    """A burst worker in a fresh process, as `rq worker --burst` would run."""
    script = HERE / "rq_baseline.py"
    cmd = [sys.executable, str(script), "--redis-url", url, "--queue", RQ_QUEUE, "--worker", kind]
    done = subprocess.run(cmd, capture_output=True, check=False, cwd=HERE)
    if done.returncode != 0:
        raise RuntimeError(f"RQ worker failed ({done.returncode}): {done.stderr.decode()[-2000:]}")
    return orjson.loads(done.stdout.splitlines()[-1])


def bench_rq_kind(
    client: redis.Redis, url: str, frames: list[bytes], workdir: Path, reps: int, kind: str
) -> dict:
    runs = []
    for rep in range(reps):
        client.flushall()
        db = workdir / f"rq-{kind}-{rep}.db"
        original_design.connect(db).close()  # the schema exists before the clock starts
        enqueue_jobs(client, db, frames)
        result = run_rq_worker(url, kind)
        if result["failed"]:
            raise RuntimeError(f"{result['failed']} RQ jobs failed")
        check_store(db, len(frames))
        runs.append({"seconds": result["seconds"], "events_per_s": len(frames) / result["seconds"]})
        say(f"rq {result['worker']} rep {rep + 1}/{reps}: {runs[-1]['events_per_s']:,.0f} events/s")
    return {"worker": "SimpleWorker" if kind == "simple" else "Worker", "events": len(frames), "runs": runs,
            "events_per_s": throughput(runs)}  # fmt: skip


def bench_rq(
    client: redis.Redis, url: str, frames: list[bytes], fork_n: int, workdir: Path, reps: int
) -> dict:
    simple = bench_rq_kind(client, url, frames, workdir, reps, "simple")
    fork = bench_rq_kind(client, url, frames[:fork_n], workdir, reps, "fork")
    best = max(simple, fork, key=lambda r: r["events_per_s"])
    return {
        "simple": simple,
        "fork": fork,
        "best_worker": best["worker"],
        "events_per_s": best["events_per_s"],
    }


# --- 4. emit() latency -----------------------------------------------------------------------------


def time_emits(emitter: Emitter, calls: list[workload.Event]) -> list[int]:
    """Nanoseconds of each emit() call, measured on this (the caller's) thread."""
    latencies = [0] * len(calls)
    emit, clock = emitter.emit, time.perf_counter_ns
    for i, e in enumerate(calls):
        t0 = clock()
        emit(e.task_id, e.event_type, span_id=e.span_id, actor=e.actor, phase=e.phase,
             parent_span_id=e.parent_span_id, payload=e.payload)  # fmt: skip
        latencies[i] = clock() - t0
    return latencies


def bench_emit(client: redis.Redis, url: str, n: int, tasks: int, seed: int, reps: int) -> dict[str, Any]:
    calls = list(workload.events(n, tasks, seed))
    runs = []
    for rep in range(reps):
        client.flushall()
        # A buffer that holds every call: the sender (~100k events/s) is slower than a tight emit()
        # loop, and the drop-oldest path would be timed instead of the normal one.
        emitter = Emitter(url, queue=QUEUE, buffer_size=n + 1000)
        time_emits(emitter, calls[:1000])  # warm-up: starts the sender thread and connects
        emitter.flush(30)
        sent_before = emitter.sent
        latencies = sorted(time_emits(emitter, calls))
        sent_during = emitter.sent - sent_before  # > 0: the sender pushed while we emitted
        delivered = emitter.flush(60)
        dropped = emitter.dropped
        emitter.close(5)
        if not delivered or client.llen(QUEUE) != 1000 + n - dropped:
            raise RuntimeError(f"emitter lost events: {client.llen(QUEUE)} in Redis, {dropped} dropped")
        run = {
            "median_us": percentile(latencies, 0.5) / 1000,
            "p90_us": percentile(latencies, 0.9) / 1000,
            "p99_us": percentile(latencies, 0.99) / 1000,
            "p999_us": percentile(latencies, 0.999) / 1000,
            "max_us": latencies[-1] / 1000,
            "sent_by_sender_during_emits": sent_during,
            "dropped": dropped,
        }
        runs.append(run)
        say(f"emit rep {rep + 1}/{reps}: median {run['median_us']:.1f} µs, p99 {run['p99_us']:.1f} µs, "
            f"{sent_during:,} of {n:,} pushed by the sender meanwhile")  # fmt: skip
    summary = {k: statistics.median(r[k] for r in runs) for k in ("median_us", "p90_us", "p99_us", "p999_us")}
    concurrent = all(r["sent_by_sender_during_emits"] > 0 for r in runs)
    return {"calls": n, "buffer_size": n + 1000, "runs": runs, **summary, "sender_concurrent": concurrent}


# --- 5. worker memory ------------------------------------------------------------------------------


def worker_env(url: str, db: Path) -> dict[str, str]:
    # Other TASKEVENTS_* settings (e.g. TASKEVENTS_BATCH_SIZE) pass through, as in bench_ingest.
    env = dict(os.environ)
    env.update(
        TASKEVENTS_REDIS_URL=url,
        TASKEVENTS_DB=str(db),
        TASKEVENTS_QUEUE=QUEUE,
        TASKEVENTS_LOG_LEVEL="WARNING",
    )
    return env


def sample_until_drained(
    client: redis.Redis, proc: subprocess.Popen[bytes], n: int
) -> list[dict[str, float]]:
    """RSS every 0.5 s, with how much of the backlog is drained, until queue and processing are empty."""
    keys = QueueKeys(QUEUE)
    process = psutil.Process(proc.pid)
    samples = []
    started = time.monotonic()
    while True:
        remaining = sum(int(client.llen(key)) for key in (keys.queue, *keys.processing_keys))
        rss = process.memory_info().rss
        samples.append({"t": time.monotonic() - started, "drained": 1 - remaining / n, "rss_mb": rss / 2**20})
        if remaining == 0:
            return samples
        if proc.poll() is not None:
            raise RuntimeError(f"worker exited with {proc.returncode} before the backlog drained")
        time.sleep(max(0.0, 0.5 - (time.monotonic() - started - samples[-1]["t"])))


def rss_at(samples: list[dict[str, float]], fraction: float) -> float:
    return next(s["rss_mb"] for s in samples if s["drained"] >= fraction)


def bench_memory(
    client: redis.Redis, url: str, n: int, tasks: int, seed: int, workdir: Path
) -> dict[str, Any]:
    client.flushall()
    say(f"memory: filling the queue with {n:,} events")
    fill(client, QUEUE, workload.frames(n, tasks, seed))
    db = workdir / "memory.db"
    log = (workdir / "memory-worker.log").open("wb")
    cmd = [sys.executable, "-m", "taskevents.ingest"]
    proc = subprocess.Popen(cmd, env=worker_env(url, db), stdout=log, stderr=subprocess.STDOUT)
    try:
        samples = sample_until_drained(client, proc, n)
    finally:
        proc.send_signal(signal.SIGTERM)
        exit_code = proc.wait(30)
        log.close()
    check_store(db, n)
    points = {f"rss_{int(p * 100)}pct_mb": rss_at(samples, p) for p in (0.1, 0.5, 0.9, 1.0)}
    peak = max(s["rss_mb"] for s in samples)
    second_half_peak = max(s["rss_mb"] for s in samples if s["drained"] >= 0.5)
    growth = second_half_peak - points["rss_50pct_mb"]
    drain_s = samples[-1]["t"]
    say(f"memory: drained in {drain_s:.1f} s, RSS {points}, max {peak:.1f} MB")
    return {
        "backlog": n, **points, "rss_max_mb": peak, "growth_second_half_mb": growth,
        "flat": growth < TARGETS["memory_growth_mb"], "drain_seconds": drain_s,
        "events_per_s_incl_startup": n / drain_s, "worker_exit_code": exit_code, "samples": samples,
    }  # fmt: skip


# --- report ----------------------------------------------------------------------------------------


def environment(client: redis.Redis) -> dict[str, Any]:
    return {
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
        "redis_server": client.info("server")["redis_version"],
        "redis_config": "shipped: appendonly yes, appendfsync everysec, noeviction",
        "rq": rq.__version__,
        "at": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def workload_stats(frames: list[bytes], tasks: int) -> dict[str, Any]:
    payloads = [len(orjson.dumps(orjson.loads(f)["payload"])) for f in frames[:20_000]]
    return {
        "tasks": tasks,
        "wire_bytes_mean": statistics.mean(map(len, frames)),
        "payload_bytes_mean": statistics.mean(payloads),
        "payload_bytes_p10_p90": statistics.quantiles(payloads, n=10)[::8],
    }


def ratios(results: dict[str, Any]) -> None:
    ours = results.get("ingest", {}).get("events_per_s")
    for name in ("original", "rq"):
        if ours and name in results:
            results[name]["ratio_ours_over_this"] = ours / results[name]["events_per_s"]
    if ours and "original" in results:
        favoured = results["original"]["favoured"]["events_per_s"]
        results["original"]["ratio_ours_over_favoured"] = ours / favoured


def yes(ok: bool) -> str:
    return "yes" if ok else "**no**"


def table(results: dict[str, Any]) -> str:
    """Markdown: one row per figure, with the issue's target next to it where there is one."""
    rows: list[tuple[str, str, str, str]] = []
    if ing := results.get("ingest"):
        for mode, label in (
            ("step", "1a. Worker.step() loop"),
            ("drain", "1b. Worker.drain(), production loop"),
        ):
            v = ing[mode]["events_per_s"]
            what = f"{label} ({ing['events']:,} events, batch {ing['batch_size']})"
            rows.append((what, f"{v:,.0f} events/s", "≥ 50,000 events/s", yes(v >= 50_000)))
        if "ceiling" in ing:
            v = ing["ceiling"]["events_per_s"]
            what = "1c. SQLite's ceiling: the same rows and batches, a bare insert loop"
            rows.append((what, f"{v:,.0f} events/s", "", ""))
            r = ing["ratio_to_ceiling"]
            runs = ", ".join(f"{x:.0%}" for x in ing["ratio_to_ceiling_runs"])
            what = f"production loop (1b) / ceiling (1c), per pair: {runs}"
            rows.append((what, f"{r:.0%}", "≥ 90 %", yes(r >= 0.9)))
        for mode, label, side in (
            ("ceiling_thread", "1d. the ceiling beside a thread decoding events (one GIL)", "thread"),
            ("ceiling_process", "1e. the ceiling beside a process decoding events", "process"),
        ):
            if mode in ing:
                v = ing[mode]["events_per_s"]
                share_of_1c = ing[f"ceiling_{side}_share"]
                rows.append((f"{label}; / 1c", f"{v:,.0f} events/s; {share_of_1c:.0%}", "", ""))
    if orig := results.get("original"):
        for variant, label in (
            ("as_designed", "2a. original design as designed: SQLiteWriter hand-off, 1 transaction/event"),
            ("favoured", "2b. original design favoured: no hand-off, our pragmas"),
        ):
            what = f"{label} ({orig['events']:,} events)"
            rows.append((what, f"{orig[variant]['events_per_s']:,.0f} events/s", "", ""))
        if (r := orig.get("ratio_ours_over_this")) is not None:
            rows.append(("ours (1b) / original as designed (2a)", f"{r:.1f}×", "≥ 10×", yes(r >= 10)))
            r_fav = orig["ratio_ours_over_favoured"]
            rows.append(("ours (1b) / original favoured (2b)", f"{r_fav:.1f}×", "", ""))
    if rqr := results.get("rq"):
        for k in (rqr["simple"], rqr["fork"]):
            what = f"3. one RQ job per event, rq.{k['worker']} ({k['events']:,} jobs)"
            rows.append((what, f"{k['events_per_s']:,.0f} events/s", "", ""))
        if (r := rqr.get("ratio_ours_over_this")) is not None:
            rows.append(
                (f"ours (1b) / RQ (best: {rqr['best_worker']})", f"{r:,.0f}×", "≥ 100×", yes(r >= 100))
            )
    if em := results.get("emit"):
        sender = "sender thread running" if em["sender_concurrent"] else "sender NOT seen running"
        what = f"4. emit() median, caller's thread ({em['calls']:,} calls, {sender})"
        rows.append((what, f"{em['median_us']:.1f} µs", "≤ 10 µs", yes(em["median_us"] <= 10)))
        rows.append(("emit() p99 / p99.9", f"{em['p99_us']:.1f} / {em['p999_us']:.1f} µs", "", ""))
    if mem := results.get("memory"):
        rss = " / ".join(f"{mem[f'rss_{p}pct_mb']:.0f}" for p in (10, 50, 90, 100))
        rows.append((f"5. worker RSS at 10/50/90/100 % of {mem['backlog']:,} drained", f"{rss} MB", "", ""))
        growth = f"{mem['rss_max_mb']:.0f} MB; {mem['growth_second_half_mb']:+.1f} MB"
        rows.append(
            ("worker RSS max; growth over the second half", growth, "flat (< 10 MB)", yes(mem["flat"]))
        )
        rate = f"{mem['events_per_s_incl_startup']:,.0f} events/s"
        rows.append(("backlog drain rate (subprocess, incl. start-up)", rate, "", ""))
    lines = ["| measurement | measured | target | met |", "|---|---|---|---|"]
    return "\n".join(lines + [f"| {' | '.join(row)} |" for row in rows] + ["", *NOTES])


# --- main ------------------------------------------------------------------------------------------


def run(cfg: Config, workdir: Path) -> dict[str, Any]:
    server = RedisServer(workdir / "redis").start()
    client = redis.Redis.from_url(server.url)
    results: dict[str, Any] = {"config": {**asdict(cfg), "output": str(cfg.output)}, "targets": TARGETS}
    try:
        results["environment"] = environment(client)
        frames: list[bytes] = []
        if {"ingest", "original", "rq"} & set(cfg.sections):
            say(f"building {cfg.events:,} wire events over {cfg.tasks} tasks")
            frames = list(workload.frames(max(cfg.events, cfg.rq_events), cfg.tasks, cfg.seed))
            results["workload"] = workload_stats(frames, cfg.tasks)
        if "ingest" in cfg.sections:
            results["ingest"] = bench_ingest(client, server.url, frames[: cfg.events], workdir, cfg.reps)
        if "original" in cfg.sections:
            results["original"] = bench_original(client, frames[: cfg.events], workdir, cfg.reps)
        if "rq" in cfg.sections:
            rq_frames = frames[: cfg.rq_events]
            results["rq"] = bench_rq(client, server.url, rq_frames, cfg.rq_fork_events, workdir, cfg.reps)
        del frames
        if "emit" in cfg.sections:
            results["emit"] = bench_emit(
                client, server.url, cfg.emit_events, cfg.tasks, cfg.seed + 1, cfg.reps
            )
        if "memory" in cfg.sections:
            results["memory"] = bench_memory(
                client, server.url, cfg.backlog, cfg.tasks, cfg.seed + 2, workdir
            )
    finally:
        client.close()
        server.stop()
    ratios(results)
    return results


def main() -> None:
    cfg = parse_args()
    with tempfile.TemporaryDirectory(prefix="ingest-bench-") as tmp:
        results = run(cfg, Path(tmp))
    publish(results, cfg.output, table(results))


if __name__ == "__main__":
    main()
