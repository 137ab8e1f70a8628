"""The worker's side of the Redis list: claim a batch, wait for work, acknowledge, recover.

A claimed batch is moved atomically into a processing list (the rq/Celery "reliable queue" pattern),
so an event popped by a worker that then dies is still in Redis. Batch n uses slot n % 2: the worker
claims and validates batch n + 1 while batch n commits, and never claims n + 2 before n is
acknowledged. Each slot's `:batch` key holds its batch id; the store records the id of the last batch
it committed, which tells a restarted worker whether a slot's leftovers were committed already
(acknowledge them) or not (write them, in batch order).
"""

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import orjson
import redis

from shared.keys import SLOTS, QueueKeys

# Move up to ARGV[1] elements from the queue to the processing list (topping up anything already
# there), stamp the batch id, and return the whole processing list. Atomic: Redis runs scripts alone.
_CLAIM = """
local want = tonumber(ARGV[1]) - redis.call('LLEN', KEYS[2])
if want > 0 then
  local items = redis.call('LRANGE', KEYS[1], 0, want - 1)
  -- unpack() is bounded by Lua's stack (~8,000 values): push in slices
  for i = 1, #items, 1000 do
    redis.call('RPUSH', KEYS[2], unpack(items, i, math.min(i + 999, #items)))
  end
  if #items > 0 then
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
    """What a previous worker left in a processing slot."""

    slot: int
    batch_id: int | None
    items: list[bytes]


class WorkQueue:
    def __init__(self, client: redis.Redis, keys: QueueKeys) -> None:
        self._redis = client
        self.keys = keys
        self._claim = client.register_script(_CLAIM)

    def claim(self, max_items: int, batch_id: int) -> list[bytes]:
        """Take up to `max_items` (plus any leftovers) as batch `batch_id`; [] if there is no work."""
        k, slot = self.keys, batch_id % SLOTS
        keys = [k.queue, k.processing(slot), k.processing_batch(slot)]
        return list(self._claim(keys=keys, args=[max_items, batch_id]))

    def wait(self, timeout: float, batch_id: int) -> bool:
        """Block until an event arrives (it moves to batch `batch_id`'s slot) or `timeout` passes."""
        k = self.keys
        return (
            self._redis.blmove(k.queue, k.processing(batch_id % SLOTS), timeout, "LEFT", "RIGHT") is not None
        )

    def in_flight(self) -> list[InFlight]:
        pipe = self._redis.pipeline(transaction=True)
        for slot in range(SLOTS):
            pipe.get(self.keys.processing_batch(slot))
            pipe.lrange(self.keys.processing(slot), 0, -1)
        replies = pipe.execute()
        return [
            InFlight(slot, int(raw_id) if raw_id is not None else None, list(items))
            for slot, (raw_id, items) in enumerate(zip(replies[::2], replies[1::2], strict=True))
        ]

    def in_flight_count(self) -> int:
        pipe = self._redis.pipeline(transaction=False)
        for key in self.keys.processing_keys:
            pipe.llen(key)
        return sum(pipe.execute())

    def ack(
        self,
        batch_id: int,
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
        pipe.delete(k.processing(batch_id % SLOTS), k.processing_batch(batch_id % SLOTS))
        pipe.set(k.heartbeat, heartbeat, px=heartbeat_ttl_ms)
        if announce:
            pipe.publish(k.commits, orjson.dumps(announce))
        pipe.execute()

    def beat(self, heartbeat: bytes, ttl_ms: int) -> None:
        self._redis.set(self.keys.heartbeat, heartbeat, px=ttl_ms)

    def depth(self) -> int:
        return int(self._redis.llen(self.keys.queue))
