"""`taskevents api`: serve the read API with uvicorn, in one process or several sharing the port."""

import os
import shutil
import tempfile
from typing import Any

import click
import uvicorn

from taskevents.api.app import create_app
from taskevents.api.metrics import MULTIPROC_DIR
from taskevents.api.stream import WS_MAX_SIZE
from taskevents.cli import env_help, settings_options, store_usable
from taskevents.settings import Settings


@click.command(
    "api",
    epilog=env_help(
        "db",
        "db_read_url",
        "replica_wait",
        "redis_url",
        "queue",
        "partitions",
        "archive_dir",
        "api_host",
        "api_port",
        "api_workers",
        "query_timeout",
        "stream_buffer",
        "stream_ping",
        "stream_retry_ms",
        "stream_send_timeout",
        "stream_idle",
        "stream_poll",
        "log_level",
    ),
)
@click.option("--host", help="Address to listen on (overrides TASKEVENTS_API_HOST).")
@click.option(
    "--port", type=click.IntRange(0, 65535), help="Port to listen on (overrides TASKEVENTS_API_PORT)."
)
@click.option(
    "--workers",
    type=click.IntRange(1, 64),
    help="API processes sharing the port, each with its own live feed (overrides TASKEVENTS_API_WORKERS).",
)
@click.option("--access-log/--no-access-log", default=False, show_default=True, help="Log every request.")
@settings_options
def api_command(
    settings: Settings, host: str | None, port: int | None, workers: int | None, access_log: bool
) -> None:
    """Serve the read API (JSON; OpenAPI at /docs): the store (a SQLite file or a PostgreSQL URL)
    opened read-only.

    It may start before the worker has created the store: task endpoints answer 503 until it
    exists, then serve. Readiness at /api/ready, Prometheus metrics at /metrics. SIGTERM or Ctrl-C:
    finish the requests in hand, then exit.
    """
    store_usable(settings)
    options: dict[str, Any] = dict(
        host=host or settings.api_host,
        port=settings.api_port if port is None else port,
        access_log=access_log,
        log_level=settings.log_level.lower(),
        log_config=None,  # keep the logging configured by settings_options
        server_header=False,
        ws_max_size=WS_MAX_SIZE,  # a WebSocket client sends one short hello: a bigger frame is refused
    )
    processes = workers or settings.api_workers
    if processes == 1:
        uvicorn.run(create_app(settings), **options)
        return
    _serve_in_processes(settings, processes, options)


def _serve_in_processes(settings: Settings, processes: int, options: dict[str, Any]) -> None:
    """uvicorn's supervisor: it binds the port, starts `processes` API processes that accept on it
    (restarting one that dies) and stops them on SIGTERM. Each builds its app from the environment
    (api.app.app_from_environment), so the command line's settings go there first; the request
    metrics of all of them go to files of one directory, summed by whichever answers /metrics."""
    os.environ.update(
        TASKEVENTS_REDIS_URL=settings.redis_url,
        TASKEVENTS_DB=str(settings.db),
        TASKEVENTS_QUEUE=settings.queue,
    )
    metrics_dir = tempfile.mkdtemp(prefix="taskevents-api-metrics-")
    os.environ[MULTIPROC_DIR] = metrics_dir
    try:
        uvicorn.run("taskevents.api.app:app_from_environment", factory=True, workers=processes, **options)
    finally:
        shutil.rmtree(metrics_dir, ignore_errors=True)
