"""Stores for the read-API benchmark: realistic events written by the worker's own commit path, cached.

A store of `events` events over `tasks` tasks holds, besides ordinary runs, one "probe" task per ladder
size L <= events, shaped like the issue's big task scaled to L: L / 10 events and L / 200 spans (so the
1,000,000-event store has the issue's task of 100,000 events and 5,000 spans, and the 10,000 and
100,000-event probes too). The largest probe is the store's big task; a probe of a given shape is
present in every store at least that large, so a figure can be compared across store sizes as is.

Every task runs the way the spec describes a run: a runner span, three phases, waves of 2-4 parallel
work items (start, progress, evidence, complete or failed) closed by a checkpoint, heartbeats. Payloads
are ~100-300 bytes of JSON. Tasks overlap in time (~250 at once) and the big tasks run from the first
event to the last, so a task's events are spread over the file as they would be in production. Some
tasks, the probes among them, are still running: their last wave and closing events are not there yet.

Events go in exactly as the worker writes them: wire frames built by the emitter's framing, decoded
and validated by `ingest.batch.decode_batch`, committed by `ingest.writer.StoreWriter.commit` in
batches of `Settings().batch_size`. With `via_redis`, the frames instead go through a private
redis-server and an in-process `ingest.worker.Worker.drain()`: the whole production path.
"""

import gc
import hashlib
import heapq
import math
import random
import statistics
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import orjson
import workload

from taskevents.db import open_writer
from taskevents.emitter import _frame  # the emitter's own framing: event_uid (ULID) and emitted_at
from taskevents.ingest.batch import decode_batch
from taskevents.ingest.writer import StoreWriter
from taskevents.schema import SCHEMA_VERSION
from taskevents.settings import Settings

# Part of a store's cache key, with the sources of this generator, the writer and the schema.
DATASET_VERSION = 1
ROOT = Path(__file__).resolve().parent.parent
KEY_SOURCES = (Path(__file__).resolve(), ROOT / "ingest" / "writer.py", ROOT / "shared" / "schema.py")
SPAN_OVERHEAD = 4  # a run's spans besides its work items: the runner and its three phases
RUNNING_SHARE = 0.05  # ordinary tasks still running when the store is read
DAY_NS = 86_400 * 10**9  # the store's events were emitted over one day


@dataclass(frozen=True)
class StoreSpec:
    events: int
    tasks: int
    probes: tuple[tuple[int, int], ...]  # (events, spans) of each probe task, smallest first
    seed: int
    batch_size: int
    via_redis: bool

    @property
    def params_key(self) -> str:
        return hashlib.sha256(orjson.dumps([DATASET_VERSION, SCHEMA_VERSION, asdict(self)])).hexdigest()[:8]

    @property
    def filename(self) -> str:
        # Letters, digits and hyphens only: Datasette names the database after the file's stem.
        return f"{self.stem_prefix}{code_key()}.db"

    @property
    def stem_prefix(self) -> str:
        """The file name less the code's key: a store of the same parameters built by older code."""
        how = "redis" if self.via_redis else "direct"
        return f"taskevents-{self.events}-{self.tasks}-{how}-{self.params_key}-"


def code_key() -> str:
    """The sources that decide a store's bytes: this generator, the worker's writer, the schema."""
    h = hashlib.sha256()
    for source in KEY_SOURCES:
        h.update(source.read_bytes())
    return h.hexdigest()[:8]


def probe_shape(ladder_size: int) -> tuple[int, int]:
    """The issue's big task (100,000 events, 5,000 spans in 1,000,000) scaled to a store of this size."""
    return ladder_size // 10, max(SPAN_OVERHEAD + 1, ladder_size // 200)


def probe_task_id(events: int, spans: int) -> str:
    return f"probe-{events}-events-{spans}-spans"


