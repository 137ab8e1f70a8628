"""Retention benchmark: what an event costs on disk in the store and in its archive, how fast tasks are
archived and restored, the store's file after archiving 90 % of its tasks (before and after the worker
gives the pages back), and ingest while an archive pass runs against ingest alone, side by side.

Everything runs as deployed, on a private redis-server: the real worker (`python -m taskevents.ingest`),
archive passes (`ingest/retention.py`, as the `jobs` process runs them) and restores through the worker.
The store is filled with the simulator's realistic runs (`taskevents.simulate`: phases, parallel work
items, progress, checkpoints, evidence, recoveries).

  storage   the store's file (after a TRUNCATE checkpoint) per event, indexes and summaries included;
            the archives' bytes per event; the compression ratio (the JSON Lines' size / zstd's).
  archive   90 % of the tasks, least recently active first, in bounded passes run flat out (no
            pacing): events/s from the first pass to the last archive written; the worker removes
            their rows meanwhile, and how long after the last archive they are all gone.
  reclaim   the file's size before archiving, when the rows are gone, and once the worker's
            incremental vacuum has given the free pages back (a store without it would stay as large).
  restore   a tenth of the archived tasks brought back by the worker: events/s.
  ingest    a backlog of --ingest events (new runs) drained by the worker alone, then the same shape
            drained while archive passes (paced as the `jobs` process runs them) archive the previous
            round's tasks and the worker removes their rows; --reps rounds, alternating, the median
            of each side.
"""

import argparse
import os
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import orjson
import redis
import zstandard
from report import publish, say

from taskevents.archive import TaskArchive
from taskevents.emitter import Emitter
from taskevents.ingest.archived import KEEP_FREE
from taskevents.ingest.localredis import RedisServer
from taskevents.ingest.retention import MAX_TASKS, archive_pass
from taskevents.keys import QueueKeys
from taskevents.messages import ControlRequest
from taskevents.settings import Settings
from taskevents.simulate import simulate

HERE = Path(__file__).resolve().parent
MB = 1e6
ARCHIVED_LEFT = (
    "SELECT (SELECT count(*) FROM tasks WHERE archived = 1), (SELECT count(*) FROM archive_pending)"
)
ENDED_LIKE = "SELECT task_id FROM tasks WHERE task_id LIKE ? AND archived = 0 AND status != 'running'"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--tasks", type=int, default=2000, help="simulated runs in the store (default %(default)s)"
    )
    parser.add_argument("--ingest", type=int, default=600, help="runs per ingest round (default %(default)s)")
    parser.add_argument("--reps", type=int, default=2, help="ingest rounds per side (default %(default)s)")
    parser.add_argument("--quick", action="store_true", help="200 runs, 100 per round, 1 round: a smoke run")
    parser.add_argument("--output", type=Path, default=HERE / "results" / "retention.json")
    args = parser.parse_args()
    if args.quick:
        args.tasks, args.ingest, args.reps = 200, 100, 1
    return args


def q(db: Path, sql: str, *params: object) -> Any:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return conn.execute(sql, params).fetchall()
    finally:
        conn.close()


def file_bytes(db: Path) -> int:
    conn = sqlite3.connect(db)
    try:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # the WAL's pages into the file, the WAL emptied
    finally:
        conn.close()
    return db.stat().st_size


def stored(db: Path) -> int:
    try:
        return int(q(db, "SELECT coalesce(sum(event_count), 0) FROM tasks")[0][0])
    except sqlite3.OperationalError:
        return 0


def wait(predicate: Any, timeout: float = 600, interval: float = 0.05) -> float:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise RuntimeError("timed out")
        time.sleep(interval)
    return time.monotonic()


def emit_runs(settings: Settings, tasks: int, prefix: str) -> int:
    emitter = Emitter(settings.redis_url, queue=settings.queue, buffer_size=2_000_000)
    events = simulate(emitter, tasks=tasks, concurrency=50, rate=0, seed=7, prefix=prefix)
    assert emitter.close(120)
    return events


def start_worker(settings: Settings, log: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "TASKEVENTS_REDIS_URL": settings.redis_url, "TASKEVENTS_DB": settings.db,
           "TASKEVENTS_QUEUE": settings.queue, "TASKEVENTS_ARCHIVE_DIR": str(settings.archive_dir),
           "TASKEVENTS_LOG_LEVEL": "WARNING"}  # fmt: skip
    with log.open("ab") as out:
        return subprocess.Popen([sys.executable, "-m", "taskevents.ingest"], env=env, stderr=out)


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    proc.wait(60)


