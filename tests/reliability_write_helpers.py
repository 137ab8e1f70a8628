"""Helpers of the write-side reliability tests (tests/test_reliability_*.py of the write path)."""

import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import redis

from taskevents.keys import QueueKeys
from taskevents.settings import Settings
from tests.helpers import started_workers, store_count, store_rows, worker_env


def raw_event(task: str, i: int, *, uid: str | None = None, **extra: object) -> bytes:
    """One queue element as a non-Python producer would RPUSH it."""
    body: dict[str, object] = {
        "task_id": task,
        "event_type": "work_item_progress",
        "actor": "worker",
        "span_id": f"{task}/w",
        "payload": {"i": i},
        **extra,
    }
    if uid is not None:
        body["event_uid"] = uid
    return orjson.dumps(body)


def settled(client: redis.Redis, settings: Settings) -> bool:
    """Nothing left for the worker: the queue, the processing slots and the suspects are empty."""
    keys = QueueKeys(settings.queue)
    return client.llen(keys.queue) == 0 and client.exists(*keys.processing_keys, keys.suspects) == 0


def wait_until_stored(
    client: redis.Redis,
    settings: Settings,
    count: int,
    timeout: float,
    alive: Callable[[], bool] | None = None,
) -> float:
    """Wait until `count` events are stored and the queue has settled; returns the seconds it took."""
    started = time.monotonic()
    while not (store_count(settings) >= count and settled(client, settings)):
        if alive is not None and not alive():
            raise AssertionError("the worker died")
        if time.monotonic() - started > timeout:
            raise AssertionError(
                f"after {timeout}s: {store_count(settings)} of {count} stored, "
                f"queue {client.llen(settings.queue)}"
            )
        time.sleep(0.02)
    return time.monotonic() - started


def last_batch(settings: Settings) -> int:
    try:
        return int(store_rows(settings, "SELECT max(last_batch_id) FROM ingest_state")[0][0])
    except Exception:  # the store or its schema is not there yet
        return 0


def start_crashing_worker(settings: Settings, log: Path, **extra: str) -> subprocess.Popen[bytes]:
    """The real worker with the test-only fault of tests/crashing_worker.py; its log goes to `log`."""
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "tests.crashing_worker"], env=worker_env(settings, **extra), stderr=out
        )
    started_workers.append(proc)  # killed after the test if still running (tests/conftest.py)
    return proc


def heartbeat(client: redis.Redis, settings: Settings) -> dict[str, Any] | None:
    """The worker's heartbeat, as JSON; None if there is none."""
    raw = client.get(QueueKeys(settings.queue).heartbeat)
    return orjson.loads(raw) if isinstance(raw, bytes) else None


def beat(client: redis.Redis, settings: Settings) -> dict[str, Any]:
    """The worker's heartbeat, which must be there."""
    found = heartbeat(client, settings)
    assert found is not None, "no worker heartbeat"
    return found
