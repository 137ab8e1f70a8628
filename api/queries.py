"""The SQL of the read API. Each event, span and task is rendered to JSON by SQLite itself.

`json_object(…)` builds a row's JSON in C, so serving a page is joining strings: no dicts, no
`jsonable_encoder`. Every query is written to walk one index of shared/schema.py (checked by
tests/test_api_queries.py with EXPLAIN QUERY PLAN), or says what it costs:

- seq pages and snapshots: `idx_task_events_task_seq (task_id, seq)`
- phase pages and counts: `idx_task_events_task_phase (task_id, phase, seq)`
- checkpoints: the partial index `idx_task_events_checkpoints`
- active spans: the partial index `idx_spans_open`; graph nodes: the `spans` primary key
- the task list: `idx_tasks_last_at (last_at, task_id)`, walked backwards
- a span's children: `idx_spans_parent (task_id, parent_span_id, first_seq)`; failed spans counted by
  the partial index `idx_spans_failed`
- finding events in a run: a bounded walk of `idx_task_events_task_seq` (FIND)
"""

from typing import Final

from taskevents.event import CHECKPOINT_TYPES


def _json_object(*pairs: tuple[str, str]) -> str:
    return "json_object(" + ", ".join(f"'{key}', {expr}" for key, expr in pairs) + ")"


# The stored event, with exactly the field names of SPEC.md (plus event_uid and emitted_at).
EVENT_FIELDS: Final = (
    "event_id",
    "task_id",
    "seq",
    "event_type",
    "phase",
    "actor",
    "span_id",
    "parent_span_id",
    "payload",
    "created_at",
    "event_uid",
    "emitted_at",
)
EVENT_PAIRS: Final = tuple((name, "json(payload)" if name == "payload" else name) for name in EVENT_FIELDS)
EVENT_JSON: Final = _json_object(*EVENT_PAIRS)

# A span: its first event (span_id, parent, type, phase, seq), its state and extent, and what its work
# item events said (id, type, latest progress, error code; null for other spans).
SPAN_PAIRS: Final = (
    ("span_id", "s.span_id"),
    ("parent_span_id", "s.parent_span_id"),
    ("event_type", "s.event_type"),
    ("phase", "s.phase"),
    ("seq", "s.first_seq"),
    ("state", "s.state"),
    ("start_seq", "s.first_seq"),
    ("end_seq", "s.end_seq"),
    ("last_seq", "s.last_seq"),
    ("event_count", "s.event_count"),
    ("started_at", "s.started_at"),
    ("ended_at", "s.ended_at"),
    ("work_item_id", "s.work_item_id"),
    ("work_type", "s.work_type"),
    ("progress", "json(s.progress)"),
    ("error_code", "s.error_code"),
)
SPAN_JSON: Final = _json_object(*SPAN_PAIRS)
# A graph node: a span plus its first event's payload.
NODE_JSON: Final = _json_object(*SPAN_PAIRS[:5], ("payload", "json(e.payload)"), *SPAN_PAIRS[5:])

# failed_items: the task's work item spans that failed (the partial index idx_spans_failed); an
# archived task's spans are in its archive, so its row keeps the count. archived: 1 in the store, 2
# in a loaded archive (api/archived.py).
TASK_JSON: Final = _json_object(
    ("task_id", "task_id"),
    ("latest_seq", "latest_seq"),
    ("event_count", "event_count"),
    ("current_phase", "current_phase"),
    ("status", "status"),
    ("first_at", "first_at"),
    ("last_at", "last_at"),
    ("exit_reason", "exit_reason"),
    (
        "failed_items",
        "CASE WHEN tasks.archived = 1 THEN tasks.archived_failed ELSE"
        " (SELECT count(*) FROM spans AS f INDEXED BY idx_spans_failed"
        " WHERE f.task_id = tasks.task_id AND f.state = 'failed') END",
    ),
    ("archived", "json(CASE WHEN tasks.archived THEN 'true' ELSE 'false' END)"),
)

# The task's summary row as JSON (a task page's header).
TASK_SUMMARY: Final = f"SELECT {TASK_JSON} FROM tasks WHERE task_id = ?"

TASK: Final = "SELECT latest_seq, event_count, current_phase, status, archived FROM tasks WHERE task_id = ?"
ARCHIVED: Final = "SELECT archived, latest_seq FROM tasks WHERE task_id = ?"

