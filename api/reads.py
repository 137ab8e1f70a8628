"""Each endpoint's read: its queries, on one connection inside one read transaction, to a JSON body.

Every function takes the connection `ReadStore.run` gives it, so all its queries see one snapshot:
the page and its total agree, and the task cannot change half-way. Bodies are bytes joined from the
JSON the database rendered (api/queries.py for SQLite, api/pgqueries.py for PostgreSQL, picked by
api/dialect.py from the connection); api/models.py describes them for OpenAPI. A benchmark or the
live stream can call these directly: `store.run(reads.events_page, "t-1", 0, 100)`.
"""

from collections.abc import Sequence
from typing import NamedTuple

import orjson

from taskevents.api import queries as window
from taskevents.api.cursor import encode_cursor
from taskevents.api.dialect import Connection, queries
from taskevents.api.errors import TaskNotFound
from taskevents.api.store import TaskArchived


class TaskRow(NamedTuple):
    latest_seq: int
    event_count: int
    current_phase: str | None
    status: str
    archived: int  # 0 in the store, 1 archived, 2 read from its archive (api/archived.py)


def task_row(conn: Connection, task_id: str) -> TaskRow:
    """The task's summary row; TaskNotFound if the store has no event of it, TaskArchived if its events
    are in its archive (the read is then run again on the archive). Every task read starts here."""
    q = queries(conn)
    row = conn.execute(q.TASK, (task_id,)).fetchone()
    if row is None:
        raise TaskNotFound(task_id)
    task = TaskRow(*row)
    if task.archived == 1:
        raise TaskArchived(task_id, task.latest_seq)
    return task


def _bool(value: bool) -> str:
    return "true" if value else "false"


def _page(rows: Sequence[tuple[int, str]], total: int, has_more: bool, next_seq: int) -> bytes:
    events = ",".join(row[1] for row in rows)
    return (
        f'{{"events":[{events}],"total":{total},"has_more":{_bool(has_more)},"next_seq":{next_seq}}}'
    ).encode()


def events_page(conn: Connection, task_id: str, since_seq: int, limit: int) -> bytes:
    """Events after `since_seq`, ascending. `next_seq`: the last seq returned, else `since_seq`."""
    task = task_row(conn, task_id)
    q = queries(conn)
    rows = conn.execute(q.EVENTS_AFTER, (task_id, since_seq, limit + 1)).fetchall()
    has_more = len(rows) > limit
    del rows[limit:]
    return _page(rows, task.event_count, has_more, rows[-1][0] if rows else since_seq)


def latest_page(conn: Connection, task_id: str, limit: int) -> bytes:
    """The newest `limit` events, newest first. `has_more`: older events exist beyond the page.

    `next_seq` is the newest seq of the page (0 if empty): pass it as `since_seq` to `/events` (or
    the live stream) for what comes after.
    """
    task = task_row(conn, task_id)
    q = queries(conn)
    rows = conn.execute(q.EVENTS_NEWEST, (task_id, limit + 1)).fetchall()
    has_more = len(rows) > limit
    del rows[limit:]
    return _page(rows, task.event_count, has_more, rows[0][0] if rows else 0)


def phase_page(conn: Connection, task_id: str, phase: str, since_seq: int, limit: int) -> bytes:
    """Like `events_page` for the events of one phase; `total` counts that phase."""
    task_row(conn, task_id)
    q = queries(conn)
    rows = conn.execute(q.PHASE_EVENTS_AFTER, (task_id, phase, since_seq, limit + 1)).fetchall()
    has_more = len(rows) > limit
    del rows[limit:]
    total = conn.execute(q.PHASE_COUNT, (task_id, phase)).fetchone()[0]
    return _page(rows, total, has_more, rows[-1][0] if rows else since_seq)


