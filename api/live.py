"""The live feed of one API process: one Redis subscription, fanned out to every streaming client.

The worker PUBLISHes a CommitNotice (shared/messages.py: `{"batch": N, "tasks": {task_id:
[first_seq, last_seq]}}`) on `<queue>:commits` after each commit (each partition's worker on its
own, `{<queue>:<P>}:commits`). The hub holds ONE subscription to them all; for each notification it
reads the new rows of the tasks somebody is watching from the store once (one statement, on a worker
thread) and hands the same event objects to each of their subscriptions.
Notifications that arrive while a read is in progress are merged, so a busy hub reads less often, in
larger ranges.

Every subscription keeps its own cursor (the last seq its client was given) and delivers strictly
cursor + 1, cursor + 2, ...: an event at or below the cursor is dropped (no repeat), and an event past
cursor + 1 means something was missed, so it reads the store from the cursor instead (no gap). The
store is the source of truth, the notifications only say "look now". Hence:

- A slow client: its live queue is bounded (`stream_buffer` events, or one commit's events if that
  is more). When a notification would overflow it, the queue is dropped and the subscription alone is
  marked to catch up: it reads the store from its cursor in pages, then rejoins the live feed. The
  hub never waits for it.
- A lost notification: after a (re)subscription to Redis every subscription catches up from the store
  (a notification published while the hub was disconnected is gone). And as a safety net, a task
  with subscribers that has had no notification for `stream_poll` seconds has its head (`tasks`
  table, one indexed read for all such tasks) compared with what its subscribers have; those behind
  catch up. A lost notification therefore delays a client by at most about 1.5 x `stream_poll`.
"""

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterable
from contextlib import suppress
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Final, TypeVar

import anyio
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from taskevents.api.livereads import Head, events_after, events_in_ranges, head, heads
from taskevents.api.reads import tasks_by_id
from taskevents.api.store import StoreReader, StoreUnavailable
from taskevents.keys import QueueKeys, partition_queues
from taskevents.messages import CommitNotice
from taskevents.settings import Settings

log = logging.getLogger("taskevents.api.live")

T = TypeVar("T")

PAGE = 500  # events per store read when a client replays or catches up
RUNNER_EXIT = "runner_exit"
BACKOFF_FIRST, BACKOFF_MAX = 0.1, 5.0  # seconds between attempts to resubscribe to Redis
GET_MESSAGE_TIMEOUT = 1.0  # the subscription loop wakes this often, so Redis health checks run
LIST_INTERVAL = 0.25  # seconds between two frames of the task list's feed: changes are merged


@dataclass(frozen=True, slots=True)
class LiveEvent:
    """One stored event, serialized once and shared by every client that receives it."""

    seq: int
    event_type: str
    json: bytes  # the event object, as the REST API returns it
    sse: bytes  # its Server-Sent Events frame

    @classmethod
    def from_row(cls, seq: int, event_type: str, event_json: str) -> "LiveEvent":
        data = event_json.encode()
        return cls(seq, event_type, data, b"id: %d\nevent: task_event\ndata: %s\n\n" % (seq, data))


@dataclass(frozen=True, slots=True)
class End:
    """Why a stream ends: `task_ended` (after runner_exit) or `no_events` (an unseen task timed out)."""

    reason: str
    last_seq: int
    status: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"reason": self.reason, "last_seq": self.last_seq, "status": self.status}


