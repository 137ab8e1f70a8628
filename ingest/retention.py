"""An archive pass: ended tasks with no event for TASKEVENTS_RETENTION are written to their archives,
and old dead letters to files, by whoever runs it (the `jobs` process on its schedule, or `taskevents
archive`). It only reads the store; the worker, its one writer, removes the rows (ingest/archived.py).

For each task, least recently active first: its rows are read in one snapshot, its archive written,
fsynced and read back (shared/archive.py), then an `archived` request (last seq, SHA-256) is pushed to
`<queue>:control` (with a partitioned queue, the task's partition's, `{<queue>:<P>}:control`: its
worker alone writes the task's rows). The worker checks the archive again and marks the task
archived only if it still ends at that seq; a late event in between makes the request void, and the
task waits for a later pass.

- One pass at a time, however many processes start one: a lock in Redis (`<queue>:archive:lock`, a
  token that expires LOCK_TTL after its holder stops renewing it, e.g. SIGKILLed).
- Bounded: at most MAX_TASKS tasks and about MAX_EVENTS events a pass (`more` says work is left;
  the `jobs` process runs the next pass at once then). Paced: after each task it sleeps PACE times
  the time that task took, so a pass uses at most a quarter of a core and leaves the rest to ingest
  and the live stream (the `jobs` process also runs it at idle CPU priority, ingest/jobs.py); while
  the worker is storing events, BUSY_PACE times (about 3 % of a core).
- Idempotent: killed at any instant, a pass leaves archives that are whole or absent (written to a
  temporary name, then renamed), and tasks that are archived or not; the next pass archives the rest,
  writing an archive again to the same bytes. A dead-letter file is named by its content's hash, and
  the entries it holds leave Redis only after it is durable.
- Stoppable: given a `stop` event, a pass ends after the task in hand once it is set (its pacing
  sleeps wake for it), reporting `more`; a warm stop of the `jobs` process waits for that, not for
  a whole pass.
"""

import hashlib
import logging
import secrets
import threading
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import cast

import orjson
import redis
import zstandard

from taskevents.archive import LEVEL, ArchiveError, DirectoryStore, Manifest, TaskArchive
from taskevents.clock import format_ms
from taskevents.ingest.storereads import StoreReads
from taskevents.ingest.writer import PartitionsChanged
from taskevents.keys import QueueKeys, control_of, partition_queues
from taskevents.messages import ControlRequest
from taskevents.settings import Settings

log = logging.getLogger("taskevents.retention")

MAX_TASKS = 200
CHECKED = 50  # archives of archived tasks each pass checks (size, SHA-256), a random sample
MAX_EVENTS = 500_000
DEAD_CHUNK = 5000  # dead letters per file
PACE = 3.0  # sleep this many times each task's archiving time: a quarter of a core at most
# While the worker stores events (more than BUSY_RATE a second since the last task), a pass sleeps
# BUSY_PACE times its work: about 3 % of a core, so it stays out of the live stream's way (archiving
# is a month late by design; a stream's p99 is now). It still progresses under constant load.
BUSY_PACE = 30.0
BUSY_RATE = 100.0
LOCK_TTL_MS = 10_000  # a pass SIGKILLed holds the lock this long at most

_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
"""
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""
# Drop the first n dead letters only if they are still the ones written to the file (a replay may
# have moved some meanwhile: then nothing is dropped, and the next pass writes them again).
_TRIM_DEAD = """
local n = tonumber(ARGV[1])
if redis.call('LINDEX', KEYS[1], 0) ~= ARGV[2] or redis.call('LINDEX', KEYS[1], n - 1) ~= ARGV[3] then
  return 0
