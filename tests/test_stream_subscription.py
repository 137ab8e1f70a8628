"""A subscription's rules, without I/O: strictly cursor + 1, a gap reads the store, overflow falls back."""

import asyncio
from typing import Any

from taskevents.api.live import PAGE, LiveEvent, Subscription


class FakeHub:
    """What a Subscription uses of the hub: `read` (the store), `lagged`, `closed`."""

    def __init__(self, stored: int) -> None:
        self.stored = stored  # the store holds seqs 1..stored
        self.lagged = 0
        self.closed = False
        self.reads: list[tuple[int, int]] = []

    async def read(self, _fn: Any, _task_id: str, after: int, limit: int) -> list[tuple[int, str, str]]:
        self.reads.append((after, limit))
        last = min(self.stored, after + limit)
        return [(seq, "runner_heartbeat", f'{{"seq": {seq}}}') for seq in range(after + 1, last + 1)]


def events(first: int, last: int) -> list[LiveEvent]:
    return [
        LiveEvent.from_row(seq, "runner_heartbeat", f'{{"seq": {seq}}}') for seq in range(first, last + 1)
    ]


def seqs(batch: list[LiveEvent]) -> list[int]:
    return [e.seq for e in batch]


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def test_it_replays_in_pages_then_takes_the_live_queue() -> None:
    async def scenario() -> None:
        hub = FakeHub(stored=PAGE + 10)
        sub = Subscription(hub, "t", 0, limit=100)  # type: ignore[arg-type]
        assert seqs(await sub.take()) == list(range(1, PAGE + 1))
        assert sub.catching_up  # a full page: there may be more
        sub.offer(events(PAGE + 5, PAGE + 12))  # ignored while catching up
        assert seqs(await sub.take()) == list(range(PAGE + 1, PAGE + 11))
        assert await sub.take() == []
        sub.offer(events(PAGE + 9, PAGE + 12))  # overlaps what was read: the repeats are dropped
        assert seqs(await sub.take()) == [PAGE + 11, PAGE + 12]
        assert hub.reads == [(0, PAGE), (PAGE, PAGE)]

    run(scenario())


def test_a_gap_in_the_live_feed_reads_the_store_instead() -> None:
    async def scenario() -> None:
        hub = FakeHub(stored=10)
        sub = Subscription(hub, "t", 0, limit=100)  # type: ignore[arg-type]
        assert seqs(await sub.take()) == list(range(1, 11))
        hub.stored = 20
        sub.offer(events(15, 20))  # 11-14 were never notified
        assert seqs(await sub.take()) == list(range(11, 21))  # from the store, in one read
        assert hub.reads[-1] == (10, PAGE)

    run(scenario())


def test_a_client_that_falls_behind_alone_catches_up_from_the_store() -> None:
    async def scenario() -> None:
        hub = FakeHub(stored=0)
        sub = Subscription(hub, "t", 0, limit=10)  # type: ignore[arg-type]
        assert await sub.take() == []
        sub.offer(events(1, 25))  # an empty queue takes a whole commit, however large
        assert len(sub.pending) == 25 and not sub.catching_up
        sub.offer(events(26, 27))  # now it overflows: the queue is dropped
        assert sub.catching_up and not sub.pending and sub.lagged == hub.lagged == 1
        sub.offer(events(28, 30))  # ignored until it has caught up
        assert not sub.pending
        hub.stored = 30
        assert seqs(await sub.take()) == list(range(1, 31))
        sub.offer(events(31, 31))
        assert seqs(await sub.take()) == [31]

    run(scenario())


def test_a_resume_point_beyond_the_store_waits_for_that_seq() -> None:
    async def scenario() -> None:
        hub = FakeHub(stored=5)
        sub = Subscription(hub, "t", 8, limit=100)  # type: ignore[arg-type]
        assert await sub.take() == []
        sub.offer(events(6, 8))
        assert await sub.take() == []
        sub.offer(events(9, 10))
        assert seqs(await sub.take()) == [9, 10]

    run(scenario())


def test_wait_returns_at_once_when_there_is_something_to_take() -> None:
    async def scenario() -> None:
        hub = FakeHub(stored=0)
        sub = Subscription(hub, "t", 0, limit=10)  # type: ignore[arg-type]
        await sub.take()
        waiter = asyncio.create_task(sub.wait(5))
        await asyncio.sleep(0.01)
        assert not waiter.done()
        sub.offer(events(1, 1))
        await asyncio.wait_for(waiter, 1)
        await asyncio.wait_for(sub.wait(5), 1)  # pending: no wait at all

    run(scenario())