class Subscription:
    """One client's view of one task: a cursor, a bounded live queue, and a catch-up flag."""

    def __init__(self, hub: "LiveHub", task_id: str, after_seq: int, limit: int) -> None:
        self.hub = hub
        self.task_id = task_id
        self.cursor = after_seq  # the last seq handed to the client
        self.limit = limit
        self.pending: deque[LiveEvent] = deque()
        self.catching_up = True  # the first thing a subscription does is replay from the store
        self.lagged = 0  # how many times the live queue overflowed
        self._wake = asyncio.Event()

    @property
    def known_seq(self) -> int:
        """The newest seq this subscription has, delivered or queued."""
        return self.pending[-1].seq if self.pending else self.cursor

    # --- the hub's side (never blocks) ----------------------------------------------------------

    def offer(self, events: list[LiveEvent]) -> None:
        if self.catching_up or not events or events[-1].seq <= self.known_seq:
            return
        if self.pending and len(self.pending) + len(events) > self.limit:
            # Too slow for the live feed: drop the queue (bounded memory) and read the store instead.
            # An empty queue takes any one batch, however large: the events are shared, and a client
            # that keeps up is never sent to the store just because one commit was big.
            self.pending.clear()
            self.catching_up = True
            self.lagged += 1
            self.hub.lagged += 1
        else:
            self.pending.extend(events)
        self._wake.set()

    def request_catch_up(self) -> None:
        self.catching_up = True
        self._wake.set()

    def close(self) -> None:
        self._wake.set()

    # --- the client's side -----------------------------------------------------------------------

    async def take(self) -> list[LiveEvent]:
        """The next events after the cursor, in order and without gaps; [] when there are none now.

        Reads the store (one page) while catching up. Raises StoreUnavailable if that read fails.
        """
        while True:
            if self.catching_up:
                # Cleared before the read: anything committed after the read's snapshot is then
                # offered live, and anything the read also returns is dropped by the cursor.
                self.catching_up = False
                self.pending.clear()
                rows = await self.hub.read(events_after, self.task_id, self.cursor, PAGE)
                if len(rows) == PAGE:
                    self.catching_up = True  # more to read before rejoining the live feed
                events: Iterable[LiveEvent] = [LiveEvent.from_row(*row) for row in rows]
            elif self.pending:
                events, self.pending = self.pending, deque()
            else:
                return []
            batch = self._advance(events)
            if batch:
                return batch

    def _advance(self, events: Iterable[LiveEvent]) -> list[LiveEvent]:
        """Keep the events that continue the cursor; a gap stops there and triggers a catch-up."""
        batch = []
        expected = self.cursor + 1
        for event in events:
            if event.seq < expected:
                continue  # already delivered
            if event.seq > expected:
                self.catching_up = True  # a notification was missed: the store has the rest
                break
            batch.append(event)
            expected += 1
        if batch:
            self.cursor = batch[-1].seq
        return batch

    async def wait(self, timeout: float | None = None) -> None:
        """Until there may be something to take (or the hub stops), at most `timeout` seconds."""
        if self.pending or self.catching_up or self.hub.closed:
            return
        self._wake.clear()
        # Once per delivery per client: no cancel scope unless there is a deadline (an anyio scope
        # costs several times the wait itself at thousands of deliveries a second).
        if timeout is None:
            await self._wake.wait()
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await self._wake.wait()


