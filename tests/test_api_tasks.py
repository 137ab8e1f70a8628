"""GET /api/tasks: most recently active first, a cursor walked to the end, a status filter."""

import base64
from functools import partial

import pytest

from taskevents import lifecycle as lc
from taskevents.emitter import Emitter
from taskevents.settings import Settings
from tests.api_helpers import TestClient, ingest
from tests.pgserver import STORES

pytestmark = [pytest.mark.redis_server, pytest.mark.parametrize("settings", STORES, indirect=True)]


def run(em: Emitter, task: str, outcome: str | None) -> None:
    """A run that is still going (outcome None) or ended with `outcome`."""
    lc.emit_runner_spawn(task, f"{task}-root", runner_pid=1, runner_version="1.0", emitter=em)
    lc.emit_phase_enter(task, f"{task}-plan", "planning", parent_span_id=f"{task}-root", emitter=em)
    if outcome is not None:
        lc.emit_runner_exit(task, f"{task}-root", 0 if outcome == "succeeded" else 1, outcome, emitter=em)


OUTCOMES = {"a": "succeeded", "b": None, "c": "failed", "d": None, "e": "succeeded", "f": None, "g": "failed"}


@pytest.fixture
def seven_tasks(settings: Settings) -> None:
    # One ingest per task: each batch has its own created_at, so last_at orders them a..g. Two tasks
    # in one batch would share last_at; the task_id then breaks the tie.
    for task, outcome in OUTCOMES.items():
        ingest(settings, partial(run, task=task, outcome=outcome))


def walk(client: TestClient, limit: int, **params: str) -> tuple[list[dict], int]:
    tasks: list[dict] = []
    cursor, pages = None, 0
    while True:
        query = {"limit": limit, **params, **({"cursor": cursor} if cursor else {})}
        body = client.get("/api/tasks", params=query).json()
        pages += 1
        tasks += body["tasks"]
        cursor = body["next_cursor"]
        if cursor is None:
            return tasks, pages


def order_key(task: dict) -> tuple[str, str]:
    return task["last_at"], task["task_id"]


@pytest.mark.usefixtures("seven_tasks")
@pytest.mark.parametrize("limit", [1, 3, 7, 500])
def test_the_cursor_walks_every_task_once_most_recent_first(api_http: TestClient, limit: int) -> None:
    tasks, pages = walk(api_http, limit)
    assert sorted(t["task_id"] for t in tasks) == list("abcdefg")
    assert tasks == sorted(tasks, key=order_key, reverse=True)
    assert pages == -(-7 // limit)  # next_cursor is null exactly at the end
    g = tasks[0]
    assert g == {
        "task_id": g["task_id"],
        "latest_seq": 3,
        "event_count": 3,
        "current_phase": "planning",
        "status": "failed",
        "first_at": g["first_at"],
        "last_at": g["last_at"],
        "exit_reason": "failed",  # its runner_exit said only its outcome
        "failed_items": 0,
        "archived": False,
    }


@pytest.mark.usefixtures("seven_tasks")
@pytest.mark.parametrize("status", ["running", "succeeded", "failed"])
def test_the_status_filter(api_http: TestClient, status: str) -> None:
    expected = {task for task, outcome in OUTCOMES.items() if (outcome or "running") == status}
    for limit in (1, 2, 50):
        tasks, _ = walk(api_http, limit, status=status)
        assert {t["task_id"] for t in tasks} == expected and len(tasks) == len(expected)
        assert {t["status"] for t in tasks} == {status}
        assert tasks == sorted(tasks, key=order_key, reverse=True)


def test_a_task_that_gets_new_events_moves_to_the_front(settings: Settings, api_http: TestClient) -> None:
    ingest(settings, lambda em: run(em, "old", None))
    ingest(settings, lambda em: run(em, "new", None))
    assert [t["task_id"] for t in api_http.get("/api/tasks").json()["tasks"]] == ["new", "old"]
    ingest(settings, lambda em: lc.emit_runner_heartbeat("old", "old-root", emitter=em))
    body = api_http.get("/api/tasks").json()
    assert [t["task_id"] for t in body["tasks"]] == ["old", "new"]
    assert body["tasks"][0]["latest_seq"] == 3 and body["next_cursor"] is None


def test_tasks_in_one_batch_are_ordered_by_task_id(settings: Settings, api_http: TestClient) -> None:
    def emit(em: Emitter) -> None:
        for task in ("x2", "x1", "x3"):
            run(em, task, None)

    ingest(settings, emit)
    tasks, _ = walk(api_http, 1)
    assert [t["task_id"] for t in tasks] == ["x3", "x2", "x1"]
    assert len({t["last_at"] for t in tasks}) == 1


def test_no_tasks_yet(settings: Settings, api_http: TestClient) -> None:
    ingest(settings, lambda em: None)  # the worker has created an empty store
    assert api_http.get("/api/tasks").json() == {"tasks": [], "next_cursor": None}


@pytest.mark.parametrize(
    "cursor",
    [
        "garbage!",
        "",
        base64.urlsafe_b64encode(b"not json").decode(),
        base64.urlsafe_b64encode(b'{"a": 1}').decode(),
        base64.urlsafe_b64encode(b'["only one"]').decode(),
        base64.urlsafe_b64encode(b"[1, 2]").decode(),
        "é",
        "x" * 2000,
    ],
)
def test_a_cursor_the_api_did_not_give_is_a_400(
    settings: Settings, api_http: TestClient, cursor: str
) -> None:
    ingest(settings, lambda em: run(em, "a", None))
    response = api_http.get("/api/tasks", params={"cursor": cursor})
    assert response.status_code == 400
    assert response.json()["code"] == "bad_parameter"
    assert response.json()["detail"].startswith("cursor")
