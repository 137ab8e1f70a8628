"""The one consumer: drains the Redis list in batches and commits them to the store.

A worker first takes the queue's lease (ingest/lease.py); while another worker holds it, it waits as a
hot standby and takes over when the lease is free (at once after a warm stop, within
TASKEVENTS_HEARTBEAT_TTL after a crash elsewhere). Holding it, it opens the store (only then: a standby
touches neither the file nor its schema), takes it over (bumping its writer epoch, which fences out any
earlier writer), finishes what was left in flight (ingest/recovery.py), then loops: claim a batch
(atomically moved to a processing slot) -> decode and validate -> commit to SQLite (seq, dedup,
summaries, batch id and record; one transaction) -> acknowledge in Redis (dead letters, counters,
heartbeat, notification, clear the slot; one script). A crash anywhere in between is repaired by the
next worker's recovery, so nothing popped is lost or stored twice.

Failures are told apart by whose they are:
- Redis or the store unavailable, locked or full: retried with backoff in place, events stay in Redis.
- The store broken (corrupt, read-only, a table missing, a constraint it should never meet, a schema
  this code does not know, the file replaced under the worker): a store fault. Consuming stops, the
  heartbeat, /api/ready and the log say why, and every few seconds the worker reopens the store and
  tries again; no event is blamed, none is dead-lettered.
- The worker crashing on a batch, every time: a poison pill (ingest/poison.py).
- The lease lost, or the store taken over by another writer: the worker claims nothing more, lets the
  batch being committed finish or be refused by the store's fence, and stands by again.

A warm stop (SIGTERM) finishes the batches in hand; a commit that keeps failing is given up after
STOP_GRACE seconds, its batch left in its slot for the next worker, which does not count it as a crash.
"""

import gc
import logging
import os
import signal
import socket
import sqlite3
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from functools import partial
from types import FrameType, TracebackType
from typing import TypeVar

import redis
from tenacity import RetryCallState, Retrying, retry_if_exception, wait_exponential_jitter

from taskevents.archive import TaskArchive
from taskevents.event import max_element_bytes
from taskevents.ingest.archived import Retention
from taskevents.ingest.batch import dead_letters, decode_batch
from taskevents.ingest.lease import Lease, LeaseHeld, LeaseLost
from taskevents.ingest.lookahead import Lookahead
from taskevents.ingest.queue import Claim, WorkQueue
from taskevents.ingest.recovery import recover
from taskevents.ingest.stores import open_store_writer, postgres_error, store_identity
from taskevents.ingest.writer import BatchWriter, CommitResult, DeadMark, Decoded, Prepared, StoreFenced
from taskevents.keys import QueueKeys
from taskevents.messages import CommitNotice, Heartbeat, WorkerStats
from taskevents.schema import SchemaError
from taskevents.settings import Settings

log = logging.getLogger("taskevents.worker")

T = TypeVar("T")

WAIT_SECONDS = 0.5  # longest block on an empty queue: bounds how late a warm stop or a heartbeat is
SHORT_WAIT = 0.1  # waits shorter than this are sleeps, not a blocking read of the queue
STANDBY_POLL = 0.5  # how often a standby tries to take the lease
FAULT_BACKOFF = (0.5, 5.0)  # seconds between attempts to reopen a broken store: first, most
STOP_GRACE = 10.0  # seconds a failing commit is still retried after a warm stop
FULL_GC_SECONDS = 60.0  # how often the loop runs a full cyclic garbage collection
YOUNG_GC_BATCHES = 10  # batches between collections of the young generations
GIL_SWITCH_SECONDS = 0.0002  # the loop's GIL switch interval (_prompt_gil_handoff)
# SQLite errors that retrying the same connection cannot mend: store faults, not transient ones.
PERMANENT = ("readonly database", "no such table", "no such column", "malformed")


def unavailable(exc: BaseException) -> bool:
    """Worth waiting out: Redis or SQLite unavailable, locked or full (OOM: the worker frees memory),
    Redis unable to persist (MISCONF) or a replica for now (READONLY, after a failover)."""
    if isinstance(exc, sqlite3.OperationalError):
        return not any(words in str(exc) for words in PERMANENT)
    if isinstance(
        exc, redis.ConnectionError | redis.TimeoutError | redis.OutOfMemoryError | redis.ReadOnlyError
    ):
        return True
    return isinstance(exc, redis.ResponseError) and str(exc).startswith(("MISCONF", "LOADING"))


