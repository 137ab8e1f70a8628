"""The worker's side of the Redis list: claim a batch, wait for work, acknowledge, recover.

A claimed batch is moved atomically into a processing list (the rq/Celery "reliable queue" pattern),
so an event popped by a worker that then dies is still in Redis. Batch n uses slot n % 2: the worker
claims and validates batch n + 1 while batch n commits, and never claims n + 2 before n is
acknowledged. Each slot's `:batch` key holds its batch id; the store records the id of the last batch
it committed, which tells a restarted worker whether a slot's leftovers were committed already
(acknowledge them) or not (write them, in batch order). Each claim also counts an attempt for its
slot before anything is processed, so a batch that keeps killing the worker is recognised.

Redis out of memory (`maxmemory`, `noeviction`) must not wedge the worker, which is what frees
memory: Redis refuses a script's first write if that command could add memory, but never stops a
script that has already written. So every script here writes first with a command that frees
memory (DEL, LTRIM). A MULTI would be refused whole, reads included.
"""

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import orjson
import redis

from shared.keys import SLOTS, QueueKeys

# Move up to ARGV[1] elements from the queue to the processing list, stamp the batch id, count an
# attempt, and return the whole processing list. Atomic: Redis runs scripts alone. Leftovers (a
# crashed worker's, or the one event an idle worker's wait() moved) are topped up only while the
# other slot (KEYS[5]) is empty: if it holds the next batch, the queue's head comes after that batch,
# and adding it to this one would store it out of order.
_CLAIM = """
local have = redis.call('LLEN', KEYS[2])
local want = tonumber(ARGV[1]) - have
if have > 0 and redis.call('LLEN', KEYS[5]) > 0 then
  want = 0
end
local items = {}
if want > 0 then
  items = redis.call('LRANGE', KEYS[1], 0, want - 1)
end
if #items == 0 and redis.call('EXISTS', KEYS[2]) == 0 then
  return {}
end
redis.call('DEL', KEYS[3])  -- the first write frees memory: a claim works at OOM
if #items > 0 then
  redis.call('LTRIM', KEYS[1], #items, -1)
  -- unpack() is bounded by Lua's stack (~8,000 values): push in slices
  for i = 1, #items, 1000 do
    redis.call('RPUSH', KEYS[2], unpack(items, i, math.min(i + 999, #items)))
  end
end
redis.call('SET', KEYS[3], ARGV[2])
redis.call('INCR', KEYS[4])
return redis.call('LRANGE', KEYS[2], 0, -1)
"""

# Finish a batch: clear its slot, then dead letters, counters, suspects, heartbeat, notification.
# KEYS: processing, its batch id, its attempts, dead, stats, heartbeat, suspects.
# ARGV: heartbeat, its ttl (ms), channel, notification ('' for none), suspects done, counter count,
# then counter names and values, then dead-letter entries.
_ACK = """
redis.call('DEL', KEYS[1], KEYS[2], KEYS[3])  -- the first write frees memory: an ack works at OOM
local at = 7
for _ = 1, tonumber(ARGV[6]) do
  redis.call('HINCRBY', KEYS[5], ARGV[at], ARGV[at + 1])
  at = at + 2
end
for i = at, #ARGV, 1000 do
  redis.call('RPUSH', KEYS[4], unpack(ARGV, i, math.min(i + 999, #ARGV)))
end
if tonumber(ARGV[5]) > 0 and redis.call('DECRBY', KEYS[7], ARGV[5]) <= 0 then
  redis.call('DEL', KEYS[7])
end
redis.call('SET', KEYS[6], ARGV[1], 'PX', ARGV[2])
if ARGV[4] ~= '' then
  redis.call('PUBLISH', ARGV[3], ARGV[4])
end
return 1
"""

# Replace the heartbeat (same size): a DEL first, so it is refreshed at OOM too.
_BEAT = """
redis.call('DEL', KEYS[1])
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1
"""

# Put the events of the given processing lists (in batch order) back at the head of the queue, in
# order, and mark them as suspects. KEYS: queue, suspects, then per slot its list, batch id, attempts.
_ISOLATE = """
local items = {}
for k = 3, #KEYS, 3 do
  for _, item in ipairs(redis.call('LRANGE', KEYS[k], 0, -1)) do
    items[#items + 1] = item
  end
  redis.call('DEL', KEYS[k], KEYS[k + 1], KEYS[k + 2])  -- the first write frees memory
end
-- LPUSH x y z leaves z y x at the head: push from the last item back, in slices for unpack()
for last = #items, 1, -1000 do
  local chunk = {}
  for j = last, math.max(1, last - 999), -1 do
    chunk[#chunk + 1] = items[j]
  end
  redis.call('LPUSH', KEYS[1], unpack(chunk))
end
if #items > 0 then
  redis.call('INCRBY', KEYS[2], #items)
end
return #items
"""


