"""The worker's retention steps (ingest/archived.py) on their own: they end when there is nothing left
to do, never spin on free pages that do not go away, keep each step short and their share of a busy
worker small. And the jobs process's passes: their priority, their pace, their warm stop. fakeredis
where no queue semantics are needed; rq's pubsub race on the suite's redis-server."""

import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

import fakeredis
import pytest
import redis
from rq.exceptions import StopRequested

from taskevents.archive import TaskArchive
from taskevents.db import open_writer
from taskevents.ingest import jobs
from taskevents.ingest.archived import BACKLOG, BUSY_SHARE, IDLE_SHARE, QUIET, ROWS, Retention
from taskevents.ingest.writer import StoreWriter
from taskevents.keys import QueueKeys
from taskevents.settings import Settings
from tests.helpers import wait_for


class _Writer:
    """A writer whose store keeps `free` pages whatever the vacuum does, and has no rows to remove."""

    def __init__(self, free: list[int]) -> None:
        self.free = free
        self.calls: list[str] = []

    def drop_archived_rows(self, limit: int) -> int:
        self.calls.append("drop")
        return 0

    def reclaim(self, pages: int, keep: float = 0.0) -> int:
        self.calls.append("reclaim")
        return self.free.pop(0) if len(self.free) > 1 else self.free[0]


def _steps(writer: Any, tmp_path: Any, most: int = 20) -> int:
    retention = Retention(fakeredis.FakeRedis(), QueueKeys("t:events"), TaskArchive.at(tmp_path))
    for n in range(1, most + 1):
        if not retention.step(writer):
            return n
    raise AssertionError("still stepping")


def test_steps_end_once_the_pages_are_given_back(tmp_path: Any) -> None:
    writer = _Writer([3000, 1000, 0])
    assert _steps(writer, tmp_path) == 4  # drop (none), reclaim, reclaim, reclaim: 0 left
    assert writer.calls == ["drop", "reclaim", "reclaim", "reclaim"]


def test_steps_stop_when_free_pages_do_not_go_away(tmp_path: Any) -> None:
    writer = _Writer([500])  # a store where incremental vacuum frees nothing
    assert _steps(writer, tmp_path) == 3  # drop, reclaim (500), reclaim (still 500): stop


class _SlowWriter:
    """Removes rows at 100,000 a second (each step sleeps for its share), a million rows in all."""

    def __init__(self) -> None:
        self.left = 1_000_000
        self.asked: list[int] = []

    def drop_archived_rows(self, limit: int) -> int:
        self.asked.append(limit)
        done = min(limit, self.left)
        time.sleep(done / 100_000)
        self.left -= done
        return done

    def reclaim(self, pages: int, keep: float = 0.0) -> int:
        return 0


def test_a_step_is_sized_to_take_a_few_milliseconds_and_busy_steps_keep_to_their_share(tmp_path: Any) -> None:
    retention = Retention(fakeredis.FakeRedis(), QueueKeys("t:events"), TaskArchive.at(tmp_path))
    writer: Any = _SlowWriter()
    for _ in range(6):
        started = time.monotonic()
        retention.step(writer)
        took = time.monotonic() - started
    # 100,000 rows/s and a 2 ms aim: about 200 rows a step (sleeps overshoot, so a little fewer)
    assert writer.asked[0] == ROWS[1]
    assert ROWS[0] <= writer.asked[-1] <= 260, writer.asked
    # the next step waits 1 / BUSY_SHARE (busy) or 1 / IDLE_SHARE (idle) times as long as the last took
    # (the step's own clock sees a little less than `took`, more so on a loaded machine)
    assert 0.5 * took / BUSY_SHARE <= retention.left() <= took / BUSY_SHARE
    assert 0.5 * took / IDLE_SHARE <= retention.left(idle=True) <= took / IDLE_SHARE


@pytest.mark.skipif(not hasattr(os, "SCHED_IDLE"), reason="SCHED_IDLE is Linux's")
def test_passes_run_at_idle_cpu_priority() -> None:
    policies: list[int] = []

    def body() -> None:
        jobs._idle_priority()
        policies.append(os.sched_getscheduler(0))

    thread = threading.Thread(target=body)  # a thread of its own: the policy is per thread
    thread.start()
    thread.join()
    assert policies == [os.SCHED_IDLE]
    assert os.sched_getscheduler(0) != os.SCHED_IDLE  # this thread's is unchanged


