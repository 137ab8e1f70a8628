"""One writer per queue and store, enforced: a lease in Redis, fenced in the store.

Two or three real workers started at once on one queue and store, events without an event_uid (so
nothing but the single writer keeps them from being stored twice): one consumes, the others stand by.
The active one SIGKILLed, or frozen past its lease with SIGSTOP, while a standby waits: the standby
takes over within the lease's TTL and every event is stored once, each task's seq 1..n. A worker that
lost its lease cannot claim, acknowledge or commit (the store's writer epoch refuses it).
"""

import os
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
import redis

from taskevents.ingest.batch import decode_batch
from taskevents.ingest.lease import Lease, LeaseHeld, LeaseLost
from taskevents.ingest.worker import Worker
from taskevents.ingest.writer import StoreFenced
from taskevents.keys import QueueKeys
from taskevents.settings import Settings
from tests.helpers import rows, seqs_by_task, start_worker, stored_count, wait_for
from tests.reliability_write_helpers import heartbeat, raw_event, settled, wait_until_stored

pytestmark = pytest.mark.redis_server

TTL = 2.0  # the lease's (and heartbeat's) TTL in these tests, so a takeover is quick to see
TASKS = 20


def push(client: redis.Redis, settings: Settings, start: int, end: int) -> None:
    """Events without an event_uid, as a raw producer RPUSHes them: stored twice if two workers took them."""
    pipe = client.pipeline(transaction=False)
    for s in range(start, end, 1000):
        pipe.rpush(settings.queue, *[raw_event(f"t{i % TASKS}", i) for i in range(s, min(s + 1000, end))])
    pipe.execute()


def assert_each_stored_once_in_order(settings: Settings, total: int) -> None:
    stored = [
        i for (i,) in rows(settings.sqlite_path, "SELECT json_extract(payload, '$.i') FROM task_events")
    ]
    assert len(stored) == total and sorted(stored) == list(range(total))  # none lost, none twice
    assert all(s == list(range(1, len(s) + 1)) for s in seqs_by_task(settings.sqlite_path).values())
    for task in range(TASKS):  # and in queue order within each task
        mine = rows(
            settings.sqlite_path,
            "SELECT json_extract(payload, '$.i') FROM task_events WHERE task_id = ? ORDER BY seq",
            f"t{task}",
        )
        assert [i for (i,) in mine] == sorted(i for (i,) in mine)


def active_pid(client: redis.Redis, settings: Settings) -> int | None:
    beat = heartbeat(client, settings)
    return int(beat["pid"]) if beat else None


def holder_pid(client: redis.Redis, settings: Settings) -> int | None:
    token = client.get(QueueKeys(settings.queue).lease)
    return int(token.rsplit(b":", 2)[1]) if isinstance(token, bytes) else None


@pytest.fixture
def ttl_settings(settings: Settings) -> Settings:
    return settings.model_copy(update={"heartbeat_ttl": TTL, "batch_size": 500})


