"""Every Redis key and channel the project uses, derived from the queue name in one place."""

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class QueueKeys:
    queue: str

    @property
    def processing(self) -> str:
        """The batch the worker has taken but not yet acknowledged."""
        return f"{self.queue}:processing"

    @property
    def processing_batch(self) -> str:
        """Id of the batch in `processing`, compared with the store's last committed batch on recovery."""
        return f"{self.queue}:processing:batch"

    @property
    def dead(self) -> str:
        """Events the worker set aside, each with its reason and original bytes."""
        return f"{self.queue}:dead"

    @property
    def heartbeat(self) -> str:
        return f"{self.queue}:worker:heartbeat"

    @property
    def stats(self) -> str:
        """Hash of the worker's running counters (ingested, dead-lettered, duplicates, batches)."""
        return f"{self.queue}:worker:stats"

    @property
    def commits(self) -> str:
        """Pub/sub channel: one message per committed batch."""
        return f"{self.queue}:commits"
