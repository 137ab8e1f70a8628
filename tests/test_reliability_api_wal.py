"""Readers that hold on (a stalled SSE client, a slow one, long graph queries) while the worker ingests
200,000 events: the WAL must stay bounded, and a checkpoint must be able to complete.

SQLite's WAL only shrinks back (restarts from its start) after a checkpoint has copied every frame into
the database and no reader still reads an older snapshot. A reader that kept a read transaction open
across an `await` (e.g. while a slow client's socket is full) would pin the WAL for as long as the
client dawdles, and the WAL would grow with everything written meanwhile. The API reads each page in
one short transaction on a thread (api/store.py, api/live.py), so neither a stalled stream nor a long
query holds one for longer than the read itself.
"""

import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import httpx
import pytest

from taskevents.db import BUSY_TIMEOUT_MS, WAL_LIMIT_BYTES, open_reader, open_writer
from taskevents.ingest.walcap import WalCap
from taskevents.settings import Settings
from tests.api_helpers import emitter
from tests.helpers import start_worker, stored_count, wait_for
from tests.reliability_api_helpers import (
    ApiProcess,
    WalSampler,
    api_process,
    assert_clean_log,
    fill_backlog,
    task_names,
)
from tests.stream_helpers import FrameParser, event_seqs, small_receive_buffer_client

pytestmark = [pytest.mark.redis_server, pytest.mark.slow]

MiB = 1 << 20
# The writer's cap (shared/db.py, ingest/walcap.py: 128 MiB, twice the 64 MiB autocheckpoint) plus the
# commit that crosses it (a default batch of 5,000 of these events writes ~5 MiB of WAL).
WAL_BOUND = WAL_LIMIT_BYTES + 16 * MiB
BIG_SPANS = 10_000  # the "big" task: 10,000 work items (start + complete), so its graph is a long read
GRAPH_READERS = 4


def _ingest_big_task(settings: Settings) -> int:
    """The big task: runner_spawn, then BIG_SPANS work items (start, complete); no runner_exit yet."""
    with emitter(settings) as em:
        em.emit("big", "runner_spawn", span_id="big/runner", actor="runner")
        for n in range(BIG_SPANS):
            span = f"big/w{n}"
            payload = {"work_item_id": f"wi{n}", "explanation": "one of many work items " * 3}
            em.emit("big", "work_item_start", span_id=span, parent_span_id="big/runner", actor="worker",
                    phase="executing", payload=payload)  # fmt: skip
            em.emit("big", "work_item_complete", span_id=span, parent_span_id="big/runner", actor="worker",
                    phase="executing")  # fmt: skip
    return 1 + 2 * BIG_SPANS


class StalledStream:
    """An SSE client that reads its first chunk and then nothing (or, with `delay`, a KiB at a time)."""

    def __init__(self, stack: ExitStack, url: str, delay: float | None = None) -> None:
        # 64 KiB: the stream stalls once it and the server's send buffer (up to 4 MiB) are full.
        client = stack.enter_context(small_receive_buffer_client(64 * 1024))
        client.timeout = httpx.Timeout(10.0, read=120.0)
        self.response = stack.enter_context(client.stream("GET", url))
        stack.callback(self.stop)  # runs before the response closes (last in, first out)
        assert self.response.status_code == 200
        self.chunks = self.response.iter_raw(1024)
        self.parser = FrameParser()
        self.frames = self.parser.feed(next(self.chunks))
        self.delay = delay
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._trickle, daemon=True) if delay else None
        if self._thread:
            self._thread.start()

    def _trickle(self) -> None:
        assert self.delay is not None
        while not self._stop.wait(self.delay):
            try:
                chunk = next(self.chunks)
            except (httpx.HTTPError, StopIteration):
                if self._stop.is_set():  # the test is over and closed the response under this read
                    return
                raise
            self.frames += self.parser.feed(chunk)

    def stop(self) -> None:
        self._stop.set()

    def seqs(self) -> list[int]:
        return event_seqs(self.frames)

    def read_to_end(self) -> None:
        """Read the rest, now at full speed, until the end frame."""
        self._stop.set()
        if self._thread:
            self._thread.join(5)
        for chunk in self.chunks:
            self.frames += self.parser.feed(chunk)
            if self.frames[-1].event == "end":
                return


