"""The worker's side of the Redis list: claim a batch, wait for work, acknowledge, put back.

A claimed batch is moved atomically into a processing list (the rq/Celery "reliable queue" pattern),
so an event popped by a worker that then dies is still in Redis. There are two processing slots and
batch n uses slot n % 2: the worker claims and validates batch n + 1 while batch n commits, and never
claims n + 2 before n is acknowledged. Each slot's `:batch` key holds its batch id; the store records
the id of the last batch it committed, which tells the next worker whether a slot's leftovers were
committed already (acknowledge them) or not (write them, in batch order; ingest/recovery.py). Each
claim also counts an attempt for its slot before anything is processed, so a batch that keeps killing
the worker is recognised (ingest/poison.py).

Only the lease holder changes these keys (ingest/lease.py): every script checks the lease first.

Redis out of memory (`maxmemory`, `noeviction`) must not wedge the worker, which is what frees
memory: Redis refuses a script's first write if that command could add memory, but never stops a
script that has already written. Every script here writes first with the lease's PEXPIRE, which adds
no memory. A MULTI would be refused whole, reads included.
"""

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, cast

import redis

from taskevents.ingest.lease import FENCE, Lease, LeaseLost, is_lease_lost
from taskevents.keys import SLOTS, QueueKeys

# Every script below that changes the queue starts with FENCE (ingest/lease.py): it runs only for the
# lease holder, refreshing the lease. KEYS end with the lease key; ARGV start with the token and ttl.

# Move up to ARGV[3] elements from the queue to the processing list, stamp the batch id, count an
# attempt, and return the whole processing list. Atomic: Redis runs scripts alone. Leftovers (a
# crashed worker's) are topped up only while the other slot (KEYS[5]) is empty: if it holds the next
# batch, the queue's head comes after that batch, and adding it to this one would store it out of
# order. KEYS: queue, processing, its batch id, its attempts, the other slot, lease.
_CLAIM = (
    FENCE
    + """
local have = redis.call('LLEN', KEYS[2])
local want = tonumber(ARGV[3]) - have
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
redis.call('DEL', KEYS[3])
if #items > 0 then
  redis.call('LTRIM', KEYS[1], #items, -1)
  -- unpack() is bounded by Lua's stack (~8,000 values): push in slices
  for i = 1, #items, 1000 do
    redis.call('RPUSH', KEYS[2], unpack(items, i, math.min(i + 999, #items)))
  end
end
redis.call('SET', KEYS[3], ARGV[4])
redis.call('INCR', KEYS[4])
return redis.call('LRANGE', KEYS[2], 0, -1)
"""
)

# Finish a batch: clear its slot, then dead letters, counters, suspects, heartbeat, notification. Only
# if the slot still holds that batch: an acknowledgement retried after its reply was lost does nothing
# the second time (no counter, dead letter or notification twice).
# KEYS: processing, its batch id, its attempts, dead, stats, heartbeat, suspects, lease.
# ARGV: token, ttl (ms; the heartbeat's too), the batch id ('' to skip the check), heartbeat, channel,
# notification ('' for none), suspects done, counter count, then counter names and values, then
# dead-letter entries.
_ACK = (
    FENCE
    + """
if ARGV[3] ~= '' and redis.call('GET', KEYS[2]) ~= ARGV[3] then
  return 0
end
redis.call('DEL', KEYS[1], KEYS[2], KEYS[3])
local at = 9
for _ = 1, tonumber(ARGV[8]) do
  redis.call('HINCRBY', KEYS[5], ARGV[at], ARGV[at + 1])
  at = at + 2
end
for i = at, #ARGV, 1000 do
  redis.call('RPUSH', KEYS[4], unpack(ARGV, i, math.min(i + 999, #ARGV)))
end
if tonumber(ARGV[7]) > 0 and redis.call('DECRBY', KEYS[7], ARGV[7]) <= 0 then
  redis.call('DEL', KEYS[7])
end
redis.call('SET', KEYS[6], ARGV[4], 'PX', ARGV[2])
if ARGV[6] ~= '' then
  redis.call('PUBLISH', ARGV[5], ARGV[6])
end
return 1
"""
)

