"""Recovery decides from what was committed, not from today's settings.

A batch committed but not acknowledged (the worker died in between) is acknowledged by the next
worker from the store's record of it: the same dead letters (even if TASKEVENTS_MAX_PAYLOAD_BYTES
changed across the restart, an event ends stored or dead-lettered, never both, never neither), the
same counters, and the commit notification the live stream waits for.
"""

import threading
import time

import orjson
import pytest
import redis

from taskevents.ingest.batch import decode_batch
from taskevents.ingest.worker import Worker
from taskevents.keys import QueueKeys
from taskevents.messages import WorkerStats
from taskevents.settings import Settings
from tests.helpers import rows, wait_for

pytestmark = pytest.mark.redis_server

SMALL, LARGE = 16 * 1024, 64 * 1024


def element(i: int, payload_bytes: int = 10) -> bytes:
    return orjson.dumps(
        {
            "task_id": "t",
            "event_type": "work_item_progress",
            "actor": "w",
            "span_id": "s",
            "payload": {"i": i, "pad": "x" * payload_bytes},
        }
    )


def commit_then_die(settings: Settings, client: redis.Redis, items: list[bytes]) -> int:
    """A worker that commits one batch and dies before acknowledging it; returns the batch id."""
    client.rpush(settings.queue, *items)
    worker = Worker(settings)
    worker.take_over()
    claim = worker.queue.claim(100, worker.writer.last_batch_id + 1)
    assert claim is not None
    good, dead = decode_batch(claim.items, settings.max_payload_bytes)
    worker.writer.commit(claim.batch_id, good, dead, keep=4 * settings.max_payload_bytes + 16 * 1024)
    client.delete(QueueKeys(settings.queue).lease)  # it died: its lease lapses
    return claim.batch_id


class Notifications:
    """Commit notifications published on `<queue>:commits`, collected on a thread."""

    def __init__(self, client: redis.Redis, settings: Settings) -> None:
        self.messages: list[dict] = []
        self._pubsub = client.pubsub(ignore_subscribe_messages=True)
        self._pubsub.subscribe(QueueKeys(settings.queue).commits)
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._stop = threading.Event()
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            message = self._pubsub.get_message(timeout=0.1)
            if message is not None:
                self.messages.append(orjson.loads(message["data"]))

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self._pubsub.close()


@pytest.mark.parametrize(
    ("at_commit", "at_recovery"),
    [(LARGE, SMALL), (SMALL, LARGE)],
    ids=["limit lowered across the restart", "limit raised across the restart"],
)
def test_a_committed_batch_is_acknowledged_as_it_was_committed(
    settings: Settings, client: redis.Redis, at_commit: int, at_recovery: int
) -> None:
    keys = QueueKeys(settings.queue)
    items = [element(0), element(1, payload_bytes=30 * 1024), element(2), b"not json"]
    batch_id = commit_then_die(settings.model_copy(update={"max_payload_bytes": at_commit}), client, items)
    stored = [
        i for (i,) in rows(settings.sqlite_path, "SELECT json_extract(payload, '$.i') FROM task_events")
    ]
    dead_at_commit = 1 if at_commit == LARGE else 2  # junk, and the 30 KiB payload over the small limit

    notes = Notifications(client, settings)
    time.sleep(0.2)  # subscribed
    with Worker(settings.model_copy(update={"max_payload_bytes": at_recovery})) as successor:
        successor.take_over()  # recovers: acknowledges the batch from the store's record
        wait_for(lambda: notes.messages, timeout=5)
    notes.close()

    dead = [orjson.loads(x) for x in client.lrange(keys.dead, 0, -1)]
    assert len(dead) == dead_at_commit
    dead_is = {orjson.loads(d["raw"])["payload"]["i"] for d in dead if d["code"] != "not_json"}
    assert not dead_is & set(stored)  # never both
    assert dead_is | set(stored) == {0, 1, 2}  # never neither
    assert all(d["batch_id"] == batch_id for d in dead)
    assert client.exists(*keys.processing_keys) == 0
    stats = WorkerStats.from_hash(client.hgetall(keys.stats))
    assert stats == WorkerStats(ingested=len(stored), dead_lettered=dead_at_commit, batches=1)
    assert notes.messages == [{"batch": batch_id, "tasks": {"t": [1, len(stored)]}}]
