"""The read API's SQL for PostgreSQL: api/queries.py's statements, with the same names and answers.

Most statements are SQLite's own text with three changes (`_derived`): `%s` placeholders, no
`INDEXED BY` (PostgreSQL's planner picks the same indexes of shared/pgschema.py), and PostgreSQL's
rendering of each row's JSON. The few that use SQLite-only functions (`json_each`, `instr`) are
written out below.

The JSON is built by concatenation, not `json_build_object`, so that it is byte for byte what
SQLite's `json_object` gives: no spaces, keys in order, strings escaped by `to_json` the same way
(`\\n`, `\\t`, `\\"`, `\\\\`, other control characters as `\\u00xx`), payloads and progress inserted as
the worker stored them (compact JSON, as SQLite's `json()` leaves them). tests/test_pg_reads.py
compares every endpoint's bytes on both stores.

Case folding is SQLite's too: `lower()` under `COLLATE "C"` folds ASCII letters only, whatever the
database's locale. tasks.task_id and last_at are `COLLATE "C"` (migration 3), so the task list sorts
by code point; where they meet the spans' task_id (default collation) the comparison takes the
spans', so that its indexes and hash partitions are used.
"""

import re
from typing import Final

import orjson

from taskevents.api import queries as sq

_INTEGERS: Final = frozenset(
    {"event_id", "seq", "first_seq", "end_seq", "last_seq", "event_count", "latest_seq"}
)


def _value(expr: str) -> str:
    """A SQLite json_object value expression as PostgreSQL JSON text (NULL stays NULL)."""
    if expr.startswith("json(") and expr.endswith(")"):
        return expr[len("json(") : -1]  # stored JSON text, inserted as is
    if expr.rsplit(".", 1)[-1] in _INTEGERS:
        return f"({expr})::text"
    return f"to_json({expr})::text"


def _json_object(*pairs: tuple[str, str]) -> str:
    parts = []
    for i, (key, expr) in enumerate(pairs):
        parts.append(f"'{'{' if i == 0 else ','}{orjson.dumps(key).decode()}:'")
        parts.append(f"coalesce({expr}, 'null')")
    return "(" + " || ".join(parts) + " || '}')"


_NODE_PAIRS: Final = (*sq.SPAN_PAIRS[:5], ("payload", "json(e.payload)"), *sq.SPAN_PAIRS[5:])
_TASK_COLUMNS: Final = (
    "task_id",
    "latest_seq",
    "event_count",
    "current_phase",
    "status",
    "first_at",
    "last_at",
    "exit_reason",
)
EVENT_JSON: Final = _json_object(*((key, _value(expr)) for key, expr in sq.EVENT_PAIRS))
SPAN_JSON: Final = _json_object(*((key, _value(expr)) for key, expr in sq.SPAN_PAIRS))
NODE_JSON: Final = _json_object(*((key, _value(expr)) for key, expr in _NODE_PAIRS))
TASK_JSON: Final = _json_object(
    *((key, _value(f"tasks.{key}")) for key in _TASK_COLUMNS),
    (
        "failed_items",
        "(CASE WHEN tasks.archived = 1 THEN tasks.archived_failed ELSE (SELECT count(*) FROM spans AS f"
        " WHERE f.task_id = tasks.task_id COLLATE \"default\" AND f.state = 'failed') END)::text",
    ),
    ("archived", "CASE WHEN tasks.archived <> 0 THEN 'true' ELSE 'false' END"),
)

# SQLite's JSON renderings, longest first (NODE_JSON holds SPAN_JSON's pairs, not its text).
_RENDERINGS: Final = (
    (sq.NODE_JSON, NODE_JSON),
    (sq.TASK_JSON, TASK_JSON),
    (sq.SPAN_JSON, SPAN_JSON),
    (sq.EVENT_JSON, EVENT_JSON),
)


def _derived(sql: str) -> str:
    for sqlite_json, pg_json in _RENDERINGS:
        sql = sql.replace(sqlite_json, pg_json)
    sql = re.sub(r" INDEXED BY \w+", "", sql)
    if re.search(r"json_each|instr\(|\bjson\(|te_exit_status", sql):
        raise ValueError(f"a SQLite-only function is left in {sql!r}")
    return sql.replace("?", "%s")


