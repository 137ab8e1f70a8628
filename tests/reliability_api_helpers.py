"""Helpers of the read API's reliability tests: the real `python -m taskevents.api` process, a backlog
of events in Redis for the real worker, and readers that check every answer they get against the last one.

A reader is a person's browser tab: it walks a task with `/events` and the `next_seq` cursor, and now and
then renders `/events/snapshot` or `/events/latest`. Whatever the worker is doing meanwhile (ingesting at
full speed, being SIGKILLed, restarting), each answer must be a 200 (or a 404 for a task this reader has
never seen yet), every page must continue the last without a gap, and `total` / `latest_seq` must never
go backwards. An SSE follower does the same over the live stream.
"""

import asyncio
import os
import random
import signal
import struct
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import orjson
from httpx_sse import aconnect_sse

from taskevents.ingest.localredis import free_port
from taskevents.settings import Settings
from tests.api_helpers import emitter
from tests.helpers import wait_for

# --- the real API process --------------------------------------------------------------------------


@dataclass
class ApiProcess:
    url: str
    proc: subprocess.Popen[bytes]
    log: Path

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")


@contextmanager
def api_process(settings: Settings, log: Path, **env: str) -> Iterator[ApiProcess]:
    """`python -m taskevents.api` on a free port (stderr to `log`), stopped with SIGTERM at the end."""
    port = free_port()
    argv = [sys.executable, "-m", "taskevents.api", "--host", "127.0.0.1", "--port", str(port)]
    argv += ["--db", str(settings.sqlite_path), "--redis-url", settings.redis_url, "--queue", settings.queue]
    with open(log, "wb") as err:
        proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=err, env=os.environ | env)
    api = ApiProcess(f"http://127.0.0.1:{port}", proc, log)

    def answers() -> bool:
        assert proc.poll() is None, api.log_text()
        try:
            return httpx.get(f"{api.url}/api/events/health", timeout=1).status_code == 200
        except httpx.TransportError:
            return False

    try:
        wait_for(answers, timeout=30, interval=0.1)
        yield api
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def assert_clean_log(api: ApiProcess) -> None:
    """The API logged no unexpected error (a 500 is logged with its traceback)."""
    text = api.log_text()
    assert "Traceback" not in text and "unexpected error" not in text, text[-5000:]


# --- a backlog for the real worker -----------------------------------------------------------------


def task_names(n: int) -> list[str]:
    return [f"rel-{i:03d}" for i in range(n)]


def fill_backlog(settings: Settings, tasks: list[str], per_task: int, *, pad: int = 80) -> int:
    """`per_task` events for each task, interleaved, into the queue: runner_spawn, progress events with
    a payload of ~`pad` bytes, and runner_exit last (so live streams end). Returns the events sent."""
    filler = "p" * pad
    sent = 0
    with emitter(settings) as em:
        for n in range(1, per_task + 1):
            for task in tasks:
                root = f"{task}/runner"
                if n == 1:
                    em.emit(task, "runner_spawn", span_id=root, actor="runner", payload={"runner_pid": 1})
                elif n == per_task:
                    em.emit(task, "runner_exit", span_id=root, actor="runner", payload={"exit_code": 0})
                else:
                    em.emit(task, "work_item_progress", span_id=f"{task}/w{n % 7}", parent_span_id=root,
                            actor="worker", phase="executing", payload={"n": n, "pad": filler})  # fmt: skip
                sent += 1
            if sent % 20_000 < len(tasks):  # the emitter's buffer holds 100,000: never let it drop
                assert em.flush(60), "Redis did not take the backlog"
    return sent


# --- readers ---------------------------------------------------------------------------------------


@dataclass
class ReadLog:
    """What every reader saw: status counts, and each problem in words (a test asserts there is none)."""

    statuses: Counter[int] = field(default_factory=Counter)
    problems: list[str] = field(default_factory=list)
    requests: int = 0
    sse_events: int = 0

    def problem(self, text: str) -> None:
        if len(self.problems) < 200:
            self.problems.append(text)


@dataclass
class TaskView:
    """What one reader knows of one task."""

    since: int = 0  # the cursor of its /events walk
    total: int = 0  # the highest total / latest_seq seen: it must never go down
    seen: bool = False  # a 200 was had: from now on a 404 would be a task that vanished


def _contiguous(seqs: list[int], first: int, step: int = 1) -> bool:
    return seqs == list(range(first, first + step * len(seqs), step))


async def rest_reader(
    base: str, tasks: list[str], final: int, log: ReadLog, deadline: float, seed: int
) -> None:
    """Walk each task to `final` by cursor, mixed with snapshots and latest pages, checking every answer."""
    rng = random.Random(seed)
    views = {task: TaskView() for task in tasks}
    async with httpx.AsyncClient(base_url=base, timeout=30) as http:
        while pending := [task for task, view in views.items() if view.since < final]:
            if time.monotonic() > deadline:
                log.problem(f"reader {seed}: deadline passed with {pending} unfinished")
                return
            task = rng.choice(pending)
            view = views[task]
            kind = rng.choices(("events", "snapshot", "latest"), weights=(6, 2, 2))[0]
            limit = rng.choice((1, 10, 50, 100, 250)) if kind == "events" else rng.choice((1, 20, 100))
            params = {"limit": limit} | ({"since_seq": view.since} if kind == "events" else {})
            path = f"/api/tasks/{task}/events" + ("" if kind == "events" else f"/{kind}")
            log.requests += 1
            try:
                response = await http.get(path, params=params)
            except httpx.TransportError as exc:
                log.problem(f"{task} {kind}: {type(exc).__name__}: {exc}")
                await asyncio.sleep(0.05)
                continue
            log.statuses[response.status_code] += 1
            if response.status_code == 404 and not view.seen:
                if response.json().get("code") != "task_not_found":
                    log.problem(f"{task} {kind}: 404 {response.text[:200]}")
                await asyncio.sleep(0.01)  # not stored yet
                continue
            if response.status_code != 200:
                log.problem(f"{task} {kind} {params}: {response.status_code} {response.text[:300]}")
                continue
            view.seen = True
            _check(kind, task, view, orjson.loads(response.content), limit, log)


