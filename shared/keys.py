"""Every Redis key and channel the project uses, derived from the queue name in one place."""

import zlib
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from taskevents.settings import ProducerSettings

# Batches in flight at once: one being committed while the next is claimed and validated.
SLOTS = 2


def partition_of(task_id: str, partitions: int) -> int:
    """The partition a task's events go to: CRC-32 (IEEE 802.3, zlib's and most languages' crc32)
    of the task id's UTF-8 bytes, modulo the partition count. Stable: every producer, in any
    language, sends a task's events to one partition, so one worker assigns its seq."""
    return zlib.crc32(task_id.encode("utf-8")) % partitions


def partition_queue(queue: str, partition: int, partitions: int) -> str:
    """The list of one partition. One partition: the queue's own name (the keys of an unpartitioned
    deployment). More: `{<queue>:<partition>}`, braces included: Redis Cluster hashes only what is
    inside them, so the list and every key derived from it (QueueKeys) share one slot, and the
    worker's claim and ack scripts, which touch several of them, run on a cluster."""
    if not 0 <= partition < partitions:
        raise ValueError(f"partition {partition} of {partitions}: must be 0 to {partitions - 1}")
    return queue if partitions == 1 else f"{{{queue}:{partition}}}"


def control_of(settings: "ProducerSettings", task_id: str) -> str:
    """The control list (archive and restore requests) of the worker that writes the task's rows:
    its partition's."""
    queue = partition_queue(settings.queue, partition_of(task_id, settings.partitions), settings.partitions)
    return QueueKeys(queue).control


def partition_queues(queue: str, partitions: int) -> list[str]:
    """Every partition's list, in partition order (the readiness check, metrics, the live stream)."""
    return [partition_queue(queue, p, partitions) for p in range(partitions)]


@dataclass(frozen=True, slots=True)
class QueueKeys:
    queue: str

    def processing(self, slot: int) -> str:
        """A batch the worker has taken but not yet acknowledged; batch n uses slot n % SLOTS."""
        return f"{self.queue}:processing:{slot}"

    def processing_batch(self, slot: int) -> str:
        """Id of the batch in that slot, compared with the store's last committed batch on recovery."""
        return f"{self.queue}:processing:{slot}:batch"

    def processing_attempts(self, slot: int) -> str:
        """How many times the batch in that slot has been claimed: a claim counts before processing,
        so a batch that kills the worker is counted however it dies (see WorkQueue.claim)."""
        return f"{self.queue}:processing:{slot}:attempts"

    @property
    def suspects(self) -> str:
        """How many events at the head of the queue are processed one at a time: those of a batch
        that crashed the worker `max_attempts` times, until the culprit is found and set aside."""
        return f"{self.queue}:suspects"

    @property
    def processing_keys(self) -> list[str]:
        return [self.processing(slot) for slot in range(SLOTS)]

    @property
    def dead(self) -> str:
        """Events the worker set aside, each with its reason and original bytes."""
        return f"{self.queue}:dead"

    @property
    def heartbeat(self) -> str:
        """The active worker's state (pid, host, counters, store_error), living TASKEVENTS_HEARTBEAT_TTL."""
        return f"{self.queue}:worker:heartbeat"

    @property
    def lease(self) -> str:
        """The token of the one worker allowed to consume the queue; it lapses unless refreshed."""
        return f"{self.queue}:worker:lease"

    @property
    def standbys(self) -> str:
        """Sorted set of the workers waiting for the lease, scored by when their entry expires (ms)."""
        return f"{self.queue}:worker:standbys"

    @property
    def stats(self) -> str:
        """Hash of the worker's running counters (ingested, dead-lettered, duplicates, batches)."""
        return f"{self.queue}:worker:stats"

    @property
    def commits(self) -> str:
        """Pub/sub channel: one message per committed batch."""
        return f"{self.queue}:commits"

    @property
    def control(self) -> str:
        """Requests to the worker that change the store but are not events: a task archived (its rows
        may go), a task to restore. The worker is the store's only writer; others ask it here."""
        return f"{self.queue}:control"

    @property
    def jobs(self) -> str:
        """The rq queue of the `jobs` process (archive passes)."""
        return f"{self.queue}:jobs"

    @property
    def archive_lock(self) -> str:
        """Held by the one archive pass that runs (token, expiring unless renewed)."""
        return f"{self.queue}:archive:lock"

    @property
    def archive_report(self) -> str:
        """The last archive pass's report (JSON), for `taskevents archive --list` and operators."""
        return f"{self.queue}:archive:report"