# (seq, event JSON) rows. Pages ask for limit + 1 rows: the extra one only says whether more exist.
EVENTS_AFTER: Final = f"""
SELECT seq, {EVENT_JSON} FROM task_events
WHERE task_id = ? AND seq > ? ORDER BY seq LIMIT ?
"""
EVENTS_NEWEST: Final = f"""
SELECT seq, {EVENT_JSON} FROM task_events
WHERE task_id = ? ORDER BY seq DESC LIMIT ?
"""
PHASE_EVENTS_AFTER: Final = f"""
SELECT seq, {EVENT_JSON} FROM task_events INDEXED BY idx_task_events_task_phase
WHERE task_id = ? AND phase = ? AND seq > ? ORDER BY seq LIMIT ?
"""
PHASE_COUNT: Final = """
SELECT count(*) FROM task_events INDEXED BY idx_task_events_task_phase WHERE task_id = ? AND phase = ?
"""
# The IN list repeats the partial index's WHERE term word for word, which lets SQLite use the index.
_CHECKPOINT_TYPES_SQL: Final = ", ".join(f"'{t}'" for t in CHECKPOINT_TYPES)
CHECKPOINTS_AFTER: Final = f"""
SELECT seq, {EVENT_JSON} FROM task_events INDEXED BY idx_task_events_checkpoints
WHERE task_id = ? AND event_type IN ({_CHECKPOINT_TYPES_SQL}) AND seq > ? ORDER BY seq LIMIT ?
"""

OPEN_SPANS: Final = f"""
SELECT s.span_id, {SPAN_JSON} FROM spans AS s INDEXED BY idx_spans_open
WHERE s.task_id = ? AND s.state = 'open' ORDER BY s.first_seq
"""
# Nodes in the order their spans started, so a parent comes before its children. The task's spans
# are sorted (and limited) before the join: sorting after it moved every node's rendered JSON through
# the sorter (5,000 spans: ~10 ms of a ~32 ms query). The materialized subquery is scanned in order.
GRAPH_NODES: Final = f"""
SELECT s.span_id, s.parent_span_id, {NODE_JSON}
FROM (SELECT * FROM spans WHERE task_id = ? ORDER BY first_seq LIMIT ?) AS s
JOIN task_events AS e ON e.task_id = s.task_id AND e.seq = s.first_seq
"""

# The task list, most recently active first; the cursor is the (last_at, task_id) of the last row. The
# filters are conditions on the walk of idx_tasks_last_at (backwards, stopping at LIMIT): a time range
# narrows the walk; status, phase and a task-id substring are checked on each row walked, so a filter
# that matches few tasks costs a walk over the rest (~0.5 µs a task).
_TASKS_SELECT: Final = f"SELECT last_at, task_id, {TASK_JSON} FROM tasks INDEXED BY idx_tasks_last_at"
TASK_FILTERS: Final = {
    "status": "status = ?",
    "phase": "current_phase = ?",
    "q": "instr(lower(task_id), lower(?)) > 0",
    "since": "last_at >= ?",
    "until": "last_at < ?",
    "archived": "(archived != 0) = ?",
    "after": "(last_at, task_id) < (?, ?)",
}


def tasks_query(filters: dict[str, object]) -> tuple[str, list[object]]:
    """The task-list query for the given filters (names of TASK_FILTERS; `after` is a pair) and its
    parameters, the LIMIT last."""
    return filtered(_TASKS_SELECT, TASK_FILTERS, filters, "?")


def filtered(
    select: str, conditions: dict[str, str], filters: dict[str, object], mark: str
) -> tuple[str, list[object]]:
    """`select` with the conditions of the filters given, newest first, and their parameters; `mark`
    is the LIMIT's placeholder (api/pgqueries.py builds PostgreSQL's list with it too)."""
    where: list[str] = []
    params: list[object] = []
    for name, condition in conditions.items():
        value = filters.get(name)
        if value is None:
            continue
        where.append(condition)
        if name == "after":
            assert isinstance(value, tuple)
            params.extend(value)
        else:
            params.append(value)
    clause = f" WHERE {' AND '.join(where)}" if where else ""
    return f"{select}{clause} ORDER BY last_at DESC, task_id DESC LIMIT {mark}", params


# The same rows for given task ids (the task list's live feed).
TASKS_BY_ID: Final = f"""
SELECT task_id, {TASK_JSON} FROM tasks WHERE task_id IN (SELECT value FROM json_each(?))
"""

