"""The `taskevents` command: the one place that knows every subcommand, each imported only when run.

The base install is the producer; the worker's and the API's commands need an extra. Each
subcommand is named here by its module (a string, imported when the command runs, never when this
module is), so `taskevents --help` lists every command in any install or checkout, and a command whose
extra is missing says what to install instead of failing on an import.
"""

import functools
import importlib
import importlib.util
import logging
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import click

from taskevents.settings import Settings, build


@dataclass(frozen=True, slots=True)
class Command:
    module: str
    attribute: str
    extra: str | None  # what `pip install 'taskevents[…]'` it needs; None: the base install
    summary: str  # for --help, without importing the command


COMMANDS: dict[str, Command] = {
    "emit": Command("taskevents.producer_cli", "emit_command", None, "Emit one event from a shell runner."),
    "simulate": Command(
        "taskevents.producer_cli", "simulate_command", None, "Emit realistic agent runs (a demo, a load)."
    ),
    "ingest": Command("taskevents.ingest.cli", "ingest_command", "server", "Run the ingest worker."),
    "dead-letters": Command(
        "taskevents.ingest.cli", "dead_letters_command", "server", "Inspect and replay the dead letters."
    ),
    "redis": Command("taskevents.ingest.cli", "redis_command", "server", "Provide Redis for a local run."),
    "api": Command("taskevents.api.cli", "api_command", "server", "Serve the read API."),
    "jobs": Command(
        "taskevents.ingest.cli", "jobs_command", "server", "Run the scheduled archive passes (rq)."
    ),
    "archive": Command(
        "taskevents.ingest.cli", "archive_command", "server", "Archive ended tasks now; list archives."
    ),
    "restore": Command("taskevents.ingest.cli", "restore_command", "server", "Bring archived tasks back."),
    "tail": Command("taskevents.api.tail_cli", "tail_command", "tail", "Follow a task's live stream."),
}


def env_help(*names: str) -> str:
    """A help epilog listing the TASKEVENTS_* variables a command reads, with defaults."""
    lines = ["\b", "Environment:"]
    for name in names:
        field = Settings.model_fields[name]
        lines.append(f"  TASKEVENTS_{name.upper():<20} {field.description} (default: {field.default})")
    return "\n".join(lines)


def settings_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """--redis-url/--db/--queue override the environment; the command receives `settings`."""

    @click.option("--queue", help="Redis list name (overrides TASKEVENTS_QUEUE).")
    @click.option("--db", help="SQLite file or postgresql:// URL (overrides TASKEVENTS_DB).")
    @click.option("--redis-url", help="Redis URL (overrides TASKEVENTS_REDIS_URL).")
    @functools.wraps(func)
    def wrapper(redis_url: str | None, db: str | None, queue: str | None, **kwargs: Any) -> Any:
        overrides = {
            k: v for k, v in {"redis_url": redis_url, "db": db, "queue": queue}.items() if v is not None
        }
        try:
            settings = build(Settings, None, **overrides)
        except ValueError as exc:
            raise click.UsageError(f"bad settings: {exc}") from None
        configure_logging(settings.log_level)
        return func(settings=settings, **kwargs)

    return wrapper


def store_usable(settings: Settings) -> None:
    """Refuse, with a clear message, a store this install cannot serve: N partitions on one SQLite
    file, or a PostgreSQL URL without the driver (the postgres extra)."""
    try:
        settings.check_partitions()
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    if settings.postgres and importlib.util.find_spec("psycopg_pool") is None:
        raise click.UsageError(
            "TASKEVENTS_DB is a PostgreSQL URL: install the driver, pip install 'taskevents[postgres]'"
        )


def configure_logging(level: str) -> None:
    logging.basicConfig(
        level=level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


class _LazyGroup(click.Group):
    """click's lazy-loading group: `COMMANDS` names the commands, a module is imported when its runs."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        spec = COMMANDS.get(cmd_name)
        if spec is None:
            return None
        try:
            command = getattr(importlib.import_module(spec.module), spec.attribute)
        except ModuleNotFoundError as exc:
            if exc.name is not None and exc.name.split(".")[0] == "taskevents":
                raise  # a bug of ours, not a missing extra
            return _missing(cmd_name, spec, exc.name or str(exc))
        assert isinstance(command, click.Command)
        return command

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """The list from COMMANDS alone: --help imports no command, whatever is installed."""
        rows = []
        for name, spec in sorted(COMMANDS.items()):
            needs = f" [{spec.extra}]" if spec.extra else ""
            rows.append((name, spec.summary + needs))
        with formatter.section("Commands ([extra]: needs pip install 'taskevents[extra]')"):
            formatter.write_dl(rows)


def _missing(name: str, spec: Command, module: str) -> click.Command:
    """A stand-in for a command whose extra is not installed: it says what to install, exits 1."""

    @click.command(name, context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
    def stand_in() -> None:
        raise click.ClickException(
            f"`taskevents {name}` needs the {spec.extra!r} extra ({module} is not installed): "
            f"pip install 'taskevents[{spec.extra}]'"
        )

    stand_in.help = f"{spec.summary} Not installed: pip install 'taskevents[{spec.extra}]'."
    return stand_in


@click.group(cls=_LazyGroup)
@click.version_option(package_name="taskevents")
def main() -> None:
    """taskevents: event store and live API for watching agent runs.

    Producers push events to a Redis list; `taskevents ingest` (the one worker) stores them in
    SQLite with a per-task seq; `taskevents api` serves them read-only.
    """