class LiveHub:
    """Per process: the Redis subscription, the subscriptions by task, the fan-out and the safety net.

    Use as `async with LiveHub(settings, store) as hub:` (the API's lifespan does).
    """

    def __init__(self, settings: Settings, store: StoreReader, primary: StoreReader | None = None) -> None:
        self.settings = settings
        self.store = store
        # With a replica (TASKEVENTS_DB_READ_URL), `store` reads it and `primary` the primary: what a
        # notification announces is read from the replica once it has replayed the commit, else from
        # the primary (`_serving`); so is every other read of the hub once a commit was announced.
        self.primary = primary
        # Every partition's worker announces its commits on its own channel (one, unpartitioned).
        queues = partition_queues(settings.queue, settings.partitions)
        self.channels = [QueueKeys(queue).commits for queue in queues]
        self.closed = False
        self._subs: dict[str, set[Subscription]] = {}
        self._last_news: dict[str, float] = {}  # task_id -> monotonic time of its last notification
        self._inbox: dict[str, tuple[int, int]] = {}  # merged notifications not yet fanned out
        self._inbox_wal: _Wal = None  # the WAL position the inbox's reads need (replicas only)
        self._changed_wal: _Wal = None  # the same for the task lists' changes
        self._latest_wal: _Wal = None  # the newest position any notification gave (other reads)
        self._news = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        # The task list's live feed: who watches it, and which tasks changed since it was last fed.
        self._lists: set[TaskListFeed] = set()
        self._changed: set[str] = set()
        self._changes = asyncio.Event()
        # Counters, for tests, benchmarks and logs.
        self.subscribed = 0  # times the Redis subscription was (re)established
        self.notifications = 0
        self.fanout_reads = 0
        self.lagged = 0
        self.polls = 0
        self.replica_reads = 0  # fan-out reads the replica served (it had replayed the commits)
        self.primary_reads = 0  # ... that went to the primary (the replica had not, within the wait)

    async def __aenter__(self) -> "LiveHub":
        self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self._listen(), name="taskevents-live-listen"),
            asyncio.create_task(self._fan_out(), name="taskevents-live-fanout"),
            asyncio.create_task(self._poll(), name="taskevents-live-poll"),
            asyncio.create_task(self._feed_task_lists(), name="taskevents-live-task-lists"),
        ]

    async def stop(self) -> None:
        self.closed = True
        for task in self._tasks:
            task.cancel()
        # redis-py can swallow a cancellation that lands while get_message() times out; the listen
        # loop then sees `closed` within GET_MESSAGE_TIMEOUT. Don't wait for ever all the same.
        if self._tasks:
            _, stuck = await asyncio.wait(self._tasks, timeout=GET_MESSAGE_TIMEOUT + 2)
            for task in stuck:
                log.warning("%s did not stop", task.get_name())
        for task in self._tasks:
            if task.done() and not task.cancelled() and task.exception() is not None:
                log.error("%s had failed", task.get_name(), exc_info=task.exception())
        self._tasks = []
        for subs in self._subs.values():
            for sub in subs:
                sub.close()

    # --- subscriptions ---------------------------------------------------------------------------

    def subscribe(self, task_id: str, after_seq: int) -> Subscription:
        sub = Subscription(self, task_id, after_seq, self.settings.stream_buffer)
        if task_id not in self._subs:
            self._subs[task_id] = set()
            self._last_news[task_id] = time.monotonic()
        self._subs[task_id].add(sub)
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        subs = self._subs.get(sub.task_id)
        if subs is None:
            return
        subs.discard(sub)
        if not subs:
            del self._subs[sub.task_id]
            self._last_news.pop(sub.task_id, None)

    @property
    def subscription_count(self) -> int:
        return sum(len(subs) for subs in self._subs.values())

    @property
    def queued_events(self) -> int:
        """Events waiting in all live queues (each at most stream_buffer, or one commit's events)."""
        return sum(len(sub.pending) for subs in self._subs.values() for sub in subs)

    def subscriptions(self) -> list[Subscription]:
        return [sub for subs in self._subs.values() for sub in subs]

    async def read(self, fn: Callable[..., T], *args: Any) -> T:
        """`fn(conn, *args)` in one read transaction, on a worker thread (never across an await).
        With a replica, on one that has replayed every commit announced so far (else the primary):
        a catch-up or a task's head is never older than what a stream has already sent."""
        store = await self._serving(self._latest_wal)
        return await anyio.to_thread.run_sync(store.run, fn, *args)

    async def head(self, task_id: str) -> Head | None:
        return await self.read(head, task_id)

    # --- the Redis subscription ------------------------------------------------------------------

    async def _listen(self) -> None:
        backoff = BACKOFF_FIRST
        while not self.closed:
            client = aioredis.Redis.from_url(
                self.settings.redis_url,
                socket_connect_timeout=5,
                socket_keepalive=True,
                health_check_interval=30,
            )
            pubsub = client.pubsub()
            try:
                await pubsub.subscribe(*self.channels)
                async for message in self._messages(pubsub):
                    if message["type"] == "subscribe" and message["data"] == len(self.channels):
                        # A first subscription or a silent reconnect by redis-py (once the last
                        # partition's channel is subscribed): notifications published in between
                        # are lost, so every subscription reads the store.
                        self.subscribed += 1
                        backoff = BACKOFF_FIRST
                        self._catch_up_everyone()
                    elif message["type"] == "message":
                        self._receive(message["data"])
            except (RedisError, OSError) as exc:
                log.warning("commit notifications lost (%s); resubscribing in %.1fs", exc, backoff)
            finally:
                with suppress(RedisError, OSError):
                    await pubsub.aclose()
                with suppress(RedisError, OSError):
                    await client.aclose()
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, BACKOFF_MAX)

    async def _messages(self, pubsub: aioredis.client.PubSub) -> AsyncIterator[dict[str, Any]]:
        while not self.closed:
            message = await pubsub.get_message(timeout=GET_MESSAGE_TIMEOUT)
            if message is not None:
                yield message

    def _receive(self, data: bytes) -> None:
        try:
            notice = CommitNotice.decode(data)
            wal = _wal(notice.lsn)
        except ValueError:
            log.warning("ignoring a malformed commit notification: %r", data[:200])
            return
        ranges = notice.tasks
        self.notifications += 1
        if wal != UNKNOWN_WAL:
            self._latest_wal = wal if self._latest_wal is None else max(self._latest_wal, wal)
        if self._lists:
            self._changed.update(ranges)
            self._changed_wal = _later(self._changed_wal, wal)
            self._changes.set()
        now = time.monotonic()
        for task_id, (first, last) in ranges.items():
            if task_id not in self._subs:
                continue  # nobody here watches it
            self._last_news[task_id] = now
            seen = self._inbox.get(task_id)
            self._inbox[task_id] = (min(first, seen[0]), max(last, seen[1])) if seen else (first, last)
            self._inbox_wal = _later(self._inbox_wal, wal)
        if self._inbox:
            self._news.set()

    def _catch_up_everyone(self) -> None:
        for sub in self.subscriptions():
            sub.request_catch_up()
        for feed in self._lists:
            feed.resync()  # what changed meanwhile is unknown: the client reads its page again

    # --- the task list's feed --------------------------------------------------------------------

    def watch_task_list(self) -> "TaskListFeed":
        feed = TaskListFeed(self)
        self._lists.add(feed)
        return feed

    def unwatch_task_list(self, feed: "TaskListFeed") -> None:
        self._lists.discard(feed)

    async def _feed_task_lists(self) -> None:
        """Every LIST_INTERVAL at most, the summaries of the tasks that changed, read once for all."""
        while not self.closed:
            await self._changes.wait()
            self._changes.clear()
            changed, self._changed = self._changed, set()
            wal, self._changed_wal = self._changed_wal, None
            if not self._lists or not changed:
                continue
            try:
                store = await self._serving(wal)
                found = await anyio.to_thread.run_sync(store.run, tasks_by_id, sorted(changed))
            except Exception as exc:
                log.warning("reading changed tasks failed (%s): task lists resync", exc)
                for feed in self._lists:
                    feed.resync()
                continue
            frame = b"event: tasks\ndata: [%s]\n\n" % ",".join(found.values()).encode()
            for feed in list(self._lists):
                feed.offer(frame)
            await asyncio.sleep(LIST_INTERVAL)  # what changes meanwhile goes in the next frame

    # --- fan-out ---------------------------------------------------------------------------------

    async def _fan_out(self) -> None:
        while not self.closed:
            await self._news.wait()
            self._news.clear()
            inbox, self._inbox = self._inbox, {}
            wal, self._inbox_wal = self._inbox_wal, None
            wanted = []
            for task_id, (first, last) in inbox.items():
                # Only subscriptions on the live feed that still lack some of the range need the rows.
                behind = [s.known_seq for s in self._subs.get(task_id, ()) if not s.catching_up]
                behind = [seq for seq in behind if seq < last]
                if behind:
                    wanted.append((task_id, max(first, min(behind) + 1), last))
            if not wanted:
                continue
            try:
                store = await self._serving(wal)
                rows = await anyio.to_thread.run_sync(store.run, events_in_ranges, wanted)
            except Exception:
                log.exception("reading committed events failed; their subscribers will read the store")
                for task_id, _, _ in wanted:
                    for sub in self._subs.get(task_id, ()):
                        sub.request_catch_up()
                continue
            self.fanout_reads += 1
            for task_id, events in _by_task(rows).items():
                for sub in list(self._subs.get(task_id, ())):
                    sub.offer(events)

    async def _serving(self, wal: "_Wal") -> StoreReader:
        """The store to read what notifications up to `wal` announced: the replica once it has
        replayed that far (asked at growing intervals from REPLICA_POLL, for at most
        TASKEVENTS_REPLICA_WAIT), else the primary; the primary at once for a notification without a
        position, or a replica that cannot be asked. Without a replica, or with nothing announced
        yet, the one store `store`."""
        if self.primary is None or wal is None:
            return self.store
        if wal != UNKNOWN_WAL:
            lsn = _lsn_text(wal)
            deadline = time.monotonic() + self.settings.replica_wait
            pause = REPLICA_POLL
            while True:
                try:
                    replayed = await anyio.to_thread.run_sync(self.store.replayed, lsn)
                except StoreUnavailable as exc:
                    log.warning(
                        "the replica cannot say how far it has replayed (%s): reading the primary", exc
                    )
                    break
                if replayed:
                    self.replica_reads += 1
                    return self.store
                if time.monotonic() >= deadline:
                    break
                await asyncio.sleep(pause)
                pause = min(pause * 2, REPLICA_POLL_MAX)
        self.primary_reads += 1
        return self.primary

    # --- the safety net --------------------------------------------------------------------------

    async def _poll(self) -> None:
        interval = self.settings.stream_poll
        while not self.closed:
            await asyncio.sleep(interval / 2)
            now = time.monotonic()
            quiet = [task_id for task_id, at in self._last_news.items() if now - at >= interval]
            if not quiet:
                continue
            try:
                found = await self.read(heads, quiet)
            except Exception as exc:
                log.warning("checking streamed tasks in the store failed: %s", exc)
                continue
            self.polls += 1
            for task_id in quiet:
                if task_id in self._last_news:
                    self._last_news[task_id] = now
                task_head = found.get(task_id)
                if task_head is None:
                    continue
                for sub in self._subs.get(task_id, ()):
                    if not sub.catching_up and task_head.latest_seq > sub.known_seq:
                        log.info(
                            "task %s: seq %d found by polling; catching up", task_id, task_head.latest_seq
                        )
                        sub.request_catch_up()