def _check(kind: str, task: str, view: TaskView, body: dict, limit: int, log: ReadLog) -> None:
    seqs = [event["seq"] for event in body["events"]]
    if any(event["task_id"] != task for event in body["events"]):
        log.problem(f"{task} {kind}: an event of another task")
    total = body["total_events"] if kind == "snapshot" else body["total"]
    if total < view.total:
        log.problem(f"{task} {kind}: total went back from {view.total} to {total}")
    view.total = max(view.total, total)
    if kind == "events":
        last = seqs[-1] if seqs else view.since
        if not _contiguous(seqs, view.since + 1):
            log.problem(f"{task}: after {view.since} got {seqs[:5]}..{seqs[-5:]} (a gap)")
        if body["has_more"] != (total > last) or body["next_seq"] != last:
            log.problem(f"{task}: has_more {body['has_more']} next_seq {body['next_seq']} at {last}/{total}")
        view.since = last
    elif kind == "snapshot":
        latest = body["latest_seq"]
        if (
            latest != total
            or not _contiguous(seqs, latest - len(seqs) + 1)
            or len(seqs) != min(limit, latest)
        ):
            log.problem(f"{task} snapshot: window {seqs[:3]}..{seqs[-3:]} latest {latest} total {total}")
    else:  # latest, newest first
        if seqs and (seqs[0] != total or body["next_seq"] != total):
            log.problem(f"{task} latest: newest {seqs[0]}, next_seq {body['next_seq']}, total {total}")
        if not _contiguous(seqs, total, -1) or len(seqs) != min(limit, total):
            log.problem(f"{task} latest: {seqs[:3]}..{seqs[-3:]} with total {total} (a gap)")
        if body["has_more"] != (total > len(seqs)):
            log.problem(f"{task} latest: has_more {body['has_more']} with {len(seqs)} of {total}")


async def sse_follower(base: str, task: str, final: int, log: ReadLog, deadline: float) -> None:
    """Follow one task's live stream from the start to its `end`: every seq once, in order."""
    expected = 1
    timeout = httpx.Timeout(10.0, read=max(1.0, deadline - time.monotonic()))
    try:
        async with (
            httpx.AsyncClient(base_url=base, timeout=timeout) as http,
            aconnect_sse(http, "GET", f"/sse/tasks/{task}/events", params={"since_seq": 0}) as source,
        ):
            log.requests += 1
            log.statuses[source.response.status_code] += 1
            if source.response.status_code != 200:
                log.problem(f"SSE {task}: {source.response.status_code}")
                return
            async for sse in source.aiter_sse():
                if sse.event == "task_event":
                    seq = orjson.loads(sse.data)["seq"]
                    if seq != expected or sse.id != str(seq):
                        log.problem(f"SSE {task}: expected {expected}, got {seq} (id {sse.id})")
                        return
                    expected += 1
                    log.sse_events += 1
                elif sse.event == "end":
                    if orjson.loads(sse.data)["last_seq"] != final or expected != final + 1:
                        log.problem(f"SSE {task}: end {sse.data} after seq {expected - 1}")
                    return
            log.problem(f"SSE {task}: closed without an end after seq {expected - 1}")
    except httpx.HTTPError as exc:
        log.problem(f"SSE {task}: {type(exc).__name__}: {exc} after seq {expected - 1}")


# --- the store, seen from outside ------------------------------------------------------------------


@dataclass
class WalSampler:
    """The size of `<db>-wal`, every few milliseconds, on a thread."""

    db: Path
    sizes: list[int] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        wal = self.db.with_name(self.db.name + "-wal")
        while not self._stop.wait(0.005):
            try:
                self.sizes.append(wal.stat().st_size)
            except FileNotFoundError:
                self.sizes.append(0)

    def stop(self) -> int:
        self._stop.set()
        self._thread.join(5)
        return max(self.sizes, default=0)


WAL_HEADER = struct.Struct("<48s48s")  # the wal-index header, twice, at the start of the -shm file


def wal_index_headers(db: Path) -> tuple[bytes, bytes]:
    with open(db.with_name(db.name + "-shm"), "rb") as f:
        return WAL_HEADER.unpack(f.read(WAL_HEADER.size))


def tear_wal_index_header(db: Path) -> None:
    """Leave the -shm as a writer killed half-way through publishing a commit would: the two copies of
    the wal-index header differ. The next connection to read must then rebuild the index from the WAL
    (SQLite's WAL recovery, under its recovery lock), which is what a restart after a crash costs when
    no connection kept the index alive. Flips `iChange` (bytes 8-11) of the first copy."""
    with open(db.with_name(db.name + "-shm"), "r+b") as f:
        f.seek(8)
        change = f.read(4)
        f.seek(8)
        f.write(bytes(b ^ 0xFF for b in change))
