"""Store faults: the disk under the SQLite file full, and the store locked by another process.

The worker must stop committing, keep the events in Redis, say why (log and heartbeat
`store_error`), and resume by itself when the store takes writes again, losing nothing.
"""

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from taskevents.ingest.worker import STOP_GRACE, Worker
from taskevents.keys import QueueKeys
from taskevents.settings import Settings
from tests.conftest import IN_CI
from tests.helpers import rows, seqs_by_task, sqlite_writer, start_worker, stored_count, wait_for
from tests.reliability_write_helpers import beat, heartbeat, raw_event, wait_until_stored

pytestmark = [pytest.mark.redis_server, pytest.mark.slow]

BEFORE, DURING = 1_000, 5_000  # events stored before the fault, and sent while it lasts
FAULT = 8.0  # seconds the fault lasts: longer than the busy timeout (5 s) and a few retries


def push(client: redis.Redis, settings: Settings, start: int, count: int) -> None:
    client.rpush(
        settings.queue, *[raw_event(f"t{i % 10}", i, uid=f"u{i}") for i in range(start, start + count)]
    )


def held_in_redis(client: redis.Redis, settings: Settings) -> int:
    keys = QueueKeys(settings.queue)
    return int(client.llen(keys.queue)) + sum(int(client.llen(k)) for k in keys.processing_keys)


def assert_all_stored_once(settings: Settings, count: int) -> None:
    assert rows(settings.sqlite_path, "SELECT count(*), count(DISTINCT event_uid) FROM task_events") == [
        (count, count)
    ]
    assert all(seqs == list(range(1, len(seqs) + 1)) for seqs in seqs_by_task(settings.sqlite_path).values())
    assert rows(settings.sqlite_path, "PRAGMA integrity_check") == [("ok",)]


@pytest.fixture
def running(settings: Settings) -> Iterator[Worker]:
    """The worker in this process (its connection can be given a size limit), running until the end."""
    worker = Worker(settings)
    thread = threading.Thread(target=worker.run)
    thread.start()
    yield worker
    worker.request_stop()
    thread.join(30)
    assert not thread.is_alive()


def test_sqlite_full_stops_commits_keeps_events_reports_and_resumes(
    settings: Settings, client: redis.Redis, running: Worker
) -> None:
    """SQLITE_FULL from SQLite itself: a page limit on the worker's own connection (max_page_count)."""
    push(client, settings, 0, BEFORE)
    wait_until_stored(client, settings, BEFORE, timeout=30)
    conn = sqlite_writer(running)._conn  # the worker is idle: nothing else uses its connection now
    pages = conn.execute("PRAGMA page_count").fetchone()[0]
    conn.execute(f"PRAGMA max_page_count = {pages}")  # the "disk" holds what the store has, no more

    push(client, settings, BEFORE, DURING)
    wait_for(lambda: (heartbeat(client, settings) or {}).get("store_error") is not None, timeout=20)
    assert beat(client, settings)["store_error"] == "database or disk is full"
    time.sleep(FAULT)
    assert stored_count(settings.sqlite_path) == BEFORE  # no commit while full
    assert held_in_redis(client, settings) == DURING  # every event kept in Redis

    conn.execute("PRAGMA max_page_count = 4294967294")  # space returns
    freed = time.monotonic()
    wait_until_stored(client, settings, BEFORE + DURING, timeout=30)
    resumed = time.monotonic() - freed
    wait_for(lambda: beat(client, settings)["store_error"] is None, timeout=10)
    assert_all_stored_once(settings, BEFORE + DURING)
    assert resumed < 6  # the commit retry backs off to at most 5 s
    print(
        "\n"
        f"SQLITE_FULL {FAULT:.0f}s: {DURING} sent, held in Redis, stored {resumed:.1f}s after space returned"
    )


