"""The schema migrates by version: a store written by an older worker is brought forward with its data."""

import sqlite3
from pathlib import Path

import pytest

from taskevents.db import open_writer
from taskevents.schema import MIGRATIONS, SCHEMA_VERSION, SchemaError, _statements, migrate


def store_at(path: Path, version: int) -> sqlite3.Connection:
    """A store as a worker of schema `version` left it."""
    conn = sqlite3.connect(path, isolation_level=None)
    for step in MIGRATIONS[:version]:
        for statement in _statements(step):
            conn.execute(statement)
    conn.execute(f"PRAGMA user_version = {version}")
    return conn


def test_a_version_2_store_is_migrated_with_what_its_events_say(tmp_path: Path) -> None:
    conn = store_at(tmp_path / "old.db", 2)
    at = "2026-01-01T00:00:00.000Z"
    events = [
        (1, "runner_spawn", "root", None, "{}"),
        (2, "work_item_start", "w1", "root", '{"work_item_id": "item-1", "work_type": "lint"}'),
        (3, "work_item_failed", "w1", "root", '{"work_item_id": "item-1", "error_code": "E1"}'),
        (4, "runner_exit", "root", None, '{"exit_code": 1, "explanation": "gave up"}'),
    ]
    for seq, kind, span, parent, payload in events:
        conn.execute(
            "INSERT INTO task_events (task_id, seq, event_type, actor, span_id, parent_span_id, payload, "
            "created_at) VALUES ('t', ?, ?, 'a', ?, ?, ?, ?)",
            (seq, kind, span, parent, payload, at),
        )
    conn.execute("INSERT INTO tasks VALUES ('t', 4, 4, ?, ?, NULL, 'failed')", (at, at))
    conn.execute(
        "INSERT INTO spans VALUES ('t', 'w1', 'root', 'work_item_start', NULL, 2, 3, 2, 'failed', ?, 3, ?)",
        (at, at),
    )
    conn.execute(
        "INSERT INTO spans VALUES ('t', 'root', NULL, 'runner_spawn', NULL, 1, 4, 2, 'closed', ?, 4, ?)",
        (at, at),
    )
    assert migrate(conn) == SCHEMA_VERSION
    assert conn.execute("SELECT exit_reason FROM tasks").fetchall() == [("gave up",)]
    assert conn.execute(
        "SELECT work_item_id, work_type, error_code FROM spans WHERE span_id = 'w1'"
    ).fetchall() == [("item-1", "lint", "E1")]
    assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    conn.close()


def test_a_new_store_is_created_at_the_current_version_and_a_newer_one_is_refused(tmp_path: Path) -> None:
    conn = open_writer(tmp_path / "new.db")
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    with pytest.raises(SchemaError, match="newer than this code"):
        migrate(conn)
    conn.close()
