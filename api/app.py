"""The application factory: `create_app(settings)` builds the read API; nothing happens at import.

State on `app.state`, for every router (the live stream's too):
- `settings`: the process's Settings;
- `store`: the pool of read-only connections (`store.run(read, *args)` on a thread): a ReadStore for
  SQLite (api/store.py), a PgReadStore for PostgreSQL (api/pgstore.py);
- `loop_store`: one read-only connection for reads made inline on the event loop (SQLite only);
- `primary`: with a PostgreSQL replica (TASKEVENTS_DB_READ_URL), the primary's pool, which the live
  stream reads when the replica lags; else None;
- `reads`: the ReadRunner endpoints read with (inline while short, else on the pool's threads);
- `redis`: a Redis client with short timeouts (for checks; it never blocks a request for long);
- `registry`: the Prometheus registry served at /metrics.
"""

import ctypes
import logging
import multiprocessing
import os
import signal
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from fastapi import APIRouter, FastAPI
from prometheus_client import CollectorRegistry
from prometheus_client.multiprocess import MultiProcessCollector

from taskevents.api import health, stream, tasks
from taskevents.api.archived import ArchivedReads
from taskevents.api.deps import ReadRunner
from taskevents.api.errors import install_error_handlers
from taskevents.api.metrics import (
    MetricsMiddleware,
    RequestMetrics,
    WorkerCollector,
    metrics_router,
    multiprocess_metrics,
)
from taskevents.api.store import DEFAULT_POOL_SIZE, ReadStore, StoreReader, StoreUnavailable
from taskevents.api.ui import UiAssets, default_dist, ui_router
from taskevents.api.worker_report import redis_client
from taskevents.cli import configure_logging
from taskevents.settings import Settings

log = logging.getLogger("taskevents.api")

DESCRIPTION = """\
Read-only access to the taskevents store: each task's events in seq order, its snapshot, span graph
and checkpoints, and the list of tasks. Every error has the body `{"detail": str, "code": str}`:
400 `bad_parameter`, 404 `task_not_found` or `not_found`, 503 `store_unavailable` or `query_timeout`.
"""


def package_version() -> str:
    try:
        return version("taskevents")
    except PackageNotFoundError:
        return "0+unknown"


