"""Every read query walks the index it was written for (EXPLAIN QUERY PLAN on the real schema).

What is checked is which index each table is read through, not the wording of the plan, which SQLite
versions change: a table read with no index (`SCAN task_events` without `USING`) fails, and so does a
sort the query was not written to need.
"""

import re
from pathlib import Path

import pytest

from taskevents.api import queries as q
from taskevents.db import open_reader, open_writer

PK = "PRIMARY KEY"
# query -> the (table or alias, index) of each read, and whether a temporary sort is expected
PLANS: dict[str, tuple[list[tuple[str, str]], bool]] = {
    "TASK": ([("tasks", PK)], False),
    "EVENTS_AFTER": ([("task_events", "idx_task_events_task_seq")], False),
    "EVENTS_NEWEST": ([("task_events", "idx_task_events_task_seq")], False),
    "PHASE_EVENTS_AFTER": ([("task_events", "idx_task_events_task_phase")], False),
    "PHASE_COUNT": ([("task_events", "idx_task_events_task_phase")], False),
    "CHECKPOINTS_AFTER": ([("task_events", "idx_task_events_checkpoints")], False),
    "OPEN_SPANS": ([("s", "idx_spans_open")], False),
    # The spans of one task, sorted by first_seq before the join (the subquery is materialized).
    "GRAPH_NODES": ([("spans", PK), ("s", ""), ("e", "idx_task_events_task_seq")], True),
    "LAST_COMMIT": ([("tasks", "idx_tasks_last_at")], False),
    # A task's summary counts its failed spans by the partial index.
    "TASKS_BY_ID": ([("tasks", PK), ("json_each", ""), ("f", "idx_spans_failed")], False),
    "SPAN_CHILDREN": ([("s", "idx_spans_parent")], False),
    "ROOT_SPANS": ([("s", "idx_spans_parent")], False),
    "SPANS_ALL": ([("s", PK)], True),  # one task's spans, sorted by start: ~2 ms for 5,000
    "STAGES": ([("s", PK)], True),
    "CHILD_COUNTS": ([("spans", "idx_spans_parent")], True),  # grouped by parent and state
    "CHECKPOINTS_NEWEST": ([("task_events", "idx_task_events_checkpoints")], False),
    "LINKS_NEWEST": ([("task_events", "idx_task_events_links")], False),
    # A bounded window of the (task_id, seq) index, its matches sorted newest first.
    "FIND": ([("task_events", "idx_task_events_task_seq"), ("w", ""), ("json_each", "")], True),
}
TASK_LIST = ([("tasks", "idx_tasks_last_at"), ("f", "idx_spans_failed")], False)  # backwards: no sort
READ = re.compile(
    r"^(?:SCAN|SEARCH) (\w+)(?: USING (?:COVERING )?(?:INDEX (\w+)|(?:INTEGER )?(PRIMARY KEY)))?"
)


def reads_of(plan: list[str]) -> tuple[list[tuple[str, str]], bool]:
    """(table, index or "PRIMARY KEY" or "" for a scan of a materialized subquery) per read."""
    found = []
    for line in plan:
        if m := READ.match(line):
            found.append((m.group(1), m.group(2) or m.group(3) or ""))
    return found, any("TEMP B-TREE" in line for line in plan)


@pytest.mark.parametrize("name", sorted(PLANS))
def test_the_query_uses_its_index(tmp_path: Path, name: str) -> None:
    open_writer(tmp_path / "events.db").close()  # the schema, as the worker creates it
    conn = open_reader(tmp_path / "events.db")
    sql = getattr(q, name)
    plan = [row[3] for row in conn.execute(f"EXPLAIN QUERY PLAN {sql}", [1] * sql.count("?"))]
    conn.close()
    assert reads_of(plan) == PLANS[name], plan


@pytest.mark.parametrize(
    "filters",
    [
        {},
        {"status": "failed"},
        {"after": ("2026", "t")},
        {"q": "x", "phase": "executing"},
        {"since": "a", "until": "b"},
        {"status": "s", "phase": "p", "q": "x", "since": "a", "until": "b", "after": ("a", "b")},
    ],
)
def test_every_task_list_filter_walks_the_recency_index(tmp_path: Path, filters: dict[str, object]) -> None:
    open_writer(tmp_path / "events.db").close()
    conn = open_reader(tmp_path / "events.db")
    sql, params = q.tasks_query(filters)
    plan = [row[3] for row in conn.execute(f"EXPLAIN QUERY PLAN {sql}", [*params, 1])]
    conn.close()
    assert reads_of(plan) == TASK_LIST, plan


def test_the_reading_of_a_plan_tells_an_index_from_a_full_scan() -> None:
    assert reads_of(["SCAN task_events"]) == ([("task_events", "")], False)
    assert reads_of(["SEARCH t USING COVERING INDEX i (a=?)", "USE TEMP B-TREE FOR ORDER BY"]) == (
        [("t", "i")],
        True,
    )
    assert reads_of(["SEARCH t USING INTEGER PRIMARY KEY (rowid=?)"]) == ([("t", PK)], False)
