"""The single-writer lease: at most one worker consumes a queue and writes its store at a time.

`<queue>:worker:lease` holds the active worker's token for `ttl` milliseconds. A worker takes it with
`SET NX PX` and keeps it by refreshing it: every script of the WorkQueue that changes the queue (claim,
acknowledge, heartbeat, isolate) first checks that the token is still its own and extends the TTL,
and fails with LEASELOST otherwise. So a worker that lost its lease (paused past the TTL, cut off from
Redis while another took over) can no longer claim, acknowledge or touch a processing slot.

Redis alone cannot stop a commit that was already on its way to the store, so the store fences too:
a worker that takes the lease bumps the store's writer epoch before it reads anything, and every
commit checks the epoch it started with (ingest/writer.py). Whatever the timing, a deposed worker's
commit either lands before the successor took over the store (and the successor's recovery sees it),
or it is refused.

While a worker holds the lease, a thread of its own renews it every third of its TTL, so a long
commit or a slow batch never lets it lapse: it lapses when the process dies, freezes or loses Redis.
(The heartbeat, written by the loop itself, is what says the loop is making progress.)

A worker restarted on the same host after a crash does not wait for its predecessor's lease to lapse:
the token names the holder's host, PID namespace and pid, and a holder that is provably dead (same
host and PID namespace, and no such process, or our own pid) is taken over at once.

Workers that find the lease held wait as hot standbys: they retry every POLL_SECONDS and record
themselves in `<queue>:worker:standbys`, so readiness can show them.
"""

import logging
import os
import socket
import threading
import time
import uuid

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

# Replace a dead holder's token with ours. KEYS: lease. ARGV: the dead token, ours, ttl (ms).
_SUCCEED = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
  return 1
end
return 0
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


_held_here: set[str] = set()  # tokens held by the Lease objects of this process


def _pid_namespace() -> str:
    try:
        return str(os.stat("/proc/self/ns/pid").st_ino)
    except OSError:
        return "-"  # no /proc: pids cannot be compared, never taken for dead


def _is_dead_here(token: str, host: str, pidns: str) -> bool:
    """True if `token`'s holder ran in this host's PID namespace and is no longer running."""
    parts = token.rsplit(":", 3)
    if len(parts) != 4 or parts[0] != host or parts[1] != pidns or pidns == "-" or not parts[2].isdigit():
        return False
    pid = int(parts[2])
    if pid == os.getpid():
        # We are that pid now: unless another worker of this process holds it, its holder was an
        # earlier process (a container's PID 1, restarted).
        return token not in _held_here
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except OSError:
        return False  # it exists (another user's): alive
    return False


class Lease:
    """This worker's claim to be the one consumer of `keys.queue`."""

    def __init__(self, client: redis.Redis, keys: QueueKeys, ttl_ms: int) -> None:
        self._redis = client
        self.keys = keys
        self.ttl_ms = ttl_ms
        # Host, PID namespace and pid name the holder (logs, and a restart's takeover of a dead one);
        # the token adds a part that is new for every term.
        self._host, self._pidns = socket.gethostname(), _pid_namespace()
        self.identity = f"{self._host}:{self._pidns}:{os.getpid()}"
        self.token = ""
        self.held = False
        self._released = threading.Event()
        self._renew = client.register_script(RENEW)
        self._release = client.register_script(_RELEASE)
        self._succeed = client.register_script(_SUCCEED)
        self._standby = client.register_script(_STANDBY)

    def try_acquire(self) -> bool:
        """Take the lease if nobody holds it. Raises redis.RedisError if Redis cannot be asked."""
        self.token = f"{self.identity}:{uuid.uuid4().hex[:12]}"
        self.held = bool(self._redis.set(self.keys.lease, self.token, nx=True, px=self.ttl_ms))
        if not self.held:
            holder = self.holder()
            if holder is not None and _is_dead_here(holder, self._host, self._pidns):
                self.held = bool(
                    self._succeed(keys=[self.keys.lease], args=[holder, self.token, self.ttl_ms])
                )
                if self.held:
                    log.warning("the lease holder %s is no longer running on this host: taking over", holder)
        if self.held:
            _held_here.add(self.token)
            self._released = threading.Event()
            threading.Thread(
                target=self._keep, args=(self.token, self._released), name="taskevents-lease", daemon=True
            ).start()
        return self.held

    def _keep(self, token: str, released: threading.Event) -> None:
        """Renew the lease every third of its TTL until it is released or lost."""
        unreachable = False
        while not released.wait(self.ttl_ms / 3000):
            if not self.held or self.token != token:
                return
            try:
                self.renew()
                unreachable = False
            except LeaseLost as exc:
                log.error("the lease on %s was lost (%s)", self.keys.queue, exc)
                return
            except redis.RedisError as exc:
                if not unreachable:
                    log.warning("cannot renew the lease (%s); it lapses in %.1fs", exc, self.ttl_ms / 1000)
                unreachable = True

    def renew(self) -> None:
        """Extend the lease; LeaseLost if it is not ours any more."""
        try:
            self._renew(keys=[self.keys.lease], args=[self.token, self.ttl_ms])
        except redis.ResponseError as exc:
            if is_lease_lost(exc):
                raise self.lost() from None
            raise

    def lost(self) -> LeaseLost:
        """Note that the lease is gone (a fenced script said so); the error to raise, saying who has it."""
        self._stop_keeping()
        self.held = False
        return LeaseLost(self.describe_holder())

    def _stop_keeping(self) -> None:
        self._released.set()
        _held_here.discard(self.token)

    def release(self) -> None:
        """Give the lease up (a warm stop), so a standby takes over at once. Best effort."""
        self._stop_keeping()
        if not self.held:
            return
        self.held = False
        try:
            self._release(keys=[self.keys.lease], args=[self.token])
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
        return f"held by {holder}" if holder else "lapsed"

    def announce_standby(self) -> None:
        """Say that this worker waits for the lease (for readiness); the entry lapses with the TTL."""
        now = int(time.time() * 1000)
        self._standby(keys=[self.keys.standbys], args=[self.identity, now + self.ttl_ms, now])

    def withdraw_standby(self) -> None:
        try:
            self._redis.zrem(self.keys.standbys, self.identity)
        except redis.RedisError:
            pass  # it lapses by itself
