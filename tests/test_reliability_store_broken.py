"""A broken store is not a poison pill: the store's own errors stop consuming, they blame no event.

A page of the store corrupted on disk ("database disk image is malformed"), a row the worker's seq
would collide with (an IntegrityError from the store, as a second writer would cause), and a schema
newer than the worker: each time the real worker stays up, consumes nothing, keeps every event in
Redis, dead-letters none (however many times the fault repeats, far past TASKEVENTS_MAX_ATTEMPTS),
says why in its heartbeat, `ingest --check` and `/api/ready`, and resumes by itself once the store is
mended, storing every event once and in order.
"""

import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis

from taskevents.keys import QueueKeys
from taskevents.settings import Settings
from tests.api_helpers import TestClient, api_client
from tests.helpers import rows, seqs_by_task, start_worker, stored_count, wait_for, worker_env
from tests.reliability_write_helpers import beat, heartbeat, raw_event, settled, wait_until_stored

pytestmark = [pytest.mark.redis_server, pytest.mark.slow]

BEFORE, DURING = 1_000, 3_000
FAULT = 6.0  # seconds the store stays broken: several retry cycles, each a claim of the same batch


def push(client: redis.Redis, settings: Settings, start: int, count: int) -> None:
    client.rpush(settings.queue, *[raw_event(f"t{i % 10}", i) for i in range(start, start + count)])


def held_in_redis(client: redis.Redis, settings: Settings) -> int:
    keys = QueueKeys(settings.queue)
    return int(client.llen(keys.queue)) + sum(int(client.llen(k)) for k in keys.processing_keys)


def check(settings: Settings) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "taskevents.ingest", "--check"],
        env=worker_env(settings),
        capture_output=True,
        text=True,
    )


@pytest.fixture
def worker(settings: Settings, client: redis.Redis) -> Iterator[subprocess.Popen[bytes]]:
    """The real worker with BEFORE events stored; stopped cleanly at the end (its WAL checkpointed)."""
    settings = settings.model_copy(update={"batch_size": 500})
    proc = start_worker(settings)
    push(client, settings, 0, BEFORE)
    wait_until_stored(client, settings, BEFORE, timeout=30, alive=lambda: proc.poll() is None)
    yield proc
    if proc.poll() is None:
        proc.terminate()
        assert proc.wait(20) == 0


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    assert proc.wait(20) == 0


def go_through_fault(
    settings: Settings,
    client: redis.Redis,
    proc: subprocess.Popen[bytes],
    api: TestClient,
    error: str,
    mend: Callable[[], None],
) -> None:
    """Events sent while the store is broken wait in Redis; `error` is reported; `mend` brings it back."""
    push(client, settings, BEFORE, DURING)
    wait_for(lambda: error in ((heartbeat(client, settings) or {}).get("store_error") or ""), timeout=20)
    time.sleep(FAULT)  # a few fault cycles, each claiming the same batch again
    assert proc.poll() is None  # no crash, so no crash count either
    assert held_in_redis(client, settings) == DURING
    keys = QueueKeys(settings.queue)
    assert client.llen(keys.dead) == 0 and client.exists(keys.suspects) == 0  # nothing blamed on events
    attempts = [int(client.get(keys.processing_attempts(s)) or 0) for s in range(2)]
    assert max(attempts) <= 1  # each cycle took its claim back: the store's fault, not the batch's
    checked = check(settings)
    assert checked.returncode == 1 and "cannot write the store" in checked.stderr and error in checked.stderr
    ready = api.get("/api/ready").json()
    assert ready["status"] in ("degraded", "unavailable") and error in ready["detail"]
    assert ready["worker"]["heartbeat"]["store_error"]

    mend()
    mended = time.monotonic()
    wait_until_stored(client, settings, BEFORE + DURING, timeout=30, alive=lambda: proc.poll() is None)
    resumed = time.monotonic() - mended
    wait_for(lambda: beat(client, settings)["store_error"] is None, timeout=10)
    assert check(settings).returncode == 0
    assert api.get("/api/ready").json()["status"] == "ready"
    assert_all_stored_once(settings, BEFORE + DURING)
    assert client.llen(keys.dead) == 0 and settled(client, settings)
    assert resumed < 8  # the reopening backs off to at most 5 s
    print(f"\n{error}: {DURING} sent, held in Redis, none dead-lettered, stored {resumed:.1f}s after mending")