# Replace the heartbeat. KEYS: heartbeat, lease. ARGV: token, ttl, heartbeat.
_BEAT = (
    FENCE
    + """
redis.call('SET', KEYS[1], ARGV[3], 'PX', ARGV[2])
return 1
"""
)

# Put the events of the given processing lists (in batch order) back at the head of the queue, in
# order, and, if ARGV[3] is '1', mark them as suspects. KEYS: queue, suspects, then per slot its list,
# batch id and attempts, then the lease.
_REQUEUE = (
    FENCE
    + """
local items = {}
for k = 3, #KEYS - 1, 3 do
  for _, item in ipairs(redis.call('LRANGE', KEYS[k], 0, -1)) do
    items[#items + 1] = item
  end
  redis.call('DEL', KEYS[k], KEYS[k + 1], KEYS[k + 2])
end
-- LPUSH x y z leaves z y x at the head: push from the last item back, in slices for unpack()
for last = #items, 1, -1000 do
  local chunk = {}
  for j = last, math.max(1, last - 999), -1 do
    chunk[#chunk + 1] = items[j]
  end
  redis.call('LPUSH', KEYS[1], unpack(chunk))
end
if #items > 0 and ARGV[3] == '1' then
  redis.call('INCRBY', KEYS[2], #items)
end
return #items
"""
)

# KEYS: suspects, lease. ARGV: token, ttl.
_CLEAR_SUSPECTS = (
    FENCE
    + """
redis.call('DEL', KEYS[1])
return 1
"""
)

# Take back one counted attempt of each slot: its claim ended in a store fault, not a crash.
# KEYS: the slots' attempts, then the lease. ARGV: token, ttl.
_FORGIVE = (
    FENCE
    + """
for k = 1, #KEYS - 1 do
  local n = tonumber(redis.call('GET', KEYS[k]) or '0')
  if n > 0 then
    redis.call('DEL', KEYS[k])
    if n > 1 then
      redis.call('SET', KEYS[k], n - 1)
    end
  end
end
return 1
"""
)


# hiredis keeps a reply's read buffer, as big as the reply, until its connection next reads; a pooled
# connection may sit idle for long. After a reply this big, idle connections are closed to free it.
BIG_REPLY_BYTES = 16 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class Claim:
    """A batch taken from the queue: which slot holds it, its id, and its elements in queue order."""

    slot: int
    batch_id: int
    items: list[bytes]


@dataclass(frozen=True, slots=True)
class InFlight:
    """What a previous worker left in a processing slot."""

    slot: int
    batch_id: int | None
    items: list[bytes]
    attempts: int = 0  # claims of this batch so far; each one that is still here ended in a crash


