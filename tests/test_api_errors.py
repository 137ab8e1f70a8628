"""Every error has one shape, {"detail", "code"}: 400 for each bad parameter, 404 for an unknown task on
every task endpoint and for unknown paths, 503 while the store is missing. Never a 500 or a 422."""

import os
import sqlite3

import pytest

from taskevents.ingest.worker import Worker
from taskevents.settings import Settings
from tests.api_helpers import TestClient, stored

pytestmark = pytest.mark.redis_server

TASK_ENDPOINTS = [
    "/api/tasks/{}/events",
    "/api/tasks/{}/events/latest",
    "/api/tasks/{}/events/snapshot",
    "/api/tasks/{}/events/phase/planning",
    "/api/tasks/{}/checkpoints",
    "/api/tasks/{}/graph",
]


def assert_error(response: object, status: int, code: str) -> str:
    assert response.status_code == status, response.text  # type: ignore[attr-defined]
    body = response.json()  # type: ignore[attr-defined]
    assert set(body) == {"detail", "code"}
    assert body["code"] == code and isinstance(body["detail"], str) and body["detail"]
    return str(body["detail"])


@pytest.fixture
def one_task(settings: Settings) -> None:
    stored(settings, {"task_id": "t", "event_type": "runner_spawn", "span_id": "r"})


@pytest.mark.usefixtures("one_task")
@pytest.mark.parametrize("path", TASK_ENDPOINTS)
def test_an_unknown_task_is_a_404_on_every_task_endpoint(api_http: TestClient, path: str) -> None:
    assert api_http.get(path.format("t")).status_code == 200
    detail = assert_error(api_http.get(path.format("nope")), 404, "task_not_found")
    assert "nope" in detail


BAD_PARAMETERS = [
    ("/api/tasks/t/events?limit=0", "limit"),
    ("/api/tasks/t/events?limit=1001", "limit"),
    ("/api/tasks/t/events?limit=abc", "limit"),
    ("/api/tasks/t/events?limit=", "limit"),
    ("/api/tasks/t/events?limit=1.5", "limit"),
    ("/api/tasks/t/events?since_seq=-1", "since_seq"),
    ("/api/tasks/t/events?since_seq=abc", "since_seq"),
    ("/api/tasks/t/events?since_seq=9223372036854775808", "since_seq"),  # past SQLite's integers
    ("/api/tasks/t/events?since_seq=99999999999999999999999999999", "since_seq"),
    ("/api/tasks/t/events/latest?limit=0", "limit"),
    ("/api/tasks/t/events/latest?limit=501", "limit"),
    ("/api/tasks/t/events/latest?limit=x", "limit"),
    ("/api/tasks/t/events/snapshot?limit=0", "limit"),
    ("/api/tasks/t/events/snapshot?limit=501", "limit"),
    ("/api/tasks/t/events/phase/lunch", "phase"),
    ("/api/tasks/t/events/phase/PLANNING", "phase"),
    ("/api/tasks/t/events/phase/planning?limit=1001", "limit"),
    ("/api/tasks/t/events/phase/planning?since_seq=-5", "since_seq"),
    ("/api/tasks/t/checkpoints?limit=0", "limit"),
    ("/api/tasks/t/checkpoints?limit=1001", "limit"),
    ("/api/tasks/t/checkpoints?since_seq=-1", "since_seq"),
    ("/api/tasks/t/graph?limit=0", "limit"),
    ("/api/tasks/t/graph?limit=50001", "limit"),
    ("/api/tasks?limit=0", "limit"),
    ("/api/tasks?limit=501", "limit"),
    ("/api/tasks?status=done", "status"),
    ("/api/tasks?cursor=%%%", "cursor"),
    ("/api/tasks?since=0.0", "since"),  # a number is not an instant, though pydantic would read one
    ("/api/tasks?since=1700000000", "since"),
    ("/api/tasks?until=-1e3", "until"),
    ("/api/tasks?since=yesterday", "since"),
]


@pytest.mark.usefixtures("one_task")
@pytest.mark.parametrize(("url", "name"), BAD_PARAMETERS)
def test_a_bad_parameter_is_a_400_that_names_it(api_http: TestClient, url: str, name: str) -> None:
    detail = assert_error(api_http.get(url), 400, "bad_parameter")
    assert detail.startswith(f"{name}:"), detail


