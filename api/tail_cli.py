"""`taskevents tail TASK_ID`: print a task's events as JSON lines as they arrive, until it ends."""

import sys

import click
import orjson

from taskevents.api.tail import TailError, TaskTail
from taskevents.cli import configure_logging, env_help


@click.command(
    "tail",
    epilog=env_help("api_url") + f"\n  {'TASKEVENTS_LOG_LEVEL':<31} logging level (default: WARNING here)",
)
@click.argument("task_id")
@click.option(
    "--since-seq", type=click.IntRange(min=0), help="Start after this seq (default: the task's first event)."
)
@click.option("--url", help="Base URL of the read API (overrides TASKEVENTS_API_URL).")
@click.option("--log-level", envvar="TASKEVENTS_LOG_LEVEL", default="WARNING", hidden=True)
def tail_command(task_id: str, since_seq: int | None, url: str | None, log_level: str) -> None:
    """Follow TASK_ID's live stream: one JSON event per line on stdout.

    Replays the task's stored events, then prints new ones as the worker commits them. Reconnects by
    itself (resuming after the last event printed) if the connection drops. Exits 0 when the task's
    runner exits (the stream's `end`; its reason goes to stderr), 1 if the API refuses the request.
    A task that has no events yet is waited for (see the README, "Live stream").
    """
    configure_logging(log_level)
    try:
        stream = TaskTail(task_id, since_seq, url=url)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    out = sys.stdout.buffer
    try:
        for event in stream:
            out.write(orjson.dumps(event) + b"\n")
            out.flush()
    except TailError as exc:
        raise click.ClickException(str(exc)) from None
    except KeyboardInterrupt:
        sys.exit(130)
    except BrokenPipeError:  # `taskevents tail … | head`
        sys.exit(0)
    end = stream.end or {}
    click.echo(f"stream ended: {end.get('reason')} (last seq {end.get('last_seq')})", err=True)
