"""What the worker has left in Redis for others to read: queue depth, counters, heartbeat.

Read by the readiness check and by the /metrics collector, in one pipelined round trip. The API's
Redis client has short timeouts and no retries: a Redis that is down makes a check answer "Redis
unreachable" within a second, it never hangs a request.
"""

import logging
import time
from dataclasses import dataclass, field

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from taskevents.keys import QueueKeys, partition_queues
from taskevents.messages import Heartbeat, WorkerStats
from taskevents.settings import Settings

log = logging.getLogger("taskevents.api")

REDIS_TIMEOUT = 0.5  # seconds, for connecting and for each reply


def redis_client(settings: Settings) -> redis.Redis:
    """The API's Redis client (connects lazily: building it does no I/O)."""
    return redis.Redis.from_url(
        settings.redis_url,
        socket_timeout=REDIS_TIMEOUT,
        socket_connect_timeout=REDIS_TIMEOUT,
        retry=Retry(NoBackoff(), 0),
    )


@dataclass(frozen=True, slots=True)
class WorkerReport:
    depth: int
    in_flight: int
    dead_letters: int
    heartbeat: Heartbeat | None  # None: no heartbeat within its TTL (no worker running), or not one
    counters: WorkerStats = field(default_factory=WorkerStats)
    standbys: list[str] = field(default_factory=list)  # workers waiting for the lease
    # A partitioned queue's: the first store error any partition's worker reports (`combined`).
    partition_error: str | None = None

    @property
    def store_error(self) -> str | None:
        if self.partition_error is not None:
            return self.partition_error
        return self.heartbeat.store_error if self.heartbeat is not None else None

    @property
    def heartbeat_age(self) -> float | None:
        """Seconds since the worker's last heartbeat (by this host's clock against the worker's)."""
        return max(0.0, time.time() - self.heartbeat.at) if self.heartbeat is not None else None


def read_worker_report(client: redis.Redis, keys: QueueKeys) -> WorkerReport:
    """One round trip; raises redis.RedisError when Redis cannot be reached."""
    pipe = client.pipeline(transaction=False)
    pipe.llen(keys.queue)
    for key in keys.processing_keys:
        pipe.llen(key)
    pipe.llen(keys.dead)
    pipe.get(keys.heartbeat)
    pipe.hgetall(keys.stats)
    pipe.zrangebyscore(keys.standbys, int(time.time() * 1000), "+inf")  # entries not yet lapsed
    depth, *rest = pipe.execute()
    in_flight = rest[: len(keys.processing_keys)]
    dead, beat, stats, standbys = rest[len(keys.processing_keys) :]
    heartbeat = None
    if beat is not None:
        try:
            heartbeat = Heartbeat.decode(beat)
        except ValueError:
            log.warning("the heartbeat is not a worker's: %r", beat[:200])
    return WorkerReport(
        int(depth),
        sum(int(n) for n in in_flight),
        int(dead),
        heartbeat,
        WorkerStats.from_hash(stats),
        [s.decode("utf-8", "replace") for s in standbys],
    )


def read_partition_reports(client: redis.Redis, settings: Settings) -> list[WorkerReport]:
    """Every partition's report, in partition order (one, unpartitioned, by default). One round trip
    per partition: its keys share a Redis Cluster slot, the partitions' keys do not."""
    return [
        read_worker_report(client, QueueKeys(queue))
        for queue in partition_queues(settings.queue, settings.partitions)
    ]


def combined(reports: list[WorkerReport]) -> WorkerReport:
    """The deployment's report from its partitions': depths, counters and standbys added up; a
    heartbeat only if every partition has one (the oldest, so that its age is the worst); the first
    store error any partition's worker reports."""
    if len(reports) == 1:
        return reports[0]
    beats = [r.heartbeat for r in reports]
    heartbeat = None if any(b is None for b in beats) else min(beats, key=lambda b: b.at if b else 0.0)
    counters = WorkerStats()
    for report in reports:
        counters = counters + report.counters
    return WorkerReport(
        sum(r.depth for r in reports),
        sum(r.in_flight for r in reports),
        sum(r.dead_letters for r in reports),
        heartbeat,
        counters,
        [standby for r in reports for standby in r.standbys],
        next((r.store_error for r in reports if r.store_error is not None), None),
    )