def _graph_reader(url: str, stop: threading.Event, statuses: list[int]) -> None:
    """A long query, again and again: the big task's whole span graph (10,000 nodes)."""
    with httpx.Client(base_url=url, timeout=30) as http:
        while not stop.is_set():
            response = http.get("/api/tasks/big/graph", params={"limit": BIG_SPANS + 1})
            statuses.append(response.status_code)


def _truncate_wal(db: Path, within: float) -> int:
    """A TRUNCATE checkpoint, tried again for up to `within` seconds; the last try's busy flag.

    The worker's checkpointer thread holds SQLite's checkpoint lock during each of its passes (every
    0.25 s), and a second checkpoint then gets SQLITE_BUSY at once, without waiting in its busy
    handler (sqlite.org/c3ref/wal_checkpoint_v2.html): one try alone can fail on that, not on a reader.
    """
    deadline = time.monotonic() + within
    conn = sqlite3.connect(db, isolation_level=None)
    try:
        conn.execute("PRAGMA busy_timeout = 1000")
        while True:
            busy = int(conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0])
            if busy == 0 or time.monotonic() >= deadline:
                return busy
            time.sleep(0.05)
    finally:
        conn.close()


def _wal_size(db: Path) -> int:
    wal = db.with_name(db.name + "-wal")
    return wal.stat().st_size if wal.exists() else 0


@pytest.fixture
def api(settings: Settings, tmp_path: Path) -> Iterator[ApiProcess]:
    # Stalled clients stay connected for the whole test (the default drops them after 30 s blocked).
    with api_process(settings, tmp_path / "api.log", TASKEVENTS_STREAM_SEND_TIMEOUT="600") as proc:
        yield proc
    assert_clean_log(proc)


def test_stalled_and_slow_streams_and_long_queries_leave_the_wal_bounded(
    settings: Settings, api: ApiProcess
) -> None:
    worker = start_worker(settings)
    stop_graphs = threading.Event()
    graph_statuses: list[int] = []
    try:
        big = _ingest_big_task(settings)
        wait_for(lambda: stored_count(settings.sqlite_path) == big, timeout=60)
        tasks, per_task = task_names(40), 5_000  # 200,000 events in the backlog
        with ExitStack() as stack:
            sse = f"{api.url}/sse/tasks/big/events?since_seq=0"
            stalled, slow = StalledStream(stack, sse), StalledStream(stack, sse, delay=0.05)
            graphs = [
                threading.Thread(target=_graph_reader, args=(api.url, stop_graphs, graph_statuses))
                for _ in range(GRAPH_READERS)
            ]
            for thread in graphs:
                thread.start()
            sampler = WalSampler(settings.sqlite_path)
            started = time.monotonic()
            sent = fill_backlog(settings, tasks, per_task)
            wait_for(lambda: stored_count(settings.sqlite_path) == big + sent, timeout=120, interval=0.1)
            ingest_seconds = time.monotonic() - started
            stop_graphs.set()
            for thread in graphs:
                thread.join(30)
            wal_max = sampler.stop()

            # Both streams are still open, mid-replay: neither has had more than a part of the task.
            assert stalled.seqs() == list(range(1, len(stalled.seqs()) + 1))
            assert 0 < len(stalled.seqs()) < big and len(slow.seqs()) < big
            # With them connected, a checkpoint completes and the WAL can be emptied: no read
            # transaction is held for them.
            assert (
                _truncate_wal(settings.sqlite_path, within=10) == 0 and _wal_size(settings.sqlite_path) == 0
            )

            with emitter(settings) as em:  # the end of the big task, then both streams finish
                em.emit("big", "runner_exit", span_id="big/runner", actor="runner", payload={"exit_code": 0})
            for stream in (stalled, slow):
                stream.read_to_end()
                assert stream.seqs() == list(range(1, big + 2))  # every event once, in order
    finally:
        stop_graphs.set()
        worker.terminate()
        worker.wait(20)
    print(f"\n{sent} events in {ingest_seconds:.1f}s with a stalled and a slow stream and "
          f"{GRAPH_READERS} graph readers ({len(graph_statuses)} graphs): WAL max {wal_max / MiB:.1f} MiB "
          f"(bound {WAL_BOUND / MiB:.0f} MiB)")  # fmt: skip
    assert set(graph_statuses) == {200}
    assert wal_max < WAL_BOUND


