"""The snapshot and the span graph describe the whole task, whatever the window: phase after heartbeats
and runner_exit, spans opened before the window, spans closed long ago, parallel work items."""

import pytest

from taskevents import lifecycle as lc
from taskevents.emitter import Emitter
from taskevents.settings import Settings
from taskevents.simulate import simulate
from tests.api_helpers import TestClient, ingest, seqs
from tests.pgserver import STORES

pytestmark = [pytest.mark.redis_server, pytest.mark.parametrize("settings", STORES, indirect=True)]


def start_run(em: Emitter, task: str = "t") -> None:
    """Seq 1 root span, 2 executing phase, 3-4 a work item opened and closed, 5 one left open."""
    lc.emit_runner_spawn(task, "root", runner_pid=7, runner_version="1.0", emitter=em)
    lc.emit_phase_enter(task, "exec", "executing", parent_span_id="root", emitter=em)
    lc.emit_work_item_start(task, "wi-done", "exec", "item-1", "lint", phase="executing", emitter=em)
    lc.emit_work_item_complete(task, "wi-done", "exec", "item-1", "lint", phase="executing", emitter=em)
    lc.emit_work_item_start(task, "wi-open", "exec", "item-2", "test_run", phase="executing", emitter=em)


def active(body: dict) -> list[str]:
    """The open spans' ids, in the order they opened: the original's `active_spans`, as it had them."""
    assert body["active_spans"] == [span["span_id"] for span in body["active_span_details"]]
    return body["active_spans"]


def test_heartbeats_do_not_blank_the_phase_nor_hide_spans_opened_before_the_window(
    settings: Settings, api_http: TestClient
) -> None:
    def emit(em: Emitter) -> None:
        start_run(em)
        for _ in range(20):
            lc.emit_runner_heartbeat("t", "root", emitter=em)

    ingest(settings, emit)
    body = api_http.get("/api/tasks/t/events/snapshot", params={"limit": 5}).json()
    assert [e["event_type"] for e in body["events"]] == ["runner_heartbeat"] * 5  # phase null, all of them
    assert seqs(body) == [21, 22, 23, 24, 25]  # the last 5, ascending
    assert body["task_id"] == "t"
    assert body["total_events"] == 25 and body["latest_seq"] == 25
    assert body["current_phase"] == "executing"
    assert body["status"] == "running"
    assert active(body) == ["root", "exec", "wi-open"]  # in the order they opened; wi-done is closed
    assert "root" in body["active_spans"]  # a client of the original: active_spans.includes(id)
    root = body["active_span_details"][0]
    assert root == root | {
        "span_id": "root",
        "parent_span_id": None,
        "event_type": "runner_spawn",
        "phase": None,
        "seq": 1,
        "state": "open",
        "start_seq": 1,
        "end_seq": None,
        "last_seq": 25,
        "event_count": 21,
        "ended_at": None,
    }
    wi = body["active_span_details"][2]
    assert (wi["parent_span_id"], wi["event_type"], wi["phase"], wi["start_seq"]) == (
        "exec",
        "work_item_start",
        "executing",
        5,
    )


def test_after_runner_exit_the_phase_stays_and_no_span_is_active(
    settings: Settings, api_http: TestClient
) -> None:
    def emit(em: Emitter) -> None:
        start_run(em)
        lc.emit_work_item_failed(
            "t", "wi-open", "exec", "item-2", "tests_failed", phase="executing", emitter=em
        )
        lc.emit_phase_exit("t", "exec", "executing", emitter=em)
        lc.emit_runner_exit("t", "root", 1, "failed", emitter=em)

    ingest(settings, emit)
    body = api_http.get("/api/tasks/t/events/snapshot", params={"limit": 1}).json()
    assert [e["event_type"] for e in body["events"]] == ["runner_exit"]
    assert body["current_phase"] == "executing"  # runner_exit has no phase: the last one stays
    assert body["status"] == "failed"
    assert body["active_spans"] == [] and body["active_span_details"] == []


def test_a_long_run_keeps_its_old_open_spans_and_forgets_its_old_closed_ones(
    settings: Settings, api_http: TestClient
) -> None:
    def emit(em: Emitter) -> None:
        start_run(em)  # wi-open (seq 5) stays open through the whole run; wi-done closed at seq 4
        lc.emit_phase_enter("t", "verify", "verifying", parent_span_id="root", emitter=em)
        for i in range(1500):
            lc.emit_work_item_progress("t", "wi-open", "exec", "item-2", i / 1500, emitter=em)
        lc.emit_phase_exit("t", "verify", "verifying", emitter=em)

    ingest(settings, emit)
    body = api_http.get("/api/tasks/t/events/snapshot").json()
    assert body["latest_seq"] == body["total_events"] == 1507
    assert seqs(body) == list(range(1408, 1508))
    assert active(body) == ["root", "exec", "wi-open"]  # "verify" opened and closed; so did wi-done
    assert body["current_phase"] == "verifying"  # progress events have no phase; phase_exit had one
    # The window is what /events/latest has, in ascending order.
    latest = api_http.get("/api/tasks/t/events/latest", params={"limit": 100}).json()
    assert body["events"] == latest["events"][::-1]


