"""Helpers of the read API's tests: events through the real worker, an in-process HTTP client."""

import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from starlette.exceptions import StarletteDeprecationWarning

from taskevents.emitter import Emitter
from taskevents.ingest.worker import Worker
from taskevents.settings import Settings

with warnings.catch_warnings():
    # Starlette asks for `httpx2` and warns when it finds only `httpx` (a dependency of ours, for
    # httpx-sse); the TestClient works the same. The warning is raised once, at this import.
    warnings.simplefilter("ignore", StarletteDeprecationWarning)
    from fastapi.testclient import TestClient

from taskevents.api.app import create_app  # noqa: E402

__all__ = ["TestClient", "api_client", "emitter", "ingest", "stored"]


@contextmanager
def api_client(settings: Settings) -> Iterator[TestClient]:
    """The API in process, its lifespan run, through HTTP (`raise_server_exceptions=False`: a 500 is
    answered as a 500, the way a real client would see it)."""
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        yield client


@contextmanager
def emitter(settings: Settings) -> Iterator[Emitter]:
    em = Emitter(settings.redis_url, queue=settings.queue)
    try:
        yield em
    finally:
        assert em.close(10), "the emitter could not deliver everything to Redis"


def ingest(settings: Settings, emit: Callable[[Emitter], Any]) -> None:
    """`emit(emitter)` produces events; they go to Redis and through the real worker into the store."""
    with emitter(settings) as em:
        emit(em)
    with Worker(settings) as worker:
        worker.drain()


def stored(settings: Settings, *events: dict[str, Any]) -> None:
    """Emit `events` (keyword arguments of Emitter.emit, actor defaulting to runner) and ingest them."""

    def emit(em: Emitter) -> None:
        for event in events:
            em.emit(**{"actor": "runner", **event})

    ingest(settings, emit)


def seqs(body: dict[str, Any]) -> list[int]:
    return [event["seq"] for event in body["events"]]
