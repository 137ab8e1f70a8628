"""The read API on PostgreSQL answers what it answers on SQLite, byte for byte.

Runs are ingested into a SQLite store by the real worker, and the rows copied as they are into a
PostgreSQL store: every column the same, created_at included, so any difference is the read side's
(api/pgqueries.py against api/queries.py). Then every endpoint is asked the same questions of both.
"""

import sqlite3
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import orjson
import psycopg
import pytest

from taskevents import pgschema
from taskevents.api import pgqueries, queries
from taskevents.api.store import QueryTimeout, StoreUnavailable
from taskevents.emitter import Emitter
from taskevents.event import exit_status
from taskevents.pgdb import open_pg_writer
from taskevents.settings import Settings
from taskevents.simulate import simulate
from tests.api_helpers import TestClient, api_client, ingest, stored
from tests.helpers import wait_for
from tests.pgserver import ExternalPostgres, PostgresServer, running
from tests.pgserver import rows as rows_of
from tests.test_api_ops import sample

pytestmark = [pytest.mark.postgres, pytest.mark.redis_server]

NAME = 'q"b\\ é 中 😀 <b>'  # identifiers may hold any printable text
ODD = 'quote " backslash \\ tab \t newline \n nul-free \x01\x1f del \x7f é ü 中文 😀 \u2028 </script>'

EXITS: list[dict[str, Any]] = [
    {"outcome": "success"},
    {"outcome": "  FAILED \u3000"},
    {"outcome": "weird", "exit_code": " 0 "},
    {"exit_code": 3},
    {"exit_code": 0.0},
    {"exit_code": 2.5},
    {"exit_code": True},
    {"exit_code": "12a"},
    {"outcome": None},
    {"outcome": "unknown"},
    {},
    {"note": "nothing said"},
]


def _odd_runs(em: Emitter) -> None:
    """Runs with every kind of string the JSON renderers could disagree on, and every exit rule."""
    for n, exit_payload in enumerate(EXITS):
        task = f"odd-{n:02d}-{NAME}" if n % 2 else f"Odd-{n:02d}-É"
        em.emit(task, "task_started", span_id="root", actor=NAME, payload={"text": ODD, "n": n})
        em.emit(task, "phase_enter", span_id="p", parent_span_id="root", actor="runner", phase="executing")
        em.emit(
            task,
            "work_item_started",
            span_id=f"w{NAME}",
            parent_span_id="p",
            actor="runner",
            phase="executing",
            payload={"work_item_id": NAME, "work_type": 'unit "t"', "big": 2**60, "f": 1.5e-7},
        )
        em.emit(
            task,
            "work_item_progress",
            span_id=f"w{NAME}",
            actor="runner",
            phase="executing",
            payload={"progress": {"done": 1, "of": 3, "note": ODD}},
        )
        em.emit(
            task,
            "work_item_failed",
            span_id=f"w{NAME}",
            actor="runner",
            phase="executing",
            payload={"error_code": 'E"1\n', "nested": [1, [2, {"x": None}]]},
        )
        em.emit(task, "checkpoint_commit", span_id="c", parent_span_id="p", actor="runner", payload={"n": n})
        em.emit(task, "evidence_linked", span_id="c", actor="runner", payload={"url": f"https://x/{n}?a=b&c"})
        em.emit(task, "runner_exit", span_id="root", actor="runner", payload=exit_payload)


def _copy_rows(sqlite_path: str, url: str) -> None:
    """Every row of the events, tasks and spans tables, as stored, into the (migrated) PostgreSQL store."""
    open_pg_writer(url).close()  # creates the schema
    src = sqlite3.connect(sqlite_path)
    with psycopg.connect(url) as dst:
        for table in ("task_events", "tasks", "spans"):
            pg_columns = [
                row[0]
                for row in dst.execute(
                    "SELECT column_name FROM information_schema.columns WHERE table_name = %s", (table,)
                )
            ]
            cur = src.execute(f"SELECT * FROM {table}")
            columns = [d[0] for d in cur.description]
            assert set(pg_columns) <= set(columns), (table, set(pg_columns) - set(columns))
            picked = [columns.index(c) for c in pg_columns]
            marks = ", ".join(["%s"] * len(pg_columns))
            overriding = " OVERRIDING SYSTEM VALUE" if table == "task_events" else ""
            with dst.cursor() as out:
                out.executemany(
                    f"INSERT INTO {table} ({', '.join(pg_columns)}){overriding} VALUES ({marks})",
                    [tuple(row[i] for i in picked) for row in cur],
                )
    src.close()


@pytest.fixture
def both(
    settings: Settings, postgres: PostgresServer | ExternalPostgres, request: pytest.FixtureRequest
) -> Iterator[tuple[TestClient, TestClient]]:
    def emit(em: Emitter) -> None:
        simulate(em, tasks=6, concurrency=3, rate=0, seed=7, prefix="sim", leave_running=2)
        _odd_runs(em)

    ingest(settings, emit)
    pg = settings.model_copy(update={"db": postgres.database("reads_" + request.node.name)})
    _copy_rows(settings.db, pg.db)
    with api_client(settings) as lite, api_client(pg) as post:
        yield lite, post


