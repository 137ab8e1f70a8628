"""The one consumer: drains the Redis list in batches and commits them to the store.

Loop: claim a batch (atomically moved to the processing list) -> decode and validate -> commit to
SQLite (seq, dedup, summaries, batch id; one transaction) -> acknowledge in Redis (dead letters,
counters, heartbeat, notification, clear the processing list; one MULTI). A crash anywhere in
between is repaired by `recover()` on the next start, so nothing popped is lost or stored twice.

A batch that crashes the worker every time (a poison pill) is recognised by its claim count: after
`max_attempts` its events are retried one at a time, and an event that crashes the worker
`max_attempts` times on its own is dead-lettered with code `poison`.
"""

import gc
import logging
import os
import signal
import socket
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from functools import partial
from types import FrameType
from typing import TypeVar

import orjson
import redis
from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception_type,
    stop_never,
    stop_when_event_set,
    wait_exponential_jitter,
)

from ingest import deadletters
from ingest.queue import InFlight, WorkQueue
from ingest.writer import CommitResult, Decoded, StoreWriter
from shared.db import open_writer
from shared.event import BadEvent, decode, max_element_bytes
from shared.keys import QueueKeys
from shared.settings import Settings

log = logging.getLogger("taskevents.worker")

T = TypeVar("T")

# Worth waiting out: Redis or SQLite unavailable, locked or full (OOM: the worker frees memory).
UNAVAILABLE = (redis.ConnectionError, redis.TimeoutError, redis.OutOfMemoryError, sqlite3.OperationalError)
WAIT_SECONDS = 1.0  # longest block on an empty queue: bounds how late a warm stop or a heartbeat is
FULL_GC_SECONDS = 60.0  # how often the loop runs a full cyclic garbage collection


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


def decode_batch(
    items: Sequence[bytes], max_payload_bytes: int, batch_id: int
) -> tuple[list[Decoded], list[bytes]]:
    """Split raw elements into storable events and dead-letter entries (with their reasons)."""
    good: list[Decoded] = []
    dead: list[bytes] = []
    keep = max_element_bytes(max_payload_bytes)  # a dead letter keeps only the head of a larger one
    for raw in items:
        try:
            event, payload_json = decode(raw, max_payload_bytes)
        except BadEvent as exc:
            dead.append(deadletters.entry(raw, exc.code, exc.reason, batch_id, keep=keep))
            continue
        good.append(Decoded(event, payload_json))
    return good, dead


