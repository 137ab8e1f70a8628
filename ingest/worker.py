"""The one consumer: drains the Redis list in batches and commits them to the store.

A worker first takes the queue's lease (ingest/lease.py); while another worker holds it, it waits as a
hot standby and takes over when the lease lapses (at once after a warm stop, within
TASKEVENTS_HEARTBEAT_TTL after a crash). Holding it, it takes the store over (bumping its writer
epoch, which fences out any earlier writer), finishes what was left in flight (ingest/recovery.py),
then loops: claim a batch (atomically moved to a processing slot) -> decode and validate -> commit to
SQLite (seq, dedup, summaries, batch id and record; one transaction) -> acknowledge in Redis (dead
letters, counters, heartbeat, notification, clear the slot; one script). A crash anywhere in between
is repaired by the next worker's recovery, so nothing popped is lost or stored twice.

Failures are told apart by whose they are:
- Redis or the store unavailable, locked or full: retried with backoff in place, events stay in Redis.
- The store broken (corrupt, a constraint it should never meet, a schema this code does not know): a
  store fault. Consuming stops, the heartbeat, /api/ready and the log say why, and every few seconds
  the worker reopens the store and tries again; no event is blamed, none is dead-lettered.
- The worker crashing on a batch, every time: a poison pill (ingest/poison.py).
- The lease lost: the worker stops writing at once and stands by again.
"""

import gc
import logging
import os
import signal
import socket
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from functools import partial
from types import FrameType, TracebackType
from typing import TypeVar

import redis
from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception_type,
    stop_never,
    stop_when_event_set,
    wait_exponential_jitter,
)

from taskevents.db import open_writer
from taskevents.event import max_element_bytes
from taskevents.ingest.batch import dead_letters, decode_batch
from taskevents.ingest.lease import Lease, LeaseHeld, LeaseLost
from taskevents.ingest.queue import Claim, WorkQueue
from taskevents.ingest.recovery import recover
from taskevents.ingest.writer import CommitResult, DeadMark, Decoded, StoreWriter
from taskevents.keys import QueueKeys
from taskevents.messages import CommitNotice, Heartbeat, WorkerStats
from taskevents.schema import SchemaError
from taskevents.settings import Settings

log = logging.getLogger("taskevents.worker")

T = TypeVar("T")

# Worth waiting out: Redis or SQLite unavailable, locked or full (OOM: the worker frees memory).
UNAVAILABLE = (redis.ConnectionError, redis.TimeoutError, redis.OutOfMemoryError, sqlite3.OperationalError)
WAIT_SECONDS = 0.5  # longest block on an empty queue: bounds how late a warm stop or a heartbeat is
STANDBY_POLL = 0.5  # how often a standby tries to take the lease
FAULT_BACKOFF = (0.5, 5.0)  # seconds between attempts to reopen a broken store: first, most
FULL_GC_SECONDS = 60.0  # how often the loop runs a full cyclic garbage collection


class StoreFault(Exception):
    """The store is broken, not busy: an error of the store's, not of an event's."""


@contextmanager
def _store_faults() -> Iterator[None]:
    """Turn the store's own errors into StoreFault; OperationalError (locked, full, I/O) stays
    retryable in place."""
    try:
        yield
    except sqlite3.OperationalError:
        raise
    except (sqlite3.DatabaseError, SchemaError) as exc:  # corrupt, not a database, constraint, schema
        raise StoreFault(f"{type(exc).__name__}: {exc}") from exc


