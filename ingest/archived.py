"""The worker's part of retention: it applies the requests of archive passes and of `taskevents
restore` (`<queue>:control`), removes archived tasks' rows and gives the pages back, a bounded step at
a time between batches, so that the store keeps exactly one writer and ingest never waits long.

- `archived` (from a pass, ingest/retention.py): the worker checks the task's archive file against
  its manifest and the request (last seq, SHA-256) before it marks the task archived; only then may
  its rows go (the pass decoded and checked the archive's rows when it wrote it). A request that no
  longer fits (a late event arrived since) is dropped: the next pass archives the task again.
- Rows of archived tasks are removed DROP_ROWS at a time; free pages are then given back to the file
  system RECLAIM_PAGES at a time (`PRAGMA incremental_vacuum`), never by a full VACUUM.
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
from taskevents.ingest.writer import StoreWriter
from taskevents.keys import QueueKeys
from taskevents.messages import ControlRequest

log = logging.getLogger("taskevents.worker")

DROP_ROWS = 2000  # rows removed per step: ~10 ms of the writer's time
RECLAIM_PAGES = 1024  # pages (4 KiB) given back per step: 4 MiB of WAL at most
REQUESTS = 16  # control requests read per step
INTERVAL = 0.25  # seconds between steps while batches keep coming


class Retention:
    """Call `step()` between batches when `due()`; it does one bounded piece of work."""

    def __init__(self, client: redis.Redis, keys: QueueKeys, archive: TaskArchive) -> None:
        self._redis = client
        self._keys = keys
        self.archive = archive
        self._next = 0.0
        self._dropping = True  # until a step finds nothing left to remove (the store may hold some)
        self._reclaiming = True
        self._free = math.inf  # free pages after the last reclaim step

    def due(self) -> bool:
        return time.monotonic() >= self._next

    def step(self, writer: StoreWriter) -> bool:
        """Requests first, then rows to remove, then pages to give back. True if work remains."""
        self._next = time.monotonic() + INTERVAL
        applied = 0
        while applied < REQUESTS:
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
            self._dropping = writer.drop_archived_rows(DROP_ROWS) > 0
            return True
        if self._reclaiming:
            free = writer.reclaim(RECLAIM_PAGES)
            self._reclaiming = 0 < free < self._free  # done, or nothing moves (never spin on it)
            self._free = free
            return self._reclaiming
        return False

    def _apply(self, writer: StoreWriter, raw: bytes) -> None:
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
