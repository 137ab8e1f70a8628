"""The real worker with TASKEVENTS_DB a `postgresql://` URL, against a PostgreSQL server and a
redis-server the suite starts itself: the same contract as on SQLite (each task's seq 1..n, every
event once, bad events set aside), through the worker's SIGKILL and the server's stop, restart and
SIGKILL during ingest."""

import random
import threading
import time
from collections import defaultdict
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis

from taskevents.ingest.worker import Worker
from taskevents.keys import QueueKeys
from taskevents.settings import Settings
from tests.helpers import start_worker, wait_for
from tests.pgserver import ExternalPostgres, PostgresServer, rows, running, stored
from tests.reliability_write_helpers import raw_event, settled
from tests.test_recovery import commit_then_die

pytestmark = [pytest.mark.postgres, pytest.mark.redis_server]


@pytest.fixture
def pg(postgres: PostgresServer | ExternalPostgres) -> PostgresServer | ExternalPostgres:
    return postgres


@pytest.fixture
def own_pg() -> Iterator[PostgresServer]:
    """A server for one test, which it may stop, restart and kill."""
    with running() as server:
        yield server


def _on(
    server: PostgresServer | ExternalPostgres, settings: Settings, request: pytest.FixtureRequest
) -> Settings:
    return settings.model_copy(update={"db": server.database("w_" + request.node.name)})


def _committed_since(url: str, before: int, producer: threading.Thread) -> bool:
    return stored(url) > before or not producer.is_alive()


def _assert_exact(url: str, expected: dict[str, list[int]]) -> None:
    """Each task's seq is 1..n, and its events are the `i`s each producer sent, once, in order."""
    by_task: dict[str, list[tuple[int, dict[str, Any]]]] = defaultdict(list)
    for task_id, seq, payload in rows(
        url, "SELECT task_id, seq, payload FROM task_events ORDER BY task_id, seq"
    ):
        by_task[task_id].append((seq, orjson.loads(payload)))
    assert sorted(by_task) == sorted(expected)
    for task_id, events in by_task.items():
        assert [seq for seq, _ in events] == list(range(1, len(events) + 1)), task_id
        assert [p["i"] for _, p in events] == expected[task_id], task_id
    latest = dict(rows(url, "SELECT task_id, latest_seq FROM tasks"))
    assert latest == {t: len(e) for t, e in by_task.items()}


def test_the_worker_stores_sets_aside_and_dedups_on_postgresql(
    pg: PostgresServer | ExternalPostgres,
    settings: Settings,
    client: redis.Redis,
    request: pytest.FixtureRequest,
) -> None:
    settings = _on(pg, settings, request)
    keys = QueueKeys(settings.queue)
    client.rpush(
        keys.queue,
        raw_event("a", 0, uid="u0"),
        raw_event("b", 0),
        raw_event("a", 1, uid="u1"),
        raw_event("a", 1, uid="u1"),  # a producer's retry: stored once
        b'{"task_id": "a", "event_type": "work_item_progress"',  # not JSON: set aside, with its reason
        raw_event("b", 1),
        raw_event("a", 2, uid="u2"),
    )
    with Worker(settings) as worker:
        worker.drain()
    _assert_exact(settings.db, {"a": [0, 1, 2], "b": [0, 1]})
    (dead,) = client.lrange(keys.dead, 0, -1)
    assert orjson.loads(dead)["code"] == "not_json"
    assert rows(settings.db, "SELECT last_batch_id > 0 FROM ingest_state WHERE part = 0") == [(True,)]
    # A second worker's term continues the seq; the last batch id was kept, so nothing is redone.
    client.rpush(keys.queue, raw_event("a", 3), raw_event("a", 1, uid="u1"))
    with Worker(settings) as worker:
        worker.drain()
    _assert_exact(settings.db, {"a": [0, 1, 2, 3], "b": [0, 1]})


