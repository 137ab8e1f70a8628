"""The bodies the API builds as bytes match the response models that /docs and /openapi.json publish."""

import pytest
from pydantic import BaseModel, TypeAdapter

from taskevents.api.models import ErrorBody, Event, EventsPage, Graph, Health, Readiness, Snapshot, TasksPage
from taskevents.settings import Settings
from taskevents.simulate import simulate
from tests.api_helpers import TestClient, ingest

pytestmark = pytest.mark.redis_server


def test_every_body_matches_its_model(settings: Settings, api_http: TestClient) -> None:
    ingest(settings, lambda em: simulate(em, tasks=2, concurrency=2, rate=0, seed=5, prefix="m"))
    [task, _] = [t["task_id"] for t in api_http.get("/api/tasks").json()["tasks"]]
    bodies: list[tuple[str, type[BaseModel] | TypeAdapter]] = [
        ("/api/tasks?limit=1", TasksPage),
        (f"/api/tasks/{task}/events", EventsPage),
        (f"/api/tasks/{task}/events/latest", EventsPage),
        (f"/api/tasks/{task}/events/phase/executing", EventsPage),
        (f"/api/tasks/{task}/events/snapshot", Snapshot),
        (f"/api/tasks/{task}/graph", Graph),
        (f"/api/tasks/{task}/checkpoints", TypeAdapter(list[Event])),
        ("/api/events/health", Health),
        ("/api/ready", Readiness),
        ("/api/tasks/nope/graph", ErrorBody),
        ("/api/tasks?limit=0", ErrorBody),
    ]
    for path, model in bodies:
        response = api_http.get(path)
        assert response.headers["content-type"] == "application/json", path
        if isinstance(model, TypeAdapter):
            parsed = model.validate_json(response.content, strict=True)
            assert parsed
        else:
            parsed = model.model_validate_json(response.content, strict=True)
            # No field the model does not declare, none it declares missing.
            assert set(response.json()) == set(parsed.model_dump(by_alias=True)), path


def test_every_endpoint_documents_its_answer(api_http: TestClient) -> None:
    paths = api_http.get("/openapi.json").json()["paths"]
    expected = {
        "/api/tasks": "TasksPage",
        "/api/tasks/{task_id}/events": "EventsPage",
        "/api/tasks/{task_id}/events/latest": "EventsPage",
        "/api/tasks/{task_id}/events/phase/{phase}": "EventsPage",
        "/api/tasks/{task_id}/events/snapshot": "Snapshot",
        "/api/tasks/{task_id}/graph": "Graph",
        "/api/tasks/{task_id}/checkpoints": "Event",
        "/api/events/health": "Health",
        "/api/ready": "Readiness",
    }
    for path, model in expected.items():
        schema = paths[path]["get"]["responses"]["200"]["content"]["application/json"]["schema"]
        assert model in str(schema), (path, schema)
    assert "/metrics" in paths
