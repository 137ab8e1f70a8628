"""The whole write path under fire: many producers, duplicate deliveries, a worker SIGKILLed mid-drain."""

import random
import threading
import time
from collections import defaultdict

import orjson
import pytest
import redis

from taskevents import Emitter
from taskevents.keys import QueueKeys
from taskevents.settings import Settings
from tests.helpers import rows, start_worker, wait_for

pytestmark = [pytest.mark.redis_server, pytest.mark.slow]

THREADS, PER_THREAD, TASKS, KILLS = 20, 500, 50, 5


def test_every_event_is_stored_once_in_order_through_five_sigkills(
    settings: Settings, client: redis.Redis
) -> None:
    settings = settings.model_copy(update={"batch_size": 50})  # small batches: more of them in flight
    keys = QueueKeys(settings.queue)
    rng = random.Random(20261125)
    resent: list[bytes] = []

    def produce(n: int) -> None:
        emitter = Emitter.from_settings(settings)
        for i in range(PER_THREAD):
            # Even producers name their events; odd ones let the emitter make ULIDs.
            uid = f"p{n}-{i}" if n % 2 == 0 else None
            payload = {"producer": n, "i": i}
            task = f"task{(n * 7 + i) % TASKS}"
            emitter.emit(
                task, "work_item_progress", span_id=f"w{n}", actor="worker", payload=payload, event_uid=uid
            )
            if uid is not None and i % 10 == 0:  # a re-delivery of the same event, by a raw producer
                resent.append(
                    orjson.dumps(
                        {
                            "task_id": task,
                            "event_type": "work_item_progress",
                            "actor": "worker",
                            "span_id": f"w{n}",
                            "payload": payload,
                            "event_uid": uid,
                        }
                    )
                )
            time.sleep(0.004)
        assert emitter.close(30)

    producers = [threading.Thread(target=produce, args=(n,)) for n in range(THREADS)]
    for t in producers:
        t.start()
    worker = start_worker(settings)
    in_flight_at_kill = []
    for _ in range(KILLS):
        time.sleep(rng.uniform(0.3, 0.8))
        # Then at the next moment a batch is in its slot (an idle worker's wait holds none).
        deadline = time.monotonic() + 3
        while not any(client.llen(k) for k in keys.processing_keys) and time.monotonic() < deadline:
            time.sleep(0.001)
        worker.kill()
        worker.wait(10)
        in_flight_at_kill.append(sum(client.llen(k) for k in keys.processing_keys))
        worker = start_worker(settings)
    for t in producers:
        t.join()
    client.rpush(settings.queue, *resent)
    try:
        wait_for(
            lambda: (
                client.llen(settings.queue) == 0
                and client.exists(*keys.processing_keys) == 0
                and rows(settings.sqlite_path, "SELECT count(*) FROM task_events")[0][0]
                >= THREADS * PER_THREAD
            ),
            timeout=60,
        )
    finally:
        worker.terminate()
        assert worker.wait(15) == 0

    stored = rows(
        settings.sqlite_path, "SELECT task_id, seq, event_uid, payload FROM task_events ORDER BY task_id, seq"
    )
    assert any(in_flight_at_kill), "no kill landed while a batch was in flight"
    assert len(stored) == THREADS * PER_THREAD, f"in flight at each kill: {in_flight_at_kill}"
    assert len({uid for _, _, uid, _ in stored}) == len(stored)
    by_task: dict[str, list[int]] = defaultdict(list)
    by_producer_task: dict[tuple[int, str], list[int]] = defaultdict(list)
    for task, seq, _, payload in stored:
        by_task[task].append(seq)
        p = orjson.loads(payload)
        by_producer_task[(p["producer"], task)].append(p["i"])
    assert len(by_task) == TASKS
    for task, seqs in by_task.items():
        assert seqs == list(range(1, len(seqs) + 1)), task
    seen = {(p, i) for (p, _), items in by_producer_task.items() for i in items}
    assert seen == {(n, i) for n in range(THREADS) for i in range(PER_THREAD)}
    for key, items in by_producer_task.items():  # one producer's events of a task: in emit order
        assert items == sorted(items), key
    assert rows(settings.sqlite_path, "SELECT sum(event_count), count(*) FROM tasks") == [
        (THREADS * PER_THREAD, TASKS)
    ]
