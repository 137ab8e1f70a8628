"""The API as operations see it: health, readiness with Redis up and down, /metrics, a read-only
connection pool, and the real `python -m taskevents.api` process serving while the real worker ingests."""

import re
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from taskevents.api.store import ReadStore
from taskevents.db import open_writer
from taskevents.ingest.localredis import RedisServer, free_port
from taskevents.schema import SCHEMA_VERSION
from taskevents.settings import Settings
from tests.api_helpers import TestClient, api_client, emitter, stored
from tests.helpers import start_worker, wait_for
from tests.pgserver import STORES

pytestmark = pytest.mark.redis_server


def test_health_is_the_originals(api_http: TestClient) -> None:
    from taskevents.api.app import package_version

    assert api_http.get("/api/events/health").json() == {
        "status": "ok",
        "service": "task_events_api",
        "version": package_version(),
    }


def test_ready_reports_store_redis_queue_and_worker(settings: Settings, api_http: TestClient) -> None:
    response = api_http.get("/api/ready")
    assert response.status_code == 503  # no store yet
    body = response.json()
    assert body["status"] == "unavailable" and body["code"] == "store_unavailable"
    assert body["store"]["ok"] is False and "does not exist" in body["store"]["detail"]
    assert body["redis"]["ok"] is True and body["worker"]["alive"] is False

    stored(settings, *({"task_id": "t", "event_type": "runner_heartbeat", "span_id": "r"} for _ in range(4)))
    with emitter(settings) as em:  # two more, waiting in the queue
        em.emit("t", "runner_heartbeat", span_id="r", actor="runner")
        em.emit("t", "runner_heartbeat", span_id="r", actor="runner")
    body = api_http.get("/api/ready").json()
    assert body["status"] == "ready" and body["code"] is None
    assert body["store"] == body["store"] | {"ok": True, "schema_version": SCHEMA_VERSION}
    assert body["store"]["last_commit_at"].endswith("Z")
    assert body["queue"] == {"depth": 2, "in_flight": 0, "dead_letters": 0}
    worker = body["worker"]
    assert worker["alive"] is True and 0 <= worker["heartbeat_age_seconds"] < 30
    assert worker["counters"]["ingested"] == 4 and worker["heartbeat"]["ingested"] == 4


def test_ready_without_redis_is_degraded_but_serving_and_quick(
    own_redis_server: RedisServer, tmp_path: Path
) -> None:
    settings = Settings(redis_url=own_redis_server.url, db=tmp_path / "events.db", queue="own:events")
    stored(settings, {"task_id": "t", "event_type": "runner_spawn", "span_id": "r"})
    with api_client(settings) as api:
        assert api.get("/api/ready").json()["status"] == "ready"
        own_redis_server.kill()
        started = time.monotonic()
        response = api.get("/api/ready")
        assert time.monotonic() - started < 3  # short Redis timeouts, no retries: never hangs
        assert response.status_code == 200  # the store is readable: this process can serve
        body = response.json()
        assert body["status"] == "degraded"
        assert body["redis"]["ok"] is False and "Redis unreachable" in body["redis"]["detail"]
        assert body["store"]["ok"] is True and body["queue"] is None and body["worker"] is None
        assert "redis" in body["detail"]
        assert api.get("/api/tasks/t/events").json()["total"] == 1  # reads do not need Redis
        metrics = api.get("/metrics")
        assert metrics.status_code == 200 and "taskevents_redis_up 0.0" in metrics.text


def sample(text: str, name: str, **labels: str) -> float:
    """The value of one sample in Prometheus text format."""
    for line in text.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            found = dict(re.findall(r'(\w+)="([^"]*)"', line.split(" ")[0]))
            if all(found.get(k) == v for k, v in labels.items()):
                return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"no sample {name} {labels} in /metrics")