def can_mount() -> bool:
    if os.geteuid() != 0:
        return False
    probe = Path(f"/tmp/taskevents-mount-probe-{os.getpid()}")
    probe.mkdir(exist_ok=True)
    try:
        ok = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(probe)], capture_output=True
        )
        if ok.returncode != 0:
            return False
        subprocess.run(["umount", str(probe)], check=True)
        return True
    finally:
        probe.rmdir()


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 4 MB tmpfs: a real file system that fills up (needs root; CI runs as root)."""
    if not can_mount():
        if IN_CI:
            pytest.fail("CI must be able to mount a tmpfs (run as root)", pytrace=False)
        pytest.skip("cannot mount a tmpfs here (not root)")
    disk = tmp_path / "disk"
    disk.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(disk)], check=True)
    yield disk
    subprocess.run(["umount", "-l", str(disk)], check=True)


def fill_disk(disk: Path) -> Path:
    """Write a file until the file system has no space left; returns it (delete it to free the space)."""
    filler = disk / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT)
    try:
        while True:
            os.write(fd, b"\0" * 4096)
    except OSError:
        pass
    finally:
        os.close(fd)
    return filler


def test_a_full_file_system_stops_the_real_worker_and_it_resumes_when_space_returns(
    settings: Settings, client: redis.Redis, small_disk: Path
) -> None:
    settings = settings.model_copy(update={"db": small_disk / "events.db"})
    worker = start_worker(settings)
    try:
        push(client, settings, 0, BEFORE)
        wait_until_stored(client, settings, BEFORE, timeout=30, alive=lambda: worker.poll() is None)
        filler = fill_disk(small_disk)

        push(client, settings, BEFORE, DURING)
        wait_for(lambda: (heartbeat(client, settings) or {}).get("store_error") is not None, timeout=20)
        assert beat(client, settings)["store_error"] == "database or disk is full"
        time.sleep(FAULT)
        assert worker.poll() is None
        assert stored_count(settings.sqlite_path) == BEFORE
        assert held_in_redis(client, settings) == DURING

        filler.unlink()  # space returns
        freed = time.monotonic()
        wait_until_stored(client, settings, BEFORE + DURING, timeout=30, alive=lambda: worker.poll() is None)
        resumed = time.monotonic() - freed
        wait_for(lambda: beat(client, settings)["store_error"] is None, timeout=10)
    finally:
        worker.terminate()
        assert worker.wait(15) == 0
    assert_all_stored_once(settings, BEFORE + DURING)
    print(
        f"\ntmpfs full {FAULT:.0f}s: {DURING} sent, held in Redis, stored {resumed:.1f}s after space returned"
    )


LOCKER = """
import sqlite3, sys, time
conn = sqlite3.connect(sys.argv[1], isolation_level=None)
conn.execute("BEGIN EXCLUSIVE")
print("locked", flush=True)
time.sleep(float(sys.argv[2]))
conn.execute("COMMIT")
"""


def test_a_store_locked_by_another_process_makes_the_worker_wait_and_lose_nothing(
    settings: Settings, client: redis.Redis
) -> None:
    # A heartbeat shorter than one commit attempt (busy_timeout, 5 s): it must be refreshed while the
    # commit waits, or a health check would call a waiting worker dead.
    settings = settings.model_copy(update={"heartbeat_ttl": 2.0})
    worker = start_worker(settings, TASKEVENTS_HEARTBEAT_TTL="2")
    try:
        push(client, settings, 0, BEFORE)
        wait_until_stored(client, settings, BEFORE, timeout=30, alive=lambda: worker.poll() is None)
        locker = subprocess.Popen(
            [sys.executable, "-c", LOCKER, str(settings.sqlite_path), str(FAULT)],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert locker.stdout is not None and locker.stdout.readline() == "locked\n"
        locked_at = time.monotonic()
        push(client, settings, BEFORE, DURING)
        wait_for(lambda: (heartbeat(client, settings) or {}).get("store_error") is not None, timeout=20)
        assert beat(client, settings)["store_error"] == "database is locked"
        assert stored_count(settings.sqlite_path) == BEFORE
        while locker.poll() is None:
            assert (heartbeat(client, settings) or {}).get("store_error") == "database is locked"
            time.sleep(0.1)
        assert locker.wait() == 0
        locker.stdout.close()
        released = time.monotonic()
        wait_until_stored(client, settings, BEFORE + DURING, timeout=30, alive=lambda: worker.poll() is None)
        resumed = time.monotonic() - released
        wait_for(lambda: beat(client, settings)["store_error"] is None, timeout=10)
    finally:
        worker.terminate()
        assert worker.wait(20) == 0
    assert_all_stored_once(settings, BEFORE + DURING)
    assert released - locked_at >= FAULT
    # A commit attempt waits up to busy_timeout (5 s) for the lock, then backs off up to 5 s.
    assert resumed < 11
    print(f"\nlocked {FAULT:.0f}s: {DURING} sent, stored {resumed:.1f}s after the lock was released")


def test_a_warm_stop_gives_up_a_commit_that_keeps_failing_and_does_not_count_it_as_a_crash(
    settings: Settings, client: redis.Redis
) -> None:
    """SIGTERM while the store stays locked: the worker stops within STOP_GRACE (not never), leaves the
    batch in its slot with its attempt taken back, and the next worker stores it."""
    worker = start_worker(settings)
    push(client, settings, 0, BEFORE)
    wait_until_stored(client, settings, BEFORE, timeout=30, alive=lambda: worker.poll() is None)
    locker = subprocess.Popen(
        [sys.executable, "-c", LOCKER, str(settings.sqlite_path), "120"], stdout=subprocess.PIPE, text=True
    )
    try:
        assert locker.stdout is not None and locker.stdout.readline() == "locked\n"
        push(client, settings, BEFORE, 100)
        wait_for(
            lambda: (heartbeat(client, settings) or {}).get("store_error") == "database is locked", timeout=20
        )
        stopped = time.monotonic()
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(60) == 0
        took = time.monotonic() - stopped
        keys = QueueKeys(settings.queue)
        attempts = [int(client.get(keys.processing_attempts(s)) or 0) for s in range(2)]
        assert held_in_redis(client, settings) == 100 and max(attempts) == 0  # kept, and not a crash
    finally:
        locker.kill()
        locker.wait()
        if locker.stdout is not None:
            locker.stdout.close()
    successor = start_worker(settings)
    wait_until_stored(client, settings, BEFORE + 100, timeout=30, alive=lambda: successor.poll() is None)
    successor.terminate()
    assert successor.wait(15) == 0
    assert_all_stored_once(settings, BEFORE + 100)
    assert client.llen(QueueKeys(settings.queue).dead) == 0
    assert took < STOP_GRACE + 10  # the grace, plus a commit attempt's busy timeout (5 s)
    print(
        f"\nwarm stop with the store locked: exited {took:.1f}s after SIGTERM, "
        "the batch left for the next worker"
    )