class TaskListFeed:
    """One client of the task list's feed: frames of changed task summaries, bounded; a client too slow
    for them gets one `resync` instead (it reads its page of the list again)."""

    MAX_FRAMES = 50
    RESYNC = b"event: resync\ndata: {}\n\n"

    def __init__(self, hub: "LiveHub") -> None:
        self.hub = hub
        self.frames: deque[bytes] = deque()
        self._wake = asyncio.Event()

    def offer(self, frame: bytes) -> None:
        if len(self.frames) >= self.MAX_FRAMES:
            self.resync()
            return
        self.frames.append(frame)
        self._wake.set()

    def resync(self) -> None:
        self.frames.clear()
        self.frames.append(self.RESYNC)
        self._wake.set()

    async def next_frames(self) -> bytes:
        """What to send now (waits until there is something, or the hub stops: then b"")."""
        while not self.frames and not self.hub.closed:
            self._wake.clear()
            with anyio.move_on_after(GET_MESSAGE_TIMEOUT):
                await self._wake.wait()
        out = b"".join(self.frames)
        self.frames.clear()
        return out


def _by_task(rows: list[tuple[str, int, str, str]]) -> dict[str, list[LiveEvent]]:
    out: dict[str, list[LiveEvent]] = {}
    for task_id, seq, event_type, event_json in rows:
        out.setdefault(task_id, []).append(LiveEvent.from_row(seq, event_type, event_json))
    return out


