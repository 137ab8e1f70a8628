"""The read API under load and while the worker crashes: the real `python -m taskevents.api`, the real worker
(`python -m taskevents.ingest`) draining a backlog at full speed, 32 REST readers and 4 SSE followers.

Every answer a reader gets must be a 200, or a 404 for a task it has never seen; no 5xx, no connection
error; pages by cursor without a gap; `total` and `latest_seq` never going backwards; each SSE follower
gets every seq once, in order, and the end (tests/reliability_api_helpers.py checks each answer).
"""

import asyncio
import random
import signal
import sqlite3
import statistics
import subprocess
import time
from functools import partial
from pathlib import Path

import pytest

from taskevents.db import WAL_LIMIT_BYTES, open_reader, open_writer
from taskevents.settings import Settings
from tests.helpers import seqs_by_task, start_worker, stored_count, wait_for
from tests.reliability_api_helpers import (
    ReadLog,
    WalSampler,
    api_process,
    assert_clean_log,
    fill_backlog,
    rest_reader,
    sse_follower,
    task_names,
    tear_wal_index_header,
    wal_index_headers,
)

pytestmark = [pytest.mark.redis_server, pytest.mark.slow]

REST_READERS, SSE_FOLLOWERS = 32, 4
TASKS = 64  # each REST reader follows two tasks; the SSE followers one each
KILLS = 6
READ_DEADLINE = 180.0  # seconds the readers have to walk every task to its end


def _last_batch(conn: sqlite3.Connection) -> int:
    return conn.execute("SELECT last_batch_id FROM ingest_state").fetchone()[0]


def _reached(conn: sqlite3.Connection, count: int) -> bool:
    return _stored(conn) >= count


def _committed_after(conn: sqlite3.Connection, batch: int) -> bool:
    return _last_batch(conn) > batch


def _stored(conn: sqlite3.Connection) -> int:
    return conn.execute("SELECT coalesce(sum(event_count), 0) FROM tasks").fetchone()[0]


async def _read_everything(base: str, tasks: list[str], per_task: int, log: ReadLog) -> None:
    deadline = time.monotonic() + READ_DEADLINE
    readers = [
        rest_reader(
            base,
            [tasks[r % len(tasks)], tasks[(r + REST_READERS) % len(tasks)]],
            per_task,
            log,
            deadline,
            seed=r,
        )  # fmt: skip
        for r in range(REST_READERS)
    ]
    followers = [sse_follower(base, tasks[i * 7], per_task, log, deadline) for i in range(SSE_FOLLOWERS)]
    await asyncio.gather(*readers, *followers)


def _assert_stored_once_gap_free(settings: Settings, tasks: list[str], per_task: int) -> None:
    by_task = seqs_by_task(settings.sqlite_path)
    assert sorted(by_task) == sorted(tasks)
    for task, seqs in by_task.items():
        assert seqs == list(range(1, per_task + 1)), task


def test_32_readers_see_no_error_and_no_gap_while_the_worker_drains_a_backlog(
    settings: Settings, tmp_path: Path
) -> None:
    tasks, per_task = task_names(TASKS), 2_000  # 128,000 events
    open_writer(
        settings.sqlite_path
    ).close()  # the store exists (the worker's schema); readers start on it empty
    sent = fill_backlog(settings, tasks, per_task)
    log = ReadLog()
    with api_process(settings, tmp_path / "api.log") as api:
        sampler = WalSampler(settings.sqlite_path)
        worker = start_worker(settings)
        started = time.monotonic()
        try:
            asyncio.run(_read_everything(api.url, tasks, per_task, log))
            read_for = time.monotonic() - started
            wait_for(lambda: stored_count(settings.sqlite_path) == sent, timeout=60)
        finally:
            worker.terminate()
            worker.wait(20)
            wal_max = sampler.stop()
        assert_clean_log(api)
    print(f"\n{sent} events; {log.requests} requests by {REST_READERS + SSE_FOLLOWERS} readers in "
          f"{read_for:.1f}s; statuses {dict(log.statuses)}; {log.sse_events} SSE events; "
          f"WAL max {wal_max / (1 << 20):.1f} MiB")  # fmt: skip
    assert not log.problems, log.problems[:20]
    assert set(log.statuses) <= {200, 404}, log.statuses
    assert log.statuses[200] > 10 * REST_READERS  # they really read, many pages each
    assert log.sse_events == SSE_FOLLOWERS * per_task
    assert wal_max < WAL_LIMIT_BYTES + (16 << 20)  # bounded: see tests/test_reliability_api_wal.py
    _assert_stored_once_gap_free(settings, tasks, per_task)


