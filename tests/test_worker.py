"""The worker against a real Redis: seq, dedup, dead letters, recovery, summaries, signals."""

import signal
import sqlite3
import subprocess
import sys
import time

import orjson
import pytest
import redis

from taskevents import Emitter
from taskevents.db import open_writer
from taskevents.ingest.batch import decode_batch
from taskevents.ingest.worker import Worker, unavailable
from taskevents.keys import QueueKeys
from taskevents.settings import Settings
from tests.helpers import rows, seqs_by_task, sqlite_writer, start_worker, stored_count, wait_for, worker_env

pytestmark = pytest.mark.redis_server


def event(task: str = "t1", kind: str = "runner_heartbeat", span: str = "root", **extra: object) -> bytes:
    return orjson.dumps({"task_id": task, "event_type": kind, "actor": "runner", "span_id": span, **extra})


def drain(worker: Worker) -> None:
    while worker.step():
        pass


def test_seq_is_assigned_per_task_in_queue_order(settings: Settings, client: redis.Redis) -> None:
    client.rpush(settings.queue, *[event(f"t{i % 3}", payload={"i": i}) for i in range(30)])
    drain(Worker(settings))
    stored = rows(settings.sqlite_path, "SELECT task_id, seq, payload FROM task_events ORDER BY event_id")
    for task in ("t0", "t1", "t2"):
        mine = [(seq, orjson.loads(p)["i"]) for t, seq, p in stored if t == task]
        assert [s for s, _ in mine] == list(range(1, 11))
        assert [i for _, i in mine] == sorted(i for _, i in mine)  # seq follows queue order


def test_seq_continues_across_batches_and_restarts(settings: Settings, client: redis.Redis) -> None:
    small = settings.model_copy(update={"batch_size": 7})
    client.rpush(settings.queue, *[event() for _ in range(20)])
    with Worker(small) as first:
        drain(first)
    client.rpush(settings.queue, *[event() for _ in range(5)])
    with Worker(small) as second:  # a new worker: seq comes from the store, not from memory
        drain(second)
    assert seqs_by_task(settings.sqlite_path) == {"t1": list(range(1, 26))}


def test_the_largest_batch_is_claimed_and_stored_whole(settings: Settings, client: redis.Redis) -> None:
    # Past ~8,000 elements a single Lua unpack() fails: the claim script pushes in slices.
    biggest = settings.model_copy(update={"batch_size": 20_000})  # TASKEVENTS_BATCH_SIZE's maximum
    client.rpush(settings.queue, *[event(f"t{i % 2}") for i in range(biggest.batch_size + 5)])
    worker = Worker(biggest)
    assert worker.step() and client.llen(settings.queue) == 5
    drain(worker)
    assert {t: len(s) for t, s in seqs_by_task(settings.sqlite_path).items()} == {
        "t0": (biggest.batch_size + 5 + 1) // 2,
        "t1": (biggest.batch_size + 5) // 2,
    }


def test_the_same_event_uid_is_stored_once(settings: Settings, client: redis.Redis) -> None:
    once = event(event_uid="uid-1")
    client.rpush(settings.queue, once, once, event(event_uid="uid-2"), once)  # repeats within a batch
    worker = Worker(settings)
    drain(worker)
    client.rpush(settings.queue, once, event(event_uid="uid-2"), event(event_uid="uid-3"))  # and later
    drain(worker)
    assert rows(settings.sqlite_path, "SELECT event_uid, seq FROM task_events ORDER BY seq") == [
        ("uid-1", 1),
        ("uid-2", 2),
        ("uid-3", 3),
    ]
    assert worker.totals.duplicates == 4
    assert client.hget(QueueKeys(settings.queue).stats, "duplicates") == b"4"


def test_bad_events_are_dead_lettered_with_reason_and_the_rest_is_stored(
    settings: Settings, client: redis.Redis
) -> None:
    bad = [
        b"{not json",
        b"\xff\xfe",
        b"[]",
        event(task=""),
        event(span=""),
        event(phase="lunch"),
        event(payload=[1, 2]),
        event(payload={"x": "y" * (settings.max_payload_bytes + 1)}),
        orjson.dumps({"event_type": "x", "actor": "a", "span_id": "s"}),
    ]
    client.rpush(settings.queue, event(task="ok"), *bad, event(task="ok"))
    worker = Worker(settings)
    drain(worker)
    assert seqs_by_task(settings.sqlite_path) == {"ok": [1, 2]}
    dead = [orjson.loads(x) for x in client.lrange(QueueKeys(settings.queue).dead, 0, -1)]
    assert [d["code"] for d in dead] == [
        "not_json",
        "not_json",
        "not_object",
        "invalid",
        "invalid",
        "invalid",
        "invalid",
        "payload_too_large",
        "invalid",
    ]
    assert "task_id: String should have at least 1 character" in dead[3]["reason"]
    assert "span_id" in dead[4]["reason"] and "phase" in dead[5]["reason"] and "payload" in dead[6]["reason"]
    assert "task_id: Field required" in dead[8]["reason"]
    # The original bytes are kept: as text when they are UTF-8, base64 when not.
    assert dead[0]["raw"] == "{not json" and dead[1]["raw_b64"] == "//4="
    assert worker.totals.dead_lettered == len(bad)


