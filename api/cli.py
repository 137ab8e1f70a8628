"""`taskevents api`: serve the read API with uvicorn."""

import click
import uvicorn

from api.app import create_app
from shared.cli import env_help, settings_options
from shared.settings import Settings

DEFAULT_HOST, DEFAULT_PORT = "127.0.0.1", 8000
# Not Settings fields: only this command reads them (compose sets the host to 0.0.0.0).
_EPILOG = "\n".join(
    [
        env_help("db", "redis_url", "queue", "log_level"),
        f"  {'TASKEVENTS_API_HOST':<31} Address to listen on. (default: {DEFAULT_HOST})",
        f"  {'TASKEVENTS_API_PORT':<31} Port to listen on. (default: {DEFAULT_PORT})",
    ]
)


@click.command("api", epilog=_EPILOG)
@click.option(
    "--host",
    envvar="TASKEVENTS_API_HOST",
    default=DEFAULT_HOST,
    show_default=True,
    help="Address to listen on.",
)
@click.option(
    "--port",
    envvar="TASKEVENTS_API_PORT",
    type=click.IntRange(0, 65535),
    default=DEFAULT_PORT,
    show_default=True,
    help="Port to listen on.",
)
@click.option("--access-log/--no-access-log", default=False, show_default=True, help="Log every request.")
@settings_options
def api_command(settings: Settings, host: str, port: int, access_log: bool) -> None:
    """Serve the read API (JSON; OpenAPI at /docs): the store opened read-only.

    It may start before the worker has created the store: task endpoints answer 503 until the file
    exists, then serve. Readiness at /api/ready, Prometheus metrics at /metrics. SIGTERM or Ctrl-C:
    finish the requests in hand, then exit.
    """
    app = create_app(settings)
    uvicorn.run(
        app,
        host=host,
        port=port,
        access_log=access_log,
        log_level=settings.log_level.lower(),
        log_config=None,  # keep the logging configured by settings_options
        server_header=False,
    )