def test_metrics_count_requests_by_route_and_export_the_workers_counters(
    settings: Settings, api_http: TestClient
) -> None:
    stored(settings, *({"task_id": "t", "event_type": "runner_heartbeat", "span_id": "r"} for _ in range(5)))
    for _ in range(3):
        api_http.get("/api/tasks/t/events")
    api_http.get("/api/tasks/other/events")
    api_http.get("/no/such/path")
    text = api_http.get("/metrics").text
    route = "/api/tasks/{task_id}/events"  # the template, never the task id
    assert sample(text, "taskevents_api_requests_total", route=route, status="200") == 3
    assert sample(text, "taskevents_api_requests_total", route=route, status="404") == 1
    assert sample(text, "taskevents_api_requests_total", route="<unmatched>", status="404") == 1
    assert sample(text, "taskevents_api_request_duration_seconds_count", route=route, status="200") == 3
    assert (
        sample(text, "taskevents_api_request_duration_seconds_bucket", route=route, status="200", le="+Inf")
        == 3
    )
    assert "task_id=" not in text and '"t"' not in text
    assert sample(text, "taskevents_worker_ingested_total") == 5
    assert sample(text, "taskevents_worker_batches_total") >= 1
    assert sample(text, "taskevents_worker_mean_batch_size") > 0
    assert sample(text, "taskevents_queue_depth") == 0
    assert sample(text, "taskevents_queue_in_flight") == 0
    assert sample(text, "taskevents_dead_letters") == 0
    assert sample(text, "taskevents_worker_up") == 1
    assert 0 <= sample(text, "taskevents_worker_heartbeat_age_seconds") < 30
    assert sample(text, "taskevents_redis_up") == 1 and sample(text, "taskevents_store_up") == 1
    assert 0 <= sample(text, "taskevents_store_last_commit_age_seconds") < 60


def test_the_store_connection_cannot_write(settings: Settings, api_http: TestClient) -> None:
    stored(settings, {"task_id": "t", "event_type": "runner_spawn", "span_id": "r"})
    store: ReadStore = api_http.app.state.store  # type: ignore[attr-defined]
    with store.transaction() as conn:
        assert conn.execute("PRAGMA query_only").fetchone()[0] == 1
        with pytest.raises(sqlite3.OperationalError, match="readonly|read-only|query_only"):
            conn.execute("UPDATE tasks SET status = 'failed'")
        with pytest.raises(sqlite3.OperationalError, match="readonly|read-only|query_only"):
            conn.execute("DELETE FROM task_events")
    # Even with query_only switched off, the file was opened mode=ro.
    with store.transaction() as conn:
        conn.execute("PRAGMA query_only = 0")
        with pytest.raises(sqlite3.OperationalError, match="readonly"):
            conn.execute("INSERT INTO ingest_state (id, last_batch_id) VALUES (2, 0)")
        conn.execute("PRAGMA query_only = 1")
    assert api_http.get("/api/tasks/t/events").json()["events"][0]["event_type"] == "runner_spawn"


def test_connections_are_kept_not_opened_per_request(settings: Settings, api_http: TestClient) -> None:
    stored(settings, {"task_id": "t", "event_type": "runner_spawn", "span_id": "r"})
    store: ReadStore = api_http.app.state.store  # type: ignore[attr-defined]
    with store.transaction() as conn:
        first = conn
    for _ in range(50):
        assert api_http.get("/api/tasks/t/events").status_code == 200
    with store.transaction() as conn:
        assert conn is first
    assert store.opened == 1


def test_the_pool_is_bounded(settings: Settings) -> None:
    open_writer(settings.sqlite_path).close()  # the store, as the worker creates it
    store = ReadStore(settings.sqlite_path, size=2)
    entered, release = threading.Barrier(3), threading.Event()

    def hold() -> None:
        with store.transaction():
            entered.wait()
            release.wait(10)

    holders = [threading.Thread(target=hold) for _ in range(2)]
    for t in holders:
        t.start()
    entered.wait()
    started = time.monotonic()
    third = threading.Thread(target=lambda: store.run(lambda conn: None))
    third.start()
    third.join(0.3)
    assert third.is_alive()  # waits for a connection instead of opening a third
    release.set()
    third.join(10)
    for t in holders:
        t.join(10)
    assert time.monotonic() - started >= 0.3
    assert store.opened == 2
    store.close()


# --- the real processes --------------------------------------------------------------------------


def start_api(settings: Settings, port: int) -> subprocess.Popen[bytes]:
    argv = [sys.executable, "-m", "taskevents.api", "--host", "127.0.0.1", "--port", str(port)]
    argv += ["--db", str(settings.db), "--redis-url", settings.redis_url, "--queue", settings.queue]
    return subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


