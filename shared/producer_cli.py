"""The producer's commands: `taskevents emit` (one event from a shell runner) and `taskevents simulate`.

They need only the base install (what `Emitter` needs).
"""

import sys

import click
import orjson

from taskevents.cli import env_help, settings_options
from taskevents.emitter import Emitter
from taskevents.event import PHASES
from taskevents.settings import Settings

_PRODUCER_SETTINGS = (
    "redis_url",
    "queue",
    "partitions",
    "max_payload_bytes",
    "emitter_buffer",
    "flush_timeout",
)


@click.command("emit", epilog=env_help(*_PRODUCER_SETTINGS))
@click.argument("task_id")
@click.argument("event_type")
@click.option("--span-id", required=True, help="Span the event belongs to.")
@click.option("--actor", default="runner", show_default=True, help="Who emits it.")
@click.option("--phase", type=click.Choice(PHASES), help="Phase of the run, if any.")
@click.option("--parent-span-id", help="Parent span (omit for a root span).")
@click.option("--payload", default="{}", show_default=True, help="JSON object.")
@click.option("--event-uid", help="Your own id for the event (repeats are stored once).")
@click.option("--timeout", default=5.0, show_default=True, help="Seconds to wait for Redis before failing.")
@settings_options
def emit_command(
    settings: Settings,
    task_id: str,
    event_type: str,
    span_id: str,
    actor: str,
    phase: str | None,
    parent_span_id: str | None,
    payload: str,
    event_uid: str | None,
    timeout: float,
) -> None:
    """Emit one event from a shell runner; exits 1 if Redis did not take it within --timeout."""
    try:
        body = orjson.loads(payload)
    except orjson.JSONDecodeError as exc:
        raise click.BadParameter(f"not JSON: {exc}", param_hint="--payload") from None
    emitter = Emitter.from_settings(settings)
    try:
        emitter.emit(
            task_id,
            event_type,
            span_id=span_id,
            actor=actor,
            phase=phase,
            parent_span_id=parent_span_id,
            payload=body,
            event_uid=event_uid,
        )
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    if not emitter.close(timeout):
        click.echo(f"error: event not delivered to {settings.redis_url} within {timeout:g}s", err=True)
        sys.exit(1)


@click.command("simulate", epilog=env_help(*_PRODUCER_SETTINGS))
@click.option("--tasks", default=20, show_default=True, help="How many runs to simulate.")
@click.option("--concurrency", default=5, show_default=True, help="Runs in progress at once.")
@click.option(
    "--rate",
    default=200.0,
    show_default=True,
    help="Events per second in total (0: as fast as Redis takes them).",
)
@click.option("--seed", type=int, help="Random seed, for a repeatable simulation.")
@click.option("--prefix", default="sim", show_default=True, help="Task id prefix.")
@click.option(
    "--leave-running",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    help="Runs that stop part way, without a runner_exit, as runs still in progress do.",
)
@click.option(
    "--events",
    type=click.IntRange(min=1),
    help="Big-run mode: one run of exactly this many events (with --spans), as fast as Redis takes them.",
)
@click.option("--spans", type=click.IntRange(min=1), help="Big-run mode: its number of spans.")
@settings_options
def simulate_command(
    settings: Settings,
    tasks: int,
    concurrency: int,
    rate: float,
    seed: int | None,
    prefix: str,
    leave_running: int,
    events: int | None,
    spans: int | None,
) -> None:
    """Emit realistic agent runs: a runner span, the phases, parallel work items (some failing),
    progress, checkpoints with evidence (some rejected), recoveries; about a fifth of the runs fail.

    With --events and --spans, one long run instead (e.g. --events 100000 --spans 5000), printed by
    its task id.
    """
    from taskevents.simulate import simulate, simulate_big_run  # the largest module here: when run

    emitter = Emitter.from_settings(settings)
    if events is not None or spans is not None:
        if events is None or spans is None:
            raise click.UsageError("big-run mode needs both --events and --spans")
        try:
            task_id = simulate_big_run(emitter, events=events, spans=spans, seed=seed, prefix=prefix)
        except ValueError as exc:
            raise click.UsageError(str(exc)) from None
        summary = f"emitted {events} events and {spans} spans for task {task_id}"
    else:
        count = simulate(
            emitter,
            tasks=tasks,
            concurrency=concurrency,
            rate=rate,
            seed=seed,
            prefix=prefix,
            leave_running=leave_running,
        )
        summary = f"emitted {count} events for {tasks} tasks"
    delivered = emitter.close(60.0)
    click.echo(summary + ("" if delivered else " (NOT all delivered)"))
    if not delivered:
        sys.exit(1)
