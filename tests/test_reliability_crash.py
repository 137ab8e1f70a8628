"""The worker SIGKILLed at random points, 20 times, during a 200,000-event ingest.

Producers keep emitting throughout: four emitters (half of their events with the producer's own
event_uid, the rest with the emitter's ULIDs, and some delivered twice) and a raw producer whose
RPUSHed events carry no event_uid at all, so only the batch ids keep them from being stored twice.
Every event must be stored exactly once, each task's seq gap-free, each producer's order kept.
"""

import random
import statistics
import threading
import time
from collections import defaultdict

import orjson
import pytest
import redis

from taskevents import Emitter
from taskevents.ingest.worker import Worker
from taskevents.keys import QueueKeys
from taskevents.settings import Settings
from tests.helpers import rows, start_worker, store_rows
from tests.pgserver import STORES
from tests.reliability_write_helpers import last_batch, raw_event, wait_until_stored

pytestmark = pytest.mark.redis_server

KILLS = 20
EMITTERS, PER_EMITTER = 4, 40_000
RAW = 40_000  # events RPUSHed without an event_uid
TOTAL = EMITTERS * PER_EMITTER + RAW  # 200,000
TASKS = 40
SECONDS = 8.0  # how long the producers take: faster than a worker restarted 20 times drains, so it
# always has a backlog and the kills land mid-batch


def paced(i: int, per_second: float, started: float) -> None:
    time.sleep(max(0.0, started + i / per_second - time.monotonic()))


def emit_all(n: int, settings: Settings, resent: list[bytes]) -> None:
    emitter = Emitter.from_settings(settings)
    started = time.monotonic()
    for i in range(PER_EMITTER):
        uid = f"e{n}-{i}" if i % 2 == 0 else None
        task = f"task{(n * 7 + i) % TASKS}"
        payload = {"p": f"e{n}", "i": i}
        emitter.emit(
            task, "work_item_progress", span_id=f"e{n}", actor="worker", payload=payload, event_uid=uid
        )
        if uid is not None and i % 50 == 0:  # the same event again, as a producer's retry would send it
            resent.append(
                orjson.dumps(
                    {
                        "task_id": task,
                        "event_type": "work_item_progress",
                        "actor": "worker",
                        "span_id": f"e{n}",
                    }
                    | {"payload": payload, "event_uid": uid}
                )
            )
        if i % 100 == 0:
            paced(i, PER_EMITTER / SECONDS, started)
    assert emitter.close(60)


def push_raw(settings: Settings) -> None:
    client = redis.Redis.from_url(settings.redis_url)
    started = time.monotonic()
    for start in range(0, RAW, 200):
        chunk = [
            orjson.dumps(
                {"task_id": f"task{i % TASKS}", "event_type": "work_item_progress", "actor": "raw"}
                | {"span_id": "raw", "payload": {"p": "raw", "i": i}}
            )
            for i in range(start, start + 200)
        ]
        client.rpush(settings.queue, *chunk)
        paced(start, RAW / SECONDS, started)
    client.close()


