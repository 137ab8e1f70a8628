"""A poison pill: an event that crashes the worker itself every time it is processed.

The worker counts each claim of a batch before processing it; a batch that has crashed the worker
`max_attempts` times has its events retried one at a time, and an event that crashes it
`max_attempts` times on its own is dead-lettered with code `poison`. The rest is stored, once, in
order. The crash is real (tests/crashing_worker.py: the real worker, whose commit path SIGKILLs
itself or raises for a marked event), and this test plays the supervisor that restarts it.
"""

import time
from pathlib import Path

import orjson
import pytest
import redis

from taskevents.keys import SLOTS, QueueKeys
from taskevents.settings import Settings
from tests.helpers import rows, seqs_by_task, stored_count
from tests.reliability_write_helpers import raw_event, settled, start_crashing_worker

pytestmark = [pytest.mark.redis_server, pytest.mark.slow]

TOTAL, BATCH = 1000, 100
POISON = (250, 262)  # both in the third batch


@pytest.mark.parametrize("how", ["kill", "raise"])
def test_a_poison_pill_is_dead_lettered_after_max_attempts_and_the_rest_is_stored(
    settings: Settings, client: redis.Redis, tmp_path: Path, how: str
) -> None:
    settings = settings.model_copy(update={"batch_size": BATCH})
    keys = QueueKeys(settings.queue)
    elements = [
        # Half without an event_uid: only the batch ids keep those from being stored twice.
        raw_event(
            f"t{i % 7}",
            i,
            uid=f"u{i}" if i % 2 else None,
            payload={"i": i, "__crash__": how} if i in POISON else {"i": i},
        )
        for i in range(TOTAL)
    ]
    client.rpush(settings.queue, *elements)
    log = tmp_path / "worker.log"
    crashes, attempts_after_first_crash = 0, None
    started = time.monotonic()
    while True:  # the supervisor: restart the worker whenever it dies, until the queue is done
        worker = start_crashing_worker(settings, log)
        while worker.poll() is None and not (
            settled(client, settings) and stored_count(settings.sqlite_path) == TOTAL - len(POISON)
        ):
            time.sleep(0.02)
        if worker.poll() is None:
            worker.terminate()
            assert worker.wait(15) == 0
            break
        crashes += 1
        if crashes == 1:  # counted when claimed, before the commit that died
            attempts_after_first_crash = client.get(keys.processing_attempts(3 % SLOTS))
        assert crashes <= 3 * settings.max_attempts, log.read_text()[-3000:]
    took = time.monotonic() - started

    # max_attempts crashes with the batch, then max_attempts with each poison pill alone.
    assert crashes == 3 * settings.max_attempts
    assert attempts_after_first_crash == b"1"
    dead = [orjson.loads(x) for x in client.lrange(keys.dead, 0, -1)]
    assert [d["code"] for d in dead] == ["poison", "poison"]
    assert [d["raw"].encode() for d in dead] == [elements[i] for i in POISON]
    assert all(f"crashed the worker {settings.max_attempts} times" in d["reason"] for d in dead)
    stored = [
        i for (i,) in rows(settings.sqlite_path, "SELECT json_extract(payload, '$.i') FROM task_events")
    ]
    assert sorted(stored) == [i for i in range(TOTAL) if i not in POISON]  # the rest, each once
    assert all(seqs == list(range(1, len(seqs) + 1)) for seqs in seqs_by_task(settings.sqlite_path).values())
    for task in range(7):  # and in queue order within each task
        mine = rows(
            settings.sqlite_path,
            "SELECT json_extract(payload, '$.i') FROM task_events WHERE task_id = ? ORDER BY seq",
            f"t{task}",
        )
        assert [i for (i,) in mine] == sorted(i for (i,) in mine)
    assert client.exists(keys.suspects, *keys.processing_keys) == 0
    text = log.read_text()
    assert text.count("dead-lettered as poison") == 2
    assert "retrying them one at a time" in text
    print(
        f"\npoison ({how}): {TOTAL} sent, {len(stored)} stored, 2 dead letters, {crashes} crashes {took:.1f}s"
    )