@pytest.fixture
def api_process(settings: Settings) -> Iterator[str]:
    """`python -m taskevents.api` on a free port; yields its base URL. Stopped with SIGTERM: graceful."""
    port = free_port()
    proc = start_api(settings, port)
    base = f"http://127.0.0.1:{port}"

    def answers() -> bool:
        assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
        try:
            return httpx.get(f"{base}/api/events/health", timeout=1).status_code == 200
        except httpx.TransportError:
            return False

    wait_for(answers, timeout=30, interval=0.1)
    yield base
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=15)
    # uvicorn finishes the requests in hand, runs the lifespan's shutdown, then re-raises the signal.
    assert proc.returncode in (0, -signal.SIGTERM), err.decode()
    assert "Application shutdown complete" in err.decode()


@pytest.mark.parametrize("settings", STORES, indirect=True)
def test_the_process_starts_before_the_store_and_serves_once_the_worker_made_it(
    settings: Settings, api_process: str
) -> None:
    with httpx.Client(base_url=api_process, timeout=5) as http:
        assert http.get("/api/tasks/t/events").json()["code"] == "store_unavailable"
        assert http.get("/api/ready").status_code == 503
        assert http.get("/docs").status_code == 200
        assert "/api/tasks/{task_id}/events" in http.get("/openapi.json").json()["paths"]
        worker = start_worker(settings)
        try:
            with emitter(settings) as em:
                em.emit("t", "runner_spawn", span_id="r", actor="runner")
            wait_for(lambda: http.get("/api/tasks/t/events").status_code == 200, timeout=30)
            assert http.get("/api/tasks/t/events").json()["events"][0]["seq"] == 1
            wait_for(lambda: http.get("/api/ready").json()["status"] == "ready", timeout=30)
        finally:
            worker.terminate()
            worker.wait(15)


@pytest.mark.parametrize("settings", STORES, indirect=True)
def test_readers_never_see_a_gap_while_the_worker_ingests(settings: Settings, api_process: str) -> None:
    small_batches = settings.model_copy(update={"batch_size": 7})  # many commits while reading
    tasks, per_task = [f"task-{i}" for i in range(4)], 600
    worker = start_worker(small_batches)
    problems: list[str] = []
    done = threading.Event()

    def produce() -> None:
        with emitter(settings) as em:
            for n in range(per_task):
                for task in tasks:
                    em.emit(task, "work_item_progress", span_id="s", actor="runner", payload={"n": n})
                if n % 50 == 0:
                    em.flush(5)
                    time.sleep(0.01)  # let commits interleave with reads

    def follow(task: str) -> None:
        """Walk /events with the cursor, as a UI does, checking every page against the last."""
        since = 0
        with httpx.Client(base_url=api_process, timeout=10) as http:
            while since < per_task and not done.is_set():
                response = http.get(f"/api/tasks/{task}/events", params={"since_seq": since, "limit": 37})
                if response.status_code in (404, 503):  # not stored yet
                    time.sleep(0.01)
                    continue
                body = response.json()
                got = [e["seq"] for e in body["events"]]
                if got != list(range(since + 1, since + 1 + len(got))):
                    problems.append(f"{task}: after {since} got {got}")
                if body["has_more"] != (body["total"] > (got[-1] if got else since)):
                    problems.append(f"{task}: has_more {body['has_more']} with total {body['total']}")
                since = body["next_seq"]
                snap = http.get(f"/api/tasks/{task}/events/snapshot", params={"limit": 20}).json()
                window = [e["seq"] for e in snap["events"]]
                if window != list(range(snap["latest_seq"] - len(window) + 1, snap["latest_seq"] + 1)):
                    problems.append(f"{task}: snapshot window {window} at latest {snap['latest_seq']}")
                if snap["total_events"] != snap["latest_seq"]:
                    problems.append(f"{task}: snapshot total {snap['total_events']} != {snap['latest_seq']}")
        if since != per_task:
            problems.append(f"{task}: stopped at {since}")

    try:
        readers = [threading.Thread(target=follow, args=(task,)) for task in tasks for _ in range(2)]
        for reader in readers:
            reader.start()
        produce()
        for reader in readers:
            reader.join(90)
        done.set()
    finally:
        done.set()
        worker.terminate()
        worker.wait(15)
    assert not problems, problems[:10]