@pytest.mark.usefixtures("one_task")
def test_an_unknown_task_with_a_bad_parameter_is_a_400(api_http: TestClient) -> None:
    # Parameters are checked first: the client's request is wrong whatever the store holds.
    assert_error(api_http.get("/api/tasks/nope/events?limit=0"), 400, "bad_parameter")


@pytest.mark.usefixtures("one_task")
@pytest.mark.parametrize(
    "path", ["/nope", "/api", "/api/tasks/t", "/api/tasks/t/events/phase", "/api/tasks/t/events/extra/x"]
)
def test_an_unknown_path_is_a_404_in_the_same_shape(api_http: TestClient, path: str) -> None:
    assert_error(api_http.get(path), 404, "not_found")


@pytest.mark.usefixtures("one_task")
def test_a_wrong_method_is_a_405_in_the_same_shape(api_http: TestClient) -> None:
    assert_error(api_http.post("/api/tasks/t/events"), 405, "method_not_allowed")
    assert_error(api_http.delete("/api/tasks"), 405, "method_not_allowed")


def test_a_missing_store_is_a_503_until_the_worker_creates_it(
    settings: Settings, api_http: TestClient
) -> None:
    assert not settings.sqlite_path.exists()
    for path in [*TASK_ENDPOINTS, "/api/tasks"]:
        response = api_http.get(path.format("t"))
        detail = assert_error(response, 503, "store_unavailable")
        assert "does not exist" in detail
        assert response.headers["retry-after"] == "1"
    assert api_http.get("/api/events/health").status_code == 200  # the process itself is alive
    # The worker starts, creates the store and ingests: the same API process serves it, unaided.
    stored(settings, {"task_id": "t", "event_type": "runner_spawn", "span_id": "r"})
    assert api_http.get("/api/tasks/t/events").json()["total"] == 1


def test_a_store_without_schema_is_a_503(settings: Settings, api_http: TestClient) -> None:
    sqlite3.connect(settings.sqlite_path).close()  # an empty file: what a worker leaves before it migrates
    detail = assert_error(api_http.get("/api/tasks/t/events"), 503, "store_unavailable")
    assert "not initialised" in detail
    with Worker(settings) as worker:
        worker.take_over()  # the writer migrates the store when it takes it over
    assert_error(api_http.get("/api/tasks/t/events"), 404, "task_not_found")


def test_a_store_that_is_removed_and_recreated_is_followed(settings: Settings, api_http: TestClient) -> None:
    stored(settings, *({"task_id": "t", "event_type": "runner_heartbeat", "span_id": "r"} for _ in range(3)))
    assert api_http.get("/api/tasks/t/events").json()["total"] == 3
    for suffix in ("", "-wal", "-shm"):
        path = settings.sqlite_path.with_name(settings.sqlite_path.name + suffix)
        if path.exists():
            os.remove(path)
    assert_error(api_http.get("/api/tasks/t/events"), 503, "store_unavailable")
    stored(settings, {"task_id": "t", "event_type": "runner_heartbeat", "span_id": "r"})
    assert api_http.get("/api/tasks/t/events").json()["total"] == 1  # the new file, not the old one


def test_a_corrupt_store_is_a_503_not_a_500(settings: Settings, api_http: TestClient) -> None:
    settings.sqlite_path.write_bytes(b"this is not a SQLite database" * 200)
    assert_error(api_http.get("/api/tasks/t/events"), 503, "store_unavailable")
    assert_error(api_http.get("/api/tasks"), 503, "store_unavailable")
    assert api_http.get("/api/ready").status_code == 503


def test_the_openapi_schema_documents_400_not_422(api_http: TestClient) -> None:
    schema = api_http.get("/openapi.json").json()
    assert "HTTPValidationError" not in schema["components"]["schemas"]
    for path, operations in schema["paths"].items():
        for operation in operations.values():
            assert "422" not in operation["responses"], path
            if path.startswith("/api/tasks/"):
                for status in ("400", "404", "503"):
                    ref = operation["responses"][status]["content"]["application/json"]["schema"]["$ref"]
                    assert ref.endswith("/ErrorBody"), (path, status)