end
redis.call('LTRIM', KEYS[1], n, -1)
return n
"""


@dataclass
class PassReport:
    """What a pass did; `more`: it stopped at its bounds with work left."""

    started_at: str
    finished_at: str = ""
    archived: list[str] = field(default_factory=list)  # requested: the worker removes their rows
    events: int = 0
    would_archive: list[str] = field(default_factory=list)  # --dry-run
    refused: dict[str, str] = field(default_factory=dict)  # task id -> why (named tasks)
    errors: dict[str, str] = field(default_factory=dict)  # task id -> what went wrong
    damaged: dict[str, str] = field(
        default_factory=dict
    )  # archived task id -> what is wrong with its archive
    dead_letters_moved: int = 0
    dead_letter_files: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)  # listed, then changed before it was read
    more: bool = False
    skipped: str | None = None  # why the pass did nothing (another pass holds the lock)

    def to_json(self) -> bytes:
        return orjson.dumps(asdict(self))


class PassLock:
    """The one-pass-at-a-time lock: a token under `<queue>:archive:lock`, renewed by a thread every
    TTL/3 while the pass runs; the pass checks it between tasks (`renew`) and stops if it was lost."""

    def __init__(self, client: redis.Redis, keys: QueueKeys, ttl_ms: int = LOCK_TTL_MS) -> None:
        self._redis, self._key, self._ttl = client, keys.archive_lock, ttl_ms
        self._token = secrets.token_hex(16)
        self._renew = client.register_script(_RENEW)
        self._release = client.register_script(_RELEASE)
        self._stop = threading.Event()
        self._lost = False
        self._keeper = threading.Thread(target=self._keep, name="taskevents-archive-lock", daemon=True)

    def acquire(self) -> bool:
        if not self._redis.set(self._key, self._token, nx=True, px=self._ttl):
            return False
        self._keeper.start()
        return True

    def _keep(self) -> None:
        while not self._stop.wait(self._ttl / 3000):
            try:
                if not self._renew(keys=[self._key], args=[self._token, self._ttl]):
                    self._lost = True
                    return
            except redis.RedisError:
                continue  # the pass meets Redis's outage itself; the lock may lapse meanwhile

    def renew(self) -> None:
        """Raise if the lock was lost (this process paused past its TTL): another pass may run."""
        if self._lost:
            raise RuntimeError("the archive pass lost its lock (paused past its TTL?): stopping")

    def release(self) -> None:
        self._stop.set()
        self._release(keys=[self._key], args=[self._token])


def archive_pass(
    settings: Settings,
    *,
    older_than: float | None = None,
    task_ids: Sequence[str] = (),
    dry_run: bool = False,
    client: redis.Redis | None = None,
    pace: float = PACE,
    stop: threading.Event | None = None,
) -> PassReport:
    """One bounded pass (see the module docstring). `task_ids`: those tasks only, whatever their age
    (still only ended ones). Raises if the store or Redis cannot be read: rq retries the job."""
    client = client or redis.Redis.from_url(settings.redis_url)
    keys = QueueKeys(settings.queue)
    report = PassReport(started_at=format_ms(time.time_ns()))
    lock = PassLock(client, keys)
    if not lock.acquire():
        report.skipped = "another archive pass holds the lock"
        return report
    try:
        stop = stop or threading.Event()
        _archive_tasks(settings, client, keys, lock, report, older_than, task_ids, dry_run, pace, stop)
        if not dry_run and not task_ids and not stop.is_set():
            _check_archives(settings, report)
            _age_dead_letters(settings, client, keys, lock, report)
    finally:
        lock.release()
    report.finished_at = format_ms(time.time_ns())
    if not dry_run:
        client.set(keys.archive_report, report.to_json())
    return report


def _archive_tasks(
    settings: Settings,
    client: redis.Redis,
    keys: QueueKeys,
    lock: PassLock,
    report: PassReport,
    older_than: float | None,
    task_ids: Sequence[str],
    dry_run: bool,
    pace: float,
    stop: threading.Event,
) -> None:
    archive = TaskArchive.at(settings.archive_dir)
    pacer = _Pacer(client, settings, pace, stop)
    reader = StoreReads(settings)
    try:
        # Requests go to the partitions' control lists: with another count than the workers', no
        # worker would read them (and every pass would write the same archives again).
        recorded = reader.partitions()
        if recorded is not None and recorded != settings.partitions:
            raise PartitionsChanged(
                f"the store's queue has {recorded} partitions and this pass was given "
                f"{settings.partitions} (TASKEVENTS_PARTITIONS)"
            )
        if task_ids:
            rows = reader.named(list(task_ids))
            found = {row[0]: row for row in rows}
            candidates = []
            for task_id in task_ids:
                row = found.get(task_id)
                if row is None:
                    report.refused[task_id] = "no such task in the store"
                elif row[5]:
                    report.refused[task_id] = "already archived"
                elif row[4] == "running":
                    report.refused[task_id] = "still running (a running task is never archived)"
                else:
                    candidates.append(row[:4])
        else:
            age = settings.retention if older_than is None else older_than
            cutoff = format_ms(time.time_ns() - int(age * 1e9))
            candidates = reader.candidates(cutoff, MAX_TASKS + 1)
            # A full list may have more behind it, even if some listed tasks are skipped (changed).
            report.more = len(candidates) > MAX_TASKS
        for task_id, _, event_count, _ in candidates:
            done = len(report.archived) + len(report.would_archive)
            if done >= MAX_TASKS or report.events >= MAX_EVENTS or stop.is_set():
                report.more = True
                break
            if dry_run:
                report.would_archive.append(task_id)
                report.events += event_count
                continue
            started = time.monotonic()
            try:
                manifest = _archive_one(reader, archive, task_id)
            except ArchiveError as exc:
                report.errors[task_id] = str(exc)
                log.error("archiving %r failed: %s", task_id, exc)
                pacer.after(time.monotonic() - started)
                continue
            if manifest is None:
                report.changed.append(task_id)  # it changed since it was listed: a later pass
                continue
            request = ControlRequest(
                op="archived", task_id=task_id, latest_seq=manifest.last_seq, sha256=manifest.sha256
            )
            # To the worker of the task's partition: the one writer of its rows.
            client.rpush(control_of(settings, task_id), request.encode())
            report.archived.append(task_id)
            report.events += manifest.event_count
            lock.renew()
            pacer.after(time.monotonic() - started)
    finally:
        reader.close()
    report.more = report.more and bool(report.archived or report.would_archive)  # else: the next tick
    if report.archived:
        log.info("archived %d tasks (%d events)%s", len(report.archived), report.events,
                 "; more to do" if report.more else "")  # fmt: skip


class _Pacer:
    """The sleep after each task: `pace` times its work, BUSY_PACE times while the worker is storing
    events (its `ingested` counter in Redis grew by more than BUSY_RATE a second since the last look)."""

    def __init__(self, client: redis.Redis, settings: Settings, pace: float, stop: threading.Event) -> None:
        self._redis = client
        self._stop = stop
        # Every partition's worker counts its own.
        self._stats = [QueueKeys(q).stats for q in partition_queues(settings.queue, settings.partitions)]
        self.pace = pace
        self._last = self._sample()

    def _sample(self) -> tuple[float, int]:
        counts = [cast("bytes | None", self._redis.hget(key, "ingested")) for key in self._stats]
        return time.monotonic(), sum(int(n or 0) for n in counts)

    def busy(self) -> bool:
        (then, before), (now, after) = self._last, self._sample()
        self._last = (now, after)
        return after - before > BUSY_RATE * max(now - then, 1e-3)

    def after(self, worked: float) -> None:
        if self.pace <= 0:
            return  # full speed (asked for): no sleep, and no look at the worker
        self._stop.wait(worked * (max(self.pace, BUSY_PACE) if self.busy() else self.pace))


def _archive_one(reader: StoreReads, archive: TaskArchive, task_id: str) -> Manifest | None:
    """The task's archive, written from one snapshot of its rows; None if it is not to be archived
    (it changed since it was listed: archived meanwhile, running again, or empty)."""
    rows = reader.task_rows(task_id)
    if rows is None or rows.task["archived"] or rows.task["status"] == "running" or not rows.events:
        return None
    return archive.write(rows, format_ms(time.time_ns()))


def _check_archives(settings: Settings, report: PassReport) -> None:
    """A sample of archived tasks' archives checked against their manifests: a file lost or damaged
    is reported (and logged) by the pass, not only met by a reader (410, 503)."""
    archive = TaskArchive.at(settings.archive_dir)
    reader = StoreReads(settings)
    try:
        sample = reader.archived_sample(CHECKED)
    finally:
        reader.close()
    for task_id in sample:
        try:
            archive.verified(task_id)
        except ArchiveError as exc:
            report.damaged[task_id] = str(exc)
            log.error("the archive of archived task %r: %s", task_id, exc)


def _age_dead_letters(
    settings: Settings, client: redis.Redis, keys: QueueKeys, lock: PassLock, report: PassReport
) -> None:
    """Dead letters older than TASKEVENTS_DEAD_RETENTION, oldest first, to `dead/<hash>.jsonl.zst`:
    every partition's (each worker sets aside into its own list)."""
    for queue in partition_queues(settings.queue, settings.partitions):
        _age_dead_list(settings, client, QueueKeys(queue), lock, report)


