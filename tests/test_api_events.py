"""Pages of events through HTTP, on data that went through the real worker: /events, /latest, /phase,
/checkpoints. has_more at its boundaries, cursors walked to the end, next_seq on empty pages."""

import re

import pytest

from taskevents import lifecycle as lc
from taskevents.emitter import Emitter
from taskevents.settings import Settings
from tests.api_helpers import TestClient, ingest, seqs, stored
from tests.pgserver import STORES

pytestmark = [pytest.mark.redis_server, pytest.mark.parametrize("settings", STORES, indirect=True)]


PHASE_OF = ("planning", "executing", None, "executing", "verifying")  # event i has PHASE_OF[i % 5]


def store_task(settings: Settings, task: str, n: int) -> None:
    """Events 1..n of `task`; event i (1-based) has phase PHASE_OF[(i - 1) % 5] and payload {"i": i}."""
    stored(
        settings,
        *(
            {
                "task_id": task,
                "event_type": "work_item_progress",
                "span_id": "s",
                "phase": PHASE_OF[i % 5],
                "payload": {"i": i + 1},
            }
            for i in range(n)
        ),
    )


def phase_seqs(n: int, phase: str) -> list[int]:
    return [i + 1 for i in range(n) if PHASE_OF[i % 5] == phase]


def test_an_event_has_exactly_the_stored_fields(settings: Settings, api_http: TestClient) -> None:
    stored(
        settings,
        {
            "task_id": "t",
            "event_type": "work_item_start",
            "span_id": "wi",
            "parent_span_id": "root",
            "phase": "executing",
            "payload": {"work_item_id": "w1", "nested": {"a": [1, 2]}},
            "event_uid": "uid-1",
        },
    )
    body = api_http.get("/api/tasks/t/events").json()
    assert body["total"] == 1 and body["has_more"] is False and body["next_seq"] == 1
    [event] = body["events"]
    assert list(event) == [
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
    ]
    assert isinstance(event["event_id"], int)
    assert event | {"event_id": 0, "created_at": "", "emitted_at": ""} == {
        "event_id": 0,
        "task_id": "t",
        "seq": 1,
        "event_type": "work_item_start",
        "phase": "executing",
        "actor": "runner",
        "span_id": "wi",
        "parent_span_id": "root",
        "payload": {"work_item_id": "w1", "nested": {"a": [1, 2]}},  # an object, not a string
        "created_at": "",
        "event_uid": "uid-1",
        "emitted_at": "",
    }
    ms_utc = r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$"
    assert re.match(ms_utc, event["created_at"]) and re.match(ms_utc, event["emitted_at"])


@pytest.mark.parametrize(
    ("since_seq", "limit", "page", "has_more"),
    [
        (0, 10, list(range(1, 11)), False),  # exactly `limit` left
        (0, 9, list(range(1, 10)), True),  # `limit + 1` left
        (5, 5, list(range(6, 11)), False),
        (4, 5, list(range(5, 10)), True),
        (9, 1, [10], False),
        (8, 1, [9], True),
        (0, 1000, list(range(1, 11)), False),
    ],
)
def test_has_more_is_exact_at_the_boundaries(
    settings: Settings, api_http: TestClient, since_seq: int, limit: int, page: list[int], has_more: bool
) -> None:
    store_task(settings, "t", 10)
    body = api_http.get("/api/tasks/t/events", params={"since_seq": since_seq, "limit": limit}).json()
    assert seqs(body) == page
    assert body["has_more"] is has_more
    assert body["next_seq"] == page[-1]
    assert body["total"] == 10
    assert [e["payload"]["i"] for e in body["events"]] == page  # seq follows emission order


@pytest.mark.parametrize("phase", ["executing", "planning"])
def test_phase_has_more_is_exact_at_the_boundaries(
    settings: Settings, api_http: TestClient, phase: str
) -> None:
    store_task(settings, "t", 25)
    mine = phase_seqs(25, phase)  # executing: 10 events, planning: 5
    n = len(mine)
    for since_seq, limit, has_more in [
        (0, n, False),  # exactly `limit` left
        (0, n - 1, True),  # `limit + 1` left
        (mine[0], n - 1, False),
        (mine[0], n - 2, True),
        (mine[-1], 3, False),
    ]:
        body = api_http.get(
            f"/api/tasks/t/events/phase/{phase}", params={"since_seq": since_seq, "limit": limit}
        ).json()
        expected = [s for s in mine if s > since_seq][:limit]
        assert seqs(body) == expected, (since_seq, limit)
        assert body["has_more"] is has_more, (since_seq, limit)
        assert body["total"] == n  # the phase's events, not the task's
        assert body["next_seq"] == (expected[-1] if expected else since_seq)
        assert {e["phase"] for e in body["events"]} <= {phase}


def walk(client: TestClient, path: str, limit: int) -> tuple[list[int], int]:
    """Follow next_seq from 0 until has_more is false; the seqs seen and the number of pages."""
    seen: list[int] = []
    since, pages = 0, 0
    while True:
        body = client.get(path, params={"since_seq": since, "limit": limit}).json()
        pages += 1
        seen += seqs(body)
        assert body["next_seq"] >= since
        since = body["next_seq"]
        if not body["has_more"]:
            return seen, pages