def test_graph_of_parallel_work_items(settings: Settings, api_http: TestClient) -> None:
    def emit(em: Emitter) -> None:
        lc.emit_runner_spawn("t", "root", runner_pid=7, runner_version="1.0", emitter=em)
        lc.emit_phase_enter("t", "exec", "executing", parent_span_id="root", emitter=em)
        items = [f"wi-{i}" for i in range(4)]
        for i, span in enumerate(items):  # all start, then progress interleaved, then finish
            lc.emit_work_item_start(
                "t", span, "exec", f"item-{i}", "code_edit", phase="executing", emitter=em
            )
        for step in range(3):
            for i, span in enumerate(items):
                lc.emit_work_item_progress("t", span, "exec", f"item-{i}", step / 3, emitter=em)
        lc.emit_work_item_complete("t", "wi-0", "exec", "item-0", "code_edit", emitter=em)
        lc.emit_work_item_failed("t", "wi-1", "exec", "item-1", "timeout", emitter=em)
        lc.emit_work_item_complete("t", "wi-3", "exec", "item-3", "code_edit", emitter=em)
        # wi-2 still running; an event whose parent span was never seen is a node without an edge
        em.emit("t", "evidence_collected", span_id="orphan", actor="worker", parent_span_id="elsewhere")

    ingest(settings, emit)
    body = api_http.get("/api/tasks/t/graph").json()
    nodes = {node["span_id"]: node for node in body["spans"]}
    assert list(nodes) == ["root", "exec", "wi-0", "wi-1", "wi-2", "wi-3", "orphan"]  # by start
    assert body["task_id"] == "t" and body["truncated"] is False
    edges = {(edge["from"], edge["to"]) for edge in body["edges"]}
    assert edges == {("root", "exec"), *(("exec", f"wi-{i}") for i in range(4))}
    assert all(a in nodes and b in nodes for a, b in edges)
    assert {span: nodes[span]["state"] for span in nodes} == {
        "root": "open",
        "exec": "open",
        "wi-0": "closed",
        "wi-1": "failed",
        "wi-2": "open",
        "wi-3": "closed",
        "orphan": "open",  # an event that is not an opener starts a span too: it has not been closed
    }
    wi1 = nodes["wi-1"]
    assert wi1 == wi1 | {
        "parent_span_id": "exec",
        "event_type": "work_item_start",
        "phase": "executing",
        "seq": 4,
        "start_seq": 4,
        "end_seq": 20,
        "event_count": 5,
    }
    assert wi1["payload"]["work_item_id"] == "item-1"  # the first event's payload
    assert wi1["ended_at"] is not None and nodes["wi-2"]["ended_at"] is None
    # limit: the earliest spans, so every edge still joins two nodes.
    small = api_http.get("/api/tasks/t/graph", params={"limit": 3}).json()
    assert [n["span_id"] for n in small["spans"]] == ["root", "exec", "wi-0"]
    assert small["truncated"] is True
    assert {(e["from"], e["to"]) for e in small["edges"]} == {("root", "exec"), ("exec", "wi-0")}


def test_graph_of_simulated_runs_is_a_valid_tree(settings: Settings, api_http: TestClient) -> None:
    ingest(settings, lambda em: simulate(em, tasks=3, concurrency=3, rate=0, seed=11, prefix="g"))
    tasks = api_http.get("/api/tasks").json()["tasks"]
    assert len(tasks) == 3
    for task in tasks:
        body = api_http.get(f"/api/tasks/{task['task_id']}/graph").json()
        nodes = {node["span_id"]: node for node in body["spans"]}
        assert len(nodes) == len(body["spans"]) >= 5  # runner, phases, several work items
        for edge in body["edges"]:
            assert edge["from"] in nodes and edge["to"] in nodes
            assert nodes[edge["to"]]["parent_span_id"] == edge["from"]
        children = [n for n in body["spans"] if n["event_type"] == "work_item_start"]
        assert len({n["parent_span_id"] for n in children}) >= 1
        assert sum(n["event_count"] for n in body["spans"]) == task["event_count"]
        snapshot = api_http.get(f"/api/tasks/{task['task_id']}/events/snapshot").json()
        assert snapshot["active_spans"] == []  # every simulated run ends with runner_exit
        assert snapshot["status"] in ("succeeded", "failed") and snapshot["current_phase"] is not None
