"""The producer client: `emit()` validates on the caller's thread and returns without I/O.

A background thread frames buffered events (event_uid, emitted_at) and pushes them with one RPUSH
per chunk. While Redis is unreachable it keeps them in a bounded buffer and retries with backoff;
past the bound it drops the oldest and counts them. Nothing here raises a connection error into the
runner. Safe across threads and across `fork()`: a child starts with an empty buffer and a sender of
its own, and the parent's buffered events are sent once, by the parent.
"""

import atexit
import logging
import os
import threading
import time
import weakref
from collections import deque
from typing import Any

import orjson
import redis
from pydantic import ValidationError
from redis.backoff import ExponentialWithJitterBackoff
from ulid import ULID

from taskevents.clock import format_ms
from taskevents.event import BadEvent, WireEvent, describe, encode_payload
from taskevents.keys import partition_of, partition_queue
from taskevents.settings import ProducerSettings, build

log = logging.getLogger("taskevents.emitter")

_live: "weakref.WeakSet[Emitter]" = weakref.WeakSet()
_hooks_installed = False
_hooks_lock = threading.Lock()


CHUNK_SIZE = 500  # events per RPUSH: large enough to amortise a round trip, small enough to retry


class Emitter:
    """Fire-and-forget event producer. One per process is plenty; it is thread-safe.

    Every argument left out takes its `TASKEVENTS_*` setting (`ProducerSettings`), read when the emitter
    is built: `Emitter()` in a runner started with `TASKEVENTS_REDIS_URL` and `TASKEVENTS_QUEUE` pushes
    where they say. A malformed URL or option, given or from the environment, raises ValueError here.
    """

    def __init__(
        self,
        redis_url: str | None = None,
        *,
        queue: str | None = None,
        partitions: int | None = None,
        buffer_size: int | None = None,
        max_payload_bytes: int | None = None,
        flush_timeout: float | None = None,
        chunk_size: int = CHUNK_SIZE,
        client: redis.Redis | None = None,
    ) -> None:
        """`client`: a redis-py client to push with (default: one made from `redis_url` on first send)."""
        settings = build(
            ProducerSettings,
            {"emitter_buffer": "buffer_size"},
            redis_url=redis_url,
            queue=queue,
            partitions=partitions,
            emitter_buffer=buffer_size,
            max_payload_bytes=max_payload_bytes,
            flush_timeout=flush_timeout,
        )
        if chunk_size < 1:
            raise ValueError(f"chunk_size: must be at least 1, got {chunk_size!r}")
        self.redis_url = settings.redis_url
        self.queue = settings.queue
        self.partitions = settings.partitions
        self._lists = [partition_queue(self.queue, p, self.partitions) for p in range(self.partitions)]
        self.buffer_size = settings.emitter_buffer
        self.max_payload_bytes = settings.max_payload_bytes
        self.flush_timeout = settings.flush_timeout
        self.chunk_size = chunk_size
        self._given_client = client
        self._reset()
        _install_process_hooks()
        _live.add(self)

    @classmethod
    def from_settings(cls, settings: ProducerSettings) -> "Emitter":
        return cls(
            settings.redis_url,
            queue=settings.queue,
            partitions=settings.partitions,
            buffer_size=settings.emitter_buffer,
            max_payload_bytes=settings.max_payload_bytes,
            flush_timeout=settings.flush_timeout,
        )

    def _reset(self) -> None:
        """Fresh state: at construction and in a forked child (whose locks and thread are unusable)."""
        self._lock = threading.Lock()
        self._sent = threading.Condition(self._lock)  # notified whenever the buffer drains a chunk
        self._wake = threading.Event()  # set by emit(): there is something to send
        self._closing = threading.Event()  # set by close(): stop retrying
        self._buffer: deque[tuple[int, str | None, bytes, str]] = deque()  # (…, the list it goes to)
        self._inflight = 0
        self._thread: threading.Thread | None = None
        self._closed = False
        self._client: redis.Redis | None = self._given_client
        self.dropped = 0  # events discarded because the buffer was full
        self.sent = 0

    # --- the runner's side -----------------------------------------------------------------------

    def emit(
        self,
        task_id: str,
        event_type: str,
        *,
        span_id: str,
        actor: str,
        phase: str | None = None,
        parent_span_id: str | None = None,
        payload: dict[str, Any] | None = None,
        event_uid: str | None = None,
    ) -> None:
        """Queue one event. Raises ValueError naming the field if an argument is invalid."""
        try:
            WireEvent.model_validate(  # the worker's own rules, at the call site
                {
                    "task_id": task_id,
                    "event_type": event_type,
                    "phase": phase,
                    "actor": actor,
                    "span_id": span_id,
                    "parent_span_id": parent_span_id,
                    "event_uid": event_uid,
                    "payload": {} if payload is None else payload,
                }
            )
            payload_json = encode_payload(payload, self.max_payload_bytes)
        except ValidationError as exc:
            raise ValueError(describe(exc)) from None
        except BadEvent as exc:
            raise ValueError(exc.reason) from None
        body = orjson.dumps(
            {
                "task_id": task_id,
                "event_type": event_type,
                "phase": phase,
                "actor": actor,
                "span_id": span_id,
                "parent_span_id": parent_span_id,
                "payload": orjson.Fragment(payload_json),
            }
        )
        target = self._lists[partition_of(task_id, self.partitions)] if self.partitions > 1 else self.queue
        item = (time.time_ns(), event_uid, body, target)
        with self._lock:
            if self._closed:  # e.g. a runner thread still emitting during interpreter exit
                self.dropped += 1
                log.warning("emit() on a closed emitter: event dropped (%d so far)", self.dropped)
                return
            if len(self._buffer) >= self.buffer_size:
                self._buffer.popleft()
                self.dropped += 1
                if self.dropped == 1 or self.dropped % 10_000 == 0:
                    log.warning(
                        "emitter buffer full (%d): dropped %d oldest events so far",
                        self.buffer_size,
                        self.dropped,
                    )
            self._buffer.append(item)
            if self._thread is None:
                self._start()
        if not self._wake.is_set():
            self._wake.set()

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every event emitted so far is in Redis. False if `timeout` passed first."""
        deadline = time.monotonic() + (self.flush_timeout if timeout is None else timeout)
        with self._lock:
            while self._buffer or self._inflight:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._wake.set()
                self._sent.wait(left)
        return True

    def close(self, timeout: float | None = None) -> bool:
        """Flush (bounded by `timeout`), then stop the sender. Events still unsent are counted as lost."""
        done = self.flush(timeout)
        with self._lock:
            self._closed = True
            pending = len(self._buffer) + self._inflight
        self._closing.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=1.0)
        if pending:
            log.error("emitter closed with %d events not delivered to %s", pending, self.redis_url)
        if self._client is not None and self._given_client is None:
            self._client.close()
        _live.discard(self)
        return done

    def pending(self) -> int:
        with self._lock:
            return len(self._buffer) + self._inflight

    # --- the sender thread -----------------------------------------------------------------------

    def _start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="taskevents-emitter", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        backoff = ExponentialWithJitterBackoff(cap=5.0, base=0.05)
        failures = 0
        frames: list[tuple[str, bytes]] = []
        while True:
            if not frames:
                with self._lock:
                    if not self._buffer:
                        self._inflight = 0
                        self._sent.notify_all()
                        if self._closed:
                            return
                        self._wake.clear()
                        chunk = None
                    else:
                        chunk = [
                            self._buffer.popleft() for _ in range(min(self.chunk_size, len(self._buffer)))
                        ]
                        self._inflight = len(chunk)
                if chunk is None:
                    self._wake.wait()
                    continue
                # The id is made once, here, so a retried push carries the same event_uid.
                frames = [(item[3], _frame(item[0], item[1], item[2])) for item in chunk]
            try:
                if self._client is None:
                    self._client = redis.Redis.from_url(
                        self.redis_url, socket_timeout=5, socket_connect_timeout=2
                    )
                _push(self._client, frames)
            except Exception as exc:
                # Redis unreachable, full or restarting: expected, retried. Anything else is a bug or a
                # broken client: logged with its traceback and retried on a new client, so the sender
                # never dies silently while emit() keeps filling the buffer.
                failures += 1
                if not isinstance(exc, redis.RedisError):
                    log.exception("unexpected error pushing to %s; retrying", self.redis_url)
                    self._drop_client()
                elif failures == 1:
                    log.warning("cannot push to %s (%s); buffering and retrying", self.redis_url, exc)
                # After close() gave up waiting, stop retrying: close() has reported the loss.
                if self._closing.wait(backoff.compute(failures)):
                    return
                continue
            if failures:
                log.info("pushing to %s again after %d failed attempts", self.redis_url, failures)
                failures = 0
            with self._lock:
                self.sent += len(frames)
                self._inflight = 0
                self._sent.notify_all()
            frames = []

    def _drop_client(self) -> None:
        if self._client is not None and self._given_client is None:
            try:
                self._client.close()
            except Exception:
                log.debug("closing a broken Redis client failed", exc_info=True)
            self._client = None

    def _after_fork_in_child(self) -> None:
        self._reset()


def _push(client: redis.Redis, frames: list[tuple[str, bytes]]) -> None:
    """One RPUSH per list, in one round trip; each list keeps the order of its events. A retry after
    a failure part-way pushes them all again: every frame carries its event_uid, so the worker stores
    the ones already there once."""
    lists: dict[str, list[bytes]] = {}
    for target, frame in frames:
        lists.setdefault(target, []).append(frame)
    if len(lists) == 1:
        ((target, items),) = lists.items()
        client.rpush(target, *items)
        return
    with client.pipeline(transaction=False) as pipe:
        for target, items in lists.items():
            pipe.rpush(target, *items)
        pipe.execute()


def _frame(emitted_ns: int, event_uid: str | None, body: bytes) -> bytes:
    uid = event_uid or str(ULID.from_timestamp(emitted_ns / 1e9))
    head = b'{"event_uid":"' + uid.encode() + b'","emitted_at":"' + format_ms(emitted_ns).encode() + b'",'
    return head + body[1:]


def _install_process_hooks() -> None:
    """Once per process, on first use (importing starts nothing): flush at exit, reset after fork."""
    global _hooks_installed
    with _hooks_lock:
        if _hooks_installed:
            return
        _hooks_installed = True
    atexit.register(_flush_all_at_exit)
    os.register_at_fork(after_in_child=_reset_all_in_child)


def _flush_all_at_exit() -> None:
    for emitter in list(_live):
        emitter.close(emitter.flush_timeout)


def _reset_all_in_child() -> None:
    global _hooks_lock
    _hooks_lock = threading.Lock()
    for emitter in list(_live):
        emitter._after_fork_in_child()