def ingest_round(
    settings: Settings, log: Path, tasks: int, prefix: str, archiving: list[str]
) -> dict[str, Any]:
    """A backlog of `tasks` runs queued first, then drained by a fresh worker; meanwhile, if `archiving`
    names tasks, archive passes archive them (and the worker removes their rows)."""
    before = stored(settings.sqlite_path)
    events = emit_runs(settings, tasks, prefix)
    worker = start_worker(settings, log)
    stop_passes = threading.Event()
    passes: list[float] = []

    def archiver() -> None:
        left = list(archiving)
        while left and not stop_passes.is_set():
            t0 = time.monotonic()
            archive_pass(settings, task_ids=left[:MAX_TASKS])
            passes.append(time.monotonic() - t0)
            left = left[MAX_TASKS:]

    try:
        first = wait(lambda: stored(settings.sqlite_path) > before, interval=0.01)
        thread = threading.Thread(target=archiver)
        if archiving:
            thread.start()
        last = wait(lambda: stored(settings.sqlite_path) >= before + events, interval=0.01)
        stop_passes.set()
        if archiving:
            thread.join()
    finally:
        stop(worker)
    seconds = last - first
    return {"events": events, "seconds": seconds, "events_per_s": events / seconds, "passes": len(passes)}


def run(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    server = RedisServer(tmp / "redis").start()
    settings = Settings(
        redis_url=server.url, db=tmp / "events.db", queue="ret:events", archive_dir=tmp / "archive"
    )
    log = tmp / "worker.log"
    keys = QueueKeys(settings.queue)
    out: dict[str, Any] = {"config": vars(args) | {"output": str(args.output)}}
    try:
        say(f"emitting {args.tasks} simulated runs")
        events = emit_runs(settings, args.tasks, "store")
        worker = start_worker(settings, log)
        wait(lambda: stored(settings.sqlite_path) >= events)
        size0 = file_bytes(settings.sqlite_path)
        tasks = [t for (t,) in q(settings.sqlite_path, "SELECT task_id FROM tasks ORDER BY last_at")]
        chosen = tasks[: len(tasks) * 9 // 10]
        chosen_events = int(q(settings.sqlite_path, "SELECT sum(event_count) FROM tasks WHERE task_id IN "
                              "(SELECT value FROM json_each(?))", _json(chosen))[0][0])  # fmt: skip
        say(f"{events:,} events in {len(tasks)} tasks, {size0 / MB:.1f} MB; archiving {len(chosen)}")

        t0 = time.monotonic()
        for i in range(0, len(chosen), MAX_TASKS):
            report = archive_pass(settings, task_ids=chosen[i : i + MAX_TASKS], pace=0)  # flat out
            assert not report.errors, report.errors
        t_archived = time.monotonic()
        gone = wait(lambda: q(settings.sqlite_path, ARCHIVED_LEFT) == [(len(chosen), 0)])
        free_at_gone = q(settings.sqlite_path, "PRAGMA freelist_count")[0][0] * 4096
        size_gone = file_bytes(settings.sqlite_path)
        # The worker keeps an eighth of the file free for inserts to reuse (ingest/archived.py).
        wait(lambda: q(settings.sqlite_path, "PRAGMA freelist_count")[0][0]
             <= q(settings.sqlite_path, "PRAGMA page_count")[0][0] * KEEP_FREE, interval=0.2)  # fmt: skip
        t_reclaimed = time.monotonic()
        size_reclaimed = file_bytes(settings.sqlite_path)

        archive = TaskArchive.at(settings.archive_dir)
        manifests = [archive.manifest(t) for t in chosen]
        compressed = sum(m.size for m in manifests)
        raw = sum(zstandard.frame_content_size(archive.blobs.get(m.file)) for m in manifests)
        say(
            f"archived {chosen_events:,} events in {t_archived - t0:.1f} s; rows gone "
            f"{gone - t_archived:.1f} s later; {size0 / MB:.1f} -> {size_reclaimed / MB:.1f} MB"
        )

        back = chosen[: len(chosen) // 9]
        back_events = sum(m.event_count for m in manifests[: len(back)])
        client = redis.Redis.from_url(settings.redis_url)
        t1 = time.monotonic()
        for t in back:
            client.rpush(keys.control, ControlRequest(op="restore", task_id=t).encode())
        db = settings.sqlite_path
        t_back = wait(lambda: q(db, "SELECT count(*) FROM tasks WHERE archived = 1 AND task_id IN "
                               "(SELECT value FROM json_each(?))", _json(back))[0][0] == 0)  # fmt: skip
        stop(worker)
        out["storage"] = {
            "events": events,
            "tasks": len(tasks),
            "store_bytes_per_event": size0 / events,
            "archived_tasks": len(chosen),
            "archived_events": chosen_events,
            "archive_bytes": compressed,
            "archive_bytes_per_event": compressed / chosen_events,
            "jsonl_bytes": raw,
            "compression_ratio": raw / compressed,
            "archive_seconds": t_archived - t0,
            "archive_events_per_s": chosen_events / (t_archived - t0),
            "drop_seconds": gone - t_archived,
            "drop_events_per_s": chosen_events / max(gone - t_archived, 1e-9),
            "file_bytes_before": size0,
            "file_bytes_rows_gone": size_gone,
            "free_bytes_when_rows_gone": free_at_gone,
            "file_bytes_reclaimed": size_reclaimed,
            "reclaim_seconds": t_reclaimed - gone,
            "restored_tasks": len(back),
            "restored_events": back_events,
            "restore_events_per_s": back_events / (t_back - t1),
        }

        rounds: dict[str, list[dict[str, Any]]] = {"alone": [], "archiving": []}
        previous: list[str] = []
        for rep in range(args.reps):
            for side in ("alone", "archiving"):
                prefix = f"in{rep}{side[0]}"
                got = ingest_round(
                    settings, log, args.ingest, prefix, previous if side == "archiving" else []
                )
                rounds[side].append(got)
                say(f"ingest {side}: {got['events']:,} events at {got['events_per_s']:,.0f}/s")
                previous = [t for (t,) in q(settings.sqlite_path, ENDED_LIKE, f"{prefix}%")]
        alone = statistics.median(r["events_per_s"] for r in rounds["alone"])
        busy = statistics.median(r["events_per_s"] for r in rounds["archiving"])
        out["ingest"] = {"rounds": rounds, "alone_events_per_s": alone, "archiving_events_per_s": busy,
                         "ratio": busy / alone}  # fmt: skip
        out["environment"] = {
            "cpus": os.cpu_count(),
            "load_average_1m_end": os.getloadavg()[0],
            "sqlite": sqlite3.sqlite_version,
            "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
    finally:
        server.stop()
    return out


def _json(values: list[str]) -> str:
    return orjson.dumps(values).decode()


def table(r: dict[str, Any]) -> str:
    s, i = r["storage"], r["ingest"]
    shrank = s["file_bytes_reclaimed"] < 0.5 * s["file_bytes_before"]
    files = " / ".join(
        f"{s[k] / MB:.1f}" for k in ("file_bytes_before", "file_bytes_rows_gone", "file_bytes_reclaimed")
    )
    rows = [
        ("store file per event (events, spans, tasks, every index)", f"{s['store_bytes_per_event']:,.0f} B"),
        ("archive file per event (zstd JSON Lines)", f"{s['archive_bytes_per_event']:,.0f} B"),
        ("compression ratio (JSON Lines / zstd)", f"{s['compression_ratio']:.1f}×"),
        ("archive speed, a pass unpaced (read, write, fsync, read back)",
         f"{s['archive_events_per_s']:,.0f} events/s"),
        ("the worker's removal of the rows: gone after the last archive", f"{s['drop_seconds']:.1f} s later"),
        ("restore speed (through the worker)", f"{s['restore_events_per_s']:,.0f} events/s"),
        ("store file: before / 90 % of tasks' rows gone / pages given back", f"{files} MB", "shrinks",
         shrank),
        ("ingest alone / while passes archive (medians)",
         f"{i['alone_events_per_s']:,.0f} / {i['archiving_events_per_s']:,.0f} events/s"),
        ("ingest while archiving / alone", f"{i['ratio']:.0%}", "≥ 80 %", i["ratio"] >= 0.8),
    ]  # fmt: skip
    lines = ["| measurement | measured | target | met |", "|---|---|---|---|"]
    for row in rows:
        name, value, target, met = (*row, "", None)[:4]
        lines.append(f"| {name} | {value} | {target} | {'' if met is None else 'yes' if met else '**no**'} |")
    head = (f"{s['events']:,} events in {s['tasks']:,} simulated runs; {s['archived_tasks']:,} tasks "
            f"({s['archived_events']:,} events) archived, {s['restored_tasks']} restored; ingest rounds of "
            f"{r['config']['ingest']} runs, {r['config']['reps']} per side.")  # fmt: skip
    return head + "\n\n" + "\n".join(lines)


def main() -> None:
    args = parse_args()
    with tempfile.TemporaryDirectory(prefix="retention-bench-") as tmp:
        results = run(args, Path(tmp))
    publish(results, args.output, table(results))


if __name__ == "__main__":
    main()