def test_nul_characters_in_a_payload_are_stored_and_kept_out_of_the_summaries(
    pg: PostgresServer | ExternalPostgres,
    settings: Settings,
    client: redis.Redis,
    request: pytest.FixtureRequest,
) -> None:
    """PostgreSQL's text cannot hold NUL: the payload keeps it (escaped in its JSON), the span and task
    summaries drop it, as on SQLite, instead of a commit failing for ever."""
    settings = _on(pg, settings, request)
    failed = {"work_item_id": "w\x001", "error_code": "E\x00X", "i": 1}
    client.rpush(
        QueueKeys(settings.queue).queue,
        raw_event(
            "n", 0, event_type="work_item_start", span_id="n/w", payload={"work_item_id": "w\x001", "i": 0}
        ),
        raw_event("n", 1, event_type="work_item_failed", span_id="n/w", payload=failed),
        raw_event(
            "n", 2, event_type="runner_exit", span_id="n/r", payload={"explanation": "bad\x00 end", "i": 2}
        ),
    )
    with Worker(settings) as worker:
        worker.drain()
    _assert_exact(settings.db, {"n": [0, 1, 2]})
    payloads = [orjson.loads(p) for (p,) in rows(settings.db, "SELECT payload FROM task_events ORDER BY seq")]
    assert payloads[1]["error_code"] == "E\x00X"  # the event as it was sent
    assert rows(settings.db, "SELECT work_item_id, error_code, state FROM spans WHERE span_id = 'n/w'") == [
        ("w1", "EX", "failed")
    ]
    assert rows(settings.db, "SELECT exit_reason FROM tasks") == [("bad end",)]


def test_a_batch_committed_but_not_acknowledged_is_acknowledged_not_stored_again(
    pg: PostgresServer | ExternalPostgres,
    settings: Settings,
    client: redis.Redis,
    request: pytest.FixtureRequest,
) -> None:
    """The window a SIGKILL rarely hits: the commit landed, the worker died before its ack."""
    settings = _on(pg, settings, request)
    batch_id = commit_then_die(settings, client, [raw_event("a", i) for i in range(5)] + [b"junk"])
    keys = QueueKeys(settings.queue)
    assert client.exists(*keys.processing_keys) == 1  # still in flight
    client.rpush(keys.queue, raw_event("a", 5))
    with Worker(settings) as worker:
        worker.drain()
    _assert_exact(settings.db, {"a": [0, 1, 2, 3, 4, 5]})  # the batch once, the next event after it
    assert len(client.lrange(keys.dead, 0, -1)) == 1  # its dead letter written at the late ack, once
    assert rows(settings.db, "SELECT last_batch_id FROM ingest_state") == [(batch_id + 1,)]


def _produce(
    client: redis.Redis, settings: Settings, total: int, tasks: int, seconds: float
) -> dict[str, list[int]]:
    """RPUSH `total` events without event_uid (only the batch ids keep them from being stored twice),
    paced over `seconds`; returns what each task was sent, in order."""
    sent: dict[str, list[int]] = defaultdict(list)
    queue = QueueKeys(settings.queue).queue
    started = time.monotonic()
    chunk = 200
    for first in range(0, total, chunk):
        elements = []
        for i in range(first, min(total, first + chunk)):
            task = f"task{i % tasks}"
            elements.append(raw_event(task, i))
            sent[task].append(i)
        client.rpush(queue, *elements)
        time.sleep(max(0.0, started + first / total * seconds - time.monotonic()))
    return sent


class _Readers:
    """Threads that follow some tasks through the API's own reader while the faults happen, as a UI
    does: each page must continue its cursor (seq n+1 right after n, never a gap), whatever fails."""

    def __init__(self, url: str, tasks: list[str]) -> None:
        from taskevents.api.pgstore import PgReadStore

        self.store = PgReadStore(url, "readers", size=len(tasks), timeout=5)
        self.problems: list[str] = []
        self.pages = 0
        self._done = threading.Event()
        self._threads = [threading.Thread(target=self._follow, args=(t,), daemon=True) for t in tasks]
        for thread in self._threads:
            thread.start()

    def _follow(self, task: str) -> None:
        from taskevents.api.errors import TaskNotFound
        from taskevents.api.livereads import events_after
        from taskevents.api.store import StoreUnavailable

        cursor = 0
        while not self._done.is_set():
            try:
                page = self.store.run(events_after, task, cursor, 37)
            except (StoreUnavailable, TaskNotFound):  # the server away, or the task not stored yet
                time.sleep(0.05)
                continue
            seqs = [row[0] for row in page]
            if seqs != list(range(cursor + 1, cursor + 1 + len(seqs))):
                self.problems.append(f"{task}: after {cursor} got {seqs[:5]}")
            cursor = seqs[-1] if seqs else cursor
            self.pages += bool(seqs)
            time.sleep(0.005)

    def stop(self) -> None:
        self._done.set()
        for thread in self._threads:
            thread.join(10)
        self.store.close()