def assert_all_stored_once(settings: Settings, count: int) -> None:
    stored = [
        i for (i,) in rows(settings.sqlite_path, "SELECT json_extract(payload, '$.i') FROM task_events")
    ]
    assert sorted(stored) == list(range(count))
    assert all(seqs == list(range(1, len(seqs) + 1)) for seqs in seqs_by_task(settings.sqlite_path).values())
    assert rows(settings.sqlite_path, "PRAGMA integrity_check") == [("ok",)]


def test_a_corrupt_page_stops_consuming_and_the_mended_store_resumes(
    settings: Settings, client: redis.Redis, worker: subprocess.Popen[bytes]
) -> None:
    settings = settings.model_copy(update={"batch_size": 500})
    stop(worker)  # its WAL is checkpointed into the file: the page is on disk
    (root,) = rows(settings.sqlite_path, "SELECT rootpage FROM sqlite_master WHERE name = 'tasks'")[0]
    (page_size,) = rows(settings.sqlite_path, "PRAGMA page_size")[0]
    with settings.sqlite_path.open("r+b") as f:
        f.seek((root - 1) * page_size)
        original = f.read(page_size)
        f.seek((root - 1) * page_size)
        f.write(b"\xa5" * page_size)  # the tasks table's root page, garbage: "malformed"

    def mend() -> None:
        with settings.sqlite_path.open("r+b") as f:
            f.seek((root - 1) * page_size)
            f.write(original)

    proc = start_worker(settings)
    with api_client(settings) as api:
        go_through_fault(settings, client, proc, api, "malformed", mend)
    stop(proc)


def test_an_integrity_error_from_the_store_is_not_blamed_on_the_batch(
    settings: Settings, client: redis.Redis, worker: subprocess.Popen[bytes]
) -> None:
    """A row at the seq the worker assigns next (what a second writer would leave): UNIQUE fails."""
    settings = settings.model_copy(update={"batch_size": 500})
    (latest,) = rows(settings.sqlite_path, "SELECT latest_seq FROM tasks WHERE task_id = 't0'")[0]
    intruder = sqlite3.connect(settings.sqlite_path, isolation_level=None)
    intruder.execute(
        "INSERT INTO task_events (task_id, seq, event_type, actor, span_id, created_at) "
        "VALUES ('t0', ?, 'intruder', 'x', 'x', '2026-01-01T00:00:00.000Z')",
        (latest + 1,),
    )

    def mend() -> None:
        intruder.execute("DELETE FROM task_events WHERE event_type = 'intruder'")
        intruder.close()

    with api_client(settings) as api:
        go_through_fault(settings, client, worker, api, "UNIQUE constraint failed", mend)


def test_a_schema_newer_than_the_worker_stops_it_until_the_store_is_one_it_knows(
    settings: Settings, client: redis.Redis, worker: subprocess.Popen[bytes]
) -> None:
    settings = settings.model_copy(update={"batch_size": 500})
    stop(worker)
    conn = sqlite3.connect(settings.sqlite_path, isolation_level=None)
    (version,) = conn.execute("PRAGMA user_version").fetchone()
    conn.execute("PRAGMA user_version = 99")
    conn.close()

    def mend() -> None:
        conn = sqlite3.connect(settings.sqlite_path, isolation_level=None)
        conn.execute(f"PRAGMA user_version = {version}")
        conn.close()

    proc = start_worker(settings)
    with api_client(settings) as api:
        go_through_fault(settings, client, proc, api, "newer than this code", mend)
    stop(proc)


def test_a_worker_started_on_a_file_that_is_not_a_database_waits_for_one(
    settings: Settings, client: redis.Redis, tmp_path: Path
) -> None:
    settings = settings.model_copy(update={"db": tmp_path / "not-a-db.sqlite"})
    settings.sqlite_path.write_bytes(b"this is not an SQLite file " * 200)
    proc = start_worker(settings)
    push(client, settings, 0, 100)
    wait_for(
        lambda: "not a database" in ((heartbeat(client, settings) or {}).get("store_error") or ""), timeout=20
    )
    assert proc.poll() is None and held_in_redis(client, settings) == 100
    settings.sqlite_path.unlink()  # the operator moves the bad file away: the worker creates the store
    wait_until_stored(client, settings, 100, timeout=30, alive=lambda: proc.poll() is None)
    assert stored_count(settings.sqlite_path) == 100
    stop(proc)