@pytest.mark.slow
@pytest.mark.parametrize("workers", [2, 3])
def test_workers_started_at_once_store_every_event_once(
    ttl_settings: Settings, client: redis.Redis, workers: int
) -> None:
    settings = ttl_settings
    total = 20_000
    push(client, settings, 0, total // 2)
    procs = [start_worker(settings, TASKEVENTS_HEARTBEAT_TTL=str(TTL)) for _ in range(workers)]
    push(client, settings, total // 2, total)  # while they start and race for the lease
    wait_until_stored(client, settings, total, timeout=60)
    assert all(p.poll() is None for p in procs)  # the standbys wait, they do not exit
    holder = holder_pid(client, settings)
    assert holder in {p.pid for p in procs}
    standbys = [s for s in client.zrange(QueueKeys(settings.queue).standbys, 0, -1) if isinstance(s, bytes)]
    assert len(standbys) == workers - 1 and all(str(holder).encode() not in s for s in standbys)
    assert_each_stored_once_in_order(settings, total)


@pytest.mark.slow
def test_a_standby_takes_over_when_the_active_worker_is_killed(
    ttl_settings: Settings, client: redis.Redis
) -> None:
    settings = ttl_settings
    total = 30_000
    first = start_worker(settings, TASKEVENTS_HEARTBEAT_TTL=str(TTL))
    wait_for(lambda: holder_pid(client, settings) == first.pid)
    second = start_worker(settings, TASKEVENTS_HEARTBEAT_TTL=str(TTL))
    wait_for(lambda: client.zcard(QueueKeys(settings.queue).standbys) == 1)

    pushing = threading.Thread(target=_push_paced, args=(client, settings, 0, total, 4.0))
    pushing.start()
    wait_for(lambda: stored_count(settings.sqlite_path) > 3000)
    first.send_signal(signal.SIGKILL)  # mid-stream, most likely mid-batch
    killed = time.monotonic()
    first.wait(10)
    wait_for(lambda: holder_pid(client, settings) == second.pid, timeout=3 * TTL)
    took_over = time.monotonic() - killed
    pushing.join()
    wait_until_stored(client, settings, total, timeout=60, alive=lambda: second.poll() is None)
    assert_each_stored_once_in_order(settings, total)
    # On one host the standby sees that the holder's pid is gone and need not wait for the TTL.
    assert took_over <= TTL + 1.0
    print(f"\nstandby took over {took_over:.2f}s after the active worker's SIGKILL (lease TTL {TTL:g}s)")


def _push_paced(client: redis.Redis, settings: Settings, start: int, end: int, seconds: float) -> None:
    steps = 40
    per = (end - start) // steps
    began = time.monotonic()
    for k in range(steps):
        push(client, settings, start + k * per, start + (k + 1) * per if k < steps - 1 else end)
        time.sleep(max(0.0, began + (k + 1) * seconds / steps - time.monotonic()))


@pytest.mark.slow
def test_a_warm_stop_hands_over_at_once(ttl_settings: Settings, client: redis.Redis) -> None:
    settings = ttl_settings.model_copy(update={"heartbeat_ttl": 30.0})  # a lapse would take 30 s
    first = start_worker(settings, TASKEVENTS_HEARTBEAT_TTL="30")
    wait_for(lambda: holder_pid(client, settings) == first.pid)
    second = start_worker(settings, TASKEVENTS_HEARTBEAT_TTL="30")
    wait_for(lambda: client.zcard(QueueKeys(settings.queue).standbys) == 1)
    first.send_signal(signal.SIGTERM)
    assert first.wait(15) == 0
    stopped = time.monotonic()
    wait_for(lambda: holder_pid(client, settings) == second.pid, timeout=5)
    assert time.monotonic() - stopped < 2.0  # the lease was released, not left to lapse
    push(client, settings, 0, 1000)
    wait_until_stored(client, settings, 1000, timeout=30)
    assert_each_stored_once_in_order(settings, 1000)


@pytest.mark.slow
def test_a_restarted_worker_takes_its_dead_predecessors_lease_at_once(
    ttl_settings: Settings, client: redis.Redis
) -> None:
    settings = ttl_settings.model_copy(update={"heartbeat_ttl": 30.0})
    first = start_worker(settings, TASKEVENTS_HEARTBEAT_TTL="30")
    wait_for(lambda: holder_pid(client, settings) == first.pid)
    first.kill()
    first.wait(10)
    restarted = start_worker(settings, TASKEVENTS_HEARTBEAT_TTL="30")
    began = time.monotonic()
    wait_for(lambda: holder_pid(client, settings) == restarted.pid, timeout=10)
    assert time.monotonic() - began < 5.0  # not the lease's 30 s: its holder is provably dead


@pytest.mark.slow
def test_a_frozen_worker_is_replaced_and_cannot_write_when_it_wakes(
    ttl_settings: Settings, client: redis.Redis, tmp_path: Path
) -> None:
    """SIGSTOP past the lease (a paused VM, a GC pause, a network split from Redis): the standby takes
    over; when the frozen one wakes with a batch in hand, it writes nothing and stands by."""
    settings = ttl_settings
    total = 20_000
    log = tmp_path / "first.log"
    first = start_worker(settings, log=log, TASKEVENTS_HEARTBEAT_TTL=str(TTL))
    wait_for(lambda: holder_pid(client, settings) == first.pid)
    second = start_worker(settings, TASKEVENTS_HEARTBEAT_TTL=str(TTL))
    wait_for(lambda: client.zcard(QueueKeys(settings.queue).standbys) == 1)
    pushing = threading.Thread(target=_push_paced, args=(client, settings, 0, total, 3.0))
    pushing.start()
    wait_for(lambda: stored_count(settings.sqlite_path) > 2000)
    first.send_signal(signal.SIGSTOP)
    wait_for(lambda: holder_pid(client, settings) == second.pid, timeout=3 * TTL)
    pushing.join()
    wait_until_stored(client, settings, total, timeout=60)
    first.send_signal(signal.SIGCONT)  # wakes up believing it holds the lease, maybe mid-commit
    wait_for(lambda: "standing by" in log.read_text(), timeout=20)
    push(client, settings, total, total + 1000)
    wait_until_stored(client, settings, total + 1000, timeout=30)
    assert holder_pid(client, settings) == second.pid and first.poll() is None
    assert_each_stored_once_in_order(settings, total + 1000)
    assert active_pid(client, settings) == second.pid


# --- in process: the fences themselves -----------------------------------------------------------


@pytest.fixture
def two(ttl_settings: Settings) -> Iterator[tuple[Worker, Worker]]:
    with Worker(ttl_settings) as a, Worker(ttl_settings) as b:
        yield a, b


def test_a_second_worker_cannot_take_a_held_lease(two: tuple[Worker, Worker]) -> None:
    a, b = two
    a.take_over()
    with pytest.raises(LeaseHeld, match="another worker consumes"):
        b.take_over()


def test_a_deposed_worker_can_neither_commit_nor_acknowledge(
    ttl_settings: Settings, client: redis.Redis, two: tuple[Worker, Worker]
) -> None:
    """The worst timing: A claims a batch, freezes past its lease; B takes over and stores it; A wakes
    and tries to commit and acknowledge the batch it still holds in memory."""
    settings = ttl_settings
    keys = QueueKeys(settings.queue)
    a, b = two
    push(client, settings, 0, 100)
    a.take_over()
    claim = a.queue.claim(100, a.writer.last_batch_id + 1)
    assert claim is not None
    good, dead = decode_batch(claim.items, settings.max_payload_bytes)
    client.delete(keys.lease)  # A's lease lapses while it is frozen
    b.take_over()  # bumps the store's writer epoch, recovers A's batch from its slot
    b.drain()
    assert stored_count(settings.sqlite_path) == 100

    with pytest.raises(StoreFenced, match="another worker took the store over"):
        a.writer.commit(claim.batch_id, good, dead)
    with pytest.raises(LeaseLost):
        a.queue.ack(claim.slot, claim.batch_id, heartbeat=b"{}")
    with pytest.raises(LeaseLost):
        a.queue.claim(100, claim.batch_id + 1)
    with pytest.raises(LeaseLost):
        a.queue.beat(b"{}")
    assert stored_count(settings.sqlite_path) == 100 and settled(client, settings)
    assert_each_stored_once_in_order(settings, 100)
    assert orjson.loads(client.get(keys.heartbeat) or b"{}").get("pid") == os.getpid()


@pytest.mark.slow
def test_a_standby_takes_over_the_lapsed_lease_of_a_worker_on_another_host(
    ttl_settings: Settings, client: redis.Redis
) -> None:
    """A holder this host cannot see (another machine, container or PID namespace) is waited for until
    its lease lapses: the standby cannot know it is dead, only that it stopped renewing."""
    settings = ttl_settings
    keys = QueueKeys(settings.queue)
    client.set(keys.lease, "elsewhere:4026531836:4242:0123456789ab", px=int(TTL * 1000))
    placed = time.monotonic()
    standby = start_worker(settings, TASKEVENTS_HEARTBEAT_TTL=str(TTL))
    wait_for(lambda: client.zcard(keys.standbys) == 1)
    push(client, settings, 0, 500)
    wait_for(lambda: holder_pid(client, settings) == standby.pid, timeout=3 * TTL)
    took_over = time.monotonic() - placed
    wait_until_stored(client, settings, 500, timeout=30)
    assert TTL - 0.2 <= took_over <= TTL + 1.0  # not before the lease lapsed; soon after
    assert_each_stored_once_in_order(settings, 500)
    print(
        f"\nthe lapsed lease of a worker elsewhere was taken {took_over:.2f}s after its last renewal "
        f"(TTL {TTL:g}s)"
    )


def test_a_standby_that_takes_over_writes_the_store_at_its_path_not_a_file_moved_away(
    ttl_settings: Settings, client: redis.Redis, tmp_path: Path
) -> None:
    """A standby opens the store only when it becomes the writer, and a writer notices a store file
    replaced under it: after `mv events.db aside.db`, nothing more is written to aside.db."""
    settings = ttl_settings
    first = start_worker(settings, TASKEVENTS_HEARTBEAT_TTL=str(TTL))
    push(client, settings, 0, 500)
    wait_until_stored(client, settings, 500, timeout=30)
    second = start_worker(settings, TASKEVENTS_HEARTBEAT_TTL=str(TTL))
    wait_for(lambda: client.zcard(QueueKeys(settings.queue).standbys) == 1)
    aside = tmp_path / "aside.db"
    move_store(settings.sqlite_path, aside)
    first.send_signal(signal.SIGTERM)
    assert first.wait(15) == 0
    wait_for(lambda: holder_pid(client, settings) == second.pid, timeout=10)
    push(client, settings, 500, 600)
    wait_for(lambda: settled(client, settings) and stored_count(settings.sqlite_path) == 100, timeout=30)
    assert rows(aside, "SELECT count(*) FROM task_events") == [(500,)]  # untouched since it was moved
    # And under a running writer: the store moved again, the next batch goes to a new one at the path.
    move_store(settings.sqlite_path, tmp_path / "aside2.db")
    push(client, settings, 600, 700)
    wait_for(lambda: settled(client, settings) and stored_count(settings.sqlite_path) == 100, timeout=30)
    assert rows(tmp_path / "aside2.db", "SELECT count(*) FROM task_events") == [(100,)]


def move_store(db: Path, to: Path) -> None:
    """`mv` of a store as an operator does it: the file with its -wal and -shm (SQLite finds them by
    name, so moving the file alone would hand its write-ahead log to whatever file takes the name)."""
    for suffix in ("", "-wal", "-shm"):
        source = db.with_name(db.name + suffix)
        if source.exists():
            source.rename(to.with_name(to.name + suffix))


def test_a_renewal_that_comes_back_late_from_an_earlier_term_does_not_end_the_current_one(
    ttl_settings: Settings, client: redis.Redis
) -> None:
    lease = Lease(client, QueueKeys(ttl_settings.queue), 60_000)
    assert lease.try_acquire()
    old = lease.term
    client.delete(QueueKeys(ttl_settings.queue).lease)  # it lapsed while we were frozen
    with pytest.raises(LeaseLost):
        lease.renew()  # the main thread learns it, and takes the lease again
    assert lease.try_acquire()
    current = lease.term
    with pytest.raises(LeaseLost):
        lease.renew(old)  # the earlier term's keeper, late
    assert lease.held and lease.term is current
    assert client.get(QueueKeys(ttl_settings.queue).lease) == current.token.encode()  # type: ignore[union-attr]
    lease.release()
    assert client.get(QueueKeys(ttl_settings.queue).lease) is None


def test_only_a_holder_on_this_machine_whose_pid_is_gone_is_taken_for_dead(
    ttl_settings: Settings, client: redis.Redis
) -> None:
    lease = Lease(client, QueueKeys(ttl_settings.queue), 60_000)
    host, boot, pidns = lease.identity.rsplit(":", 3)[:3]
    dead = subprocess.Popen(["true"])
    dead.wait()
    assert lease._is_dead_here(f"{host}:{boot}:{pidns}:{dead.pid}:abc")
    assert not lease._is_dead_here(f"{host}:{boot}:{pidns}:1:abc")  # pid 1 runs: alive
    assert not lease._is_dead_here(f"{host}:another-boot:{pidns}:{dead.pid}:abc")  # another machine
    assert not lease._is_dead_here(f"{host}:{boot}:1:{dead.pid}:abc")  # another PID namespace
    assert not lease._is_dead_here("elsewhere:4026531836:4242:0123456789ab")  # not a token of ours


def test_an_acknowledgement_retried_after_its_reply_was_lost_does_nothing_twice(
    ttl_settings: Settings, client: redis.Redis
) -> None:
    keys = QueueKeys(ttl_settings.queue)
    client.rpush(ttl_settings.queue, raw_event("t", 1), b"junk")
    with Worker(ttl_settings) as worker:
        worker.take_over()
        claim = worker.queue.claim(10, worker.writer.last_batch_id + 1)
        assert claim is not None
        for _ in range(2):  # the second time, as a retry after a lost reply would
            worker.queue.ack(
                claim.slot, claim.batch_id, dead=[b"dead"], counters={"batches": 1}, heartbeat=b"{}"
            )
    assert client.llen(keys.dead) == 1 and client.hget(keys.stats, "batches") == b"1"


def test_a_store_taken_over_by_a_writer_of_another_queue_makes_the_worker_let_go_and_say_so(
    ttl_settings: Settings, client: redis.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    other = ttl_settings.model_copy(update={"queue": ttl_settings.queue + ":other"})
    worker = Worker(ttl_settings)
    thread = threading.Thread(target=worker.run)
    thread.start()
    try:
        push(client, ttl_settings, 0, 100)
        wait_until_stored(client, ttl_settings, 100, timeout=30)
        first_token = worker.lease.token
        with Worker(other) as intruder:
            intruder.take_over()  # bumps the store's writer epoch under the first worker
        push(client, ttl_settings, 100, 200)
        wait_until_stored(client, ttl_settings, 200, timeout=30)
    finally:
        worker.request_stop()
        thread.join(30)
    assert "is another queue or Redis writing to" in caplog.text
    assert worker.lease.token != first_token  # it let go of its term, and took a new one
    assert_each_stored_once_in_order(ttl_settings, 200)