@dataclass(frozen=True, slots=True)
class InFlight:
    """What a previous worker left in a processing slot."""

    slot: int
    batch_id: int | None
    items: list[bytes]
    attempts: int = 0  # claims of this batch so far; each one that is still here ended in a crash


class WorkQueue:
    def __init__(self, client: redis.Redis, keys: QueueKeys) -> None:
        self._redis = client
        self.keys = keys
        self._claim = client.register_script(_CLAIM)
        self._ack = client.register_script(_ACK)
        self._beat = client.register_script(_BEAT)
        self._isolate = client.register_script(_ISOLATE)

    def claim(self, max_items: int, batch_id: int) -> list[bytes]:
        """Take up to `max_items` (plus any leftovers) as batch `batch_id`; [] if there is no work.

        Counts an attempt for the slot (reset by `ack`) before the worker does anything with it.
        """
        k, slot = self.keys, batch_id % SLOTS
        other = k.processing((slot + 1) % SLOTS)  # the one other slot (SLOTS is 2)
        keys = [k.queue, k.processing(slot), k.processing_batch(slot), k.processing_attempts(slot), other]
        return list(self._claim(keys=keys, args=[max_items, batch_id]))

    def wait(self, timeout: float, batch_id: int) -> bool:
        """Block until an event arrives (it moves to batch `batch_id`'s slot) or `timeout` passes."""
        k = self.keys
        return (
            self._redis.blmove(k.queue, k.processing(batch_id % SLOTS), timeout, "LEFT", "RIGHT") is not None
        )

    def in_flight(self) -> list[InFlight]:
        # Not a MULTI: at OOM Redis refuses every command queued in one, reads too. Nothing else
        # touches the slots while the (one) worker recovers.
        pipe = self._redis.pipeline(transaction=False)
        for slot in range(SLOTS):
            pipe.get(self.keys.processing_batch(slot))
            pipe.lrange(self.keys.processing(slot), 0, -1)
            pipe.get(self.keys.processing_attempts(slot))
        replies = pipe.execute()
        return [
            InFlight(
                slot,
                int(raw_id) if raw_id is not None else None,
                list(items),
                int(attempts) if attempts is not None else 0,
            )
            for slot, (raw_id, items, attempts) in enumerate(
                zip(replies[::3], replies[1::3], replies[2::3], strict=True)
            )
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
        suspects_done: int = 0,
    ) -> None:
        """Finish the batch in one script: clear its slot, dead letters, counters, suspects, heartbeat,
        notification. `suspects_done`: how many suspect events (see `isolate`) it settled."""
        k, slot = self.keys, batch_id % SLOTS
        counted = [(name, value) for name, value in (counters or {}).items() if value]
        self._ack(
            keys=[
                k.processing(slot),
                k.processing_batch(slot),
                k.processing_attempts(slot),
                k.dead,
                k.stats,
                k.heartbeat,
                k.suspects,
            ],
            args=[
                heartbeat,
                heartbeat_ttl_ms,
                k.commits,
                orjson.dumps(announce) if announce else b"",
                suspects_done,
                len(counted),
                *(x for pair in counted for x in pair),
                *dead,
            ],
        )

    def isolate(self, slots: Sequence[int]) -> int:
        """Put these slots' events (given in batch order) back at the head of the queue, in order, as
        suspects to be processed one at a time. Returns how many."""
        k = self.keys
        keys = [k.queue, k.suspects]
        for slot in slots:
            keys += [k.processing(slot), k.processing_batch(slot), k.processing_attempts(slot)]
        return int(self._isolate(keys=keys, args=[]))

    def suspects(self) -> int:
        """Suspect events left at the head of the queue (0: normal batches)."""
        return int(self._redis.get(self.keys.suspects) or 0)

    def clear_suspects(self) -> None:
        self._redis.delete(self.keys.suspects)

    def beat(self, heartbeat: bytes, ttl_ms: int) -> None:
        self._beat(keys=[self.keys.heartbeat], args=[heartbeat, ttl_ms])

    def depth(self) -> int:
        return int(self._redis.llen(self.keys.queue))