def create_app(
    settings: Settings,
    *,
    routers: Sequence[APIRouter] = (),
    pool_size: int = DEFAULT_POOL_SIZE,
    ui_dist: Path | None = None,
) -> FastAPI:
    """The read API over `settings.db`; `routers` are included after the built-in ones.

    The store may not exist yet (the worker creates it): task endpoints then answer 503 and recover
    by themselves once it does.
    """
    app = FastAPI(
        title="taskevents read API",
        version=package_version(),
        description=DESCRIPTION,
        lifespan=_lifespan,
    )
    app.state.settings = settings
    if settings.postgres:
        from taskevents.api.pgstore import PgReadStore  # psycopg: the postgres extra's

        # A read over the network would hold the event loop for its round trips: every read goes to
        # the pool's threads (psycopg waits for the server without the GIL).
        primary = PgReadStore(
            str(settings.db), settings.store_name, size=pool_size, timeout=settings.query_timeout
        )
        if settings.db_read_url is not None and settings.replica_name is not None:
            # Every read goes to the replica; the live stream reads the primary what the replica
            # has not replayed yet (api/live.py).
            app.state.store = PgReadStore(
                settings.db_read_url, settings.replica_name, size=pool_size, timeout=settings.query_timeout
            )
            app.state.primary = primary
        else:
            app.state.store, app.state.primary = primary, None
        app.state.loop_store = None
        # Archived tasks are read from their archives (api/archived.py), whichever store made them.
        app.state.archives = ArchivedReads(settings.archive_dir)
        app.state.store.archives = app.state.archives
        if app.state.primary is not None:
            app.state.primary.archives = app.state.archives
    else:
        app.state.store = ReadStore(settings.sqlite_path, size=pool_size, timeout=settings.query_timeout)
        app.state.primary = None
        # The event loop's own connection, for the short reads endpoints make inline (api/tasks.py):
        # the loop runs one read at a time, so it never waits for a connection the threads hold.
        app.state.loop_store = ReadStore(settings.sqlite_path, size=1, timeout=settings.query_timeout)
        app.state.archives = ArchivedReads(settings.archive_dir)
        app.state.store.archives = app.state.loop_store.archives = app.state.archives
    app.state.reads = ReadRunner(app.state.loop_store, app.state.store)
    app.state.redis = redis_client(settings)
    app.state.registry = CollectorRegistry(auto_describe=False)
    app.state.registry.register(WorkerCollector(app.state.redis, settings, app.state.store))
    if multiprocess_metrics():
        # Several API processes (`taskevents api --workers N`): each counts its requests into files
        # of the shared directory, and /metrics, whichever process answers, sums them all.
        MultiProcessCollector(app.state.registry)
        request_registry = CollectorRegistry(auto_describe=False)  # values live in the files
    else:
        request_registry = app.state.registry

    install_error_handlers(app)
    app.add_middleware(MetricsMiddleware, metrics=RequestMetrics(request_registry))

    app.include_router(tasks.router)
    app.include_router(health.router)
    app.include_router(metrics_router())
    # The live stream (/sse/…, /ws/…); its router's lifespan runs the LiveHub (api/live.py).
    app.include_router(stream.router)
    # The runner UI (/, /tasks/{task_id}, /assets/…): built ahead of time, read once here.
    app.include_router(ui_router(UiAssets(ui_dist or default_dist())))
    # Further routers are included here, after the read endpoints.
    for router in routers:
        app.include_router(router)

    app.openapi = lambda: _openapi(app)  # type: ignore[method-assign]
    return app


PR_SET_PDEATHSIG = 1  # linux/prctl.h


def app_from_environment() -> FastAPI:
    """The app of one of several API processes (`taskevents api --workers N`, uvicorn's factory):
    its settings from the environment, which the parent process set from its own."""
    settings = Settings()
    configure_logging(settings.log_level)
    _stop_with_supervisor()
    return create_app(settings)


def _stop_with_supervisor() -> None:
    """SIGTERM to this process when uvicorn's supervisor dies, however it dies (Linux's
    PR_SET_PDEATHSIG): a SIGKILLed supervisor would otherwise leave it serving the shared port."""
    supervisor = multiprocessing.parent_process()  # uvicorn spawns its processes with multiprocessing
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG)")
    except (OSError, AttributeError) as exc:  # not Linux
        log.info("API processes will not stop with their supervisor by themselves (%s)", exc)
        return
    if supervisor is not None and os.getppid() != supervisor.pid:
        os.kill(os.getpid(), signal.SIGTERM)  # it died before the request: too late to be told


@asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Say at start whether the store is readable yet; close the pool and Redis at the end."""
    store: StoreReader = app.state.store
    try:
        store.check()
        log.info("serving %s read-only", store.name)
    except StoreUnavailable as exc:
        log.warning("%s; task endpoints answer 503 until it is", exc)
    try:
        yield
    finally:
        store.close()
        for other in (app.state.loop_store, app.state.primary):
            if other is not None:
                other.close()
        app.state.redis.close()


def _openapi(app: FastAPI) -> dict[str, Any]:
    """FastAPI's schema without the 422 responses it adds by default: this API answers 400 instead."""
    if app.openapi_schema is not None:
        return app.openapi_schema
    schema = FastAPI.openapi(app)
    for path in schema.get("paths", {}).values():
        for operation in path.values():
            operation.get("responses", {}).pop("422", None)
    schemas = schema.get("components", {}).get("schemas", {})
    for name in ("HTTPValidationError", "ValidationError"):
        schemas.pop(name, None)
    app.openapi_schema = schema
    return schema