def test_a_warm_stop_stops_the_pass_in_hand_and_leaves_idle_priority(monkeypatch: pytest.MonkeyPatch) -> None:
    """SIGTERM's handler (rq calls it on the thread that runs passes): the pass is told to stop, and
    the thread gets ordinary CPU priority back, so a saturated machine cannot starve the stop."""
    monkeypatch.setattr(jobs, "_stopping", threading.Event())
    monkeypatch.setattr(signal, "signal", lambda *_: None)  # rq re-arms its handlers: main thread only
    worker = jobs._Worker(["t:events:jobs"], connection=fakeredis.FakeRedis())
    seen: list[object] = []

    def body() -> None:
        jobs._idle_priority()
        try:
            worker.request_stop(signal.SIGTERM, None)
        except StopRequested:  # idle: rq stops at once; busy, it lets the job finish
            seen.append("stop")
        seen.append(os.sched_getscheduler(0))

    thread = threading.Thread(target=body)
    thread.start()
    thread.join()
    assert seen == ["stop", os.SCHED_OTHER] and jobs._stopping.is_set()


def test_reclaim_gives_back_as_many_pages_as_asked_and_keeps_a_share_free(tmp_path: Path) -> None:
    writer = StoreWriter(open_writer(tmp_path / "s.db"))
    conn = writer._conn
    conn.execute("CREATE TABLE filler (data BLOB)")
    conn.executemany("INSERT INTO filler VALUES (randomblob(3000))", [()] * 2000)
    conn.execute("DELETE FROM filler")
    free = conn.execute("PRAGMA freelist_count").fetchone()[0]
    assert free > 1500
    left = writer.reclaim(100, keep=0.125)
    assert conn.execute("PRAGMA freelist_count").fetchone()[0] == free - 100  # one call, 100 pages
    while left:
        left = writer.reclaim(1000, keep=0.125)
    free, total = (conn.execute(f"PRAGMA {p}").fetchone()[0] for p in ("freelist_count", "page_count"))
    assert free <= total * 0.125 < free + 2  # down to the share kept for inserts
    writer.close()


class _Backlog(_SlowWriter):
    """Rows of archived tasks waiting: `left` of them, as the store's archive_pending says."""

    def archived_backlog(self) -> int:
        return self.left


def test_while_events_come_rows_wait_for_a_quiet_moment_unless_too_many_wait(tmp_path: Any) -> None:
    retention = Retention(fakeredis.FakeRedis(), QueueKeys("t:events"), TaskArchive.at(tmp_path))
    writer: Any = _Backlog()
    writer.left = BACKLOG
    retention.came()  # events come
    assert retention.step(writer) is False and writer.asked == []  # nothing removed: a bounded backlog
    writer.left = BACKLOG + 1_000
    assert retention.step(writer) is True and writer.asked == [ROWS[1]]  # beyond the bound: removal
    retention._came -= QUIET  # the queue has been empty for QUIET seconds
    writer.left = 10
    assert retention.step(writer) is True and writer.asked[-1] > 0  # quiet: whatever is left goes
    assert writer.left == 0


def test_a_pass_slows_to_its_busy_pace_while_the_worker_stores_events() -> None:
    from taskevents.ingest import retention

    class Slept(threading.Event):
        def __init__(self) -> None:
            super().__init__()
            self.waits: list[float] = []

        def wait(self, timeout: float | None = None) -> bool:
            assert timeout is not None
            self.waits.append(timeout)
            return False

    client = fakeredis.FakeRedis()
    keys = QueueKeys("t:events")
    stop = Slept()
    pacer = retention._Pacer(client, Settings(queue=keys.queue), retention.PACE, stop)
    pacer.after(0.01)  # the worker idle: PACE times the work
    client.hincrby(keys.stats, "ingested", 10_000)  # it stored 10,000 events since
    pacer.after(0.01)
    pacer.after(0.01)  # and none since
    expected = [0.01 * retention.PACE, 0.01 * retention.BUSY_PACE, 0.01 * retention.PACE]
    assert stop.waits == pytest.approx(expected)
    retention._Pacer(client, Settings(queue=keys.queue), 0, stop).after(1.0)  # pace 0: full speed, asked for
    assert len(stop.waits) == 3


@pytest.mark.redis_server
def test_a_warm_stop_does_not_wait_a_minute_for_rqs_pubsub_thread(settings: Settings) -> None:
    """The race CI met: the pubsub thread has read an unsubscribe's reply and waits up to 60 s for a
    subscription; rq's own unsubscribe then waited for it (redis-py 8's stop() joins), so a warm stop
    of the jobs process took up to a minute."""
    client = redis.Redis.from_url(settings.redis_url)
    worker = jobs._Worker([f"{settings.queue}:jobs"], connection=client)
    worker.subscribe()
    assert worker.pubsub is not None and worker.pubsub_thread is not None
    wait_for(lambda: worker.pubsub.subscribed)
    worker.pubsub.unsubscribe()  # the reply read by the thread, which loops on, unsubscribed
    wait_for(lambda: not worker.pubsub.subscribed)
    time.sleep(0.3)  # back in get_message, waiting for a subscription
    started = time.monotonic()
    worker.unsubscribe()
    assert time.monotonic() - started < 10, "unsubscribe waited for the pubsub thread's minute"
    client.close()