def test_a_worker_sigkilled_again_and_again_stores_every_event_once_on_postgresql(
    pg: PostgresServer,
    settings: Settings,
    client: redis.Redis,
    request: pytest.FixtureRequest,
    tmp_path: Path,
) -> None:
    settings = _on(pg, settings, request).model_copy(update={"batch_size": 500})
    total = 100_000  # sent faster than a worker restarted again and again drains: kills land mid-batch
    result: dict[str, dict[str, list[int]]] = {}
    producer = threading.Thread(target=lambda: result.update(sent=_produce(client, settings, total, 30, 3.0)))
    producer.start()
    readers = _Readers(settings.db, ["task0", "task7", "task13"])
    log = tmp_path / "worker.log"
    rng = random.Random(7)
    kills = 0
    while producer.is_alive() or kills < 6:
        worker = start_worker(settings, log=log)
        # Once it has committed, mid-batch, mid-commit or between commit and ack: wherever it lands.
        wait_for(
            partial(_committed_since, settings.db, stored(settings.db), producer), timeout=30, interval=0.01
        )
        time.sleep(rng.uniform(0.0, 0.3))
        worker.kill()
        worker.wait(10)
        kills += 1
    producer.join()
    worker = start_worker(settings, log=log)
    wait_for(lambda: stored(settings.db) >= total and settled(client, settings), timeout=120, interval=0.2)
    time.sleep(0.5)  # nothing more arrives later
    assert stored(settings.db) == total, log.read_text()[-3000:]
    _assert_exact(settings.db, result["sent"])
    assert worker.poll() is None
    readers.stop()
    assert readers.pages > 0 and readers.problems == []  # no reader saw seq n+1 without n


def test_postgresql_stopped_restarted_and_killed_during_ingest_loses_nothing(
    own_pg: PostgresServer,
    settings: Settings,
    client: redis.Redis,
    request: pytest.FixtureRequest,
    tmp_path: Path,
) -> None:
    settings = _on(own_pg, settings, request).model_copy(update={"batch_size": 500})
    total = 30_000
    result: dict[str, dict[str, list[int]]] = {}
    producer = threading.Thread(target=lambda: result.update(sent=_produce(client, settings, total, 20, 8.0)))
    log = tmp_path / "worker.log"
    worker = start_worker(settings, log=log)
    wait_for(lambda: stored(settings.db) >= 0, timeout=30)  # the schema made
    producer.start()
    readers = _Readers(settings.db, ["task0", "task7", "task13"])
    time.sleep(1.5)
    own_pg.stop()  # a fast shutdown: the worker's connection ends under it
    time.sleep(1.0)
    own_pg.start()
    wait_for(lambda: stored(settings.db) > 0, timeout=30)
    time.sleep(1.0)
    own_pg.kill()  # a crash: what was committed comes back from the server's WAL, nothing else
    time.sleep(1.0)
    own_pg.start()
    producer.join()
    wait_for(lambda: stored(settings.db) >= total and settled(client, settings), timeout=120, interval=0.2)
    time.sleep(0.5)
    assert stored(settings.db) == total, log.read_text()[-3000:]
    _assert_exact(settings.db, result["sent"])
    assert worker.poll() is None, log.read_text()[-3000:]
    assert "takes writes again" in log.read_text() or "cannot write the store" in log.read_text()
    readers.stop()
    assert readers.pages > 0 and readers.problems == []  # through the stop, restart and crash too


def test_a_postgresql_url_without_a_database_is_refused() -> None:
    with pytest.raises(ValueError, match="database name"):
        Settings(db="postgresql://taskevents@127.0.0.1:5")
    assert Settings(db="postgresql://u@h/events").postgres
    assert not Settings(db="events.db").postgres