@contextmanager
def _batch_gc() -> Iterator[Callable[[], None]]:
    """Garbage collection on the loop's terms; yields the call to make after each batch.

    A decoded batch is tens of thousands of short-lived containers, none in a reference cycle, so
    reference counting frees them; the cyclic collector's automatic passes over them and over
    everything imported cost ~15 % of the worker's CPU (benchmarks/ingest_bench.py). So: freeze
    what start-up made, collect the young generations once per batch, the whole heap once a minute.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    gc.freeze()
    last_full = time.monotonic()

    def after_batch() -> None:
        nonlocal last_full
        if time.monotonic() - last_full >= FULL_GC_SECONDS:
            gc.collect()
            last_full = time.monotonic()
        else:
            gc.collect(1)

    try:
        yield after_batch
    finally:
        gc.unfreeze()
        if was_enabled:
            gc.enable()


def _log_retry(state: RetryCallState) -> None:
    """One line per wait, naming the call but not its arguments (a batch can be megabytes)."""
    call = getattr(state.fn, "func", state.fn)  # a functools.partial: the function it calls
    exc = state.outcome.exception() if state.outcome else None
    wait = state.next_action.sleep if state.next_action else 0.0
    log.warning("%s failed (%s: %s); retrying in %.2f s",
                getattr(call, "__qualname__", call), type(exc).__name__, exc, wait)  # fmt: skip


class Worker:
    def __init__(self, settings: Settings, client: redis.Redis | None = None) -> None:
        self.settings = settings
        self._own_client = client is None
        self._redis = client or redis.Redis.from_url(
            settings.redis_url,
            socket_timeout=WAIT_SECONDS + 10,
            socket_connect_timeout=5,
            health_check_interval=30,
        )
        keys = QueueKeys(settings.queue)
        self.lease = Lease(self._redis, keys, int(settings.heartbeat_ttl * 1000))
        self.queue = WorkQueue(self._redis, keys, self.lease)
        self._keep = max_element_bytes(settings.max_payload_bytes)
        self._stop = threading.Event()
        self._signals = 0
        self._last_beat = 0.0
        self._store_error: str | None = None  # why the store cannot be written, while it cannot
        self._redis_full = False  # an idle wait was refused for want of memory
        self._claimed: set[int] = set()  # slots claimed in this term and not yet acknowledged
        self.totals = WorkerStats()  # since this worker started
        self._retry_until_stop = self._retrying(stop_on_warm=True)
        self._retry_until_cold = self._retrying(stop_on_warm=False)
        # Opened now, so that building a worker creates the store; a broken store is reported by run().
        self._writer: StoreWriter | None = None
        try:
            self._open_store()
        except StoreFault as exc:
            self._store_error = str(exc)
            log.error("cannot open the store %s: %s", settings.db, exc)

    @property
    def writer(self) -> StoreWriter:
        """The store's writer, (re)opened on demand. Raises StoreFault if the store is broken."""
        return self._writer or self._open_store()

    def _open_store(self) -> StoreWriter:
        with _store_faults():
            self._writer = StoreWriter(open_writer(self.settings.db, self.settings.sqlite_synchronous))
        return self._writer

    def _close_store(self) -> None:
        if self._writer is not None:
            try:
                self._writer.close()
            except sqlite3.Error:
                log.debug("closing the broken store failed", exc_info=True)
            self._writer = None

    # --- lifecycle -------------------------------------------------------------------------------

    def request_stop(self) -> None:
        """Warm stop: finish and commit the batches in hand, give the lease up, return from `run`."""
        self._stop.set()

    def install_signal_handlers(self) -> None:
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._on_signal)

    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        self._signals += 1
        if self._signals == 1:
            log.info("%s: finishing the batches in hand, then stopping", signal.Signals(signum).name)
            self.request_stop()
        else:
            # Cold stop, at once: an uncommitted transaction dies with the process, and the batches in
            # hand stay in their processing slots for the next worker.
            log.warning("second signal: stopping now")
            logging.shutdown()
            os._exit(128 + signum)

    def run(self) -> None:
        """Stand by until the lease is free, then consume until a warm stop; stand by again if the
        lease is lost."""
        log.info("worker %s for %s into %s", self.lease.identity, self.settings.queue, self.settings.db)
        try:
            while self._stand_by():
                try:
                    self._term(until_empty=False)
                except LeaseLost as exc:
                    log.error("no longer the writer of %s (%s): standing by", self.settings.queue, exc)
                    self._claimed.clear()
        finally:
            self.close()
        log.info("worker stopped after %s", self.totals.model_dump())

    def drain(self) -> None:
        """Consume until the queue is empty (benchmarks, tests, one-off catch-up); keeps the lease.

        Raises LeaseHeld if another worker is consuming the queue, StoreFault if the store is broken.
        """
        self._acquire()
        self._term(until_empty=True)

    def take_over(self) -> None:
        """Become the writer now, without waiting: the lease (LeaseHeld if another worker has it), the
        store, and what was left in flight. `step` and `drain` do it when needed."""
        self._acquire()
        self._retry(self._take_over_store)
        self._retry(self.recover)

    def close(self) -> None:
        """Give the lease up (a standby takes over at once) and close the store and Redis client."""
        self.lease.release()
        self.lease.withdraw_standby()
        self._close_store()
        if self._own_client:
            self._redis.close()

    def __enter__(self) -> "Worker":
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # --- the lease -------------------------------------------------------------------------------

    def _acquire(self) -> None:
        if not self.lease.held and not self._retry(self.lease.try_acquire):
            raise LeaseHeld(f"another worker consumes {self.settings.queue} ({self.lease.describe_holder()})")

    def _stand_by(self) -> bool:
        """Wait for the lease; True once this worker holds it, False after a warm stop."""
        waiting = unreachable = False
        while not self._stop.is_set():
            try:
                if self.lease.try_acquire():
                    self.lease.withdraw_standby()
                    if waiting:
                        log.warning("took the lease on %s: now the writer", self.settings.queue)
                    return True
                self.lease.announce_standby()
                if not waiting:
                    log.warning("another worker consumes %s (%s): standing by to take over when its lease "
                                "lapses", self.settings.queue, self.lease.describe_holder())  # fmt: skip
                waiting, unreachable = True, False
            except redis.RedisError as exc:
                if not unreachable:
                    log.warning("cannot reach Redis to take the lease (%s); retrying", exc)
                unreachable = True
            self._stop.wait(min(STANDBY_POLL, self.settings.heartbeat_ttl / 4))
        return False

    # --- a term: the lease held ------------------------------------------------------------------

    def _term(self, *, until_empty: bool) -> None:
        """Take the store over, recover, consume; through store faults, until a warm stop."""
        backoff = FAULT_BACKOFF[0]
        while not self._stop.is_set():
            try:
                try:
                    self._retry(self._take_over_store)
                    self._retry(self.recover)
                    self._process_suspects()
                    self._loop(until_empty=until_empty)
                    return
                except (redis.RedisError, sqlite3.OperationalError):
                    if not self._stop.is_set():
                        raise
                    log.warning(
                        "stopped while Redis or the store was unavailable; in-flight events stay in Redis"
                    )
                    return
            except StoreFault as exc:
                if until_empty:
                    raise
                self._wait_out_store_fault(exc, backoff)
                backoff = min(backoff * 2, FAULT_BACKOFF[1])

    def _take_over_store(self) -> None:
        with _store_faults():
            epoch = self.writer.take_over()
        self._claimed.clear()
        log.debug("took the store %s over (writer epoch %d)", self.settings.db, epoch)

    def recover(self) -> None:
        """Finish what was left in the processing slots (ingest/recovery.py)."""
        recover(self.queue, self.writer, self.settings, self._ack)

    def _wait_out_store_fault(self, exc: StoreFault, delay: float) -> None:
        """Stop consuming for `delay` seconds, keeping the lease and saying why in the heartbeat."""
        if self._store_error != str(exc):
            log.error("cannot write the store %s (%s): consuming stops, events stay in Redis; retrying "
                      "every few seconds", self.settings.db, exc)  # fmt: skip
        self._store_error = str(exc)
        # The claims of this term ended in a store fault, not in a crash: they are not the batch's.
        self._retry(partial(self.queue.forgive, sorted(self._claimed)))
        self._claimed.clear()
        self._close_store()  # reopened by the next try: the file may have been replaced (a restore)
        deadline = time.monotonic() + delay
        while not self._stop.is_set():
            self._retry(lambda: self.queue.beat(self._heartbeat()))
            self._last_beat = time.monotonic()
            left = deadline - time.monotonic()
            if left <= 0:
                return
            self._stop.wait(min(left, self.settings.heartbeat_ttl / 3))

    # --- the loop --------------------------------------------------------------------------------

    def _loop(self, *, until_empty: bool) -> None:
        """Claim and validate batch n + 1 on this thread while batch n commits on the writer thread.

        SQLite releases the GIL while it works, so the two overlap on two cores.
        """
        batch_id = self.writer.last_batch_id + 1
        with (
            ThreadPoolExecutor(1, thread_name_prefix="taskevents-writer") as writer,
            _batch_gc() as after_batch,
        ):
            pending: Future[None] | None = None
            try:
                while not self._stop.is_set():
                    claim = self._retry(partial(self._claim, self.settings.batch_size, batch_id))
                    if claim is None:
                        self._finish(pending)  # everything is acknowledged before blocking
                        pending = None
                        if self._store_error is not None:
                            log.warning("the store %s takes writes again", self.settings.db)
                            self._store_error = None  # taken over, recovered, nothing left to commit
                        if until_empty:
                            return
                        self._beat_if_due()
                        self._retry(self._wait)
                        after_batch()  # retries while Redis is down make garbage too
                        continue
                    good, dead = decode_batch(claim.items, self.settings.max_payload_bytes)
                    self._finish(pending)
                    pending = writer.submit(self._store, claim, good, dead)
                    batch_id += 1
                    del claim, good, dead
                    after_batch()
                self._finish(pending)
                pending = None
            except BaseException as exc:
                # The writer thread is waited for by the executor's exit; what it raised besides this
                # error is only logged (the lease lost, or the store broken, ends both the same way).
                if pending is not None:
                    pending.add_done_callback(partial(_log_failure, exc))
                raise

    def _finish(self, pending: "Future[None] | None") -> None:
        """Wait for a batch handed to the writer thread; its exception, if any, is raised here.

        A commit can take long (the store locked or full: it is retried until it lands), so the
        heartbeat, with its `store_error`, is refreshed meanwhile: the worker is alive, not stuck.
        """
        while pending is not None:
            try:
                pending.result(timeout=self.settings.heartbeat_ttl / 3)
                return
            except TimeoutError:
                try:
                    self.queue.beat(self._heartbeat())
                except redis.RedisError:
                    pass  # Redis is down too: the writer's retries wait for it

    def _claim(self, size: int, batch_id: int) -> Claim | None:
        claim = self.queue.claim(size, batch_id)
        if claim is not None:
            self._claimed.add(claim.slot)
        return claim

    def _wait(self) -> None:
        """Block on the empty queue for up to WAIT_SECONDS."""
        try:
            self.queue.wait(WAIT_SECONDS)
        except redis.OutOfMemoryError as exc:
            # Redis is full of something else and refuses the blocking move: pause instead, and go
            # on looping (its claims and heartbeats work at OOM), so the health check stays true.
            if not self._redis_full:
                log.warning("Redis refuses writes (%s): waiting for memory", exc)
            self._redis_full = True
            self._stop.wait(WAIT_SECONDS)
        else:
            self._redis_full = False

    def _process_suspects(self) -> None:
        """Process suspect events one at a time, without overlap, so that a crash names its event."""
        while not self._stop.is_set() and self._retry(self.queue.suspects) > 0:
            if not self._step(1, suspects=True):
                self._retry(self.queue.clear_suspects)  # the queue was emptied under us
                return

    def step(self) -> bool:
        """Claim, commit and acknowledge one batch, without overlap. False when the queue was empty."""
        if not self.lease.held:
            self.take_over()
        if self._retry(self.queue.suspects) > 0:
            return self._step(1, suspects=True)
        return self._step(self.settings.batch_size, suspects=False)

    def _step(self, size: int, *, suspects: bool) -> bool:
        claim = self._retry(partial(self._claim, size, self.writer.last_batch_id + 1))
        if claim is None:
            return False
        good, dead = decode_batch(claim.items, self.settings.max_payload_bytes)
        self._store(claim, good, dead, suspects=len(claim.items) if suspects else 0)
        return True

    def _store(self, claim: Claim, good: list[Decoded], dead: list[DeadMark], suspects: int = 0) -> None:
        result = self._retry(partial(self._commit, claim.batch_id, good, dead), cold_only=True)
        entries = dead_letters(claim.items, result)
        self._retry(partial(self._ack, claim.slot, result, entries, suspects))

    def _commit(self, batch_id: int, good: list[Decoded], dead: list[DeadMark]) -> CommitResult:
        """One commit attempt; while they fail, the heartbeat says why (`store_error`)."""
        try:
            with _store_faults():
                result = self.writer.commit(batch_id, good, dead, keep=self._keep)
        except sqlite3.OperationalError as exc:  # locked, disk full, I/O error: retried by the caller
            if self._store_error is None:
                log.error("cannot commit batch %s to %s (%s): its events stay in Redis; retrying",
                          batch_id, self.settings.db, exc)  # fmt: skip
            self._store_error = str(exc)
            try:
                self.queue.beat(self._heartbeat())
            except redis.RedisError:
                pass  # the report is best effort; the retry is not
            raise
        if self._store_error is not None:
            log.warning("batch %s committed: the store takes writes again", batch_id)
            self._store_error = None
        return result

    def _ack(self, slot: int, result: CommitResult, dead: list[bytes], suspects_done: int = 0) -> None:
        counted = WorkerStats(
            ingested=result.stored, duplicates=result.duplicates, dead_lettered=len(dead), batches=1
        )
        totals = self.totals + counted
        self.queue.ack(
            slot,
            dead=dead,
            counters=counted.increments(),
            heartbeat=self._heartbeat(totals),
            announce=CommitNotice.of(result.batch_id, result.tasks).encode() if result.tasks else None,
            suspects_done=suspects_done,
        )
        self._claimed.discard(slot)
        self.totals = totals
        self._last_beat = time.monotonic()
        if dead:
            log.warning("batch %s: %d events dead-lettered", result.batch_id, len(dead))

    def _heartbeat(self, totals: WorkerStats | None = None) -> bytes:
        counters = (totals or self.totals).model_dump()
        return Heartbeat(
            pid=os.getpid(),
            host=socket.gethostname(),
            at=time.time(),
            store_error=self._store_error,
            **counters,
        ).encode()

    def _beat_if_due(self) -> None:
        if time.monotonic() - self._last_beat >= self.settings.heartbeat_ttl / 3:
            self._retry(lambda: self.queue.beat(self._heartbeat()))
            self._last_beat = time.monotonic()

    def _retry(self, call: Callable[[], T], *, cold_only: bool = False) -> T:
        """Run `call`, retrying while Redis or SQLite is unavailable.

        A warm stop ends the waiting (the batch stays in Redis for the next start), except where
        `cold_only`: a commit keeps trying until it lands or a second signal stops the process.
        """
        return (self._retry_until_cold if cold_only else self._retry_until_stop)(call)

    def _pause(self, seconds: float) -> None:
        self._stop.wait(seconds)  # a warm stop cuts the wait short

    def _retrying(self, *, stop_on_warm: bool) -> Retrying:
        return Retrying(
            retry=retry_if_exception_type(UNAVAILABLE),
            wait=wait_exponential_jitter(multiplier=0.05, max=5.0, jitter=0.1),
            stop=stop_when_event_set(self._stop) if stop_on_warm else stop_never,
            sleep=self._pause if stop_on_warm else time.sleep,
            before_sleep=_log_retry,
            reraise=True,
        )


def _log_failure(raised: BaseException, future: "Future[None]") -> None:
    exc = future.exception()
    if exc is not None and exc is not raised:
        log.warning("the batch being committed failed too: %s: %s", type(exc).__name__, exc)
