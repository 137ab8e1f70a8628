"""The worker's part of retention: it applies the requests of archive passes and of `taskevents
restore` (`<queue>:control`), removes archived tasks' rows and gives the pages back, a bounded step at
a time between batches, so that the store keeps exactly one writer and ingest never waits long.

- `archived` (from a pass, ingest/retention.py): the worker checks the task's archive file against
  its manifest and the request (last seq, SHA-256) before it marks the task archived; only then may
  its rows go (the pass decoded and checked the archive's rows when it wrote it). A request that no
  longer fits (a late event arrived since) is dropped: the next pass archives the task again.
- Rows of archived tasks are removed a step at a time; free pages are then given back to the file
  system a step at a time (`PRAGMA incremental_vacuum`), never by a full VACUUM. A step is sized to
  take about STEP_SECONDS (rows or pages per step follow the rate the last step had), because a batch
  that arrives during a step waits for it: that wait is what the live stream's latency would feel.
- Removal waits for quiet moments: once the queue has been empty for QUIET seconds, steps take at
  most IDLE_SHARE of the worker's time (after a step of t seconds, the next one waits t / IDLE_SHARE).
  While events come, rows are removed only once more than BACKLOG of them wait (then at BUSY_SHARE,
  down to the bound): deleting a row costs the writer about as much as inserting it (the table and
  its seven indexes), CPU that a saturated machine takes from the live stream (its p99 rose by a
  fifth with removal at 2 % of the worker's time beside a stream of 2,000 events/s). Rows waiting
  are only space: every read of an archived task comes from its archive. So a store that is never
  quiet holds at most about BACKLOG archived rows (~230 MB at 463 bytes an event). Pages are given
  back only when the store is quiet: moving them is costly (their WAL too), and only gives disk back.
- `restore`: the task's rows are put back from its archive.

Requests are idempotent. One that fails with the store (locked, full) goes back to the list, to be
applied again; one lost with a crash of the worker is sent again by the next pass (the task is still
not archived), or by the operator for a restore. A restore or a late event puts the whole task back in
one transaction: its size of WAL, and a pause of ingest as long as its insert (~10 ms per 1,000 events).
"""

import logging
import math
import time
from typing import cast

import redis

from taskevents.archive import ArchiveError, TaskArchive
from taskevents.ingest.writer import BatchWriter
from taskevents.keys import QueueKeys
from taskevents.messages import ControlRequest

log = logging.getLogger("taskevents.worker")

STEP_SECONDS = 0.002  # what a step aims to take: a batch arriving meanwhile waits at most about this
BUSY_SHARE = 0.02  # of the worker's time, at most, while events come and more than BACKLOG rows wait
IDLE_SHARE = 0.25  # of its time, at most, once the queue has been empty for QUIET seconds
QUIET = 2.0
BACKLOG = 500_000  # archived rows left in the store while events come, at most (about)
ROWS = (64, 256, 4096)  # rows removed per step: least, first, most
PAGES = (16, 64, 1024)  # pages (4 KiB) given back per step: least, first, most (4 MiB of WAL)
# Free pages kept, as a share of the file: inserts reuse them anyway, and moving pages is the costly part
# of a vacuum (its WAL too), so the file is shrunk only once archiving has freed more than this.
KEEP_FREE = 0.125
POLL = 0.25  # seconds between looks for requests while there is nothing else to do
REQUESTS = 16  # control requests applied per step at most (fewer when they take longer)


def _resized(size: int, done: int, seconds: float, bounds: tuple[int, int, int]) -> int:
    """The step size that takes about STEP_SECONDS at the rate the last step had."""
    if done <= 0 or seconds <= 0:
        return size
    least, _, most = bounds
    return max(least, min(most, int(done / seconds * STEP_SECONDS)))


