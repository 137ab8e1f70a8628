"""The PostgreSQL store's schema and writer (shared/pgschema.py, ingest/pgwriter.py) against a real
server the suite starts itself (tests/pgserver.py): the writer's contract, as the SQLite writer's."""

import threading
from collections.abc import Iterator
from typing import Any

import orjson
import psycopg
import pytest

from taskevents.event import WireEvent
from taskevents.ingest.pgwriter import PgStoreWriter
from taskevents.ingest.writer import Decoded, StoreFenced
from taskevents.pgdb import migrate, open_pg_writer
from taskevents.pgschema import SCHEMA_VERSION
from taskevents.schema import SchemaError
from tests.pgserver import PostgresServer, running

pytestmark = pytest.mark.postgres


@pytest.fixture(scope="module")
def pg() -> Iterator[PostgresServer]:
    with running() as server:
        yield server


@pytest.fixture
def url(pg: PostgresServer, request: pytest.FixtureRequest) -> str:
    """A database of its own for each test."""
    return pg.database("t_" + request.node.name)


def _event(task_id: str, event_type: str = "work_item_progress", **fields: Any) -> Decoded:
    fields.setdefault("span_id", f"{task_id}/runner")
    fields.setdefault("actor", "runner")
    payload = fields.pop("payload", {})
    fields.update(task_id=task_id, event_type=event_type, payload=payload)
    event = WireEvent.model_validate(fields)
    return Decoded(event, orjson.dumps(payload))


def _writer(url: str) -> PgStoreWriter:
    writer = PgStoreWriter(open_pg_writer(url))
    writer.take_over()
    return writer


def _rows(url: str, sql: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(url) as conn:
        return conn.execute(sql).fetchall()


def test_the_schema_is_made_once_and_a_newer_one_is_refused(url: str) -> None:
    conn = open_pg_writer(url)
    try:
        assert migrate(conn) == SCHEMA_VERSION  # again: nothing to do
        partitions = _rows(url, "SELECT count(*) FROM pg_inherits WHERE inhparent = 'task_events'::regclass")
        assert partitions[0][0] == 8
        conn.execute("UPDATE schema_version SET version = %s", (SCHEMA_VERSION + 1,))
        with pytest.raises(SchemaError, match="newer than this code"):
            migrate(conn)
    finally:
        conn.close()


def test_two_workers_migrating_a_new_database_at_once_make_it_once(url: str) -> None:
    errors: list[BaseException] = []

    def open_one() -> None:
        try:
            open_pg_writer(url).close()
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=open_one) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
    assert _rows(url, "SELECT version FROM schema_version") == [(SCHEMA_VERSION,)]


def test_seq_is_per_task_in_queue_order_across_batches(url: str) -> None:
    writer = _writer(url)
    try:
        first = writer.commit(1, [_event("a"), _event("b"), _event("a")])
        assert first.tasks == {"a": (1, 2), "b": (1, 1)} and first.stored == 3
        second = writer.commit(2, [_event("b"), _event("a")])
        assert second.tasks == {"b": (2, 2), "a": (3, 3)}
    finally:
        writer.close()
    again = _writer(url)  # a restarted worker reads the latest seqs from the store
    try:
        assert again.last_batch_id == 2 and again.last_batch is not None and again.last_batch.stored == 2
        assert again.commit(3, [_event("a")]).tasks == {"a": (4, 4)}
    finally:
        again.close()
    rows = _rows(url, "SELECT task_id, seq FROM task_events ORDER BY task_id, seq")
    assert rows == [("a", 1), ("a", 2), ("a", 3), ("a", 4), ("b", 1), ("b", 2)]
    assert _rows(url, "SELECT task_id, latest_seq, event_count FROM tasks ORDER BY 1") == [
        ("a", 4, 4),
        ("b", 2, 2),
    ]


def test_an_event_uid_is_stored_once_per_task(url: str) -> None:
    writer = _writer(url)
    try:
        result = writer.commit(1, [_event("a", event_uid="u1"), _event("a", event_uid="u1")])
        assert (result.stored, result.duplicates) == (1, 1)
        result = writer.commit(2, [_event("a", event_uid="u1"), _event("b", event_uid="u1")])
        assert (result.stored, result.duplicates) == (1, 1)  # b's u1 is b's own event
        assert result.tasks == {"b": (1, 1)}
    finally:
        writer.close()
    with psycopg.connect(url) as conn, pytest.raises(psycopg.errors.UniqueViolation):
        conn.execute(
            "INSERT INTO task_events (task_id, seq, event_type, actor, span_id, created_at, event_uid)"
            " VALUES ('a', 9, 'x', 'r', 's', 'now', 'u1')"
        )


