"""The `taskevents` command. Its subcommands are entry points (`taskevents.commands` in
pyproject.toml), so this package names no command of `ingest` or `api`.
"""

import functools
import logging
import sys
from collections.abc import Callable
from importlib.metadata import entry_points
from typing import Any

import click

from shared.settings import Settings, build

ENTRY_POINT_GROUP = "taskevents.commands"


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
    @click.option("--db", type=click.Path(dir_okay=False), help="SQLite file (overrides TASKEVENTS_DB).")
    @click.option("--redis-url", help="Redis URL (overrides TASKEVENTS_REDIS_URL).")
    @functools.wraps(func)
    def wrapper(redis_url: str | None, db: str | None, queue: str | None, **kwargs: Any) -> Any:
        overrides = {
            k: v for k, v in {"redis_url": redis_url, "db": db, "queue": queue}.items() if v is not None
        }
        try:
            settings = build(Settings, **overrides)
        except ValueError as exc:
            raise click.UsageError(f"bad settings: {exc}") from None
        configure_logging(settings.log_level)
        return func(settings=settings, **kwargs)

    return wrapper


def configure_logging(level: str) -> None:
    logging.basicConfig(
        level=level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


class _EntryPointGroup(click.Group):
    def _commands(self) -> dict[str, Any]:
        return {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(self._commands())

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        ep = self._commands().get(cmd_name)
        return ep.load() if ep is not None else None


@click.group(cls=_EntryPointGroup)
@click.version_option(package_name="taskevents")
def main() -> None:
    """taskevents: event store and live API for watching agent runs.

    Producers push events to a Redis list; `taskevents ingest` (the one worker) stores them in
    SQLite with a per-task seq; `taskevents api` serves them read-only.
    """
