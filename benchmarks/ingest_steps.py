"""Where the production loop's time goes, beside SQLite's bare loop on the same batches.

Each round inserts the same events twice, back to back: SQLite's ceiling (ingest_ceiling.py, the
bare loop) and `Worker.drain()`, the production loop, with a timer around each step it takes (its
methods wrapped for this script only): on the writer's thread, the whole commit and its
acknowledgement, the prepared statements, the WAL cap; on the worker's thread, the claim and the
wait for the writer. From them: how much of the drain the writer's thread was busy (the rest it
waited: for its first batch, then between commits for the next), and how its commits compare with
the bare loop's time for the same work (above 1: slowed beside the worker thread's Python, and by
the steps the bare loop does not take).

Prints a table per round and writes every figure to benchmarks/results/ingest_steps.json.
"""

import argparse
import collections
import functools
import gc
import itertools
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import ingest_ceiling
import redis
import workload
from ingest_bench import QUEUE, fill
from report import publish, say

from taskevents.ingest import walcap, worker, writer
from taskevents.ingest.localredis import RedisServer
from taskevents.settings import Settings

HERE = Path(__file__).resolve().parent
COMMIT = "writer: commit and acknowledgement"  # its spans are kept too: the waits between them
# (class, method, label): the steps timed, each on the thread that runs it.
STEPS = (
    (worker.Worker, "_store", COMMIT),
    (writer.StoreWriter, "_write_prepared", "writer: the prepared statements"),
    (walcap.WalCap, "after_commit", "writer: WAL cap"),
    (worker.Worker, "_ack", "writer: acknowledgement"),
    (worker.Worker, "_claim", "worker: claim"),
    (worker.Worker, "_finish", "worker: waiting for the writer"),
)


def timing(spent: dict[str, float], commits: list[tuple[float, float]]) -> None:
    """Wrap each step so that its time adds up in `spent` (for this process only), and each commit's
    start and end go to `commits`."""
    for cls, name, label in STEPS:
        original: Callable[..., Any] = getattr(cls, name)

        @functools.wraps(original)
        def timed(
            *args: Any, _original: Callable[..., Any] = original, _label: str = label, **kwargs: Any
        ) -> Any:
            started = time.perf_counter()
            try:
                return _original(*args, **kwargs)
            finally:
                ended = time.perf_counter()
                spent[_label] += ended - started
                if _label == COMMIT:
                    commits.append((started, ended))

        setattr(cls, name, timed)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="ingest_steps.py", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    parser.add_argument("--events", type=int, default=200_000, help="events per round (default %(default)s)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds (default %(default)s)")
    parser.add_argument("--tasks", type=int, default=50, help="tasks the events belong to (default 50)")
    parser.add_argument("--output", type=Path, default=HERE / "results" / "ingest_steps.json")
    args = parser.parse_args(argv)

    spent: dict[str, float] = collections.defaultdict(float)
    commits: list[tuple[float, float]] = []
    rounds: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="ingest-steps-") as tmp:
        workdir = Path(tmp)
        server = RedisServer(workdir / "redis").start()
        try:
            client = redis.Redis.from_url(server.url)
            say(f"building {args.events:,} wire events over {args.tasks} tasks")
            frames = list(workload.frames(args.events, args.tasks, 7))
            settings = Settings(redis_url=server.url, db=workdir / "unused.db", queue=QUEUE,
                                archive_dir=workdir / "archive")  # fmt: skip
            batches = ingest_ceiling.prepare(frames, settings.batch_size, settings.max_payload_bytes)
            timing(spent, commits)
            for n in range(args.rounds):
                gc.collect()
                ceiling = ingest_ceiling.insert(batches, workdir / f"ceiling-{n}.db", settings)
                client.flushall()
                fill(client, QUEUE, frames)
                spent.clear()
                commits.clear()
                w = worker.Worker(settings.model_copy(update={"db": workdir / f"drain-{n}.db"}))
                started = time.perf_counter()
                w.drain()
                drain = time.perf_counter() - started
                w.close()
                busy = spent[COMMIT]
                # The writer's waits for its next batch, between one commit's end and the next's start.
                gaps = sorted(after[0] - before[1] for before, after in itertools.pairwise(commits))
                rounds.append({
                    "ceiling_seconds": ceiling, "drain_seconds": drain, "steps_seconds": dict(spent),
                    "ratio_to_ceiling": ceiling / drain, "writer_busy_share": busy / drain,
                    "writer_work_over_ceiling": busy / ceiling,
                    "before_first_commit_seconds": commits[0][0] - started,
                    "waits_between_commits_seconds": sum(gaps),
                    "wait_between_commits_median_ms": 1000 * gaps[len(gaps) // 2] if gaps else 0.0,
                })  # fmt: skip
                say(f"round {n + 1}/{args.rounds}: ceiling {ceiling:.2f} s, drain {drain:.2f} s")
        finally:
            server.stop()
    lines = ["| round | ceiling (s) | drain (s) | drain / ceiling | writer busy | writer's work / ceiling "
             "| writer's waits between commits: total (s), median (ms) |",
             "|---|---|---|---|---|---|---|"]  # fmt: skip
    for n, r in enumerate(rounds, 1):
        lines.append(f"| {n} | {r['ceiling_seconds']:.2f} | {r['drain_seconds']:.2f} | "
                     f"{r['ratio_to_ceiling']:.0%} | {r['writer_busy_share']:.0%} | "
                     f"{r['writer_work_over_ceiling']:.2f} | {r['waits_between_commits_seconds']:.2f}, "
                     f"{r['wait_between_commits_median_ms']:.1f} |")  # fmt: skip
    lines += ["", "| step (s, per round) | " + " | ".join(str(n) for n in range(1, len(rounds) + 1)) + " |",
              "|---|" + "---|" * len(rounds)]  # fmt: skip
    for _, _, label in STEPS:
        lines.append(
            f"| {label} | " + " | ".join(f"{r['steps_seconds'].get(label, 0):.2f}" for r in rounds) + " |"
        )
    publish({"events": args.events, "tasks": args.tasks, "rounds": rounds}, args.output, "\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