def _same(lite: TestClient, post: TestClient, url: str) -> dict[str, Any]:
    a, b = lite.get(url), post.get(url)
    assert a.status_code == b.status_code == 200, (url, a.text[:300], b.text[:300])
    assert a.content == b.content, (url, a.text[:2000], b.text[:2000])
    body: dict[str, Any] = orjson.loads(a.content)
    return body


def test_every_endpoint_answers_the_same_bytes_on_both_stores(both: tuple[TestClient, TestClient]) -> None:
    lite, post = both
    listed = _same(lite, post, "/api/tasks?limit=500")["tasks"]
    task_ids = [t["task_id"] for t in listed]
    assert len(task_ids) == 6 + len(EXITS)
    assert any(t["failed_items"] > 0 for t in listed) and any(t["status"] == "running" for t in listed)

    # The list's paging, filters and cursors.
    page = _same(lite, post, "/api/tasks?limit=4")
    pages = 1
    while page["next_cursor"] is not None:
        page = _same(lite, post, f"/api/tasks?limit=4&cursor={page['next_cursor']}")
        pages += 1
    assert pages == 5
    filters = (
        "status=failed",
        "status=running",
        "q=odd",
        "q=%C3%A9",
        "q=%C3%89",
        "q=ODD-0",
        "archived=false",
    )
    for query in filters:
        _same(lite, post, f"/api/tasks?{query}")
    since = sorted(t["last_at"] for t in listed)[len(listed) // 2]
    _same(lite, post, f"/api/tasks?since={since}")
    _same(lite, post, f"/api/tasks?until={since}")

    for task in task_ids:
        base = f"/api/tasks/{quote(task, safe='')}"
        events = _same(lite, post, f"{base}/events?limit=1000")["events"]
        assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
        _same(lite, post, f"{base}/events?since_seq=3&limit=2")
        _same(lite, post, f"{base}/events/latest?limit=3")
        _same(lite, post, f"{base}/events/snapshot?limit=5")
        _same(lite, post, f"{base}/events/phase/executing?limit=2")
        _same(lite, post, f"{base}/checkpoints")
        _same(lite, post, f"{base}/graph")
        _same(lite, post, f"{base}/graph?limit=2")
        _same(lite, post, f"{base}/overview?items=1&checkpoints=1")
        _same(lite, post, f"{base}/spans")
        _same(lite, post, f"{base}/spans?parent=p&limit=1")
        _same(lite, post, f"{base}/events/find?failed=true")
        _same(lite, post, f"{base}/events/find?q=BACKSLASH&event_type=task_started&event_type=runner_exit")
        _same(lite, post, f"{base}/events/find?q=%22&limit=1&before_seq=7")
        _same(
            lite, post, f"{base}/events/find?q=%C3%89%20%E4%B8%AD"
        )  # case folded as SQLite does: ASCII only

    # The test server's locale sorts by code point anyway: the task list's columns must say so
    # themselves, for a database whose locale does not.
    pg_url = post.app.state.settings.db  # type: ignore[attr-defined]
    collations = rows_of(
        pg_url,
        "SELECT a.attname, c.collname FROM pg_attribute a JOIN pg_collation c ON c.oid = a.attcollation"
        " WHERE a.attrelid = 'tasks'::regclass AND a.attname IN ('task_id', 'last_at') ORDER BY 1",
    )
    assert collations == [("last_at", "C"), ("task_id", "C")]

    # A NUL character, which PostgreSQL's text cannot hold, is the client's mistake.
    answer = post.get("/api/tasks?q=a%00b")
    assert answer.status_code == 400 and answer.json()["code"] == "bad_parameter", answer.text
    assert post.get("/api/tasks/t%00x/events").status_code == 400

    # The errors, in their one shape.
    for url in ("/api/tasks/no/events", "/api/tasks/no/graph", "/api/tasks?limit=0", "/api/tasks?cursor=_"):
        a, b = lite.get(url), post.get(url)
        assert (a.status_code, a.content) == (b.status_code, b.content), url


def test_both_dialects_define_the_same_statements() -> None:
    def names(module: object) -> set[str]:
        return {n for n in vars(module) if (n.isupper() and n[0] != "_") or n == "tasks_query"}

    parts = {"EVENT_FIELDS", "EVENT_PAIRS", "SPAN_PAIRS", "CHECKPOINT_TYPES", "FIND_SCAN"}  # no SQL
    assert names(queries) - parts <= names(pgqueries)
    for name in names(pgqueries):
        value = getattr(pgqueries, name)
        if isinstance(value, str):
            assert "?" not in value and "INDEXED BY" not in value and "json_each" not in value, name


def test_the_store_s_exit_status_is_the_python_rule(postgres: PostgresServer | ExternalPostgres) -> None:
    url = postgres.database("exit_status")
    open_pg_writer(url).close()
    more: list[dict[str, Any]] = [{"outcome": "ok\u0085"}, {"exit_code": "+00"}, {"exit_code": "-1"}]
    with psycopg.connect(url) as conn:
        for payload in [*EXITS, *more, {"exit_code": 1e300}, {"outcome": 3, "exit_code": "7"}]:
            got = conn.execute("SELECT te_exit_status(%s)", (orjson.dumps(payload).decode(),)).fetchone()
            assert got is not None and got[0] == exit_status(payload), payload
        raw = ['{"exit_code": 0, "exit_code": 1}', '{"outcome": "ok\\u0000", "note": "\\u0000"}']
        raw += ['{"exit_code": "0\\u0000"}', '{"outcome": "\\u0000", "exit_code": 0}']
        for text in raw:  # as a producer in another language may send them: the last key wins
            got = conn.execute("SELECT te_exit_status(%s)", (text,)).fetchone()
            assert got is not None and got[0] == exit_status(orjson.loads(text)), text
        for junk in ("not json", "[1]", "3"):
            assert conn.execute("SELECT te_exit_status(%s)", (junk,)).fetchone() == (None,)


def _on_pg(settings: Settings, url: str) -> Settings:
    return settings.model_copy(update={"db": url})


def test_readiness_and_metrics_read_a_postgresql_store(
    settings: Settings, postgres: PostgresServer | ExternalPostgres, request: pytest.FixtureRequest
) -> None:
    pg = _on_pg(settings, postgres.database("ready_" + request.node.name))
    with api_client(pg) as http:
        body = http.get("/api/ready").json()
        assert body["code"] == "store_unavailable" and "not initialised" in body["store"]["detail"]
        stored(pg, *({"task_id": "t", "event_type": "runner_heartbeat", "span_id": "r"} for _ in range(3)))
        answer = http.get("/api/ready")
        assert answer.status_code == 200, answer.text
        assert answer.json()["store"] | {"last_commit_at": None} == {
            "ok": True,
            "schema_version": pgschema.SCHEMA_VERSION,
            "last_commit_at": None,
            "detail": None,
        }
        text = http.get("/metrics").text
        assert (
            sample(text, "taskevents_store_up") == 1 and sample(text, "taskevents_worker_ingested_total") == 3
        )
        assert 0 <= sample(text, "taskevents_store_last_commit_age_seconds") < 60
        assert "password" not in answer.text


def test_the_api_s_sessions_cannot_write(
    settings: Settings, postgres: PostgresServer | ExternalPostgres, request: pytest.FixtureRequest
) -> None:
    pg = _on_pg(settings, postgres.database("ro_" + request.node.name))
    stored(pg, {"task_id": "t", "event_type": "runner_spawn", "span_id": "r"})
    with api_client(pg) as http:
        store = http.app.state.store  # type: ignore[attr-defined]
        for write in ("UPDATE tasks SET status = 'failed'", "DELETE FROM task_events"):
            with pytest.raises(StoreUnavailable, match="read-only transaction"), store.transaction() as conn:
                conn.execute(write)
        for _ in range(50):
            assert http.get("/api/tasks/t/events").json()["events"][0]["event_type"] == "runner_spawn"
        assert store.opened <= 2  # sessions are kept, not opened per read (a second at start-up)


def test_a_read_past_its_limit_is_stopped_by_the_server(
    settings: Settings, postgres: PostgresServer | ExternalPostgres, request: pytest.FixtureRequest
) -> None:
    pg = _on_pg(settings, postgres.database("slow_" + request.node.name))
    stored(pg, {"task_id": "t", "event_type": "runner_spawn", "span_id": "r"})
    with api_client(pg.model_copy(update={"query_timeout": 0.2})) as http:
        store = http.app.state.store  # type: ignore[attr-defined]
        started = time.monotonic()
        with pytest.raises(QueryTimeout), store.transaction() as conn:
            conn.execute("SELECT pg_sleep(5)")
        assert time.monotonic() - started < 2
        assert http.get("/api/tasks/t/events").status_code == 200  # the session is still good


def test_reads_answer_503_while_the_server_is_down_and_recover_after(settings: Settings) -> None:
    with running() as server:
        pg = _on_pg(settings, server.database("down"))
        stored(pg, *({"task_id": "t", "event_type": "runner_heartbeat", "span_id": "r"} for _ in range(3)))
        with api_client(pg) as http:
            assert http.get("/api/tasks/t/events").status_code == 200
            server.stop()
            for _ in range(3):  # the pooled session is gone, and no new one can be made
                started = time.monotonic()
                answer = http.get("/api/tasks/t/events")
                assert answer.status_code == 503 and answer.json()["code"] == "store_unavailable", answer.text
                assert time.monotonic() - started < 3  # told within a second or so, not after 5 s
            assert http.get("/api/ready").status_code == 503
            server.start()
            wait_for(lambda: http.get("/api/tasks/t/events").status_code == 200, timeout=30, interval=0.2)
            assert [e["seq"] for e in http.get("/api/tasks/t/events").json()["events"]] == [1, 2, 3]
            assert http.get("/api/ready").status_code == 200