def _age_dead_list(
    settings: Settings, client: redis.Redis, keys: QueueKeys, lock: PassLock, report: PassReport
) -> None:
    cutoff = format_ms(time.time_ns() - int(settings.dead_retention * 1e9))
    blobs = DirectoryStore(Path(settings.archive_dir))
    trim = client.register_script(_TRIM_DEAD)
    while True:
        entries = cast("list[bytes]", client.lrange(keys.dead, 0, DEAD_CHUNK - 1))
        old = []
        for stored in entries:
            try:
                dead_at = orjson.loads(stored).get("dead_at")
            except (orjson.JSONDecodeError, AttributeError):
                dead_at = None
            if not isinstance(dead_at, str) or dead_at >= cutoff:
                break  # oldest first: the rest are newer (an unreadable entry stays for a person)
            old.append(stored)
        if not old:
            return
        data = zstandard.ZstdCompressor(level=LEVEL).compress(b"\n".join(old) + b"\n")
        name = f"dead/{hashlib.sha256(data).hexdigest()[:32]}.jsonl.zst"
        blobs.put(name, data)
        if not trim(keys=[keys.dead], args=[len(old), old[0], old[-1]]):
            log.warning("dead letters changed while they were archived (a replay?); the next pass retries")
            return
        report.dead_letters_moved += len(old)
        report.dead_letter_files.append(name)
        lock.renew()
        if len(old) < len(entries) or len(entries) < DEAD_CHUNK:
            return