class Retention:
    """Call `step()` between batches when `due()`, and `came()` when a claim brought events; a step
    does one bounded piece of work. `working`: the last step found more to do."""

    def __init__(self, client: redis.Redis, keys: QueueKeys, archive: TaskArchive) -> None:
        self._redis = client
        self._keys = keys
        self.archive = archive
        self._busy = self._idle = 0.0  # when the next step is due, while busy / while idle
        self._came = -math.inf  # when a claim last brought events
        self.working = True
        self._dropping = True  # until a step finds nothing left to remove (the store may hold some)
        self._reclaiming = True
        self._free = math.inf  # free pages beyond KEEP_FREE after the last reclaim step
        self.rows = ROWS[1]
        self.pages = PAGES[1]

    def came(self) -> None:
        self._came = time.monotonic()

    def due(self, *, idle: bool = False) -> bool:
        return self.left(idle=idle) <= 0

    def quiet(self) -> bool:
        """No claim has brought events for QUIET seconds."""
        return time.monotonic() - self._came >= QUIET

    def left(self, *, idle: bool = False) -> float:
        """Seconds until the next step is due (`idle`: the queue is empty now)."""
        return (self._idle if idle and self.quiet() else self._busy) - time.monotonic()

    def step(self, writer: BatchWriter) -> bool:
        """One step (requests, or rows to remove, or pages to give back); True if work remains."""
        started = time.monotonic()
        self.working = True  # until the step says otherwise (one that raised is tried again)
        try:
            self.working = self._step(writer, started)
            return self.working
        finally:
            ended = time.monotonic()
            if self.working:
                self._busy = ended + (ended - started) / BUSY_SHARE
                self._idle = ended + (ended - started) / IDLE_SHARE
            else:  # nothing to do: look for requests now and then, not between every two batches
                self._busy = self._idle = ended + POLL

    def _step(self, writer: BatchWriter, started: float) -> bool:
        applied = 0
        # Each request is a transaction of its own (and a read of its archive): as many as fit the aim.
        while applied < REQUESTS and (applied == 0 or time.monotonic() - started < STEP_SECONDS):
            raw = cast("bytes | None", self._redis.lpop(self._keys.control))
            if raw is None:
                break
            try:
                self._apply(writer, raw)
            except BaseException:
                self._redis.lpush(self._keys.control, raw)  # not lost: applied when the store takes it
                raise
            applied += 1
        if applied:
            self._dropping = self._reclaiming = True
            self._free = math.inf
            return True
        if self._dropping:
            if not self.quiet() and writer.archived_backlog() <= BACKLOG:
                return False  # they wait for a quiet moment; looked at again after POLL
            dropped = writer.drop_archived_rows(self.rows)
            self.rows = _resized(self.rows, dropped, time.monotonic() - started, ROWS)
            self._dropping = dropped > 0
            return True
        # Moving pages is costly and only gives disk back: never while events come.
        if self._reclaiming and self.quiet():
            free = writer.reclaim(self.pages, KEEP_FREE)
            freed = self._free - free if self._free != math.inf else self.pages
            self.pages = _resized(self.pages, int(freed), time.monotonic() - started, PAGES)
            self._reclaiming = 0 < free < self._free  # done, or nothing moves (never spin on it)
            self._free = free
            return self._reclaiming
        return False

    def _apply(self, writer: BatchWriter, raw: bytes) -> None:
        try:
            request = ControlRequest.decode(raw)
        except ValueError as exc:
            log.warning("a control request that is not one, dropped: %s", exc)
            return
        task_id = request.task_id
        try:
            if request.op == "restore":
                rows = self.archive.read(task_id)
                if writer.restore(task_id, rows):
                    log.info("task %r restored from its archive (%d events)", task_id, len(rows.events))
                return
            # The pass decoded and checked the archive when it wrote it: the file's SHA-256 against its
            # manifest and the request shows it is that archive, without decoding it again here.
            manifest = self.archive.verified(task_id)
        except ArchiveError as exc:
            log.error("%s of task %r: its archive cannot be read (%s); nothing changed",
                      request.op, task_id, exc)  # fmt: skip
            return
        if manifest.last_seq != request.latest_seq or manifest.sha256 != request.sha256:
            log.warning("the archive of %r is not the one its pass wrote (rewritten?): not archived", task_id)
            return
        if writer.mark_archived(task_id, manifest.last_seq):
            log.debug("task %r archived (seq 1..%d); its rows go", task_id, manifest.last_seq)