@pytest.mark.parametrize("limit", [1, 7, 10, 101])
def test_walking_the_cursor_returns_every_event_once(
    settings: Settings, api_http: TestClient, limit: int
) -> None:
    store_task(settings, "t", 101)
    stored(
        settings, *({"task_id": "other", "event_type": "runner_heartbeat", "span_id": "o"} for _ in range(5))
    )
    seen, pages = walk(api_http, "/api/tasks/t/events", limit)
    assert seen == list(range(1, 102))
    assert pages == -(-101 // limit)  # no empty last page: has_more was exact
    for phase in ("planning", "executing", "verifying"):
        seen, _ = walk(api_http, f"/api/tasks/t/events/phase/{phase}", limit)
        assert seen == phase_seqs(101, phase)


def test_an_empty_page_gives_back_the_cursor_it_was_asked(settings: Settings, api_http: TestClient) -> None:
    store_task(settings, "t", 3)  # no event of phase "recovery"
    for since_seq in (3, 1000):
        body = api_http.get("/api/tasks/t/events", params={"since_seq": since_seq}).json()
        assert body == {"events": [], "total": 3, "has_more": False, "next_seq": since_seq}
    body = api_http.get("/api/tasks/t/events/phase/recovery").json()
    assert body == {"events": [], "total": 0, "has_more": False, "next_seq": 0}
    body = api_http.get("/api/tasks/t/events/phase/recovery", params={"since_seq": 2}).json()
    assert body["next_seq"] == 2


def test_defaults_are_the_originals(settings: Settings, api_http: TestClient) -> None:
    store_task(settings, "t", 120)
    assert len(api_http.get("/api/tasks/t/events").json()["events"]) == 100
    assert len(api_http.get("/api/tasks/t/events/latest").json()["events"]) == 50
    assert len(api_http.get("/api/tasks/t/events/phase/executing").json()["events"]) == 48
    assert len(api_http.get("/api/tasks/t/events/snapshot").json()["events"]) == 100


def test_latest_is_newest_first(settings: Settings, api_http: TestClient) -> None:
    store_task(settings, "t", 30)
    body = api_http.get("/api/tasks/t/events/latest", params={"limit": 10}).json()
    assert seqs(body) == list(range(30, 20, -1))
    assert body["has_more"] is True  # older events exist beyond the page
    assert body["next_seq"] == 30  # the newest: what to pass as since_seq to follow the task
    assert body["total"] == 30
    for limit, has_more in ((29, True), (30, False), (31, False)):
        body = api_http.get("/api/tasks/t/events/latest", params={"limit": limit}).json()
        assert seqs(body) == list(range(30, 30 - min(limit, 30), -1))
        assert body["has_more"] is has_more
    # It follows new events.
    store_task(settings, "t", 2)
    assert seqs(api_http.get("/api/tasks/t/events/latest", params={"limit": 3}).json()) == [32, 31, 30]


def run_with_checkpoints(em: Emitter) -> None:
    lc.emit_runner_spawn("t", "root", runner_pid=1, runner_version="1.0", emitter=em)
    lc.emit_phase_enter("t", "plan", "planning", parent_span_id="root", emitter=em)
    lc.emit_checkpoint_commit("t", "plan", "cp-1", "plan", "planning", {"artifacts": ["a1"]}, emitter=em)
    lc.emit_checkpoint_verified("t", "plan", "cp-1", "planning", emitter=em)
    lc.emit_phase_exit("t", "plan", "planning", emitter=em)
    lc.emit_phase_enter("t", "exec", "executing", parent_span_id="root", emitter=em)
    lc.emit_evidence_collected("t", "exec", "executing", "diff", "ev-1", emitter=em)
    lc.emit_checkpoint_commit(
        "t", "exec", "cp-2", "execution", "executing", {"artifacts": ["ev-1"]}, emitter=em
    )
    lc.emit_checkpoint_invalid("t", "exec", "cp-2", "executing", "hash_mismatch", emitter=em)
    lc.emit_runner_exit("t", "root", 1, "failed", emitter=em)


def test_checkpoints_are_the_three_checkpoint_types_in_seq_order(
    settings: Settings, api_http: TestClient
) -> None:
    ingest(settings, run_with_checkpoints)
    response = api_http.get("/api/tasks/t/checkpoints")
    assert response.headers["x-has-more"] == "false"
    body = response.json()
    assert [(e["seq"], e["event_type"]) for e in body] == [
        (3, "checkpoint_commit"),
        (4, "checkpoint_verified"),
        (8, "checkpoint_commit"),
        (9, "checkpoint_invalid"),
    ]
    assert body[0]["payload"]["checkpoint_id"] == "cp-1"
    assert body[0]["payload"]["checkpoint_type"] == "plan"
    assert body[0]["payload"]["evidence_refs"] == {"artifacts": ["a1"]}
    # Paged: since_seq is exclusive, X-Has-More exact.
    first = api_http.get("/api/tasks/t/checkpoints", params={"limit": 2})
    assert [e["seq"] for e in first.json()] == [3, 4] and first.headers["x-has-more"] == "true"
    rest = api_http.get("/api/tasks/t/checkpoints", params={"since_seq": 4, "limit": 2})
    assert [e["seq"] for e in rest.json()] == [8, 9] and rest.headers["x-has-more"] == "false"
    assert api_http.get("/api/tasks/t/checkpoints", params={"since_seq": 9}).json() == []


def test_task_ids_are_matched_exactly(settings: Settings, api_http: TestClient) -> None:
    odd = "run 42: ünïcode & spaces?#"
    stored(settings, {"task_id": odd, "event_type": "runner_spawn", "span_id": "r"})
    body = api_http.get(
        "/api/tasks/" + "run%2042%3A%20%C3%BCn%C3%AFcode%20%26%20spaces%3F%23" + "/events"
    ).json()
    assert seqs(body) == [1] and body["events"][0]["task_id"] == odd
    assert api_http.get("/api/tasks/run%2042/events").status_code == 404
