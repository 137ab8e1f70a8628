"""Reads from a PostgreSQL replica (TASKEVENTS_DB_READ_URL): the API reads the replica, and the live
stream reads a commit's events from it only once it has replayed the commit's WAL position (in the
notification), else from the primary, so no client hears of an event the replica cannot serve."""

import time
from collections.abc import Iterator
from typing import Any

import httpx
import orjson
import pytest

from taskevents.api.live import UNKNOWN_WAL, _later, _lsn_text, _wal
from taskevents.emitter import Emitter
from taskevents.messages import CommitNotice
from taskevents.settings import Settings
from tests.helpers import start_worker, wait_for
from tests.pgserver import PostgresServer, make_database, rows, running
from tests.stream_helpers import ApiServer, FrameParser


def test_wal_positions_compare_as_numbers_and_unknown_wins() -> None:
    assert _wal("0/16B3748") == 0x16B3748 and _wal("1/0") == 1 << 32
    assert _lsn_text(_wal("A/FF")) == "A/FF"
    assert _later(None, _wal("0/10")) == 0x10 and _later(_wal("0/10"), _wal("0/9")) == 0x10
    assert _later(_wal("0/10"), _wal(None)) == UNKNOWN_WAL == _later(UNKNOWN_WAL, 5)
    with pytest.raises(ValueError):
        _wal("zz/1")
    notice = CommitNotice.of(3, {"t": (1, 2)}, "0/1A")
    assert CommitNotice.decode(notice.encode()).lsn == "0/1A"
    assert b"lsn" not in CommitNotice.of(3, {"t": (1, 2)}).encode()  # SQLite's notices as before


def test_a_replica_url_needs_a_postgresql_primary() -> None:
    with pytest.raises(ValueError, match="needs TASKEVENTS_DB to be a PostgreSQL URL"):
        Settings(db="events.db", db_read_url="postgresql://h/db")
    with pytest.raises(ValueError, match="postgresql:// URL"):
        Settings(db="postgresql://h/db", db_read_url="events.db")


@pytest.fixture
def primary_and_replica() -> Iterator[tuple[PostgresServer, PostgresServer]]:
    with running() as primary:
        replica = primary.replica()
        try:
            yield primary, replica
        finally:
            replica.close()


def _task_seqs(url: str) -> list[int]:
    """Task t's seqs on that server; none while it has not the database or the schema yet."""
    import psycopg

    try:
        return [row[0] for row in rows(url, "SELECT seq FROM task_events WHERE task_id = 't' ORDER BY seq")]
    except psycopg.Error:
        return []


@pytest.mark.postgres
@pytest.mark.redis_server
def test_the_stream_reads_the_replica_once_it_has_replayed_and_the_primary_while_it_lags(
    primary_and_replica: tuple[PostgresServer, PostgresServer], settings: Settings
) -> None:
    primary, replica = primary_and_replica
    url = make_database(primary.url, "replicated")
    replica_url = url.replace(f":{primary.port}/", f":{replica.port}/")
    pg = settings.model_copy(update={"db": url, "db_read_url": replica_url, "replica_wait": 0.3})
    worker = start_worker(pg)
    server = ApiServer(pg.model_copy(update={"stream_poll": 1000.0}))  # no safety-net polls
    em = Emitter.from_settings(pg)
    try:
        em.emit("t", "runner_spawn", span_id="r", actor="runner")
        assert em.flush(5)
        wait_for(lambda: _task_seqs(replica_url) == [1], timeout=30, interval=0.1)
        server.start()
        hub = server.hub
        with (
            httpx.Client(base_url=server.url, timeout=10) as http,
            http.stream("GET", "/sse/tasks/t/events?since_seq=1") as stream,
        ):
            wait_for(lambda: hub.subscription_count == 1, timeout=10)
            frames = FrameParser()
            chunks = stream.iter_raw()

            pending: list[Any] = []

            def next_frame() -> Any:
                while not pending:
                    pending.extend(f for f in frames.feed(next(chunks)) if f.event in ("task_event", "end"))
                return pending.pop(0)

            def next_seq() -> int:
                frame = next_frame()
                assert frame.event == "task_event", frame
                return int(orjson.loads(frame.data or "{}")["seq"])

            # Replaying: the commit is read from the replica.
            em.emit("t", "runner_heartbeat", span_id="r", actor="runner")
            assert em.flush(5)
            assert next_seq() == 2
            assert hub.replica_reads >= 1 and hub.primary_reads == 0

            # Lagging: the replica stops replaying; the stream still delivers (from the primary,
            # after the bounded wait), while REST reads, from the replica, do not see it yet.
            rows(replica_url, "SELECT pg_wal_replay_pause()")
            em.emit("t", "runner_heartbeat", span_id="r", actor="runner")
            assert em.flush(5)
            started = time.monotonic()
            assert next_seq() == 3
            assert 0.25 <= time.monotonic() - started < 5  # it waited for the replica first
            assert hub.primary_reads >= 1
            assert [e["seq"] for e in http.get("/api/tasks/t/events").json()["events"]] == [1, 2]
            # The run ends while the replica still lags: the stream sends the exit, from the primary,
            # and then ends, its view of the task's head being the primary's too.
            em.emit("t", "runner_exit", span_id="r", actor="runner", payload={"exit_code": 0})
            assert em.flush(5)
            assert next_seq() == 4
            end = next_frame()
            assert end.event == "end" and orjson.loads(end.data or "{}")["last_seq"] == 4, end
            rows(replica_url, "SELECT pg_wal_replay_resume()")
            wait_for(lambda: len(http.get("/api/tasks/t/events").json()["events"]) == 4, timeout=30)
            assert http.get("/api/ready").status_code == 200
    finally:
        em.close(5)
        server.stop()
        worker.terminate()
        worker.wait(20)