# A span's children, in the order they started, after a cursor (the span tree, a stage's work items).
SPAN_CHILDREN: Final = f"""
SELECT s.first_seq, {SPAN_JSON} FROM spans AS s INDEXED BY idx_spans_parent
WHERE s.task_id = ? AND s.parent_span_id = ? AND s.first_seq > ? ORDER BY s.first_seq LIMIT ?
"""
# Every span of the task in the order they started (the whole tree at once), after a cursor. The spans
# of one task are read by primary key and sorted: ~2 ms for 5,000.
SPANS_ALL: Final = f"""
SELECT s.first_seq, {SPAN_JSON} FROM spans AS s
WHERE s.task_id = ? AND s.first_seq > ? ORDER BY s.first_seq LIMIT ?
"""
# The phase spans (the pipeline's stages), and the work item counts by state under each span.
STAGES: Final = f"""
SELECT s.span_id, {SPAN_JSON} FROM spans AS s
WHERE s.task_id = ? AND s.event_type = 'phase_enter' ORDER BY s.first_seq
"""
CHILD_COUNTS: Final = """
SELECT parent_span_id, state, count(*) FROM spans INDEXED BY idx_spans_parent
WHERE task_id = ? GROUP BY parent_span_id, state
"""
ROOT_SPANS: Final = f"""
SELECT {SPAN_JSON} FROM spans AS s INDEXED BY idx_spans_parent
WHERE s.task_id = ? AND s.parent_span_id IS NULL ORDER BY s.first_seq
"""
# The newest checkpoint events (the evidence drawer's first paint).
CHECKPOINTS_NEWEST: Final = f"""
SELECT seq, {EVENT_JSON} FROM task_events INDEXED BY idx_task_events_checkpoints
WHERE task_id = ? AND event_type IN ({_CHECKPOINT_TYPES_SQL}) ORDER BY seq DESC LIMIT ?
"""

# The newest evidence links (evidence_linked: which evidence backs which checkpoint).
LINKS_NEWEST: Final = f"""
SELECT seq, {EVENT_JSON} FROM task_events INDEXED BY idx_task_events_links
WHERE task_id = ? AND event_type = 'evidence_linked' ORDER BY seq DESC LIMIT ?
"""

# Finding events in a run (the timeline's filters and search): the task's events walked backwards from
# a seq, at most FIND_SCAN of them per request, each checked against the filters. Costs ~1 µs per event
# walked (20 ms for a full 20,000-event window): a filter that matches rarely is answered in windows,
# the client asking again from `scanned_to`.
FIND_SCAN: Final = 20_000
FIND: Final = f"""
SELECT seq, {EVENT_JSON} FROM (
    SELECT * FROM task_events WHERE task_id = ? AND seq < ? ORDER BY seq DESC LIMIT ?
) AS w
WHERE (? IS NULL OR instr(lower(w.event_type || ' ' || w.span_id || ' ' || coalesce(w.parent_span_id, '')
                                 || ' ' || w.actor || ' ' || w.payload), lower(?)) > 0)
  AND (? IS NULL OR w.event_type IN (SELECT value FROM json_each(?)))
  AND (? = 0 OR w.event_type IN ('work_item_failed', 'checkpoint_invalid', 'recovery_initiated')
            OR (w.event_type = 'runner_exit' AND te_exit_status(w.payload) = 'failed'))
ORDER BY seq DESC LIMIT ?
"""

# When the worker last committed anything (metrics: how stale the store is).
LAST_COMMIT: Final = "SELECT max(last_at) FROM tasks"

# The live stream's reads (api/livereads.py). A task's events after a seq:
LIVE_AFTER: Final = f"""
SELECT e.seq, e.event_type, {EVENT_JSON}
FROM task_events AS e
WHERE e.task_id = ? AND e.seq > ?
ORDER BY e.seq
LIMIT ?
"""
# One statement for every task of a notification; json_each drives the (task_id, seq) index.
LIVE_RANGES: Final = f"""
SELECT e.task_id, e.seq, e.event_type, {EVENT_JSON}
FROM json_each(?) AS r
JOIN task_events AS e ON e.task_id = r.value ->> 0 AND e.seq BETWEEN r.value ->> 1 AND r.value ->> 2
ORDER BY e.task_id, e.seq
"""
LIVE_HEADS: Final = """
SELECT task_id, latest_seq, status FROM tasks WHERE task_id IN (SELECT value FROM json_each(?))
"""