@pytest.mark.slow
@pytest.mark.parametrize("settings", STORES, indirect=True)
def test_twenty_sigkills_during_a_200k_ingest_store_every_event_once_in_order(
    settings: Settings, client: redis.Redis
) -> None:
    settings = settings.model_copy(update={"batch_size": 1000})
    keys = QueueKeys(settings.queue)
    rng = random.Random(5)
    resent: list[bytes] = []
    producers = [threading.Thread(target=emit_all, args=(n, settings, resent)) for n in range(EMITTERS)]
    producers.append(threading.Thread(target=push_raw, args=(settings,)))
    for t in producers:
        t.start()
    in_flight_at_kill, recoveries = [], []
    worker = start_worker(settings)
    try:
        for _ in range(KILLS):
            restarted, before = time.monotonic(), last_batch(settings)
            while last_batch(settings) == before and time.monotonic() - restarted < 20:
                time.sleep(0.005)  # until this worker has committed a batch
            recoveries.append(time.monotonic() - restarted)
            time.sleep(rng.uniform(0, 0.2))  # then a random point in its work
            worker.kill()
            worker.wait(10)
            in_flight_at_kill.append(sum(client.llen(k) for k in keys.processing_keys))
            worker = start_worker(settings)
        for t in producers:
            t.join()
        client.rpush(settings.queue, *resent)
        wait_until_stored(client, settings, TOTAL, timeout=120, alive=lambda: worker.poll() is None)
    finally:
        worker.terminate()
        assert worker.wait(15) == 0

    assert len(in_flight_at_kill) == KILLS
    assert sum(1 for n in in_flight_at_kill if n) >= KILLS // 2, in_flight_at_kill  # mid-batch kills
    assert store_rows(settings, "SELECT count(*) FROM task_events") == [(TOTAL,)]
    assert client.llen(keys.dead) == 0
    stored = [
        (task, seq, body["p"], body["i"])
        for task, seq, payload in store_rows(settings, "SELECT task_id, seq, payload FROM task_events")
        for body in [orjson.loads(payload)]
    ]
    stored.sort()
    seen = {(p, i) for _, _, p, i in stored}
    expected = {(f"e{n}", i) for n in range(EMITTERS) for i in range(PER_EMITTER)} | {
        ("raw", i) for i in range(RAW)
    }
    assert seen == expected and len(stored) == len(expected)  # each event once, none lost
    by_task: dict[str, list[int]] = defaultdict(list)
    by_producer_task: dict[tuple[str, str], list[int]] = defaultdict(list)
    for task, seq, p, i in stored:
        by_task[task].append(seq)
        by_producer_task[(p, task)].append(i)
    assert len(by_task) == TASKS
    for task, seqs in by_task.items():
        assert seqs == list(range(1, len(seqs) + 1)), task  # gap-free
    for key, items in by_producer_task.items():
        assert items == sorted(items), key  # one producer's events of a task: in the order sent
    assert [
        tuple(int(n) for n in row)
        for row in store_rows(settings, "SELECT sum(event_count), sum(latest_seq) FROM tasks")
    ] == [(TOTAL, TOTAL)]
    duplicates = int(client.hget(keys.stats, "duplicates") or 0)
    assert duplicates >= len(resent)
    print(
        f"\n{KILLS} SIGKILLs over {TOTAL} events: {len(stored)} stored, 0 lost, 0 twice "
        f"({duplicates} re-deliveries dropped); {sum(1 for n in in_flight_at_kill if n)} kills with a batch "
        f"in flight; restart to first commit median {statistics.median(recoveries):.2f}s, "
        f"max {max(recoveries):.2f}s"
    )


def test_leftovers_are_not_topped_up_past_the_next_batch(settings: Settings, client: redis.Redis) -> None:
    """A crash with two batches in flight, the first one short: on restart the first is processed as
    it was, not topped up from the queue, whose head comes after the second."""
    settings = settings.model_copy(update={"batch_size": 1000})

    def push(start: int, end: int) -> None:
        client.rpush(settings.queue, *[raw_event("t", i) for i in range(start, end)])

    push(0, 300)
    crashed = Worker(settings)
    crashed.take_over()
    first = crashed.queue.claim(1000, 1)
    assert first is not None and len(first.items) == 300  # batch 1: all the queue had
    push(300, 800)
    second = crashed.queue.claim(1000, 2)  # batch 2, claimed while 1 commits; then a crash
    assert second is not None and len(second.items) == 500
    push(800, 1000)
    client.delete(QueueKeys(settings.queue).lease)  # the dead worker's lease lapses
    with Worker(settings) as worker:
        worker.drain()
    order = rows(settings.sqlite_path, "SELECT json_extract(payload, '$.i') FROM task_events ORDER BY seq")
    assert [i for (i,) in order] == list(range(1000))