def checkpoints(conn: Connection, task_id: str, since_seq: int, limit: int) -> tuple[bytes, bool]:
    """Checkpoint events after `since_seq` as a JSON array, and whether more exist after them."""
    task_row(conn, task_id)
    q = queries(conn)
    rows = conn.execute(q.CHECKPOINTS_AFTER, (task_id, since_seq, limit + 1)).fetchall()
    has_more = len(rows) > limit
    del rows[limit:]
    return ("[" + ",".join(row[1] for row in rows) + "]").encode(), has_more


def snapshot(conn: Connection, task_id: str, limit: int) -> bytes:
    """The last `limit` events ascending, with the state of the whole task (not of the window).

    `current_phase` and `status` come from the task row (the last non-null phase the worker saw), and
    the open spans from the spans table: every span whose latest opening or closing event opened it.
    `active_spans` is their ids (the original's shape), `active_span_details` the span objects.
    """
    task = task_row(conn, task_id)
    q = queries(conn)
    rows = conn.execute(q.EVENTS_NEWEST, (task_id, limit)).fetchall()
    events = ",".join(row[1] for row in reversed(rows))
    spans = conn.execute(q.OPEN_SPANS, (task_id,)).fetchall()
    ids = orjson.dumps([row[0] for row in spans]).decode()
    details = ",".join(row[1] for row in spans)
    return (
        f'{{"task_id":{orjson.dumps(task_id).decode()},"events":[{events}],'
        f'"total_events":{task.event_count},"latest_seq":{task.latest_seq},'
        f'"current_phase":{orjson.dumps(task.current_phase).decode()},'
        f'"status":{orjson.dumps(task.status).decode()},"archived":{_bool(task.archived != 0)},'
        f'"active_spans":{ids},'
        f'"active_span_details":[{details}]}}'
    ).encode()


def graph(conn: Connection, task_id: str, limit: int) -> bytes:
    """One node per span (the first `limit` by start), and an edge parent -> child where both are nodes."""
    task_row(conn, task_id)
    q = queries(conn)
    rows = conn.execute(q.GRAPH_NODES, (task_id, limit + 1)).fetchall()
    truncated = len(rows) > limit
    del rows[limit:]
    nodes = {row[0] for row in rows}
    edges = [
        {"from": parent, "to": span} for span, parent, _ in rows if parent is not None and parent in nodes
    ]
    return (
        f'{{"task_id":{orjson.dumps(task_id).decode()},"spans":[{",".join(row[2] for row in rows)}],'
        f'"edges":{orjson.dumps(edges).decode()},"truncated":{_bool(truncated)}}}'
    ).encode()


def tasks_page(conn: Connection, limit: int, filters: dict[str, object]) -> bytes:
    """Tasks, most recently active first, filtered (q.TASK_FILTERS; `after`: the cursor's position)."""
    q = queries(conn)
    sql, params = q.tasks_query(filters)
    rows = conn.execute(sql, (*params, limit + 1)).fetchall()
    has_more = len(rows) > limit
    del rows[limit:]
    cursor = orjson.dumps(encode_cursor(rows[-1][0], rows[-1][1])).decode() if has_more else "null"
    return f'{{"tasks":[{",".join(row[2] for row in rows)}],"next_cursor":{cursor}}}'.encode()


def tasks_by_id(conn: Connection, task_ids: list[str]) -> dict[str, str]:
    """task_id -> its summary's JSON, for the tasks the store has."""
    q = queries(conn)
    return dict(conn.execute(q.TASKS_BY_ID, (orjson.dumps(task_ids).decode(),)).fetchall())


def spans(conn: Connection, task_id: str, parent: str | None, after_seq: int, limit: int) -> bytes:
    """The task's spans in the order they started, after `after_seq`; only `parent`'s children if given.
    `next_seq`: pass back as `after_seq` while `has_more`."""
    task_row(conn, task_id)
    q = queries(conn)
    if parent is None:
        rows = conn.execute(q.SPANS_ALL, (task_id, after_seq, limit + 1)).fetchall()
    else:
        rows = conn.execute(q.SPAN_CHILDREN, (task_id, parent, after_seq, limit + 1)).fetchall()
    has_more = len(rows) > limit
    del rows[limit:]
    next_seq = rows[-1][0] if rows else after_seq
    body = ",".join(row[1] for row in rows)
    return f'{{"spans":[{body}],"has_more":{_bool(has_more)},"next_seq":{next_seq}}}'.encode()


