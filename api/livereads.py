"""The store reads the live stream makes, each a plain function of a connection (for `ReadStore.run`).

Events come back already serialized by SQLite, with the REST API's own `EVENT_JSON` (api/queries.py),
so a streamed event has exactly the fields of `GET /api/tasks/{id}/events`. The stream sends that JSON
to every client as is: it is built once per event and never parsed or re-encoded in Python.
"""

from dataclasses import dataclass

import orjson

from taskevents.api.dialect import Connection, queries
from taskevents.api.store import TaskArchived

Row = tuple[int, str, str]  # seq, event_type, event JSON


@dataclass(frozen=True, slots=True)
class Head:
    """Where a task stands: its latest seq and whether its runner has exited."""

    latest_seq: int
    status: str  # running, succeeded, failed

    @property
    def ended(self) -> bool:
        return self.status != "running"


def events_after(conn: Connection, task_id: str, after_seq: int, limit: int) -> list[Row]:
    """Up to `limit` events of the task with seq > `after_seq`, in seq order. TaskArchived if they are
    in its archive (the read is then run there: a stream of an archived task replays it and ends)."""
    _not_archived(conn, task_id)
    return conn.execute(queries(conn).LIVE_AFTER, (task_id, after_seq, limit)).fetchall()


def _not_archived(conn: Connection, task_id: str) -> None:
    row = conn.execute(queries(conn).ARCHIVED, (task_id,)).fetchone()
    if row is not None and row[0] == 1:
        raise TaskArchived(task_id, row[1])


def events_in_ranges(conn: Connection, ranges: list[tuple[str, int, int]]) -> list[tuple[str, int, str, str]]:
    """(task_id, seq, event_type, JSON) of the events in each task's [first, last] seq range."""
    return conn.execute(queries(conn).LIVE_RANGES, (orjson.dumps(ranges).decode(),)).fetchall()


def heads(conn: Connection, task_ids: list[str]) -> dict[str, Head]:
    """The head of each task the store knows; a task it has not seen is absent."""
    rows = conn.execute(queries(conn).LIVE_HEADS, (orjson.dumps(task_ids).decode(),))
    return {task_id: Head(latest, status) for task_id, latest, status in rows}


def head(conn: Connection, task_id: str) -> Head | None:
    """A stream's start: for an archived task, read from its archive, so that one that is missing or
    damaged answers 410 or 503 before the stream starts."""
    _not_archived(conn, task_id)
    return heads(conn, [task_id]).get(task_id)
