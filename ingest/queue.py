"""The worker's side of the Redis list: claim a batch, wait for work, acknowledge, recover.

A claimed batch is moved atomically into `<queue>:processing` (the rq/Celery "reliable queue"
pattern), so an event popped by a worker that then dies is still in Redis. `<queue>:processing:batch`
holds the id of that batch; the store records the id of the last batch it committed, which tells a
restarted worker whether the leftovers were committed already (acknowledge them) or not (write them).
"""

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import orjson
import redis

from shared.keys import QueueKeys

# Move up to ARGV[1] elements from the queue to the processing list (topping up anything already
# there), stamp the batch id, and return the whole processing list. Atomic: Redis runs scripts alone.
_CLAIM = """
local want = tonumber(ARGV[1]) - redis.call('LLEN', KEYS[2])
if want > 0 then
  local items = redis.call('LRANGE', KEYS[1], 0, want - 1)
  if #items > 0 then
    redis.call('RPUSH', KEYS[2], unpack(items))
    redis.call('LTRIM', KEYS[1], #items, -1)
  end
end
local batch = redis.call('LRANGE', KEYS[2], 0, -1)
if #batch > 0 then
  redis.call('SET', KEYS[3], ARGV[2])
end
return batch
"""


@dataclass(frozen=True, slots=True)
class InFlight:
    """What a previous worker left in the processing list."""

    batch_id: int | None
    items: list[bytes]


class WorkQueue:
    def __init__(self, client: redis.Redis, keys: QueueKeys) -> None:
        self._redis = client
        self.keys = keys
        self._claim = client.register_script(_CLAIM)

    def claim(self, max_items: int, batch_id: int) -> list[bytes]:
        """Take up to `max_items` (plus any leftovers) as batch `batch_id`; [] if there is no work."""
        k = self.keys
        return list(self._claim(keys=[k.queue, k.processing, k.processing_batch], args=[max_items, batch_id]))

    def wait(self, timeout: float) -> bool:
        """Block until an event arrives (it moves to the processing list) or `timeout` passes."""
        k = self.keys
        return self._redis.blmove(k.queue, k.processing, timeout, "LEFT", "RIGHT") is not None

    def in_flight(self) -> InFlight:
        pipe = self._redis.pipeline(transaction=True)
        pipe.get(self.keys.processing_batch)
        pipe.lrange(self.keys.processing, 0, -1)
        raw_id, items = pipe.execute()
        return InFlight(int(raw_id) if raw_id is not None else None, list(items))

    def ack(
        self,
        *,
        dead: Sequence[bytes] = (),
        counters: Mapping[str, int] | None = None,
        heartbeat: bytes,
        heartbeat_ttl_ms: int,
        announce: Mapping[str, object] | None = None,
    ) -> None:
        """Finish the batch in one MULTI: dead letters, counters, heartbeat, notify, clear in-flight."""
        k = self.keys
        pipe = self._redis.pipeline(transaction=True)
        if dead:
            pipe.rpush(k.dead, *dead)
        for name, value in (counters or {}).items():
            if value:
                pipe.hincrby(k.stats, name, value)
        pipe.delete(k.processing, k.processing_batch)
        pipe.set(k.heartbeat, heartbeat, px=heartbeat_ttl_ms)
        if announce:
            pipe.publish(k.commits, orjson.dumps(announce))
        pipe.execute()

    def beat(self, heartbeat: bytes, ttl_ms: int) -> None:
        self._redis.set(self.keys.heartbeat, heartbeat, px=ttl_ms)

    def depth(self) -> int:
        return int(self._redis.llen(self.keys.queue))