def overview(conn: Connection, task_id: str, events: int, items: int, checkpoints: int) -> bytes:
    """What a task page paints first, in one read: the task, its root spans, its stages (phase spans,
    each with its work items' counts by state and its first `items` work items), its latest `events`
    events (ascending), and its newest `checkpoints` checkpoint events and evidence links (ascending)."""
    task_row(conn, task_id)
    q = queries(conn)
    task = conn.execute(q.TASK_SUMMARY, (task_id,)).fetchone()
    if task is None:
        raise TaskNotFound(task_id)
    counts: dict[str | None, dict[str, int]] = {}
    for parent, state, n in conn.execute(q.CHILD_COUNTS, (task_id,)):
        counts.setdefault(parent, {"open": 0, "closed": 0, "failed": 0})[state] = n
    stages = []
    for span_id, span_json in conn.execute(q.STAGES, (task_id,)).fetchall():
        children = conn.execute(q.SPAN_CHILDREN, (task_id, span_id, 0, items)).fetchall()
        tally = counts.get(span_id, {"open": 0, "closed": 0, "failed": 0})
        stages.append(
            f'{{"span":{span_json},"counts":{orjson.dumps(tally).decode()},'
            f'"items":[{",".join(row[1] for row in children)}],'
            f'"more":{_bool(sum(tally.values()) > len(children))}}}'
        )
    roots = ",".join(row[0] for row in conn.execute(q.ROOT_SPANS, (task_id,)))
    latest = conn.execute(q.EVENTS_NEWEST, (task_id, events)).fetchall()
    marks = conn.execute(q.CHECKPOINTS_NEWEST, (task_id, checkpoints)).fetchall()
    links = conn.execute(q.LINKS_NEWEST, (task_id, checkpoints)).fetchall()
    return (
        f'{{"task":{task[0]},"roots":[{roots}],"stages":[{",".join(stages)}],'
        f'"events":[{",".join(row[1] for row in reversed(latest))}],'
        f'"checkpoints":[{",".join(row[1] for row in reversed(marks))}],'
        f'"links":[{",".join(row[1] for row in reversed(links))}]}}'
    ).encode()


def find(
    conn: Connection,
    task_id: str,
    text: str | None,
    types: list[str] | None,
    failed: bool,
    before_seq: int | None,
    limit: int,
) -> bytes:
    """Events matching the filters, newest first, among at most FIND_SCAN events before `before_seq`.

    Seqs are 1..latest without gaps, so the window is known before it is read: `scanned_to` is its
    lowest seq, and `has_more` says that older events remain to be searched (from `scanned_to`).
    """
    task = task_row(conn, task_id)
    before = task.latest_seq + 1 if before_seq is None else min(before_seq, task.latest_seq + 1)
    kinds = orjson.dumps(types).decode() if types else None
    scan = window.FIND_SCAN  # one setting for both stores, read when asked (tests shrink it)
    rows = conn.execute(
        queries(conn).FIND, (task_id, before, scan, text, text, kinds, kinds, int(failed), limit + 1)
    ).fetchall()
    scanned_to = max(1, before - scan)
    if len(rows) > limit:  # the page filled up before the window ended: go on from the last match
        del rows[limit:]
        scanned_to = rows[-1][0]
    has_more = scanned_to > 1
    return (
        f'{{"events":[{",".join(row[1] for row in rows)}],"scanned_to":{scanned_to},'
        f'"has_more":{_bool(has_more)}}}'
    ).encode()


def last_commit_at(conn: Connection) -> str | None:
    """`last_at` of the most recently written task: when the worker last committed."""
    return conn.execute(queries(conn).LAST_COMMIT).fetchone()[0]