class Worker:
    def __init__(self, settings: Settings, client: redis.Redis | None = None) -> None:
        self.settings = settings
        self._redis = client or redis.Redis.from_url(
            settings.redis_url,
            socket_timeout=WAIT_SECONDS + 10,
            socket_connect_timeout=5,
            health_check_interval=30,
        )
        self.queue = WorkQueue(self._redis, QueueKeys(settings.queue))
        self.writer = StoreWriter(open_writer(settings.db, settings.sqlite_synchronous))
        self._stop = threading.Event()
        self._signals = 0
        self._ttl_ms = int(settings.heartbeat_ttl * 1000)
        self._last_beat = 0.0
        self._store_error: str | None = None  # why the last commit failed, while it keeps failing
        self._redis_full = False  # an idle wait was refused for want of memory
        self.totals = {"ingested": 0, "duplicates": 0, "dead_lettered": 0, "batches": 0}
        self._retry_until_stop = self._retrying(stop_on_warm=True)
        self._retry_until_cold = self._retrying(stop_on_warm=False)

    # --- lifecycle -------------------------------------------------------------------------------

    def request_stop(self) -> None:
        """Warm stop: finish and commit the batches in hand, then return from `run`."""
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
            # hand stay in their processing slots for the next start.
            log.warning("second signal: stopping now")
            logging.shutdown()
            os._exit(128 + signum)

    def run(self) -> None:
        """Consume until a warm stop."""
        log.info("worker %s consuming %s into %s", os.getpid(), self.settings.queue, self.settings.db)
        self._loop(until_empty=False)
        log.info("worker stopped after %s", self.totals)

    def drain(self) -> None:
        """Consume until the queue is empty (benchmarks, tests, one-off catch-up)."""
        self._loop(until_empty=True)

    # --- the loop --------------------------------------------------------------------------------

    def _loop(self, *, until_empty: bool) -> None:
        """Claim and validate batch n + 1 on this thread while batch n commits on the writer thread.

        SQLite releases the GIL while it works, so the two overlap on two cores.
        """
        try:
            self._retry(self.recover)
            self._isolate()
            batch_id = self.writer.last_batch_id + 1
            with (
                ThreadPoolExecutor(1, thread_name_prefix="taskevents-writer") as writer,
                _batch_gc() as after_batch,
            ):
                pending: Future[None] | None = None
                try:
                    while not self._stop.is_set():
                        items = self._retry(partial(self.queue.claim, self.settings.batch_size, batch_id))
                        if not items:
                            pending = self._finish(pending)  # everything is acknowledged before blocking
                            if until_empty:
                                return
                            self._beat_if_due()
                            self._retry(partial(self._wait, batch_id))
                            after_batch()  # retries while Redis is down make garbage too
                            continue
                        good, dead = decode_batch(items, self.settings.max_payload_bytes, batch_id)
                        pending = self._finish(pending)
                        pending = writer.submit(self._store, batch_id, good, dead)
                        batch_id += 1
                        del items, good, dead
                        after_batch()
                finally:
                    self._finish(pending)
        except (redis.RedisError, sqlite3.OperationalError):
            if not self._stop.is_set():
                raise
            log.warning("stopped while Redis or the store was unavailable; in-flight events stay in Redis")

    def _finish(self, pending: "Future[None] | None") -> None:
        """Wait for a batch handed to the writer thread; its exception, if any, is raised here.

        A commit can take long (the store locked or full: it is retried until it lands), so the
        heartbeat, with its `store_error`, is refreshed meanwhile: the worker is alive, not stuck.
        """
        while pending is not None:
            try:
                return pending.result(timeout=self.settings.heartbeat_ttl / 3)
            except TimeoutError:
                try:
                    self.queue.beat(self._heartbeat(), self._ttl_ms)
                except redis.RedisError:
                    pass  # Redis is down too: the writer's retries wait for it
        return None

    def _wait(self, batch_id: int) -> None:
        """Block on the empty queue for up to WAIT_SECONDS."""
        try:
            self.queue.wait(WAIT_SECONDS, batch_id)
        except redis.OutOfMemoryError as exc:
            # Redis is full of something else and refuses the blocking move: pause instead, and go
            # on looping (its claims and heartbeats work at OOM), so the health check stays true.
            if not self._redis_full:
                log.warning("Redis refuses writes (%s): waiting for memory", exc)
            self._redis_full = True
            self._stop.wait(WAIT_SECONDS)
        else:
            self._redis_full = False

    def recover(self) -> None:
        """Finish what a previous worker left in the processing slots.

        Committed batches are acknowledged. The others are processed again by the loop, unless they
        have crashed the worker `max_attempts` times: then a batch's events are put back to be
        retried one at a time (`_isolate`), and a suspect event that has is dead-lettered.
        """
        left = [x for x in self.queue.in_flight() if x.items]
        suspects = self.queue.suspects() > 0  # then what is in flight is one suspect event
        uncommitted: list[InFlight] = []
        for x in left:
            if x.batch_id is not None and x.batch_id <= self.writer.last_batch_id:
                log.warning("batch %s (%d events) was committed but not acknowledged: acknowledging",
                            x.batch_id, len(x.items))  # fmt: skip
                _, dead = decode_batch(x.items, self.settings.max_payload_bytes, x.batch_id)
                done = len(x.items) if suspects else 0
                self._retry(partial(self._ack, CommitResult(x.batch_id), dead, suspects_done=done))
            else:
                uncommitted.append(x)
        if not uncommitted:
            return
        attempts = max(x.attempts for x in uncommitted)
        count = sum(len(x.items) for x in uncommitted)
        if attempts < self.settings.max_attempts:
            log.warning("%d events were taken but not committed (attempt %d of %d): processing them again",
                        count, attempts, self.settings.max_attempts)  # fmt: skip
        elif count == 1:  # it alone was in flight each time the worker died
            self._dead_letter_poison(uncommitted[0], suspect=suspects)
        else:
            # Batch order: a slot without a batch id holds the next batch (an idle worker's wait()).
            following = self.writer.last_batch_id + 1
            order = sorted(uncommitted, key=lambda x: following if x.batch_id is None else x.batch_id)
            moved = self.queue.isolate([x.slot for x in order])
            log.error("%d events crashed the worker %d times: retrying them one at a time to find why",
                      moved, attempts)  # fmt: skip

    def _dead_letter_poison(self, left: InFlight, *, suspect: bool) -> None:
        raw = left.items[0]
        # Never committed: the next batch reuses the id (and the slot).
        batch_id = left.batch_id if left.batch_id is not None else self.writer.last_batch_id + 1
        log.error("an event crashed the worker %d times on its own: dead-lettered as poison: %r",
                  left.attempts, raw[:200])  # fmt: skip
        reason = f"crashed the worker {left.attempts} times (TASKEVENTS_MAX_ATTEMPTS)"
        dead = [deadletters.entry(raw, "poison", reason, batch_id)]
        self._retry(partial(self._ack, CommitResult(batch_id), dead, suspects_done=int(suspect)))

    def _isolate(self) -> None:
        """Process suspect events one at a time, without overlap, so that a crash names its event."""
        while not self._stop.is_set() and self._retry(self.queue.suspects) > 0:
            if not self._step(1, suspects=True):
                self._retry(self.queue.clear_suspects)  # the queue was emptied under us
                return

    def step(self) -> bool:
        """Claim, commit and acknowledge one batch, without overlap. False when the queue was empty."""
        if self._retry(self.queue.suspects) > 0:
            return self._step(1, suspects=True)
        return self._step(self.settings.batch_size, suspects=False)

    def _step(self, size: int, *, suspects: bool) -> bool:
        batch_id = self.writer.last_batch_id + 1
        items = self._retry(partial(self.queue.claim, size, batch_id))
        if not items:
            return False
        good, dead = decode_batch(items, self.settings.max_payload_bytes, batch_id)
        self._store(batch_id, good, dead, suspects=len(items) if suspects else 0)
        return True

    def _store(self, batch_id: int, good: list[Decoded], dead: list[bytes], suspects: int = 0) -> None:
        result = self._retry(partial(self._commit, batch_id, good), cold_only=True)
        self._retry(partial(self._ack, result, dead, suspects_done=suspects))

    def _commit(self, batch_id: int, good: list[Decoded]) -> CommitResult:
        """One commit attempt; while they fail, the heartbeat says why (`store_error`)."""
        try:
            result = self.writer.commit(batch_id, good)
        except sqlite3.OperationalError as exc:  # locked, disk full, I/O error: retried by the caller
            if self._store_error is None:
                log.error("cannot commit batch %s to %s (%s): its events stay in Redis; retrying",
                          batch_id, self.settings.db, exc)  # fmt: skip
            self._store_error = str(exc)
            try:
                self.queue.beat(self._heartbeat(), self._ttl_ms)
            except redis.RedisError:
                pass  # the report is best effort; the retry is not
            raise
        if self._store_error is not None:
            log.warning("batch %s committed: the store takes writes again", batch_id)
            self._store_error = None
        return result

    def _ack(self, result: CommitResult, dead: list[bytes], *, suspects_done: int = 0) -> None:
        counters = {
            "ingested": result.stored,
            "duplicates": result.duplicates,
            "dead_lettered": len(dead),
            "batches": 1,
        }
        announce = {"batch": result.batch_id, "tasks": result.tasks} if result.tasks else None
        totals = {name: self.totals[name] + value for name, value in counters.items()}
        self.queue.ack(
            result.batch_id,
            dead=dead,
            counters=counters,
            heartbeat=self._heartbeat(totals),
            heartbeat_ttl_ms=self._ttl_ms,
            announce=announce,
            suspects_done=suspects_done,
        )
        self.totals = totals
        self._last_beat = time.monotonic()
        if dead:
            log.warning("batch %s: %d events dead-lettered", result.batch_id, len(dead))

    def _heartbeat(self, totals: dict[str, int] | None = None) -> bytes:
        return orjson.dumps(
            {
                "pid": os.getpid(),
                "host": socket.gethostname(),
                "at": time.time(),
                **(totals or self.totals),
                "store_error": self._store_error,
            }
        )

    def _beat_if_due(self) -> None:
        if time.monotonic() - self._last_beat >= self.settings.heartbeat_ttl / 3:
            self._retry(lambda: self.queue.beat(self._heartbeat(), self._ttl_ms))
            self._last_beat = time.monotonic()

    def _retry(self, call: Callable[[], T], *, cold_only: bool = False) -> T:
        """Run `call`, retrying while Redis or SQLite is unavailable.

        A warm stop ends the waiting (the batch stays in Redis for the next start), except where
        `cold_only`: a commit keeps trying until it lands or a second signal stops the process.
        """
        return (self._retry_until_cold if cold_only else self._retry_until_stop)(call)

    def _retrying(self, *, stop_on_warm: bool) -> Retrying:
        return Retrying(
            retry=retry_if_exception_type(UNAVAILABLE),
            wait=wait_exponential_jitter(multiplier=0.05, max=5.0, jitter=0.1),
            stop=stop_when_event_set(self._stop) if stop_on_warm else stop_never,
            sleep=self._stop.wait if stop_on_warm else time.sleep,
            before_sleep=_log_retry,
            reraise=True,
        )