def spec_for(events: int, ladder: list[int], seed: int, *, via_redis: bool = False) -> StoreSpec:
    probes = tuple(probe_shape(size) for size in sorted(ladder) if size <= events)
    tasks = max(len(probes) + 1, events // 100)
    return StoreSpec(events, tasks, probes, seed, Settings().batch_size, via_redis)


# --- one run ---------------------------------------------------------------------------------------


def _uid(rng: random.Random, prefix: str) -> str:
    return f"{prefix}-{rng.getrandbits(64):016x}"


def _explain(rng: random.Random) -> str:
    text = rng.choice(workload.SENTENCES)
    if rng.random() < 0.3:
        text += " " + rng.choice(workload.SENTENCES)
    return text[: rng.randint(40, len(text))]


@dataclass
class _Wave:
    items: list[tuple[str, str, str]]  # (span_id, work_item_id, work_type)
    progress: list[int]  # progress events of each item
    verified: bool  # a checkpoint_verified follows the commit
    heartbeat: bool  # a runner_heartbeat follows the wave


def _plan(rng: random.Random, work_items: int) -> list[tuple[str, list[_Wave]]]:
    """The run's phases and their waves of parallel work items (progress counts filled in later)."""
    # Verifying gets at least one item, so a running run (cut in its last wave) has entered every phase.
    planning, verifying = int(work_items * 0.1), max(1, int(work_items * 0.1))
    counts = {"planning": planning, "executing": work_items - planning - verifying, "verifying": verifying}
    phases = []
    for phase in workload.PHASES:
        waves, left = [], counts[phase]
        while left > 0:
            size = min(left, rng.randint(2, 4))
            left -= size
            items = [
                (_uid(rng, "span"), _uid(rng, "wi"), rng.choice(workload.WORK_TYPES)) for _ in range(size)
            ]
            waves.append(_Wave(items, [0] * size, rng.random() < 0.25, rng.random() < 0.3))
        phases.append((phase, waves))
    return phases


def _events(
    rng: random.Random, task_id: str, phases: list[tuple[str, list[_Wave]]], running: bool
) -> list[workload.Event]:
    """The run's events in order; a running run stops after its last wave's progress events."""
    Event = workload.Event
    out: list[workload.Event] = []
    root = _uid(rng, "span")
    spawn = {
        "runner_pid": rng.randint(1000, 65000),
        "runner_version": "0.32.0",
        "attempt": 1,
        "explanation": _explain(rng),
    }
    out.append(Event(task_id, "runner_spawn", root, "runner", None, None, spawn))
    last_wave = next((w for _, waves in reversed(phases) for w in reversed(waves)), None)
    for phase, waves in phases:
        span = _uid(rng, "span")
        out.append(Event(task_id, "phase_enter", span, "runner", phase, root, {"explanation": _explain(rng)}))
        for wave in waves:
            for s, wi, kind in wave.items:
                payload: dict[str, Any] = {
                    "work_item_id": wi,
                    "work_type": kind,
                    "explanation": _explain(rng),
                }
                out.append(Event(task_id, "work_item_start", s, "worker", phase, span, payload))
            for step in range(max(wave.progress)):
                for (s, wi, _), n in zip(wave.items, wave.progress, strict=True):
                    if step < n:
                        payload = {
                            "work_item_id": wi,
                            "progress": round((step + 1) / (n + 1), 3),
                            "files_done": rng.randint(1, 40),
                            "explanation": _explain(rng),
                        }
                        out.append(Event(task_id, "work_item_progress", s, "worker", phase, span, payload))
            if running and wave is last_wave:
                return out
            evidence = []
            for s, wi, _ in wave.items:
                evidence.append(ev := _uid(rng, "ev"))
                payload = {
                    "work_item_id": wi,
                    "evidence_type": rng.choice(workload.EVIDENCE_TYPES),
                    "evidence_id": ev,
                    "explanation": _explain(rng),
                }
                out.append(Event(task_id, "evidence_collected", s, "worker", phase, span, payload))
            for s, wi, kind in wave.items:
                if rng.random() < 0.05:
                    payload = {
                        "work_item_id": wi,
                        "work_type": kind,
                        "error_code": "E_TIMEOUT",
                        "explanation": _explain(rng),
                    }
                    out.append(Event(task_id, "work_item_failed", s, "worker", phase, span, payload))
                else:
                    payload = {
                        "work_item_id": wi,
                        "work_type": kind,
                        "duration_ms": rng.randint(50, 90_000),
                        "explanation": _explain(rng),
                    }
                    out.append(Event(task_id, "work_item_complete", s, "worker", phase, span, payload))
            checkpoint = _uid(rng, "cp")
            payload = {"checkpoint_id": checkpoint, "checkpoint_type": "wave", "evidence_refs": evidence}
            out.append(Event(task_id, "checkpoint_commit", span, "supervisor", phase, root, payload))
            if wave.verified:
                payload = {"checkpoint_id": checkpoint, "explanation": _explain(rng)}
                out.append(Event(task_id, "checkpoint_verified", span, "supervisor", phase, root, payload))
            if wave.heartbeat:
                beat = {
                    "runner_pid": spawn["runner_pid"],
                    "rss_mb": rng.randint(80, 400),
                    "uptime_s": rng.randint(1, 9999),
                    "queue_depth": rng.randint(0, 50),
                }
                out.append(Event(task_id, "runner_heartbeat", root, "runner", None, None, beat))
        out.append(Event(task_id, "phase_exit", span, "runner", phase, root, {"explanation": _explain(rng)}))
    outcome = {"exit_code": 0, "outcome": "succeeded", "duration_s": rng.randint(60, 7200)}
    out.append(Event(task_id, "runner_exit", root, "runner", None, None, outcome))
    return out


def run_events(rng: random.Random, task_id: str, n: int, spans: int, running: bool) -> list[workload.Event]:
    """Exactly `n` events of one run with exactly `spans` spans (the runner, 3 phases, work items)."""
    phases = _plan(rng, spans - SPAN_OVERHEAD)
    waves = [w for _, ws in phases for w in ws]
    # The run without progress events tells how many events its skeleton takes; progress fills the rest.
    skeleton = len(_events(random.Random(0), task_id, phases, running))
    budget = n - skeleton
    if budget < 0:
        raise ValueError(f"{n} events cannot hold {spans} spans ({skeleton} events without progress)")
    items = [(w, i) for w in waves for i in range(len(w.items))]  # spans > SPAN_OVERHEAD: never empty
    for k, (w, i) in enumerate(items):
        w.progress[i] = budget // len(items) + (1 if k < budget % len(items) else 0)
    events = _events(rng, task_id, phases, running)
    assert len(events) == n, (len(events), n)
    return events


# --- the whole store -------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Task:
    task_id: str
    events: int
    spans: int
    start: float  # in [0, 1], the store's time line
    end: float
    running: bool
    seed: int


def _tasks(spec: StoreSpec) -> list[_Task]:
    rng = random.Random(spec.seed)
    out = [_Task(probe_task_id(e, s), e, s, 0.0, 1.0, True, rng.getrandbits(64)) for e, s in spec.probes]
    ordinary = spec.tasks - len(out)
    left = spec.events - sum(e for e, _ in spec.probes)
    if ordinary < 1 or left < ordinary * 16:
        raise ValueError(f"{spec.events:,} events do not make {spec.tasks:,} tasks with these probes")
    # Log-normal sizes (median ~60, a quarter over 100 events), scaled to add up exactly.
    raw = [rng.lognormvariate(math.log(60), 0.8) for _ in range(ordinary)]
    scale = left / sum(raw)
    sizes = [max(16, min(2000, round(r * scale))) for r in raw]
    k = 0
    while (diff := left - sum(sizes)) != 0:
        i = k % ordinary
        step = 1 if diff > 0 else -1
        if 16 <= sizes[i] + step <= 2000:
            sizes[i] += step
        k += 1
    for n in sizes:
        spans = SPAN_OVERHEAD + max(1, (n - 8) // 9)
        duration = rng.uniform(0.005, 0.05)
        running = rng.random() < RUNNING_SHARE
        start = 1.0 - duration if running else rng.uniform(0.0, 1.0 - duration)
        out.append(
            _Task(
                f"task-{rng.getrandbits(64):016x}",
                n,
                spans,
                start,
                start + duration,
                running,
                rng.getrandbits(64),
            )
        )
    return out


def events(spec: StoreSpec) -> Iterator[tuple[float, workload.Event]]:
    """Every event of the store in arrival order, with its time in [0, 1].

    A task's events are generated when its run starts and spread over its duration; a heap merges the
    runs in flight, so memory holds only those.
    """
    heap: list[tuple[float, int, int, list[workload.Event] | None, list[float] | None]] = []
    tasks = _tasks(spec)
    for index, task in enumerate(tasks):
        heap.append((task.start, index, -1, None, None))
    heapq.heapify(heap)
    while heap:
        t, index, i, run, times = heapq.heappop(heap)
        if run is None:
            task = tasks[index]
            rng = random.Random(task.seed)
            run = run_events(rng, task.task_id, task.events, task.spans, task.running)
            span = task.end - task.start
            times = [task.start + span * (j + rng.random()) / len(run) for j in range(len(run))]
            i = 0
            t = times[0]
        assert times is not None
        yield t, run[i]
        if i + 1 < len(run):
            heapq.heappush(heap, (times[i + 1], index, i + 1, run, times))


def frames(spec: StoreSpec) -> Iterator[bytes]:
    """Wire elements as the emitter's sender pushes them (event_uid, emitted_at, the event)."""
    start = time.time_ns() - DAY_NS
    for t, e in events(spec):
        yield _frame(start + int(t * DAY_NS), None, workload.body(e))


def _batches(items: Iterator[bytes], size: int) -> Iterator[list[bytes]]:
    batch: list[bytes] = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def _write_direct(spec: StoreSpec, path: Path) -> None:
    """The worker's decode and commit, minus Redis: `decode_batch` then `StoreWriter.commit`."""
    max_payload = Settings().max_payload_bytes
    conn = open_writer(path)
    writer = StoreWriter(conn)
    writer.take_over()
    try:
        for batch_id, batch in enumerate(_batches(frames(spec), spec.batch_size), start=1):
            good, dead = decode_batch(batch, max_payload)
            if dead:
                raise RuntimeError(f"the worker would dead-letter {len(dead)} generated events: {dead[0]!r}")
            writer.commit(batch_id, good)
    finally:
        conn.close()


def _write_via_redis(spec: StoreSpec, path: Path, workdir: Path) -> None:
    """The production path: frames pushed to a private redis-server, drained by `Worker.drain()`."""
    import redis

    from taskevents.ingest.localredis import RedisServer
    from taskevents.ingest.worker import Worker
    from taskevents.keys import QueueKeys

    queue = "bench:api-store"
    server = RedisServer(workdir / "redis").start()
    client = redis.Redis.from_url(server.url)
    try:
        worker = Worker(Settings(redis_url=server.url, db=path, queue=queue, batch_size=spec.batch_size))
        # 100,000 events at a time, so Redis never holds the whole store.
        for chunk in _batches(frames(spec), 100_000):
            pipe = client.pipeline(transaction=False)
            for part in _batches(iter(chunk), 1000):
                pipe.rpush(queue, *part)
            pipe.execute()
            worker.drain()
        if client.llen(QueueKeys(queue).dead):
            raise RuntimeError("the worker dead-lettered generated events")
        del worker
        gc.collect()  # closes the worker's connection, which checkpoints the WAL into the file
    finally:
        client.close()
        server.stop()


def store_stats(path: Path) -> dict[str, Any]:
    """What the store holds, read back: counts and payload sizes (the spec asks 100-300 bytes)."""
    import sqlite3

    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        events, tasks, spans = (
            conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
            for table in ("task_events", "tasks", "spans")
        )
        sizes = [
            r[0] for r in conn.execute("SELECT length(payload) FROM task_events WHERE event_id % 97 = 0")
        ]
        full_pages = conn.execute("SELECT count(*) FROM tasks WHERE event_count > 100").fetchone()[0]
        running = conn.execute("SELECT count(*) FROM tasks WHERE status = 'running'").fetchone()[0]
    finally:
        conn.close()
    deciles = statistics.quantiles(sizes, n=10)
    return {
        "events": events,
        "tasks": tasks,
        "spans": spans,
        "tasks_over_100_events": full_pages,
        "tasks_running": running,
        "payload_bytes_mean": statistics.mean(sizes),
        "payload_bytes_p10_p50_p90": [deciles[0], deciles[4], deciles[8]],
        "file_bytes": path.stat().st_size,
    }


def build(
    spec: StoreSpec, cache_dir: Path, *, rebuild: bool = False, log=print
) -> tuple[Path, dict[str, Any]]:
    """The store's file in `cache_dir`, built unless a store with the same key is there already.

    Returns the path and a description (spec, how it was built, how long it took, what it holds).
    """
    cache_dir.mkdir(parents=True, exist_ok=True)
    path = cache_dir / spec.filename
    meta_path = path.with_suffix(".json")
    if path.exists() and meta_path.exists() and not rebuild:
        meta = orjson.loads(meta_path.read_bytes())
        log(f"store {spec.events:,} events: cached {path}")
        return path, {**meta, "cached": True}
    partial = path.with_name(path.stem + "-partial.db")
    # The same store built by older code goes (with its -wal, -shm, .json): 1M events are ~600 MB.
    for stale in cache_dir.glob(f"{spec.stem_prefix}*"):
        stale.unlink(missing_ok=True)
    how = (
        "redis-server + Worker.drain()" if spec.via_redis else "decode_batch + StoreWriter.commit (no Redis)"
    )
    log(f"store {spec.events:,} events, {spec.tasks:,} tasks: building with {how}")
    started = time.perf_counter()
    if spec.via_redis:
        with tempfile.TemporaryDirectory(prefix="api-store-redis-") as tmp:
            _write_via_redis(spec, partial, Path(tmp))
    else:
        _write_direct(spec, partial)
    seconds = time.perf_counter() - started
    partial.rename(path)  # the writer closed: the WAL was checkpointed into the file and removed
    meta = {
        "spec": asdict(spec),
        "path": str(path),
        "write_path": how,
        "build_seconds": seconds,
        "events_per_s": spec.events / seconds,
        **store_stats(path),
    }
    if meta["events"] != spec.events or meta["tasks"] != spec.tasks:
        raise RuntimeError(f"store holds {meta['events']} events / {meta['tasks']} tasks, not as specified")
    meta_path.write_bytes(orjson.dumps(meta, option=orjson.OPT_INDENT_2))
    log(f"store {spec.events:,} events: built in {seconds:.1f} s ({spec.events / seconds:,.0f} events/s)")
    return path, {**meta, "cached": False}
