"""`taskevents api`: serve the read API with uvicorn."""

import click
import uvicorn

from taskevents.api.app import create_app
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
@click.option("--access-log/--no-access-log", default=False, show_default=True, help="Log every request.")
@settings_options
def api_command(settings: Settings, host: str | None, port: int | None, access_log: bool) -> None:
    """Serve the read API (JSON; OpenAPI at /docs): the store (a SQLite file or a PostgreSQL URL)
    opened read-only.

    It may start before the worker has created the store: task endpoints answer 503 until it
    exists, then serve. Readiness at /api/ready, Prometheus metrics at /metrics. SIGTERM or Ctrl-C:
    finish the requests in hand, then exit.
    """
    store_usable(settings)
    app = create_app(settings)
    uvicorn.run(
        app,
        host=host or settings.api_host,
        port=settings.api_port if port is None else port,
        access_log=access_log,
        log_level=settings.log_level.lower(),
        log_config=None,  # keep the logging configured by settings_options
        server_header=False,
        ws_max_size=WS_MAX_SIZE,  # a WebSocket client sends one short hello: a bigger frame is refused
    )
