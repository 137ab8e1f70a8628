"""The single-writer lease: at most one worker consumes a queue and writes its store at a time.

`<queue>:worker:lease` holds the active worker's token for `ttl` milliseconds. A worker takes it only
when nobody holds it, and keeps it by refreshing it: every script of the WorkQueue that changes the
queue (claim, acknowledge, heartbeat, put back) first checks that the token is still its own and
extends the TTL, and fails with LEASELOST otherwise. So a worker that lost its lease (paused past the
TTL, cut off from Redis while another took over) can no longer claim, acknowledge or touch a
processing slot.

Redis alone cannot stop a commit that was already on its way to the store, so the store fences too:
a worker that takes the lease bumps the store's writer epoch before it reads anything, and every
commit checks the epoch it started with (ingest/writer.py). Whatever the timing, a deposed worker's
commit either lands before the successor took over the store (and the successor's recovery sees it),
or it is refused.

While a worker holds the lease, a thread of its own renews it every third of its TTL, so a long
commit or a slow batch never lets it lapse: it lapses when the process dies, freezes or loses Redis.
(The heartbeat, written by the loop itself, is what says the loop is making progress.) Each holding
is a `Term` with its own token: a renewal that comes back late from an earlier term can only end
that term, never the current one.

A worker restarted on the same machine need not wait for its predecessor's lease to lapse when the
predecessor is provably gone: the token names the holder's host, boot (`/proc/sys/kernel/random/
boot_id`: the same for every container of one kernel, different for every machine and reboot), PID
namespace and pid, and a holder with our host, boot and PID namespace whose pid no longer runs is
taken over at once. Any other holder is waited for until its lease lapses.

Workers that find the lease held wait as hot standbys: they retry every POLL seconds and record
themselves in `<queue>:worker:standbys`, so readiness can show them.

Redis out of memory: the scripts that take the lease write first with a DEL, which adds no memory,
so a worker restarted on a full Redis takes the lease and drains it.
"""

import logging
import os
import socket
import threading
import time
import uuid
from dataclasses import dataclass, field

import redis

from taskevents.keys import QueueKeys

log = logging.getLogger("taskevents.worker")

LEASE_LOST = "LEASELOST"  # the error a fenced script answers with

