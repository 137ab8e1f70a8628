"""`simulate()`: the shape of the runs it emits, repeatability and pacing (no Redis: emits are recorded)."""

import time
from collections import defaultdict
from types import SimpleNamespace
from typing import Any

import pytest

import taskevents.simulate as simulate_module
from taskevents.emitter import Emitter
from taskevents.event import EVENT_TYPES, SPAN_CLOSERS, SPAN_OPENERS, WireEvent, encode_payload
from taskevents.simulate import simulate, simulate_big_run


class RecordingEmitter(Emitter):
    """Checks each event as the real emitter does, then records it instead of sending it."""

    def __init__(self) -> None:
        super().__init__("redis://127.0.0.1:1/0")  # never connects: nothing is buffered
        self.events: list[dict[str, Any]] = []

    def emit(self, task_id: str, event_type: str, **fields: Any) -> None:
        WireEvent(task_id=task_id, event_type=event_type, **fields)
        encode_payload(fields.get("payload"), self.max_payload_bytes)
        self.events.append({"task_id": task_id, "event_type": event_type, **fields})


def run(**kwargs: Any) -> tuple[int, list[dict[str, Any]]]:
    emitter = RecordingEmitter()
    args: dict[str, Any] = {"tasks": 30, "concurrency": 5, "rate": 0, "seed": 7, "prefix": "sim"}
    count = simulate(emitter, **(args | kwargs))
    return count, emitter.events