TASK: Final = _derived(sq.TASK)
ARCHIVED: Final = _derived(sq.ARCHIVED)
TASK_SUMMARY: Final = _derived(sq.TASK_SUMMARY)
EVENTS_AFTER: Final = _derived(sq.EVENTS_AFTER)
EVENTS_NEWEST: Final = _derived(sq.EVENTS_NEWEST)
PHASE_EVENTS_AFTER: Final = _derived(sq.PHASE_EVENTS_AFTER)
PHASE_COUNT: Final = _derived(sq.PHASE_COUNT)
CHECKPOINTS_AFTER: Final = _derived(sq.CHECKPOINTS_AFTER)
OPEN_SPANS: Final = _derived(sq.OPEN_SPANS)
GRAPH_NODES: Final = _derived(sq.GRAPH_NODES)
SPAN_CHILDREN: Final = _derived(sq.SPAN_CHILDREN)
SPANS_ALL: Final = _derived(sq.SPANS_ALL)
STAGES: Final = _derived(sq.STAGES)
CHILD_COUNTS: Final = _derived(sq.CHILD_COUNTS)
ROOT_SPANS: Final = _derived(sq.ROOT_SPANS)
CHECKPOINTS_NEWEST: Final = _derived(sq.CHECKPOINTS_NEWEST)
LINKS_NEWEST: Final = _derived(sq.LINKS_NEWEST)
LIVE_AFTER: Final = _derived(sq.LIVE_AFTER)
LAST_COMMIT: Final = _derived(sq.LAST_COMMIT)

# The task list: tasks.task_id and last_at sort by code point (COLLATE "C", pgschema migration 3),
# as SQLite's do, so pages and cursors are the same on both stores.
_TASKS_SELECT: Final = f"SELECT last_at, task_id, {TASK_JSON} FROM tasks"
TASK_FILTERS: Final = {
    "status": "status = %s",
    "phase": "current_phase = %s",
    "q": 'strpos(lower(task_id), lower(%s::text COLLATE "C")) > 0',
    "since": "last_at >= %s",
    "until": "last_at < %s",
    "archived": "(archived <> 0) = %s",
    "after": "(last_at, task_id) < (%s, %s)",
}
if TASK_FILTERS.keys() != sq.TASK_FILTERS.keys():
    raise AssertionError("the task list's filters differ between the stores")


def tasks_query(filters: dict[str, object]) -> tuple[str, list[object]]:
    """As api/queries.py's `tasks_query`, in PostgreSQL's SQL."""
    return sq.filtered(_TASKS_SELECT, TASK_FILTERS, filters, "%s")


TASKS_BY_ID: Final = f"""
SELECT task_id, {TASK_JSON} FROM tasks WHERE task_id IN (SELECT json_array_elements_text(%s::json))
"""
LIVE_HEADS: Final = """
SELECT task_id, latest_seq, status FROM tasks WHERE task_id IN (SELECT json_array_elements_text(%s::json))
"""
LIVE_RANGES: Final = f"""
SELECT e.task_id, e.seq, e.event_type, {EVENT_JSON}
FROM json_array_elements(%s::json) AS r
JOIN task_events AS e
  ON e.task_id = r.value ->> 0 AND e.seq BETWEEN (r.value ->> 1)::bigint AND (r.value ->> 2)::bigint
ORDER BY e.task_id, e.seq
"""
# A bounded walk of FIND_SCAN events (api/queries.py's, the one setting for both stores).
# te_exit_status: pgschema migration 3's function, the rule of shared/event.py's exit_status. The CASE
# keeps it to runner_exit events (PostgreSQL does not promise to evaluate AND left to right).
FIND: Final = f"""
SELECT seq, {EVENT_JSON} FROM (
    SELECT * FROM task_events WHERE task_id = %s AND seq < %s ORDER BY seq DESC LIMIT %s
) AS w
WHERE (%s::text IS NULL OR strpos(lower((w.event_type || ' ' || w.span_id || ' '
                                         || coalesce(w.parent_span_id, '') || ' ' || w.actor || ' '
                                         || w.payload) COLLATE "C"), lower(%s::text COLLATE "C")) > 0)
  AND (%s::text IS NULL OR w.event_type IN (SELECT json_array_elements_text(%s::json)))
  AND (%s::integer = 0 OR w.event_type IN ('work_item_failed', 'checkpoint_invalid', 'recovery_initiated')
            OR CASE WHEN w.event_type = 'runner_exit' THEN te_exit_status(w.payload) = 'failed'
                    ELSE false END)
ORDER BY seq DESC LIMIT %s
"""
