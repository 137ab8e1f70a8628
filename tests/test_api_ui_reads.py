"""The reads the runner UI needs: the task page's overview, spans by parent, search within a run, the
task list's filters and its live feed. Against the real worker, on runs the simulator made."""

import threading
import time
from typing import Any

import httpx
import pytest

from taskevents import lifecycle as lc
from taskevents.api import queries
from taskevents.settings import Settings
from taskevents.simulate import simulate, simulate_big_run
from tests.api_helpers import TestClient, ingest
from tests.pgserver import STORES
from tests.stream_helpers import FrameParser, live

pytestmark = [pytest.mark.redis_server, pytest.mark.parametrize("settings", STORES, indirect=True)]


def big(settings: Settings, events: int = 3_000, spans: int = 300) -> str:
    task: list[str] = []
    ingest(
        settings, lambda em: task.append(simulate_big_run(em, events=events, spans=spans, seed=4, prefix="b"))
    )
    return task[0]


def test_the_overview_has_the_task_its_stages_latest_events_and_checkpoints(
    settings: Settings, api_http: TestClient
) -> None:
    task = big(settings)
    body = api_http.get(f"/api/tasks/{task}/overview", params={"events": 50, "items": 10}).json()
    assert body["task"]["task_id"] == task and body["task"]["status"] == "succeeded"
    assert [r["event_type"] for r in body["roots"]] == ["runner_spawn"]
    stages = body["stages"]
    assert [s["span"]["phase"] for s in stages][:3] == ["planning", "executing", "verifying"]
    assert [s["span"]["phase"] for s in stages].count("executing") == 4
    executing = [s for s in stages if s["span"]["phase"] == "executing"]
    items = sum(sum(s["counts"].values()) for s in executing)
    assert items == 300 - 13  # the big run's work items, all under an executing attempt
    first = executing[0]
    assert len(first["items"]) == 10 and first["more"] is True
    card = first["items"][0]
    assert card["work_item_id"].startswith("item-") and card["work_type"]
    assert card["progress"]["current"] == card["progress"]["total"]  # done: its last progress step
    failed = [i for s in executing for i in s["items"] if i["state"] == "failed"]
    assert all(i["error_code"] for i in failed)
    assert [e["seq"] for e in body["events"]] == list(range(2_951, 3_001))
    assert [e["event_type"] for e in body["checkpoints"]].count("checkpoint_invalid") == 3


def test_spans_come_all_or_by_parent_in_start_order_with_a_cursor(
    settings: Settings, api_http: TestClient
) -> None:
    task = big(settings)
    everything: list[dict[str, Any]] = []
    after = 0
    while True:
        page = api_http.get(f"/api/tasks/{task}/spans", params={"after_seq": after, "limit": 70}).json()
        everything += page["spans"]
        after = page["next_seq"]
        if not page["has_more"]:
            break
    assert len(everything) == 300 and len({s["span_id"] for s in everything}) == 300
    assert [s["start_seq"] for s in everything] == sorted(s["start_seq"] for s in everything)
    stage = next(s for s in everything if s["phase"] == "executing" and s["event_type"] == "phase_enter")
    children = api_http.get(f"/api/tasks/{task}/spans", params={"parent": stage["span_id"]}).json()["spans"]
    assert children and all(c["parent_span_id"] == stage["span_id"] for c in children)
    assert api_http.get("/api/tasks/nope/spans").status_code == 404


