"""Every read query walks the index it was written for (EXPLAIN QUERY PLAN on the real schema)."""

from pathlib import Path

import pytest

from taskevents.api import queries as q
from taskevents.db import open_reader, open_writer

PLANS = {
    "TASK": ["SEARCH tasks USING PRIMARY KEY (task_id=?)"],
    "EVENTS_AFTER": ["SEARCH task_events USING INDEX idx_task_events_task_seq (task_id=? AND seq>?)"],
    "EVENTS_NEWEST": ["SEARCH task_events USING INDEX idx_task_events_task_seq (task_id=?)"],
    "PHASE_EVENTS_AFTER": [
        "SEARCH task_events USING INDEX idx_task_events_task_phase (task_id=? AND phase=? AND seq>?)"
    ],
    "PHASE_COUNT": [
        "SEARCH task_events USING COVERING INDEX idx_task_events_task_phase (task_id=? AND phase=?)"
    ],
    "CHECKPOINTS_AFTER": ["SEARCH task_events USING INDEX idx_task_events_checkpoints (task_id=? AND seq>?)"],
    "OPEN_SPANS": ["SEARCH s USING INDEX idx_spans_open (task_id=?)"],
    "GRAPH_NODES": [
        "MATERIALIZE s",
        "SEARCH spans USING PRIMARY KEY (task_id=?)",
        "USE TEMP B-TREE FOR ORDER BY",  # the spans of one task, sorted by first_seq before the join
        "SCAN s",
        "SEARCH e USING INDEX idx_task_events_task_seq (task_id=? AND seq=?)",
    ],
    "TASKS": ["SCAN tasks USING INDEX idx_tasks_last_at"],  # backwards, stopping at LIMIT: no sort
    "TASKS_BY_STATUS": ["SCAN tasks USING INDEX idx_tasks_last_at"],
    "TASKS_BEFORE": ["SEARCH tasks USING INDEX idx_tasks_last_at ((last_at,task_id)<(?,?))"],
    "TASKS_BY_STATUS_BEFORE": ["SEARCH tasks USING INDEX idx_tasks_last_at ((last_at,task_id)<(?,?))"],
    "LAST_COMMIT": ["SEARCH tasks USING COVERING INDEX idx_tasks_last_at"],
}


@pytest.mark.parametrize("name", sorted(PLANS))
def test_the_query_uses_its_index(tmp_path: Path, name: str) -> None:
    open_writer(tmp_path / "events.db").close()  # the schema, as the worker creates it
    conn = open_reader(tmp_path / "events.db")
    sql = getattr(q, name)
    plan = [row[3] for row in conn.execute(f"EXPLAIN QUERY PLAN {sql}", [1] * sql.count("?"))]
    conn.close()
    assert plan == PLANS[name]