def test_a_read_transaction_held_across_the_ingest_would_be_seen(settings: Settings) -> None:
    """The measurement above can fail: a reader that holds one snapshot while 200,000 events are
    ingested pins the WAL, which then outgrows the bound, and no checkpoint can complete (the writer's
    forced one included) until the reader lets go."""
    open_writer(settings.sqlite_path).close()
    holder = open_reader(settings.sqlite_path)
    holder.execute("BEGIN")
    holder.execute("SELECT count(*) FROM tasks").fetchone()  # the snapshot is taken here
    worker = start_worker(settings)
    try:
        sampler = WalSampler(settings.sqlite_path)
        sent = fill_backlog(settings, task_names(40), 5_000)
        wait_for(lambda: stored_count(settings.sqlite_path) == sent, timeout=120, interval=0.1)
        wal_max = sampler.stop()
        assert wal_max > WAL_BOUND and _truncate_wal(settings.sqlite_path, within=2) == 1  # pinned throughout
        holder.execute("COMMIT")
        assert _truncate_wal(settings.sqlite_path, within=10) == 0 and _wal_size(settings.sqlite_path) == 0
    finally:
        holder.close()
        worker.terminate()
        worker.wait(20)
    print(f"\n{sent} events under one read transaction held throughout: WAL max {wal_max / MiB:.1f} MiB")


# --- the writer's cap, on its own ------------------------------------------------------------------


def _wal_store(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA wal_autocheckpoint = 0")  # only the cap checkpoints here
    conn.execute("CREATE TABLE t (b BLOB)")
    return conn


def _write(conn: sqlite3.Connection, mib: int) -> None:
    conn.executemany("INSERT INTO t VALUES (randomblob(65536))", [()] * (16 * mib))


def test_the_cap_empties_the_wal_once_it_is_past_the_limit(tmp_path: Path) -> None:
    conn = _wal_store(tmp_path / "s.db")
    cap = WalCap(conn, limit=4 * MiB)
    _write(conn, 3)
    cap.after_commit()
    assert cap.forced == 0 and _wal_size(tmp_path / "s.db") > 3 * MiB  # under the limit: left alone
    reader = sqlite3.connect(tmp_path / "s.db", isolation_level=None)
    reader.execute("SELECT count(*) FROM t").fetchone()  # readers between transactions do not matter
    _write(conn, 2)
    cap.after_commit()
    assert cap.forced == 1 and _wal_size(tmp_path / "s.db") == 0
    reader.close()
    conn.close()


def test_a_reader_holding_a_snapshot_costs_the_writer_a_wait_per_growing_step_not_one_per_commit(
    tmp_path: Path,
) -> None:
    conn = _wal_store(tmp_path / "s.db")
    cap = WalCap(conn, limit=2 * MiB, wait_ms=200)  # steps after a failed attempt: 128, 256, 512 KiB…
    holder = sqlite3.connect(tmp_path / "s.db", isolation_level=None)
    holder.execute("BEGIN")
    holder.execute("SELECT count(*) FROM t").fetchone()
    _write(conn, 3)
    started = time.monotonic()
    cap.after_commit()
    assert cap.forced == 1 and time.monotonic() - started >= 0.2  # waited, then gave up
    assert _wal_size(tmp_path / "s.db") > 2 * MiB
    conn.execute("INSERT INTO t VALUES (randomblob(65536))")  # 64 KiB: less than a step
    started = time.monotonic()
    cap.after_commit()  # the next commit does not wait again
    assert cap.forced == 1 and time.monotonic() - started < 0.1
    assert conn.execute("PRAGMA busy_timeout").fetchone()[0] == BUSY_TIMEOUT_MS  # restored
    _write(conn, 1)
    cap.after_commit()  # a step further: tried again (a long read would be over by now), still held
    assert cap.forced == 2 and _wal_size(tmp_path / "s.db") > 2 * MiB
    conn.execute("INSERT INTO t VALUES (randomblob(65536))")
    conn.execute("INSERT INTO t VALUES (randomblob(65536))")
    cap.after_commit()  # 128 KiB more: under the doubled step (256 KiB), not tried
    assert cap.forced == 2
    holder.execute("COMMIT")
    _write(conn, 1)
    cap.after_commit()  # past the step: tried again, and now it finishes
    assert cap.forced == 3 and _wal_size(tmp_path / "s.db") == 0
    holder.close()
    conn.close()