def test_find_searches_a_run_newest_first_in_bounded_windows(
    settings: Settings, api_http: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    task = big(settings)
    url = f"/api/tasks/{task}/events/find"
    invalid = api_http.get(url, params={"event_type": "checkpoint_invalid"}).json()
    assert [e["event_type"] for e in invalid["events"]] == ["checkpoint_invalid"] * 3
    assert invalid["scanned_to"] == 1 and invalid["has_more"] is False
    seqs = [e["seq"] for e in invalid["events"]]
    assert seqs == sorted(seqs, reverse=True)
    failures = api_http.get(url, params={"failed": "true"}).json()["events"]
    assert {e["event_type"] for e in failures} <= {
        "work_item_failed",
        "checkpoint_invalid",
        "recovery_initiated",
    }
    assert {"checkpoint_invalid", "recovery_initiated"} <= {e["event_type"] for e in failures}
    text = api_http.get(url, params={"q": "ITEM-17", "limit": 500}).json()["events"]
    assert text and all("item-17" in str(e).lower() for e in text)

    # A small window: the same matches, found window by window.
    monkeypatch.setattr(queries, "FIND_SCAN", 500)
    found, before, requests = [], None, 0
    while True:
        params: dict[str, Any] = {"event_type": "checkpoint_invalid"} | (
            {"before_seq": before} if before else {}
        )
        page = api_http.get(url, params=params).json()
        found += page["events"]
        requests += 1
        if not page["has_more"]:
            break
        before = page["scanned_to"]
    assert found == invalid["events"] and requests == 6  # 3,000 events, 500 at a time

    # An event type is checked by the event model's rule: a bad one is the client's mistake.
    bad = api_http.get(url, params={"event_type": ["checkpoint_invalid", "Not A Type"]})
    assert bad.status_code == 400 and bad.json()["code"] == "bad_parameter", bad.text


def test_the_task_list_filters_by_phase_text_and_time_and_counts_failed_items(
    settings: Settings, api_http: TestClient
) -> None:
    ingest(
        settings,
        lambda em: simulate(em, tasks=30, concurrency=5, rate=0, seed=3, prefix="f", leave_running=5),
    )
    everything = api_http.get("/api/tasks", params={"limit": 500}).json()["tasks"]
    assert len(everything) == 30
    failed = api_http.get("/api/tasks", params={"status": "failed", "limit": 500}).json()["tasks"]
    assert failed and all(t["status"] == "failed" and t["exit_reason"] for t in failed)
    running = api_http.get("/api/tasks", params={"status": "running", "limit": 500}).json()["tasks"]
    assert len(running) == 5 and all(t["exit_reason"] is None for t in running)
    phase = everything[0]["current_phase"]
    by_phase = api_http.get("/api/tasks", params={"phase": phase, "limit": 500}).json()["tasks"]
    assert by_phase and all(t["current_phase"] == phase for t in by_phase)
    needle = everything[3]["task_id"][-6:].upper()
    assert [t["task_id"] for t in api_http.get("/api/tasks", params={"q": needle}).json()["tasks"]] == [
        everything[3]["task_id"]
    ]
    middle = everything[10]["last_at"]
    newer = api_http.get("/api/tasks", params={"since": middle, "limit": 500}).json()["tasks"]
    older = api_http.get("/api/tasks", params={"until": middle, "limit": 500}).json()["tasks"]
    assert len(newer) + len(older) == 30 and all(t["last_at"] >= middle for t in newer)
    assert any(t["failed_items"] > 0 for t in everything)
    assert api_http.get("/api/tasks", params={"since": "yesterday"}).status_code == 400


def test_the_task_list_feed_pushes_changed_summaries(settings: Settings) -> None:
    with live(settings) as lv:
        lv.emit("warm", 1)
        lv.flush()
        lv.wait_stored("warm", 1)
        frames: list[Any] = []
        stop = threading.Event()

        def read() -> None:
            parser = FrameParser()
            with (
                httpx.Client(timeout=httpx.Timeout(10, read=30)) as client,
                client.stream("GET", f"{lv.url}/sse/tasks") as response,
            ):
                for chunk in response.iter_raw():
                    frames.extend(parser.feed(chunk))
                    if stop.is_set():
                        return

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        time.sleep(0.5)  # connected
        em = lv.emitter
        lc.emit_runner_spawn("listed", "listed/r", runner_pid=1, runner_version="1", emitter=em)
        lc.emit_runner_exit("listed", "listed/r", 2, explanation="no luck", emitter=em)
        lv.flush()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            summaries = [t for f in frames if f.event == "tasks" for t in f.json()]
            if any(t["task_id"] == "listed" and t["status"] == "failed" for t in summaries):
                break
            time.sleep(0.05)
        stop.set()
        lv.emit("warm", 1, start=1)  # wakes the reader up to see `stop`
        lv.flush()
        reader.join(10)
        summaries = [t for f in frames if f.event == "tasks" for t in f.json()]
        last = [t for t in summaries if t["task_id"] == "listed"][-1]
        assert last["status"] == "failed" and last["exit_reason"] == "no luck" and last["latest_seq"] == 2
        assert frames[0].retry is not None and all(f.id is None for f in frames)