# Refresh (keep) the lease if it is ours. KEYS: lease. ARGV: token, ttl (ms).
RENEW = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return redis.error_reply('LEASELOST the lease is no longer ours')
end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return 1
"""

# The same check, as the first lines of every script that changes the queue (ingest/queue.py): the
# lease key is that script's last key, and the token and ttl its first two arguments.
FENCE = """
local lease = KEYS[#KEYS]
if redis.call('GET', lease) ~= ARGV[1] then
  return redis.error_reply('LEASELOST the lease is no longer ours')
end
redis.call('PEXPIRE', lease, ARGV[2])  -- a write that adds no memory: the script may then write at OOM
"""

# Take the lease if nobody holds it (`expected` ''), or replace the token `expected` (a dead holder's).
# The DEL first is a write that frees memory: a SET alone is refused at OOM. KEYS: lease.
# ARGV: expected, token, ttl (ms).
_ACQUIRE = """
local current = redis.call('GET', KEYS[1])
if (current or '') ~= ARGV[1] then
  return 0
end
redis.call('DEL', KEYS[1])
redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
return 1
"""

_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1])
  return 1
end
return 0
"""

# KEYS: standbys. ARGV: member, its expiry (ms since the epoch), now (ms).
_STANDBY = """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[3])
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[1])
return 1
"""


class LeaseLost(Exception):
    """This worker is no longer the queue's writer: another one took over, or its lease lapsed."""


class LeaseHeld(Exception):
    """Another worker holds the lease (raised where waiting for it is not wanted: tests, drain)."""


def is_lease_lost(exc: redis.ResponseError) -> bool:
    return str(exc).startswith(LEASE_LOST)


def _read(path: str) -> str:
    try:
        with open(path) as f:
            return f.read().strip().replace("-", "")[:12] or "-"
    except OSError:
        return "-"


def _pid_namespace() -> str:
    try:
        return str(os.stat("/proc/self/ns/pid").st_ino)
    except OSError:
        return "-"  # no /proc: pids cannot be compared, never taken for dead


@dataclass(slots=True)
class Term:
    """One holding of the lease: its token, and the event that ends its renewing thread."""

    token: str
    ended: threading.Event = field(default_factory=threading.Event)


class Lease:
    """This worker's claim to be the one consumer of `keys.queue`."""

    _held_here: set[str] = set()  # tokens held by the Lease objects of this process

    def __init__(self, client: redis.Redis, keys: QueueKeys, ttl_ms: int) -> None:
        self._redis = client
        self.keys = keys
        self.ttl_ms = ttl_ms
        # Host, boot, PID namespace and pid name the holder (logs, and the takeover of a dead one on
        # this machine); the token adds a part that is new for every term.
        self._here = (socket.gethostname(), _read("/proc/sys/kernel/random/boot_id"), _pid_namespace())
        self.identity = ":".join((*self._here, str(os.getpid())))
        self._term: Term | None = None
        self._lock = threading.Lock()  # the main thread and the renewing thread both end terms
        self._acquire = client.register_script(_ACQUIRE)
        self._renew = client.register_script(RENEW)
        self._release = client.register_script(_RELEASE)
        self._standby = client.register_script(_STANDBY)

    @property
    def held(self) -> bool:
        return self._term is not None

    @property
    def term(self) -> Term | None:
        return self._term

    @property
    def token(self) -> str:
        """The current term's token ('' while the lease is not held: it matches no holder)."""
        term = self._term
        return term.token if term is not None else ""

    def try_acquire(self) -> bool:
        """Take the lease if nobody holds it, or if its holder is provably dead on this machine.
        Raises redis.RedisError if Redis cannot be asked."""
        if self._term is not None:
            return True
        token = f"{self.identity}:{uuid.uuid4().hex[:12]}"
        taken = bool(self._acquire(keys=[self.keys.lease], args=["", token, self.ttl_ms]))
        if not taken:
            holder = self.holder()
            if holder is not None and self._is_dead_here(holder):
                taken = bool(self._acquire(keys=[self.keys.lease], args=[holder, token, self.ttl_ms]))
                if taken:
                    log.warning(
                        "the lease holder %s is no longer running on this machine: taking over", holder
                    )
        if taken:
            term = Term(token)
            with self._lock:
                self._term = term
                Lease._held_here.add(token)
            threading.Thread(target=self._keep, args=(term,), name="taskevents-lease", daemon=True).start()
        return taken

    def _is_dead_here(self, token: str) -> bool:
        """True if `token`'s holder ran on this machine, in this PID namespace, and runs no more."""
        parts = token.rsplit(":", 4)  # host, boot, PID namespace, pid, term
        if len(parts) != 5 or tuple(parts[:3]) != self._here or "-" in self._here or not parts[3].isdigit():
            return False
        pid = int(parts[3])
        if pid == os.getpid():
            # We are that pid now: unless a worker of this process holds it, its holder was an earlier
            # process that had our pid.
            return token not in Lease._held_here
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        except OSError:
            return False  # it exists (another user's): alive
        return False

    def _keep(self, term: Term) -> None:
        """Renew the lease every third of its TTL until this term ends."""
        unreachable = False
        while not term.ended.wait(self.ttl_ms / 3000):
            try:
                self.renew(term)
                unreachable = False
            except LeaseLost as exc:
                log.error("the lease on %s was lost (%s)", self.keys.queue, exc)
                return
            except redis.RedisError as exc:
                if not unreachable:
                    log.warning("cannot renew the lease (%s); it lapses in %.1fs", exc, self.ttl_ms / 1000)
                unreachable = True

    def renew(self, term: Term | None = None) -> None:
        """Extend the lease of `term` (default: the current one); LeaseLost if it is not ours any more."""
        term = term or self._term
        if term is None:
            raise LeaseLost("the lease is not held")
        try:
            self._renew(keys=[self.keys.lease], args=[term.token, self.ttl_ms])
        except redis.ResponseError as exc:
            if is_lease_lost(exc):
                raise self.lost(term) from None
            raise

    def lost(self, term: Term | None = None) -> LeaseLost:
        """Note that `term` (default: the current one) is over because a fenced script said so; the
        error to raise, saying who has the lease now. A term that has already ended changes nothing."""
        self._end(term or self._term)
        return LeaseLost(self.describe_holder())

    def _end(self, term: Term | None) -> bool:
        """End `term` if it is the current one; True if it was."""
        if term is None:
            return False
        term.ended.set()
        with self._lock:
            Lease._held_here.discard(term.token)
            if self._term is not term:
                return False
            self._term = None
            return True

    def release(self) -> None:
        """Give the lease up (a warm stop), so a standby takes over at once. Best effort."""
        term = self._term
        if not self._end(term):
            return
        assert term is not None
        try:
            self._release(keys=[self.keys.lease], args=[term.token])
        except redis.RedisError as exc:
            log.warning("could not release the lease (%s); it lapses in %.1fs", exc, self.ttl_ms / 1000)

    def holder(self) -> str | None:
        value = self._redis.get(self.keys.lease)
        return value.decode("utf-8", "replace") if isinstance(value, bytes) else None

    def describe_holder(self) -> str:
        try:
            holder = self.holder()
        except redis.RedisError:
            return "Redis unreachable"
        if holder is None:
            return "lapsed"
        return "held by this worker" if holder == self.token else f"held by {holder}"

    def announce_standby(self) -> None:
        """Say that this worker waits for the lease (for readiness); the entry lapses with the TTL."""
        now = int(time.time() * 1000)
        self._standby(keys=[self.keys.standbys], args=[self.identity, now + self.ttl_ms, now])

    def withdraw_standby(self) -> None:
        try:
            self._redis.zrem(self.keys.standbys, self.identity)
        except redis.RedisError:
            pass  # it lapses by itself