def test_summaries_track_phase_status_and_spans(url: str) -> None:
    writer = _writer(url)
    try:
        writer.commit(
            1,
            [
                _event("t", "runner_spawn"),
                _event("t", "phase_enter", span_id="t/plan", parent_span_id="t/runner", phase="planning"),
                _event(
                    "t",
                    "work_item_start",
                    span_id="t/w1",
                    parent_span_id="t/plan",
                    phase="planning",
                    payload={"work_item_id": "w1", "work_type": "file"},
                ),  # fmt: skip
            ],
        )
        writer.commit(
            2,
            [
                _event(
                    "t", "work_item_failed", span_id="t/w1", phase="planning", payload={"error_code": "E1"}
                ),  # fmt: skip
                _event("t", "runner_exit", payload={"exit_code": 1, "explanation": "gave up"}),
            ],
        )
    finally:
        writer.close()
    assert _rows(url, "SELECT latest_seq, current_phase, status, exit_reason FROM tasks") == [
        (5, "planning", "failed", "gave up")
    ]
    spans = _rows(
        url, "SELECT span_id, state, end_seq, work_item_id, work_type, error_code FROM spans ORDER BY 1"
    )
    assert ("t/w1", "failed", 4, "w1", "file", "E1") in spans
    assert ("t/plan", "open", None, None, None, None) in spans


def test_a_deposed_writer_cannot_commit(url: str) -> None:
    old, new = _writer(url), _writer(url)  # the second take_over bumps the epoch
    try:
        with pytest.raises(StoreFenced):
            old.commit(1, [_event("a")])
        assert new.commit(1, [_event("a")]).tasks == {"a": (1, 1)}
    finally:
        old.close()
        new.close()
    assert _rows(url, "SELECT count(*) FROM task_events") == [(1,)]


def test_a_failed_batch_writes_nothing(url: str) -> None:
    writer = _writer(url)
    try:
        writer.commit(1, [_event("a")])
        # An event the worker would never pass on (it validates first); the schema refuses it too.
        bad = _event("b")
        bad = Decoded(bad.event.model_copy(update={"task_id": "x" * 200}), bad.payload_json)
        with pytest.raises(psycopg.errors.CheckViolation):
            writer.commit(2, [_event("a"), bad])
        assert writer.commit(2, [_event("a")]).tasks == {"a": (2, 2)}  # seq 2 was not taken
    finally:
        writer.close()
    assert _rows(url, "SELECT last_batch_id FROM ingest_state") == [(2,)]


def test_a_server_killed_mid_ingest_keeps_every_committed_batch_and_nothing_else(
    pg: PostgresServer, url: str
) -> None:
    writer = _writer(url)
    committed = 0
    try:
        for batch_id in range(1, 1000):
            if batch_id == 40:
                pg.kill()  # SIGKILL: the server's crash, mid-stream
            try:
                writer.commit(batch_id, [_event(f"t{n % 7}") for n in range(50)])
                committed = batch_id
            except psycopg.OperationalError:
                break
    finally:
        writer.close()
        pg.start()  # recovers from its WAL
    assert committed == 39
    assert _rows(url, "SELECT last_batch_id FROM ingest_state") == [(39,)]
    counts = _rows(url, "SELECT task_id, count(*), max(seq) FROM task_events GROUP BY 1 ORDER BY 1")
    assert sum(c for _, c, _ in counts) == 39 * 50
    assert all(c == m for _, c, m in counts)  # each task's seqs are 1..n


def test_the_writers_session_bounds_locks_idle_transactions_and_dead_connections(url: str) -> None:
    conn = open_pg_writer(url)
    try:
        shown = {name: conn.execute(f"SHOW {name}").fetchone()[0] for name in (  # type: ignore[index]
            "lock_timeout", "idle_in_transaction_session_timeout", "tcp_keepalives_idle", "tcp_user_timeout",
            "client_connection_check_interval", "application_name")}  # fmt: skip
    finally:
        conn.close()
    assert shown == {
        "lock_timeout": "30s",
        "idle_in_transaction_session_timeout": "1min",
        "tcp_keepalives_idle": "10",
        "tcp_user_timeout": "30000",  # ms
        "client_connection_check_interval": "10s",
        "application_name": "taskevents-ingest",
    }
