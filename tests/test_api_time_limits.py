"""Every read is bounded in time, and a large one never runs on the event loop for long.

A page of 1,000 events of 60 KiB each (60 MB of JSON) is stopped on the loop after its inline budget
and served from a worker thread; a read past TASKEVENTS_QUERY_TIMEOUT is stopped by SQLite and
answered 503 `query_timeout`, and the connection it used serves the next request.
"""

import pytest

from taskevents.api.deps import INLINE_BUDGET
from taskevents.emitter import Emitter
from taskevents.settings import Settings
from tests.api_helpers import api_client, ingest

pytestmark = [pytest.mark.redis_server, pytest.mark.slow]

PAD = 60 * 1024


def big_task(settings: Settings) -> None:
    def emit(em: Emitter) -> None:
        for i in range(1000):
            em.emit(
                "big", "runner_heartbeat", span_id="r", actor="runner", payload={"i": i, "pad": "x" * PAD}
            )
        em.emit("small", "runner_heartbeat", span_id="r", actor="runner")

    ingest(settings, emit)


@pytest.fixture
def big(settings: Settings) -> Settings:
    big_task(settings)
    return settings


def test_a_large_page_is_moved_off_the_event_loop_and_served_whole(big: Settings) -> None:
    with api_client(big) as http:
        runner = http.app.state.reads  # type: ignore[attr-defined]
        small = http.get("/api/tasks/small/events")
        assert small.status_code == 200 and runner.moved == 0  # short: read inline
        page = http.get("/api/tasks/big/events", params={"limit": 1000})
        assert page.status_code == 200
        body = page.json()
        assert [e["payload"]["i"] for e in body["events"]] == list(range(1000))
        assert len(page.content) > 1000 * PAD
        assert runner.moved == 1  # stopped inline after INLINE_BUDGET, read again on a thread
    assert INLINE_BUDGET <= 0.02


def test_a_read_past_the_query_timeout_is_a_503_and_the_connection_serves_on(big: Settings) -> None:
    settings = big.model_copy(update={"query_timeout": 0.02})
    with api_client(settings) as http:
        for _ in range(3):  # each time, on the same pooled connections
            slow = http.get("/api/tasks/big/events", params={"limit": 1000})
            assert slow.status_code == 503, slow.status_code
            assert slow.json() == {
                "detail": "the read took longer than its limit of 0.02s and was stopped",
                "code": "query_timeout",
            }
            assert slow.headers["retry-after"] == "1"
            quick = http.get("/api/tasks/small/events")
            assert quick.status_code == 200 and quick.json()["total"] == 1
        store = http.app.state.store  # type: ignore[attr-defined]
        assert store.opened <= store.size  # no connection was thrown away for it