class WorkQueue:
    """The queue's keys as the lease holder changes them; every change is fenced by `lease`."""

    def __init__(self, client: redis.Redis, keys: QueueKeys, lease: Lease) -> None:
        self._redis = client
        self.keys = keys
        self.lease = lease
        self._claim = self._fenced(_CLAIM)
        self._ack = self._fenced(_ACK)
        self._beat = self._fenced(_BEAT)
        self._requeue = self._fenced(_REQUEUE)
        self._clear_suspects = self._fenced(_CLEAR_SUSPECTS)
        self._forgive = self._fenced(_FORGIVE)

    def _fenced(self, source: str) -> Callable[[list[str], list[Any]], Any]:
        """A script run with this lease's key, token and ttl; LeaseLost if the lease is not ours."""
        script = self._redis.register_script(source)

        def run(keys: list[str], args: list[Any]) -> Any:
            lease = self.lease
            term = lease.term
            if term is None:
                raise LeaseLost("the lease is not held")
            try:
                return script(keys=[*keys, self.keys.lease], args=[term.token, lease.ttl_ms, *args])
            except redis.ResponseError as exc:
                if is_lease_lost(exc):
                    raise lease.lost(term) from None
                raise

        return run

    def claim(self, max_items: int, batch_id: int) -> Claim | None:
        """Take up to `max_items` (plus any leftovers) as batch `batch_id`; None if there is no work.

        Batch n goes to slot n % SLOTS. Counts an attempt for the slot (reset by `ack`) before the worker
        does anything with it.
        """
        k, slot = self.keys, batch_id % SLOTS
        other = k.processing((slot + 1) % SLOTS)  # the one other slot (SLOTS is 2)
        keys = [k.queue, k.processing(slot), k.processing_batch(slot), k.processing_attempts(slot), other]
        items = self._claim(keys, [max_items, batch_id])
        if not items:
            return None
        self._let_go_of_big_reply(items)
        return Claim(slot, batch_id, list(items))

    def _let_go_of_big_reply(self, items: Sequence[bytes]) -> None:
        if sum(map(len, items)) >= BIG_REPLY_BYTES:
            self._redis.connection_pool.disconnect(inuse_connections=False)

    def wait(self, timeout: float) -> bool:
        """Block until the queue has an event or `timeout` passes; the queue is left as it was.

        A move of the head onto the head of the same list changes nothing, so a worker that lost its
        lease while it waited cannot have taken anything.
        """
        k = self.keys
        # Redis takes a fractional timeout (redis-py's annotation says int).
        return self._redis.blmove(k.queue, k.queue, cast(int, timeout), "LEFT", "LEFT") is not None

    def in_flight(self) -> list[InFlight]:
        # Not a MULTI: at OOM Redis refuses every command queued in one, reads too. Only the lease
        # holder changes the slots, and it is the one reading them.
        pipe = self._redis.pipeline(transaction=False)
        for slot in range(SLOTS):
            pipe.get(self.keys.processing_batch(slot))
            pipe.lrange(self.keys.processing(slot), 0, -1)
            pipe.get(self.keys.processing_attempts(slot))
        replies = pipe.execute()
        self._let_go_of_big_reply([item for items in replies[1::3] for item in items])
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

    def ack(
        self,
        slot: int,
        batch_id: int | None,
        *,
        dead: Sequence[bytes] = (),
        counters: Mapping[str, int] | None = None,
        heartbeat: bytes,
        announce: bytes | None = None,
        suspects_done: int = 0,
    ) -> None:
        """Finish batch `batch_id` in `slot` in one script: clear the slot, dead letters, counters,
        suspects, heartbeat, notification (an encoded CommitNotice); nothing if the slot no longer holds
        that batch (None: a slot an older worker left without a batch id). `suspects_done`: how many
        suspect events (see `isolate`) it settled."""
        k = self.keys
        counted = [(name, value) for name, value in (counters or {}).items() if value]
        self._ack(
            [
                k.processing(slot),
                k.processing_batch(slot),
                k.processing_attempts(slot),
                k.dead,
                k.stats,
                k.heartbeat,
                k.suspects,
            ],
            [
                "" if batch_id is None else batch_id,
                heartbeat,
                k.commits,
                announce or b"",
                suspects_done,
                len(counted),
                *(x for pair in counted for x in pair),
                *dead,
            ],
        )

    def isolate(self, slots: Sequence[int]) -> int:
        """Put these slots' events (given in batch order) back at the head of the queue, in order, as
        suspects to be processed one at a time. Returns how many."""
        return self._put_back(slots, suspects=True)

    def requeue(self, slots: Sequence[int]) -> int:
        """Put these slots' events (in batch order) back at the head of the queue, in order."""
        return self._put_back(slots, suspects=False)

    def _put_back(self, slots: Sequence[int], *, suspects: bool) -> int:
        k = self.keys
        keys = [k.queue, k.suspects]
        for slot in slots:
            keys += [k.processing(slot), k.processing_batch(slot), k.processing_attempts(slot)]
        return int(self._requeue(keys, ["1" if suspects else "0"]))

    def suspects(self) -> int:
        """Suspect events left at the head of the queue (0: normal batches)."""
        return int(self._redis.get(self.keys.suspects) or 0)

    def clear_suspects(self) -> None:
        self._clear_suspects([self.keys.suspects], [])

    def forgive(self, slots: Sequence[int]) -> None:
        """Uncount one attempt of each slot: its claim met a store fault, which is not the batch's."""
        if slots:
            self._forgive([self.keys.processing_attempts(slot) for slot in slots], [])

    def beat(self, heartbeat: bytes) -> None:
        """Refresh the heartbeat and the lease."""
        self._beat([self.keys.heartbeat], [heartbeat])