def test_summaries_track_phase_status_and_spans(settings: Settings, client: redis.Redis) -> None:
    client.rpush(
        settings.queue,
        event(kind="runner_spawn"),
        event(kind="phase_enter", span="plan", parent_span_id="root", phase="planning"),
        event(kind="phase_exit", span="plan", phase="planning"),
        event(kind="phase_enter", span="exec", parent_span_id="root", phase="executing"),
        event(kind="work_item_start", span="w1", parent_span_id="exec", phase="executing"),
        event(kind="work_item_start", span="w2", parent_span_id="exec", phase="executing"),
        event(kind="work_item_failed", span="w2", phase="executing", payload={"error_code": "E1"}),
        event(kind="runner_heartbeat"),  # no phase: does not blank the current phase
    )
    worker = Worker(settings.model_copy(update={"batch_size": 3}))  # spans cross batch boundaries
    drain(worker)
    assert rows(settings.sqlite_path, "SELECT latest_seq, event_count, current_phase, status FROM tasks") == [
        (8, 8, "executing", "running")
    ]
    spans = rows(
        settings.sqlite_path,
        "SELECT span_id, parent_span_id, event_type, first_seq, end_seq, state, event_count FROM spans",
    )
    assert sorted(spans) == [
        ("exec", "root", "phase_enter", 4, None, "open", 1),
        ("plan", "root", "phase_enter", 2, 3, "closed", 2),
        ("root", None, "runner_spawn", 1, None, "open", 2),
        ("w1", "exec", "work_item_start", 5, None, "open", 1),
        ("w2", "exec", "work_item_start", 6, 7, "failed", 2),
    ]
    client.rpush(settings.queue, event(kind="runner_exit", payload={"exit_code": 3}))
    drain(worker)
    assert rows(settings.sqlite_path, "SELECT status, current_phase FROM tasks") == [("failed", "executing")]
    assert rows(settings.sqlite_path, "SELECT state, end_seq FROM spans WHERE span_id = 'root'") == [
        ("closed", 9)
    ]


def test_the_store_itself_refuses_duplicate_seq_and_event_uid(settings: Settings) -> None:
    open_writer(settings.sqlite_path).close()  # the schema, as the worker creates it
    conn = sqlite3.connect(settings.sqlite_path)
    insert = (
        "INSERT INTO task_events (task_id, seq, event_type, actor, span_id, created_at, event_uid) "
        "VALUES (?, ?, 'x', 'a', 's', '2026-01-01T00:00:00.000Z', ?)"
    )
    conn.execute(insert, ("t", 1, "u1"))
    with pytest.raises(sqlite3.IntegrityError):
        conn.execute(insert, ("t", 1, "u2"))
    with pytest.raises(sqlite3.IntegrityError):
        conn.execute(insert, ("t", 2, "u1"))
    for bad in [("t", 0, "u3"), ("", 3, "u4")]:
        with pytest.raises(sqlite3.IntegrityError):
            conn.execute(insert, bad)


def test_uncommitted_leftovers_are_processed_after_a_crash(settings: Settings, client: redis.Redis) -> None:
    client.rpush(settings.queue, *[event() for _ in range(10)])
    worker = Worker(settings)
    worker.take_over()
    worker.queue.claim(4, worker.writer.last_batch_id + 1)  # taken, then the worker "died"
    assert client.llen(QueueKeys(settings.queue).processing(1)) == 4  # batch 1's slot
    lapse(client, settings)
    drain_after_recovery(Worker(settings))
    assert seqs_by_task(settings.sqlite_path) == {"t1": list(range(1, 11))}
    assert client.exists(*QueueKeys(settings.queue).processing_keys) == 0


def test_committed_but_unacknowledged_batch_is_not_stored_twice(
    settings: Settings, client: redis.Redis
) -> None:
    # No event_uid here: only the batch id tells that these were committed.
    client.rpush(settings.queue, *[event() for _ in range(5)], b"junk")
    worker = Worker(settings)
    worker.take_over()
    batch_id = worker.writer.last_batch_id + 1
    claim = worker.queue.claim(100, batch_id)
    assert claim is not None
    good, dead = decode_batch(claim.items, settings.max_payload_bytes)
    worker.writer.commit(batch_id, good, dead)  # committed; the worker dies before acknowledging
    lapse(client, settings)
    drain_after_recovery(Worker(settings))
    assert seqs_by_task(settings.sqlite_path) == {"t1": [1, 2, 3, 4, 5]}
    keys = QueueKeys(settings.queue)
    assert client.exists(*keys.processing_keys, keys.processing_batch(0), keys.processing_batch(1)) == 0
    assert client.llen(keys.dead) == 1  # its dead letter is still recorded, once


def drain_after_recovery(worker: Worker) -> None:
    worker.take_over()  # which recovers
    drain(worker)


