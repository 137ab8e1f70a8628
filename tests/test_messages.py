"""The messages between processes (taskevents.messages): one definition, written and read by both sides.

Each round-trips through its encoding, what the real worker writes is read back by the readers' own
decoding, and anything else is refused with a ValueError (a reader decides what that means).
"""

import time

import orjson
import pytest
import redis

from taskevents.ingest.worker import Worker
from taskevents.keys import QueueKeys
from taskevents.messages import CommitNotice, Heartbeat, WorkerStats
from taskevents.settings import Settings


def test_a_commit_notice_round_trips() -> None:
    notice = CommitNotice.of(7, {"t-1": (1, 40), "t-😀": (3, 3)})
    assert CommitNotice.decode(notice.encode()) == notice
    assert orjson.loads(notice.encode()) == {"batch": 7, "tasks": {"t-1": [1, 40], "t-😀": [3, 3]}}


def test_a_heartbeat_round_trips_and_ignores_fields_it_does_not_know() -> None:
    beat = Heartbeat(pid=1, host="h", at=1.5, ingested=3, batches=1, store_error="locked")
    assert Heartbeat.decode(beat.encode()) == beat
    newer = orjson.loads(beat.encode()) | {"from_a_newer_worker": True}
    assert Heartbeat.decode(orjson.dumps(newer)) == beat


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"not json",
        b"[]",
        b'{"batch": 1}',
        b'{"batch": 1, "tasks": {"t": [1]}}',
        b'{"batch": "x", "tasks": {}}',
    ],
)
def test_a_commit_notice_that_is_not_one_is_refused(data: bytes) -> None:
    with pytest.raises(ValueError, match="not a CommitNotice"):
        CommitNotice.decode(data)


@pytest.mark.parametrize("data", [b"{}", b'{"pid": "one", "host": "h", "at": 1}', b"null"])
def test_a_heartbeat_that_is_not_one_is_refused(data: bytes) -> None:
    with pytest.raises(ValueError, match="not a Heartbeat"):
        Heartbeat.decode(data)


def test_stats_come_from_the_hash_and_skip_what_is_not_a_counter() -> None:
    stats = WorkerStats.from_hash(
        {b"ingested": b"10", b"batches": b"2", b"stranger": b"5", b"duplicates": b"x"}
    )
    assert stats == WorkerStats(ingested=10, batches=2)
    assert (stats + WorkerStats(ingested=1, dead_lettered=4)).increments() == {
        "ingested": 11,
        "dead_lettered": 4,
        "batches": 2,
    }


@pytest.mark.redis_server
def test_what_the_real_worker_writes_the_readers_decode(settings: Settings, client: redis.Redis) -> None:
    keys = QueueKeys(settings.queue)
    pubsub = client.pubsub(ignore_subscribe_messages=True)
    pubsub.subscribe(keys.commits)
    pubsub.get_message(timeout=1)
    event = {"task_id": "t", "event_type": "runner_spawn", "actor": "runner", "span_id": "r"}
    client.rpush(settings.queue, orjson.dumps(event), orjson.dumps(event), b"junk")
    with Worker(settings) as worker:
        worker.drain()
    message = None
    deadline = time.monotonic() + 5
    while message is None and time.monotonic() < deadline:
        message = pubsub.get_message(timeout=0.5)
    pubsub.close()
    assert message is not None
    assert CommitNotice.decode(message["data"]).tasks == {"t": (1, 2)}
    beat = Heartbeat.decode(client.get(keys.heartbeat) or b"")
    assert (beat.ingested, beat.dead_lettered, beat.batches, beat.store_error) == (2, 1, 1, None)
    assert WorkerStats.from_hash(client.hgetall(keys.stats)) == WorkerStats(
        ingested=2, dead_lettered=1, batches=1
    )