class StoreFault(Exception):
    """The store is broken, not busy: an error of the store's, not of an event's."""


class NewerSchema(StoreFault):
    """The store's schema is newer than this worker's: a newer worker can write it, this one cannot."""


@contextmanager
def _store_faults() -> Iterator[None]:
    """Turn the store's own errors into StoreFault; a transient OperationalError (locked, full, I/O)
    stays retryable in place."""
    try:
        yield
    except sqlite3.OperationalError as exc:
        if unavailable(exc):
            raise
        raise StoreFault(f"OperationalError: {exc}") from exc
    except SchemaError as exc:
        raise NewerSchema(f"SchemaError: {exc}") from exc
    except sqlite3.DatabaseError as exc:  # corrupt, not a database, a constraint
        raise StoreFault(f"{type(exc).__name__}: {exc}") from exc
    except Exception as exc:
        # PostgreSQL: a connection lost (server restarted, killed, unreachable) cannot be retried
        # in place, and a server's refusal is the store's: reopened after a back-off, taken over
        # again, recovered by batch id.
        if postgres_error(exc) is None:
            raise
        raise StoreFault(f"{type(exc).__name__}: {str(exc).strip()}") from exc


@contextmanager
def _batch_gc() -> Iterator[Callable[[], None]]:
    """Garbage collection on the loop's terms; yields the call to make after each batch.

    A decoded batch is tens of thousands of short-lived containers, none in a reference cycle, so
    reference counting frees them; the cyclic collector's automatic passes over them and over
    everything imported cost ~15 % of the worker's CPU (benchmarks/ingest_bench.py). So: freeze
    what start-up made, collect the young generations every YOUNG_GC_BATCHES batches, the whole
    heap once a minute. A young collection walks what is alive, the batches in hand (~3 µs an
    event, on the thread the writer's thread shares the GIL with): its cost is per collection, not
    per batch collected.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    gc.freeze()
    last_full = time.monotonic()
    batches = 0

    def after_batch() -> None:
        nonlocal last_full, batches
        batches += 1
        if time.monotonic() - last_full >= FULL_GC_SECONDS:
            gc.collect()
            last_full = time.monotonic()
        elif batches % YOUNG_GC_BATCHES == 0:
            gc.collect(1)

    try:
        yield after_batch
    finally:
        gc.unfreeze()
        if was_enabled:
            gc.enable()


@contextmanager
def _prompt_gil_handoff() -> Iterator[None]:
    """A shorter GIL switch interval while the loop runs (the process's; restored after).

    The writer's thread gives up the GIL inside every SQLite statement and needs it back after,
    while this thread validates and plans the next batch holding it; Python hands it back only
    after the switch interval (5 ms by default), ~20 times per batch. At 0.2 ms the writer waits
    far less: the production loop gained ~15 points of SQLite's ceiling (56 % -> 71 %, medians of 4
    rounds alternating in one process; docs/benchmarks.md), for more thread switches a second.
    """
    before = sys.getswitchinterval()
    sys.setswitchinterval(GIL_SWITCH_SECONDS)
    try:
        yield
    finally:
        sys.setswitchinterval(before)


def _log_retry(state: RetryCallState) -> None:
    """One line per wait, naming the call but not its arguments (a batch can be megabytes)."""
    call = getattr(state.fn, "func", state.fn)  # a functools.partial: the function it calls
    exc = state.outcome.exception() if state.outcome else None
    wait = state.next_action.sleep if state.next_action else 0.0
    log.warning("%s failed (%s: %s); retrying in %.2f s",
                getattr(call, "__qualname__", call), type(exc).__name__, exc, wait)  # fmt: skip


class Worker:
    def __init__(self, settings: Settings, client: redis.Redis | None = None) -> None:
        """Builds nothing but the Redis client: the store is opened when this worker holds the lease."""
        settings.check_partitions()  # ValueError: a SQLite file has one writer
        self.settings = settings
        self._own_client = client is None
        self._redis = client or redis.Redis.from_url(
            settings.redis_url,
            socket_timeout=WAIT_SECONDS + 10,
            socket_connect_timeout=5,
            health_check_interval=30,
        )
        self.name = settings.partition_queue  # the list it consumes: the queue, or one partition's
        keys = QueueKeys(self.name)
        self.lease = Lease(self._redis, keys, int(settings.heartbeat_ttl * 1000))
        self.queue = WorkQueue(self._redis, keys, self.lease)
        self._keep = max_element_bytes(settings.max_payload_bytes)
        self._stop = threading.Event()
        self._stop_at = 0.0
        self._signals = 0
        self._last_beat = 0.0
        self._store_error: str | None = None  # why the store cannot be written, while it cannot
        self._redis_full = False  # an idle wait was refused for want of memory
        self._claimed: set[int] = set()  # slots claimed in this term and not yet acknowledged
        self.totals = WorkerStats()  # since this worker started
        self._retry_until_stop = self._retrying(self._stopped, self._pause)
        self._retry_commit = self._retrying(self._stopped_long_ago, _sleep_briefly)
        self._hold_off_until = 0.0  # after stepping aside for a newer standby: let it take the lease
        self._writer: BatchWriter | None = None
        self._writer_file: tuple[int, int] | None = None  # the SQLite file it has open (st_dev, st_ino)
        self._archive = TaskArchive.at(settings.archive_dir)
        self.retention = Retention(self._redis, keys, self._archive)

    # --- the store -------------------------------------------------------------------------------

    @property
    def writer(self) -> BatchWriter:
        """The store's writer, opened on demand (again if the file at TASKEVENTS_DB is not the one it
        has open). Raises StoreFault if the store is broken."""
        if self._writer is None or store_identity(self.settings) != self._writer_file:
            self._close_store()
            with _store_faults():
                self._writer = open_store_writer(self.settings, self._archive)
            self._writer_file = store_identity(self.settings)
        return self._writer

    def _close_store(self) -> None:
        if self._writer is not None:
            try:
                self._writer.close()
            except Exception as exc:
                if not isinstance(exc, sqlite3.Error) and postgres_error(exc) is None:
                    raise
                log.debug("closing the broken store failed", exc_info=True)
            self._writer = None

    # --- lifecycle -------------------------------------------------------------------------------

    def request_stop(self) -> None:
        """Warm stop: finish and commit the batches in hand, give the lease up, return from `run`."""
        self._stop_at = time.monotonic()
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
        lease is lost or the store taken over by another writer."""
        log.info("worker %s for %s into %s", self.lease.identity, self.name, self.settings.store_name)
        try:
            while self._stand_by():
                try:
                    self._term(until_empty=False)
                except StoreFenced as exc:
                    # We held the queue's lease, yet another writer took the store over: a worker of
                    # another queue or Redis pointed at the same file. Let go, so a standby can try.
                    log.error("%s while this worker held the lease on %s: is another queue or Redis "
                              "writing to %s? Standing by",
                              exc, self.name, self.settings.store_name)  # fmt: skip
                    self._end_term(forgive=True)
                except LeaseLost as exc:
                    log.error("no longer the writer of %s (%s): standing by", self.name, exc)
                    self._end_term(forgive=False)
                else:  # a warm stop: what it leaves in flight did not crash it
                    self._end_term(forgive=True)
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
        store, and what was left in flight. `step` does it when needed."""
        self._acquire()
        self._begin_term()

    def close(self) -> None:
        """Give the lease up (a standby takes over at once) and close the store and Redis client.

        What is still in flight stays counted: after an exception, its batch may be what caused it."""
        self._end_term(forgive=False)
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
            raise LeaseHeld(f"another worker consumes {self.name} ({self.lease.describe_holder()})")

    def _stand_by(self) -> bool:
        """Wait for the lease; True once this worker holds it, False after a warm stop."""
        waiting, failing = False, ""
        while not self._stop.is_set():
            if time.monotonic() < self._hold_off_until:
                self._stop.wait(STANDBY_POLL)
                continue
            try:
                if self.lease.try_acquire():
                    self.lease.withdraw_standby()
                    if waiting:
                        log.warning("took the lease on %s: now the writer", self.name)
                    return True
                self.lease.announce_standby()
                if not waiting:
                    log.warning("another worker consumes %s (%s): standing by to take over when its lease "
                                "is free", self.name, self.lease.describe_holder())  # fmt: skip
                waiting, failing = True, ""
            except redis.RedisError as exc:
                if str(exc) != failing:
                    log.warning("cannot take the lease on %s (%s: %s); retrying",
                                self.name, type(exc).__name__, exc)  # fmt: skip
                failing = str(exc)
            self._stop.wait(min(STANDBY_POLL, self.settings.heartbeat_ttl / 4))
        return False

    def _end_term(self, *, forgive: bool) -> None:
        """Let the lease go; with `forgive`, take back the attempts this term counted but did not
        finish (a warm stop, a store taken over: the batches it leaves in their slots did not crash it)."""
        if forgive and self.lease.held and self._claimed:
            try:
                self.queue.forgive(sorted(self._claimed))
            except (redis.RedisError, LeaseLost):
                pass  # counted: at worst, one attempt of max_attempts
        self._claimed.clear()
        self.lease.release()

    # --- a term: the lease held ------------------------------------------------------------------

    def _term(self, *, until_empty: bool) -> None:
        """Take the store over, recover, consume; through store faults, until a warm stop."""
        backoff = FAULT_BACKOFF[0]
        while not self._stop.is_set():
            try:
                try:
                    self._begin_term()
                    self._loop(until_empty=until_empty)
                    return
                except (redis.RedisError, sqlite3.OperationalError):
                    if not self._stop.is_set():
                        raise
                    log.warning("stopped while Redis or the store was unavailable: the batches in hand "
                                "stay in Redis for the next worker")  # fmt: skip
                    return
            except StoreFault as exc:
                if until_empty:
                    raise
                if isinstance(exc, NewerSchema) and self._retry(self._standbys_waiting):
                    # A standby may be the newer worker (a rolling upgrade): let it have the store.
                    self._hold_off_until = time.monotonic() + 3 * self.settings.heartbeat_ttl
                    raise LeaseLost(f"stepping aside for a standby: {exc}") from exc
                self._wait_out_store_fault(exc, backoff)
                backoff = min(backoff * 2, FAULT_BACKOFF[1])

    def _standbys_waiting(self) -> bool:
        return bool(self._redis.zcount(self.queue.keys.standbys, int(time.time() * 1000), "+inf"))

    def _begin_term(self) -> None:
        """Take the store over (it is ours only while the lease is: check that first), finish what was
        left in flight, and the suspects one at a time."""
        self._retry(self.lease.renew)
        with _store_faults():
            epoch = self._retry(lambda: self.writer.take_over())
        self._claimed.clear()
        log.debug("took the store %s over (writer epoch %d)", self.settings.store_name, epoch)
        self._retry(self.recover)
        self._process_suspects()
        self._warn_of_strays()

    def _warn_of_strays(self) -> None:
        """With partitions, events in the unpartitioned list are read by no worker: a producer was
        started without the deployment's TASKEVENTS_PARTITIONS. Said once a term, loudly."""
        if self.settings.partitions == 1:
            return
        queue, n = self.settings.queue, self.settings.partitions
        stray = self._retry(partial(self._redis.llen, queue))
        if stray:
            log.error("%d events wait in %s, which no worker reads with %d partitions: a producer without "
                      "TASKEVENTS_PARTITIONS=%d? Push them to their partitions (docs/scaling.md)",
                      stray, queue, n, n)  # fmt: skip

    def recover(self) -> None:
        """Finish what was left in the processing slots (ingest/recovery.py)."""
        recover(self.queue, self.writer, self.settings, self._ack)

    def _wait_out_store_fault(self, exc: StoreFault, delay: float) -> None:
        """Stop consuming for `delay` seconds, keeping the lease and saying why in the heartbeat."""
        if self._store_error != str(exc):
            log.error("cannot write the store %s (%s): consuming stops, events stay in Redis; retrying "
                      "every few seconds", self.settings.store_name, exc)  # fmt: skip
        self._store_error = str(exc)
        # The claims of this term ended in a store fault, not in a crash: they are not the batch's.
        self._retry(partial(self.queue.forgive, sorted(self._claimed)))
        self._claimed.clear()
        self._close_store()  # reopened by the next try: the file may have been replaced (a restore)
        deadline = time.monotonic() + delay
        while not self._stop.is_set():
            self._beat(retry=True)
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
        lookahead = Lookahead(self.writer)
        with (
            ThreadPoolExecutor(1, thread_name_prefix="taskevents-writer") as writer,
            _batch_gc() as after_batch,
            _prompt_gil_handoff(),
        ):
            pending: Future[CommitResult] | None = None
            try:
                while not self._stop.is_set():
                    claim = self._retry(partial(self._claim, self.settings.batch_size, batch_id))
                    if claim is None:
                        if (landed := self._finish(pending)) is not None:  # acknowledged before blocking
                            lookahead.landed(landed)
                        pending = None
                        if self._store_error is not None:
                            log.warning("the store %s takes writes again", self.settings.store_name)
                            self._store_error = None  # taken over, recovered, nothing left to commit
                        if until_empty:
                            return
                        self._beat_if_due()
                        retention = self.retention
                        if retention.due(idle=True) and self._retention_step():
                            continue  # idle: retention's turn, a step at a time, within its share
                        # Back when an event comes, or when retention's next step is due. Redis
                        # ends a blocking wait to within ~0.1 s only (its `hz`), so a shorter one is
                        # a sleep here, but only once the store is quiet: while events come, a sleep
                        # would keep the next one waiting.
                        wait = retention.left(idle=True) if retention.working else WAIT_SECONDS
                        if wait < SHORT_WAIT and retention.quiet():
                            self._stop.wait(max(wait, 0.0))
                        else:
                            self._retry(partial(self._wait, min(max(wait, SHORT_WAIT), WAIT_SECONDS)))
                        after_batch()  # retries while Redis is down make garbage too
                        continue
                    self.retention.came()
                    good, dead = decode_batch(claim.items, self.settings.max_payload_bytes)
                    prepared = lookahead.plan(good)  # while the batch before commits
                    landed = self._finish(pending)
                    pending = None
                    if landed is not None and not lookahead.landed(landed) and prepared is not None:
                        prepared = lookahead.plan(good)  # that batch did not go as planned
                    if self.retention.due():  # busy: a bounded step now and then, the writer idle
                        self._retention_step()
                    lookahead.sent(prepared)
                    pending = writer.submit(self._store, claim, good, dead, prepared=prepared)
                    batch_id += 1
                    del claim, good, dead, prepared
                    after_batch()
                self._finish(pending)
                pending = None
            except BaseException as exc:
                # The executor's exit waits for the writer thread (its commit lands, or the store's
                # fence refuses it); what it raised besides this error is only logged.
                if pending is not None:
                    pending.add_done_callback(partial(_log_failure, exc))
                raise

    def _retention_step(self) -> bool:
        """One bounded step of retention (ingest/archived.py) on the store's one writer; True if more
        remains. Its store errors are the store's: they surface in the next commit."""
        writer = self.writer
        try:
            return self._retry(partial(self.retention.step, writer))
        except Exception as exc:
            if not isinstance(exc, sqlite3.Error) and postgres_error(exc) is None:
                raise
            log.warning("retention step failed: %s", exc)
            return False

    def _finish(self, pending: "Future[CommitResult] | None") -> CommitResult | None:
        """Wait for a batch handed to the writer thread, and return what it committed; its exception,
        if any, is raised here.

        A commit can take long (the store locked or full: it is retried until it lands), so the
        heartbeat, with its `store_error`, is refreshed meanwhile: the worker is alive, not stuck.
        """
        while pending is not None:
            try:
                return pending.result(timeout=self.settings.heartbeat_ttl / 3)
            except TimeoutError:
                self._beat()
        return None

    def _claim(self, size: int, batch_id: int) -> Claim | None:
        claim = self.queue.claim(size, batch_id)
        if claim is not None:
            self._claimed.add(claim.slot)
        return claim

    def _wait(self, seconds: float = WAIT_SECONDS) -> None:
        """Block on the empty queue for up to `seconds` (WAIT_SECONDS at most)."""
        try:
            self.queue.wait(seconds)
        except redis.OutOfMemoryError as exc:
            # Redis is full of something else and refuses the blocking move: pause instead, and go
            # on looping (its claims and heartbeats work at OOM), so the health check stays true.
            if not self._redis_full:
                log.warning("Redis refuses writes (%s): waiting for memory", exc)
            self._redis_full = True
            self._stop.wait(seconds)
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

    def _store(
        self,
        claim: Claim,
        good: list[Decoded],
        dead: list[DeadMark],
        suspects: int = 0,
        prepared: Prepared | None = None,
    ) -> CommitResult:
        result = self._retry_commit(partial(self._commit, claim.batch_id, good, dead, prepared))
        entries = dead_letters(claim.items, result)
        self._retry(partial(self._ack, claim.slot, claim.batch_id, result, entries, suspects))
        return result

    def _commit(
        self, batch_id: int, good: list[Decoded], dead: list[DeadMark], prepared: Prepared | None = None
    ) -> CommitResult:
        """One commit attempt; while they fail, the heartbeat says why (`store_error`)."""
        try:
            if store_identity(self.settings) != self._writer_file:
                raise StoreFault(f"the store file {self.settings.store_name} was replaced or removed")
            with _store_faults():
                result = self.writer.commit(batch_id, good, dead, keep=self._keep, prepared=prepared)
        except sqlite3.OperationalError as exc:  # locked, disk full, I/O error: retried by the caller
            if self._store_error is None:
                log.error("cannot commit batch %s to %s (%s): its events stay in Redis; retrying",
                          batch_id, self.settings.store_name, exc)  # fmt: skip
            self._store_error = str(exc)
            self._beat()
            raise
        if self._store_error is not None:
            log.warning("batch %s committed: the store takes writes again", batch_id)
            self._store_error = None
        return result

    def _ack(
        self,
        slot: int,
        batch_id: int | None,
        result: CommitResult,
        dead: list[bytes],
        suspects_done: int = 0,
    ) -> None:
        counted = WorkerStats(
            ingested=result.stored, duplicates=result.duplicates, dead_lettered=len(dead), batches=1
        )
        totals = self.totals + counted
        self.queue.ack(
            slot,
            batch_id,
            dead=dead,
            counters=counted.increments(),
            heartbeat=self._heartbeat(totals),
            announce=CommitNotice.of(result.batch_id, result.tasks, result.lsn).encode()
            if result.tasks
            else None,
            suspects_done=suspects_done,
        )
        self._claimed.discard(slot)
        self.totals = totals
        self._last_beat = time.monotonic()
        if dead:
            log.warning("batch %s: %d events dead-lettered", result.batch_id, len(dead))

    # --- the heartbeat ---------------------------------------------------------------------------

    def _heartbeat(self, totals: WorkerStats | None = None) -> bytes:
        counters = (totals or self.totals).model_dump()
        return Heartbeat(
            pid=os.getpid(),
            host=socket.gethostname(),
            at=time.time(),
            store_error=self._store_error,
            **counters,
        ).encode()

    def _beat(self, *, retry: bool = False) -> None:
        """Refresh the heartbeat (and the lease): retried while Redis is unavailable, or best effort
        (while a commit waits, Redis may be down too: the commit's own retries wait for it)."""
        if retry:
            self._retry(lambda: self.queue.beat(self._heartbeat()))
        else:
            try:
                self.queue.beat(self._heartbeat())
            except redis.RedisError:
                return
        self._last_beat = time.monotonic()

    def _beat_if_due(self) -> None:
        if time.monotonic() - self._last_beat >= self.settings.heartbeat_ttl / 3:
            self._beat(retry=True)

    # --- waiting out what is unavailable ---------------------------------------------------------

    def _retry(self, call: Callable[[], T]) -> T:
        """Run `call`, retrying while Redis or SQLite is unavailable; a warm stop ends the waiting (the
        batch stays in Redis for the next worker)."""
        return self._retry_until_stop(call)

    def _stopped(self, state: RetryCallState) -> bool:
        return self._stop.is_set()

    def _stopped_long_ago(self, state: RetryCallState) -> bool:
        """A commit keeps trying through a warm stop, to finish the batch in hand, for STOP_GRACE."""
        return self._stop.is_set() and time.monotonic() - self._stop_at > STOP_GRACE

    def _pause(self, seconds: float) -> None:
        self._stop.wait(seconds)  # a warm stop cuts the wait short

    def _retrying(self, stop: Callable[[RetryCallState], bool], sleep: Callable[[float], None]) -> Retrying:
        return Retrying(
            retry=retry_if_exception(unavailable),
            wait=wait_exponential_jitter(multiplier=0.05, max=5.0, jitter=0.1),
            stop=stop,
            sleep=sleep,
            before_sleep=_log_retry,
            reraise=True,
        )


def _sleep_briefly(seconds: float) -> None:
    time.sleep(min(seconds, 1.0))  # a commit waiting out a warm stop's grace looks often


def _log_failure(raised: BaseException, future: "Future[CommitResult]") -> None:
    exc = future.exception()
    if exc is not None and exc is not raised:
        log.warning("the batch being committed failed too: %s: %s", type(exc).__name__, exc)