def lapse(client: redis.Redis, settings: Settings) -> None:
    """What a dead worker's lease does after its TTL."""
    client.delete(QueueKeys(settings.queue).lease)


def test_sigterm_finishes_the_batch_and_exits_zero(settings: Settings, client: redis.Redis) -> None:
    client.rpush(settings.queue, *[event(f"t{i % 10}") for i in range(50_000)])
    proc = start_worker(settings.model_copy(update={"batch_size": 500}))
    wait_for(lambda: stored_count(settings.sqlite_path) > 0)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(30) == 0
    keys = QueueKeys(settings.queue)
    assert client.exists(*keys.processing_keys) == 0  # nothing left half-done
    stored = rows(settings.sqlite_path, "SELECT count(*) FROM task_events")[0][0]
    assert stored + client.llen(settings.queue) == 50_000
    assert all(s == list(range(1, len(s) + 1)) for s in seqs_by_task(settings.sqlite_path).values())


def test_check_reports_the_heartbeat(settings: Settings) -> None:
    check = [sys.executable, "-m", "taskevents.ingest", "--check"]
    assert subprocess.run(check, env=worker_env(settings), capture_output=True).returncode == 1
    proc = start_worker(settings)
    try:
        wait_for(lambda: subprocess.run(check, env=worker_env(settings), capture_output=True).returncode == 0)
    finally:
        proc.terminate()
        assert proc.wait(15) == 0


def test_an_idle_worker_wakes_for_new_events(settings: Settings, client: redis.Redis) -> None:
    proc = start_worker(settings)
    try:
        time.sleep(1.5)  # idle, blocked on the empty queue
        emitter = Emitter.from_settings(settings)
        emitter.emit("late", "runner_spawn", span_id="r", actor="runner")
        assert emitter.close(5)
        wait_for(lambda: stored_count(settings.sqlite_path) == 1)
    finally:
        proc.terminate()
        proc.wait(15)


@pytest.mark.parametrize(("setting", "pragma"), [("NORMAL", 1), ("FULL", 2)])
def test_the_store_syncs_as_configured(settings: Settings, setting: str, pragma: int) -> None:
    worker = Worker(settings.model_copy(update={"sqlite_synchronous": setting}))
    assert sqlite_writer(worker)._conn.execute("PRAGMA synchronous").fetchone()[0] == pragma
    with pytest.raises(ValueError, match="sqlite_synchronous"):
        Settings(sqlite_synchronous="OFF")


def test_a_runner_exit_with_a_textual_exit_code_zero_is_a_success(
    settings: Settings, client: redis.Redis
) -> None:
    client.rpush(
        settings.queue,
        event("a", kind="runner_spawn"),
        event("a", kind="runner_exit", payload={"exit_code": "0"}),
        event("b", kind="runner_spawn"),
        event("b", kind="runner_exit", payload={"outcome": "finished"}),  # unknown, no exit code
    )
    with Worker(settings) as worker:
        drain(worker)
    assert rows(settings.sqlite_path, "SELECT task_id, status FROM tasks ORDER BY task_id") == [
        ("a", "succeeded"),
        ("b", "failed"),
    ]


def test_check_fails_while_the_heartbeat_reports_a_store_error(
    settings: Settings, client: redis.Redis
) -> None:
    check = [sys.executable, "-m", "taskevents.ingest", "--check"]
    beat = {"pid": 1, "host": "h", "at": time.time(), "store_error": "database disk image is malformed"}
    client.set(QueueKeys(settings.queue).heartbeat, orjson.dumps(beat), px=10_000)
    done = subprocess.run(check, env=worker_env(settings), capture_output=True, text=True)
    assert done.returncode == 1
    assert "cannot write the store: database disk image is malformed" in done.stderr
    client.set(QueueKeys(settings.queue).heartbeat, orjson.dumps(beat | {"store_error": None}), px=10_000)
    assert subprocess.run(check, env=worker_env(settings), capture_output=True).returncode == 0


@pytest.mark.parametrize(
    ("error", "transient"),
    [
        (redis.ConnectionError("refused"), True),
        (redis.TimeoutError("slow"), True),
        (redis.OutOfMemoryError("OOM command not allowed"), True),
        (redis.ReadOnlyError("You can't write against a read only replica."), True),  # after a failover
        (redis.ResponseError("MISCONF Errors writing to the AOF file"), True),  # its disk is full
        (redis.ResponseError("LEASELOST the lease is no longer ours"), False),
        (redis.ResponseError("WRONGTYPE"), False),
        (sqlite3.OperationalError("database is locked"), True),
        (sqlite3.OperationalError("database or disk is full"), True),
        (sqlite3.OperationalError("disk I/O error"), True),
        (sqlite3.OperationalError("attempt to write a readonly database"), False),  # a store fault
        (sqlite3.OperationalError("no such table: task_events"), False),
        (sqlite3.IntegrityError("UNIQUE constraint failed"), False),
        (ValueError("a bug"), False),
    ],
)
def test_what_the_worker_waits_out_and_what_it_does_not(error: BaseException, transient: bool) -> None:
    assert unavailable(error) is transient
