"""What a worker finds in the processing slots when it becomes the writer, and what it does with it.

A previous worker (or this one, before a store fault or a lost lease) may have left a batch in a slot:
- committed but not acknowledged (its id is at most the store's last batch id): acknowledged now,
  from the store's record of that batch (ingest_state.last_batch): the same dead letters, counters
  and commit notification its committer would have sent, whatever today's settings say;
- not committed, the batches that follow the store's last batch, each in the slot its id claims:
  left for the loop, which claims them again first (in batch order), unless they have crashed the
  worker too often (ingest/poison.py);
- not committed, anything else (a store restored from a backup or replaced by a new one, a slot left
  by an older worker without a batch id): put back at the head of the queue in batch order, to be
  claimed anew.
"""

import logging

from taskevents.clock import utc_now_ms
from taskevents.event import max_element_bytes
from taskevents.ingest.batch import dead_letters, decode_batch
from taskevents.ingest.poison import Acknowledge, batch_order, settle
from taskevents.ingest.queue import InFlight, WorkQueue
from taskevents.ingest.writer import BatchWriter, CommitResult
from taskevents.keys import SLOTS
from taskevents.settings import Settings

log = logging.getLogger("taskevents.worker")


def recover(queue: WorkQueue, writer: BatchWriter, settings: Settings, ack: Acknowledge) -> None:
    left = [x for x in queue.in_flight() if x.items]
    suspects = queue.suspects() > 0  # then what is in flight is one suspect event
    uncommitted: list[InFlight] = []
    for x in left:
        if x.batch_id is not None and x.batch_id <= writer.last_batch_id:
            record = _record(writer, x, settings)
            log.warning("batch %s (%d events) was committed but not acknowledged: acknowledging",
                        x.batch_id, len(x.items))  # fmt: skip
            ack(x.slot, x.batch_id, record, dead_letters(x.items, record), len(x.items) if suspects else 0)
        else:
            uncommitted.append(x)
    if not uncommitted:
        return
    following = writer.last_batch_id + 1
    if not _resumable(uncommitted, following):
        order = batch_order(uncommitted, following)
        moved = queue.requeue([x.slot for x in order])
        log.warning("%d events in flight belong to batches %s, which do not follow the store's last batch "
                    "(%d; was the store replaced?): put back at the head of the queue, in order",
                    moved, [x.batch_id for x in order], writer.last_batch_id)  # fmt: skip
        return
    settle(queue, uncommitted, following, settings.max_attempts, suspect=suspects, ack=ack)


def _resumable(uncommitted: list[InFlight], following: int) -> bool:
    """True if the loop, claiming batch `following` then the next, will take these up as they are:
    they are exactly those batches, each in the slot its id claims (n % 2)."""
    ids = sorted(x.batch_id for x in uncommitted if x.batch_id is not None)
    return (
        len(ids) == len(uncommitted)
        and ids == list(range(following, following + len(ids)))
        and all(x.batch_id is not None and x.slot == x.batch_id % SLOTS for x in uncommitted)
    )


def _record(writer: BatchWriter, x: InFlight, settings: Settings) -> CommitResult:
    """What the committed batch in `x` did, as the store recorded it."""
    record = writer.last_batch
    if record is not None and record.batch_id == x.batch_id:
        return record
    if record is None:
        # Committed by a worker older than the record (schema version 1).
        log.warning("batch %s has no record in the store: its dead letters are decided again", x.batch_id)
    else:
        # Only the last committed batch can be unacknowledged: Redis and the store disagree (a Redis
        # restored from an older file, a store that is not this queue's).
        log.error("batch %s is in flight but the store's last batch is %s (its record is of batch %s): "
                  "Redis and the store disagree; its dead letters are decided again",
                  x.batch_id, writer.last_batch_id, record.batch_id)  # fmt: skip
    assert x.batch_id is not None
    good, dead = decode_batch(x.items, settings.max_payload_bytes)
    return CommitResult(
        x.batch_id,
        stored=len(good),
        dead=dead,
        dead_at=utc_now_ms(),
        keep=max_element_bytes(settings.max_payload_bytes),
    )