def test_a_worker_sigkilled_and_restarted_under_readers_reaches_no_client(
    settings: Settings, tmp_path: Path
) -> None:
    """Six SIGKILLs spread over the drain, each followed by a restart. After three of them the wal-index
    header is torn as well (as a kill in the middle of publishing a commit leaves it), so the API's
    read-only connections must run SQLite's WAL recovery while the readers keep reading; the test
    waits until they have, then restarts the worker."""
    settings = settings.model_copy(update={"batch_size": 1000})  # more commits to be killed between
    tasks, per_task = task_names(TASKS), 1_600  # 102,400 events
    open_writer(settings.sqlite_path).close()
    sent = fill_backlog(settings, tasks, per_task)
    rng = random.Random(5)
    log = ReadLog()
    recoveries: list[float] = []  # seconds from each SIGKILL to the restarted worker's first commit
    rebuilt_by_readers: list[float] = []  # seconds the readers took to repair a torn wal-index
    probe = open_reader(settings.sqlite_path)

    async def kill_and_restart(worker: list[subprocess.Popen[bytes]]) -> None:
        for kill in range(KILLS):
            # Spread over the drain whatever the machine's speed: kill #k once k/(KILLS+1) is stored.
            mark = sent * (kill + 1) // (KILLS + 1)
            await asyncio.to_thread(wait_for, partial(_reached, probe, mark), 60, 0.002)
            await asyncio.sleep(rng.uniform(0, 0.05))
            worker[0].send_signal(signal.SIGKILL)
            killed_at = time.monotonic()
            await asyncio.to_thread(worker[0].wait, 10)
            before = _last_batch(probe)
            if kill % 2 == 1:
                tear_wal_index_header(settings.sqlite_path)
                await asyncio.to_thread(
                    wait_for, lambda: len(set(wal_index_headers(settings.sqlite_path))) == 1, 10, 0.002
                )
                rebuilt_by_readers.append(time.monotonic() - killed_at)
            worker[0] = start_worker(settings)
            await asyncio.to_thread(wait_for, partial(_committed_after, probe, before), 30, 0.002)
            recoveries.append(time.monotonic() - killed_at)

    async def run(base: str, worker: list[subprocess.Popen[bytes]]) -> None:
        await asyncio.gather(_read_everything(base, tasks, per_task, log), kill_and_restart(worker))

    with api_process(settings, tmp_path / "api.log") as api:
        worker = [start_worker(settings)]
        try:
            asyncio.run(run(api.url, worker))
            wait_for(lambda: stored_count(settings.sqlite_path) == sent, timeout=60)
        finally:
            worker[0].terminate()
            worker[0].wait(20)
            probe.close()
        assert_clean_log(api)
    print(f"\n{sent} events; {len(recoveries)} SIGKILLs; kill -> first commit after restart "
          f"median {statistics.median(recoveries):.2f}s max {max(recoveries):.2f}s; torn wal-index rebuilt "
          f"by the readers in {[round(s, 3) for s in rebuilt_by_readers]}s; {log.requests} requests, "
          f"statuses {dict(log.statuses)}")  # fmt: skip
    assert len(recoveries) == KILLS and len(rebuilt_by_readers) == KILLS // 2
    assert not log.problems, log.problems[:20]
    assert set(log.statuses) <= {200, 404}, log.statuses
    assert log.sse_events == SSE_FOLLOWERS * per_task
    _assert_stored_once_gap_free(settings, tasks, per_task)
