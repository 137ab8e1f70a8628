"""The store reads the live stream makes, each a plain function of a connection (for `ReadStore.run`).

Events come back already serialized by SQLite, with the REST API's own `EVENT_JSON` (api/queries.py),
so a streamed event has exactly the fields of `GET /api/tasks/{id}/events`. The stream sends that JSON
to every client as is: it is built once per event and never parsed or re-encoded in Python.
"""

import sqlite3
from dataclasses import dataclass

import orjson

from taskevents.api.queries import ARCHIVED, EVENT_JSON
from taskevents.api.store import TaskArchived

_AFTER = f"""
SELECT e.seq, e.event_type, {EVENT_JSON}
FROM task_events AS e
WHERE e.task_id = ? AND e.seq > ?
ORDER BY e.seq
LIMIT ?
"""

# One statement for every task of a notification; json_each drives the (task_id, seq) index.
_RANGES = f"""
SELECT e.task_id, e.seq, e.event_type, {EVENT_JSON}
FROM json_each(?) AS r
JOIN task_events AS e ON e.task_id = r.value ->> 0 AND e.seq BETWEEN r.value ->> 1 AND r.value ->> 2
ORDER BY e.task_id, e.seq
"""

_HEADS = """
SELECT task_id, latest_seq, status FROM tasks WHERE task_id IN (SELECT value FROM json_each(?))
"""

Row = tuple[int, str, str]  # seq, event_type, event JSON


@dataclass(frozen=True, slots=True)
class Head:
    """Where a task stands: its latest seq and whether its runner has exited."""

    latest_seq: int
    status: str  # running, succeeded, failed

    @property
    def ended(self) -> bool:
        return self.status != "running"


def events_after(conn: sqlite3.Connection, task_id: str, after_seq: int, limit: int) -> list[Row]:
    """Up to `limit` events of the task with seq > `after_seq`, in seq order. TaskArchived if they are
    in its archive (the read is then run there: a stream of an archived task replays it and ends)."""
    _not_archived(conn, task_id)
    return conn.execute(_AFTER, (task_id, after_seq, limit)).fetchall()


def _not_archived(conn: sqlite3.Connection, task_id: str) -> None:
    row = conn.execute(ARCHIVED, (task_id,)).fetchone()
    if row is not None and row[0] == 1:
        raise TaskArchived(task_id, row[1])


def events_in_ranges(
    conn: sqlite3.Connection, ranges: list[tuple[str, int, int]]
) -> list[tuple[str, int, str, str]]:
    """(task_id, seq, event_type, JSON) of the events in each task's [first, last] seq range."""
    return conn.execute(_RANGES, (orjson.dumps(ranges),)).fetchall()


def heads(conn: sqlite3.Connection, task_ids: list[str]) -> dict[str, Head]:
    """The head of each task the store knows; a task it has not seen is absent."""
    return {
        task_id: Head(latest, status)
        for task_id, latest, status in conn.execute(_HEADS, (orjson.dumps(task_ids),))
    }


def head(conn: sqlite3.Connection, task_id: str) -> Head | None:
    """A stream's start: for an archived task, read from its archive, so that one that is missing or
    damaged answers 410 or 503 before the stream starts."""
    _not_archived(conn, task_id)
    return heads(conn, [task_id]).get(task_id)