async def follow(
    hub: LiveHub, task_id: str, after_seq: int, start: Head | None
) -> AsyncGenerator[list[LiveEvent] | End, None]:
    """A task's events after `after_seq`: replay from the store, then live; then an End, if it ends.

    `start` is the task's head read before the response began (None: the store has not seen the task).
    The generator returns without an End when the hub stops. Raises StoreUnavailable if a read fails.
    """
    if start is not None and start.ended and start.latest_seq <= after_seq:
        yield End("task_ended", start.latest_seq, start.status)
        return
    sub = hub.subscribe(task_id, after_seq)
    try:
        # Whether a runner_exit ends the stream is decided once the client has caught up: only if the
        # task is still ended then and nothing follows in the store (a recovery may respawn it).
        exit_seen = start is not None and start.ended
        check_end = exit_seen
        deadline = None if start is not None else time.monotonic() + hub.settings.stream_idle
        while not hub.closed:
            batch = await sub.take()
            if batch:
                deadline = None
                exit_seen = exit_seen or any(e.event_type == RUNNER_EXIT for e in batch)
                check_end = exit_seen
                yield batch
                continue
            if check_end:
                check_end = False
                now = await hub.head(task_id)
                if now is not None and now.ended and now.latest_seq <= sub.cursor:
                    yield End("task_ended", sub.cursor, now.status)
                    return
                exit_seen = now is not None and now.ended
                continue  # take again: events may have arrived during the read
            if deadline is not None and time.monotonic() >= deadline:
                if await hub.head(task_id) is None:
                    yield End("no_events", sub.cursor)
                    return
                deadline = None
                sub.request_catch_up()
                continue
            await sub.wait(None if deadline is None else deadline - time.monotonic())
    finally:
        hub.unsubscribe(sub)


# A WAL position as a number (PostgreSQL's `X/Y`, hex: X * 2**32 + Y); UNKNOWN_WAL: a notification
# without one (SQLite's, or a batch announced again after a crash), which only the primary can serve.
_Wal = int | None
UNKNOWN_WAL: Final = -1
REPLICA_POLL: Final = 0.002  # seconds before a second look at a replica's replay position, doubling
REPLICA_POLL_MAX: Final = 0.05


def _wal(lsn: str | None) -> int:
    if lsn is None:
        return UNKNOWN_WAL
    high, _, low = lsn.partition("/")
    return (int(high, 16) << 32) | int(low, 16)


def _later(a: _Wal, b: int) -> int:
    if a is None:
        return b
    if a == UNKNOWN_WAL or b == UNKNOWN_WAL:
        return UNKNOWN_WAL
    return max(a, b)


def _lsn_text(wal: int) -> str:
    return f"{wal >> 32:X}/{wal & 0xFFFFFFFF:X}"
