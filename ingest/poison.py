"""Poison pills: events that crash the worker every time it processes them.

Each claim counts an attempt for its slot in Redis before the batch is processed, and an
acknowledgement clears it; so a batch still in flight with `attempts` claims has crashed the worker
that many times (a store fault is not counted: the worker takes its attempt back, `WorkQueue.forgive`).
After `max_attempts` its events go back to the head of the queue as suspects, processed one at a
time; an event that crashes the worker `max_attempts` times on its own is dead-lettered as `poison`,
and the rest are stored in order.
"""

import logging
from collections.abc import Callable, Sequence

from taskevents.clock import utc_now_ms
from taskevents.ingest.batch import dead_letters
from taskevents.ingest.queue import InFlight, WorkQueue
from taskevents.ingest.writer import CommitResult, DeadMark

log = logging.getLogger("taskevents.worker")

# ack(slot, the batch id the slot holds (None: none recorded), what the batch did, its dead-letter
# entries, how many suspect events it settled)
Acknowledge = Callable[[int, int | None, CommitResult, list[bytes], int], None]


def settle(
    queue: WorkQueue,
    uncommitted: Sequence[InFlight],
    following: int,
    max_attempts: int,
    *,
    suspect: bool,
    ack: Acknowledge,
) -> None:
    """Decide what to do with uncommitted batches in flight; `following` is the next batch id."""
    attempts = max(x.attempts for x in uncommitted)
    count = sum(len(x.items) for x in uncommitted)
    if attempts < max_attempts:
        log.warning("%d events in flight were not committed: processing them again (they have crashed "
                    "the worker %d of the %d times allowed)", count, attempts, max_attempts)  # fmt: skip
    elif count == 1:  # it alone was in flight each time the worker died
        _dead_letter(uncommitted[0], following, suspect=suspect, ack=ack)
    else:
        moved = queue.isolate([x.slot for x in batch_order(uncommitted, following)])
        log.error("%d events crashed the worker %d times: retrying them one at a time to find why",
                  moved, attempts)  # fmt: skip


def batch_order(in_flight: Sequence[InFlight], following: int) -> list[InFlight]:
    """In batch order; a slot without a batch id (left by an older worker) holds the next batch."""
    return sorted(in_flight, key=lambda x: following if x.batch_id is None else x.batch_id)


def _dead_letter(left: InFlight, following: int, *, suspect: bool, ack: Acknowledge) -> None:
    # Never committed: the next batch reuses the id.
    batch_id = left.batch_id if left.batch_id is not None else following
    log.error("an event crashed the worker %d times on its own: dead-lettered as poison: %r",
              left.attempts, left.items[0][:200])  # fmt: skip
    reason = f"crashed the worker {left.attempts} times (TASKEVENTS_MAX_ATTEMPTS)"
    result = CommitResult(batch_id, dead=[DeadMark(0, "poison", reason)], dead_at=utc_now_ms())
    ack(left.slot, left.batch_id, result, dead_letters(left.items, result), int(suspect))