def by_task(events: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    tasks: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for event in events:
        tasks[event["task_id"]].append(event)
    return tasks


@pytest.fixture(scope="module")
def events() -> list[dict[str, Any]]:
    return run()[1]


def test_returns_the_number_of_events_and_makes_the_tasks_asked_for() -> None:
    count, events = run(tasks=12, prefix="demo")
    assert count == len(events) > 0
    tasks = by_task(events)
    assert len(tasks) == 12
    assert all(task_id.startswith("demo-") for task_id in tasks)
    assert sorted(task_id.split("-")[1] for task_id in tasks) == [f"{n:04d}" for n in range(1, 13)]


def test_no_tasks_emits_nothing() -> None:
    assert run(tasks=0) == (0, [])


def test_each_task_starts_with_runner_spawn_and_ends_with_runner_exit(events: list[dict[str, Any]]) -> None:
    for task_id, task in by_task(events).items():
        assert task[0]["event_type"] == "runner_spawn", task_id
        assert task[-1]["event_type"] == "runner_exit", task_id
        assert [e["event_type"] for e in task].count("runner_spawn") == 1
        assert [e["event_type"] for e in task].count("runner_exit") == 1
        exit_payload = task[-1]["payload"]
        assert exit_payload["outcome"] in ("succeeded", "failed")
        assert (exit_payload["exit_code"] == 0) == (exit_payload["outcome"] == "succeeded")
        if exit_payload["outcome"] == "failed":
            assert exit_payload["explanation"]  # a failed run says why


def test_spans_open_before_use_close_in_the_task_and_have_opened_parents(
    events: list[dict[str, Any]],
) -> None:
    for task_id, task in by_task(events).items():
        opened: set[str] = set()
        closed: set[str] = set()
        for event in task:
            kind, span, parent = event["event_type"], event["span_id"], event["parent_span_id"]
            if parent is not None:
                assert parent in opened, (task_id, event)
            if kind in SPAN_OPENERS:
                assert span not in opened, f"{task_id}: span {span} opened twice"
                assert (parent is None) == (kind == "runner_spawn"), (task_id, event)
                opened.add(span)
                continue
            # Every other event belongs to a span that is open at that moment.
            assert span in opened and span not in closed, (task_id, event)
            if kind in SPAN_CLOSERS:
                closed.add(span)
        if task[-1]["payload"]["exit_code"] in simulate_module.KILLED:
            continue  # a killed runner leaves its phase and work items open, as a real one does
        assert opened == closed, f"{task_id}: never closed: {opened - closed}"


def test_phases_are_children_of_the_runner_and_work_items_of_the_executing_phase(
    events: list[dict[str, Any]],
) -> None:
    for task in by_task(events).values():
        root = task[0]["span_id"]
        phase_of_span = {e["span_id"]: e["phase"] for e in task if e["event_type"] == "phase_enter"}
        for event in task:
            if event["event_type"] == "phase_enter":
                assert event["parent_span_id"] == root
            if event["event_type"] == "work_item_start":
                assert phase_of_span[event["parent_span_id"]] == "executing"
        phases = [e["phase"] for e in task if e["event_type"] == "phase_enter"]
        killed = task[-1]["payload"]["exit_code"] in simulate_module.KILLED
        assert phases[:3] == (["planning", "executing"] if killed else ["planning", "executing", "verifying"])
        # A recovery is always followed by executing and verifying again.
        for i, phase in enumerate(phases):
            if phase == "recovery":
                assert phases[i + 1 : i + 3] == ["executing", "verifying"]


def test_a_share_of_runs_fail_with_a_reason_and_some_checkpoints_are_rejected() -> None:
    _, events = run(tasks=200, concurrency=10, seed=3)
    ends = [task[-1] for task in by_task(events).values()]
    failed = [e for e in ends if e["payload"]["outcome"] == "failed"]
    assert 0.1 * len(ends) <= len(failed) <= 0.35 * len(ends)
    reasons = {e["payload"]["explanation"] for e in failed}
    assert any("killed" in r for r in reasons) and any("gave up" in r for r in reasons)
    invalid = [e for e in events if e["event_type"] == "checkpoint_invalid"]
    assert invalid and all(e["payload"]["error_code"] for e in invalid)


def test_leave_running_stops_that_many_runs_before_their_exit() -> None:
    _, events = run(tasks=20, leave_running=4)
    tasks = by_task(events)
    running = [t for t, task in tasks.items() if task[-1]["event_type"] != "runner_exit"]
    assert len(tasks) == 20 and len(running) == 4
    assert all(sum(e["event_type"] == "runner_exit" for e in tasks[t]) == 0 for t in running)


def test_a_big_run_has_exactly_the_events_and_spans_asked_for() -> None:
    emitter = RecordingEmitter()
    task_id = simulate_big_run(emitter, events=20_000, spans=1_000, seed=5, prefix="big")
    events = emitter.events
    assert len(events) == 20_000 and {e["task_id"] for e in events} == {task_id}
    assert len({e["span_id"] for e in events}) == 1_000
    phases = [e["phase"] for e in events if e["event_type"] == "phase_enter"]
    assert phases.count("executing") == 4 and phases.count("recovery") == 3 and phases[0] == "planning"
    assert [e["event_type"] for e in events if e["event_type"].startswith("checkpoint_")].count(
        "checkpoint_invalid"
    ) == 3
    progress = [e["payload"]["progress"] for e in events if e["event_type"] == "work_item_progress"]
    assert all(0 < p["current"] <= p["total"] for p in progress)
    assert events[-1]["event_type"] == "runner_exit" and events[-1]["payload"]["outcome"] == "succeeded"
    with pytest.raises(ValueError, match="needs at least"):
        simulate_big_run(RecordingEmitter(), events=100, spans=50, seed=1, prefix="x")


def test_work_item_progress_rises_from_0_to_1(events: list[dict[str, Any]]) -> None:
    progress: dict[tuple[str, str], list[float]] = defaultdict(list)
    for event in events:
        if event["event_type"] == "work_item_progress":
            progress[event["task_id"], event["span_id"]].append(event["payload"]["progress"])
    assert progress
    for values in progress.values():
        assert values == sorted(values)
        assert all(0 <= v <= 1 for v in values)


def test_the_whole_vocabulary_appears(events: list[dict[str, Any]]) -> None:
    assert {e["event_type"] for e in events} == EVENT_TYPES
    failed = [e for e in events if e["event_type"] == "work_item_failed"]
    assert all(e["payload"]["error_code"] for e in failed)
    commits = [e for e in events if e["event_type"] == "checkpoint_commit"]
    for commit in commits:
        refs = commit["payload"]["evidence_refs"]
        assert set(refs) == {"artifacts", "commit_hash", "work_items"}
        assert len(refs["commit_hash"]) == 40
    recovered = {e["task_id"] for e in events if e["event_type"] == "recovery_complete"}
    assert 0 < len(recovered) < 30  # sometimes, not always
    explained = [e for e in events if "explanation" in e["payload"]]
    assert 0 < len(explained) < len(events)


def test_runs_are_interleaved_with_at_most_concurrency_in_flight(events: list[dict[str, Any]]) -> None:
    first: dict[str, int] = {}
    last: dict[str, int] = {}
    for i, event in enumerate(events):
        first.setdefault(event["task_id"], i)
        last[event["task_id"]] = i
    in_flight = [sum(first[t] <= i <= last[t] for t in first) for i in range(len(events))]
    assert max(in_flight) == 5
    switches = sum(a["task_id"] != b["task_id"] for a, b in zip(events, events[1:], strict=False))
    assert switches > len(events) // 2


def test_concurrency_one_runs_the_tasks_one_after_another() -> None:
    _, events = run(tasks=4, concurrency=1)
    order = [e["task_id"] for e in events]
    assert order == sorted(order, key=lambda t: t.split("-")[1])


def test_a_seed_repeats_the_run_and_another_seed_does_not() -> None:
    assert run(seed=123) == run(seed=123)
    assert run(seed=123)[1] != run(seed=124)[1]


def test_rate_paces_the_events() -> None:
    count, _ = run(tasks=4, seed=1)
    assert 100 < count < 400
    started = time.monotonic()
    assert run(tasks=4, seed=1, rate=2000)[0] == count
    # Event k is not emitted before k/rate: a lower bound only, a busy machine may be slower.
    assert time.monotonic() - started >= 0.9 * (count - 1) / 2000


def test_pacing_sleeps_to_a_deadline_so_slow_emits_do_not_add_up(monkeypatch: pytest.MonkeyPatch) -> None:
    now = [0.0]

    def sleep(seconds: float) -> None:
        assert seconds > 0
        now[0] += seconds

    monkeypatch.setattr(simulate_module, "time", SimpleNamespace(monotonic=lambda: now[0], sleep=sleep))
    emitter = RecordingEmitter()
    record = emitter.emit

    def slow_emit(*args: Any, **kwargs: Any) -> None:
        now[0] += 0.0002  # each emit takes 0.2 ms of the 0.5 ms between events at 2000/s
        record(*args, **kwargs)

    emitter.emit = slow_emit  # type: ignore[method-assign]
    count = simulate(emitter, tasks=4, concurrency=2, rate=2000, seed=1, prefix="t")
    assert now[0] == pytest.approx((count - 1) / 2000 + 0.0002)


@pytest.mark.parametrize("rate", [0, -1])
def test_rate_zero_or_less_never_sleeps(monkeypatch: pytest.MonkeyPatch, rate: float) -> None:
    def no_sleep(seconds: float) -> None:
        raise AssertionError("slept")

    monkeypatch.setattr(simulate_module, "time", SimpleNamespace(monotonic=time.monotonic, sleep=no_sleep))
    assert run(tasks=3, rate=rate)[0] > 0
