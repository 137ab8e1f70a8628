"""The SQL of the read API. Each event, span and task is rendered to JSON by SQLite itself.

`json_object(…)` builds a row's JSON in C, so serving a page is joining strings: no dicts, no
`jsonable_encoder`. Every query is written to walk one index of shared/schema.py (checked by
tests/test_api_queries.py with EXPLAIN QUERY PLAN):

- seq pages and snapshots: `idx_task_events_task_seq (task_id, seq)`
- phase pages and counts: `idx_task_events_task_phase (task_id, phase, seq)`
- checkpoints: the partial index `idx_task_events_checkpoints`
- active spans: the partial index `idx_spans_open`; graph nodes: the `spans` primary key
- the task list: `idx_tasks_last_at (last_at, task_id)`, walked backwards
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
EVENT_JSON: Final = _json_object(
    *((name, "json(payload)" if name == "payload" else name) for name in EVENT_FIELDS)
)

# A span: its first event (span_id, parent, type, phase, seq), its state and extent.
_SPAN_PAIRS: Final = (
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
)
SPAN_JSON: Final = _json_object(*_SPAN_PAIRS)
# A graph node: a span plus its first event's payload.
NODE_JSON: Final = _json_object(*_SPAN_PAIRS[:5], ("payload", "json(e.payload)"), *_SPAN_PAIRS[5:])

TASK_JSON: Final = _json_object(
    ("task_id", "task_id"),
    ("latest_seq", "latest_seq"),
    ("event_count", "event_count"),
    ("current_phase", "current_phase"),
    ("status", "status"),
    ("first_at", "first_at"),
    ("last_at", "last_at"),
)

TASK: Final = "SELECT latest_seq, event_count, current_phase, status FROM tasks WHERE task_id = ?"

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

# The task list, most recently active first; the cursor is the (last_at, task_id) of the last row.
_TASKS_ORDER: Final = "ORDER BY last_at DESC, task_id DESC LIMIT ?"
_TASKS_SELECT: Final = f"SELECT last_at, task_id, {TASK_JSON} FROM tasks INDEXED BY idx_tasks_last_at"
TASKS: Final = f"{_TASKS_SELECT} {_TASKS_ORDER}"
TASKS_BY_STATUS: Final = f"{_TASKS_SELECT} WHERE status = ? {_TASKS_ORDER}"
TASKS_BEFORE: Final = f"{_TASKS_SELECT} WHERE (last_at, task_id) < (?, ?) {_TASKS_ORDER}"
TASKS_BY_STATUS_BEFORE: Final = (
    f"{_TASKS_SELECT} WHERE status = ? AND (last_at, task_id) < (?, ?) {_TASKS_ORDER}"
)

# When the worker last committed anything (metrics: how stale the store is).
LAST_COMMIT: Final = "SELECT max(last_at) FROM tasks"
