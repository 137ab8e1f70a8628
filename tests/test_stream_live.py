"""The live feed: pushed after commits, the end, unseen tasks, slow and dead clients, lost notifications."""

import statistics
import threading
import time
from typing import Any

import httpx
import pytest
import redis

from taskevents.settings import Settings
from tests.helpers import wait_for
from tests.pgserver import STORES
from tests.stream_helpers import (
    Frame,
    FrameParser,
    event_seqs,
    live,
    read_frames,
    small_receive_buffer_client,
)

pytestmark = [pytest.mark.redis_server, pytest.mark.parametrize("settings", STORES, indirect=True)]


def _reader(client: httpx.Client, url: str, out: list[Frame], **kwargs: Any) -> threading.Thread:
    thread = threading.Thread(
        target=read_frames, args=(client, url), kwargs={"out": out, **kwargs}, daemon=True
    )
    thread.start()
    return thread


def test_live_events_then_end_after_runner_exit(settings: Settings) -> None:
    fast = settings.model_copy(update={"stream_ping": 0.2})
    with live(fast) as lv, httpx.Client(timeout=httpx.Timeout(10.0, read=30.0)) as client:
        lv.emit("e", 3)
        lv.flush()
        lv.wait_stored("e", 3)
        frames: list = []
        reader = _reader(client, f"{lv.url}/sse/tasks/e/events", frames)
        time.sleep(0.6)  # replayed 1-3, now live and idle: keep-alive comments flow
        lv.emit("e", 2, start=3)
        lv.exit("e")
        lv.flush()
        reader.join(20)
        assert not reader.is_alive(), "the stream did not close after the end event"
    assert event_seqs(frames) == [1, 2, 3, 4, 5, 6]
    assert frames[-1].event == "end" and frames[-1].json()["reason"] == "task_ended"
    assert frames[-2].json()["event_type"] == "runner_exit"


def test_keep_alive_comments_while_idle(settings: Settings) -> None:
    fast = settings.model_copy(update={"stream_ping": 0.1})
    with live(fast) as lv, httpx.Client(timeout=10) as client:
        parser = FrameParser()
        with client.stream("GET", f"{lv.url}/sse/tasks/idle/events") as response:
            started = time.monotonic()
            for chunk in response.iter_raw():
                parser.feed(chunk)
                if parser.comments >= 5:
                    break
        assert time.monotonic() - started < 3
        assert response.headers["content-type"].startswith("text/event-stream")
        assert response.headers["cache-control"] == "no-store"


def test_a_task_not_seen_yet_can_be_subscribed_to(settings: Settings) -> None:
    with live(settings) as lv, httpx.Client(timeout=httpx.Timeout(10.0, read=30.0)) as client:
        frames: list = []
        reader = _reader(client, f"{lv.url}/sse/tasks/newborn/events", frames)
        wait_for(lambda: lv.api.hub.subscription_count == 1)
        time.sleep(0.3)
        lv.emit("newborn", 3)
        lv.exit("newborn")
        lv.flush()
        reader.join(20)
    assert event_seqs(frames) == [1, 2, 3, 4]


@pytest.mark.slow
def test_a_task_that_never_shows_up_ends_after_the_idle_timeout(settings: Settings) -> None:
    short = settings.model_copy(update={"stream_idle": 1.0})
    with live(short) as lv, httpx.Client(timeout=10) as client:
        started = time.monotonic()
        frames = read_frames(client, f"{lv.url}/sse/tasks/ghost/events")
        waited = time.monotonic() - started
        assert lv.api.hub.subscription_count == 0
    assert 1.0 <= waited < 3
    assert [f.event for f in frames] == [None, "end"]
    assert frames[-1].json() == {"reason": "no_events", "last_seq": 0, "status": None}


@pytest.mark.slow
def test_a_slow_client_does_not_delay_a_fast_one_and_catches_up_from_the_store(settings: Settings) -> None:
    total, pad = 3000, 1000  # ~4 MB, many times what the slow client's socket buffers hold
    # A live buffer of 3 bursts: the fast client never overflows it, the slow one soon does. The send
    # buffer is fixed (no autotuning), for every connection: big enough for the fast one.
    small = settings.model_copy(update={"stream_buffer": 300})
    with live(small, sndbuf=65536) as lv, httpx.Client(timeout=httpx.Timeout(10.0, read=30.0)) as fast_client:
        url = f"{lv.url}/sse/tasks/s/events"
        fast: list = []
        latencies: list[float] = []

        def read_fast() -> None:
            parser = FrameParser()
            with fast_client.stream("GET", url) as response:
                for chunk in response.iter_raw():
                    now = time.time()
                    for frame in parser.feed(chunk):
                        fast.append(frame)
                        if frame.event == "task_event":
                            latencies.append(now - frame.json()["payload"].get("t", now))
                        if frame.event == "end":
                            return

        fast_reader = threading.Thread(target=read_fast, daemon=True)
        fast_reader.start()
        with small_receive_buffer_client(65536) as slow_client:
            with slow_client.stream("GET", url) as slow_response:  # opened, then not read for a while
                wait_for(lambda: lv.api.hub.subscription_count == 2)
                for start in range(0, total - 1, 100):  # ~2,000 events/s of ~1 KB each
                    lv.emit("s", min(100, total - 1 - start), start=start, pad=pad)
                    time.sleep(0.05)
                lv.exit("s")
                lv.flush()
                fast_reader.join(30)
                assert not fast_reader.is_alive()
                wait_for(lambda: lv.api.hub.subscription_count == 1)  # the fast client has had its end
                (slow_sub,) = lv.api.hub.subscriptions()
                lagged = slow_sub.lagged
                parser, slow = FrameParser(), []
                for chunk in slow_response.iter_raw():
                    slow += parser.feed(chunk)
                    if slow and slow[-1].event == "end":
                        break

    assert event_seqs(fast) == list(range(1, total + 1))
    assert event_seqs(slow) == list(range(1, total + 1))
    assert lagged >= 1, "the slow client never overflowed its live buffer: the test did not test it"
    # The fast client kept receiving while the slow one was stuck.
    assert statistics.median(latencies) < 0.1, statistics.median(latencies)
    assert max(latencies) < 1.0, max(latencies)


@pytest.mark.slow
def test_a_client_that_never_reads_is_dropped_and_memory_stays_bounded(settings: Settings) -> None:
    buffer = 100
    strict = settings.model_copy(update={"stream_buffer": buffer, "stream_send_timeout": 1.0})
    with live(strict, sndbuf=16384) as lv, small_receive_buffer_client() as stuck_client:
        with stuck_client.stream("GET", f"{lv.url}/sse/tasks/d/events"):
            wait_for(lambda: lv.api.hub.subscription_count == 1)
            peak = 0
            for start in range(0, 4000, 200):
                lv.emit("d", 200, start=start, pad=2000)
                time.sleep(0.05)
                peak = max(peak, lv.api.hub.queued_events)
            lv.flush()
            wait_for(lambda: lv.api.hub.subscription_count == 0, timeout=20)
            assert peak <= buffer + 200  # the buffer, or one commit's events if more (bursts of 200)
            assert lv.api.hub.queued_events == 0


def test_a_lost_notification_is_made_up_for_by_polling(settings: Settings) -> None:
    # The API listens on another queue's channel: it never hears of a commit, only the poll finds them.
    deaf = settings.model_copy(update={"queue": "elsewhere:events", "stream_poll": 0.4})
    with (
        live(settings, api_settings=deaf) as lv,
        httpx.Client(timeout=httpx.Timeout(10.0, read=30.0)) as client,
    ):
        frames: list = []
        reader = _reader(client, f"{lv.url}/sse/tasks/p/events", frames)
        wait_for(lambda: lv.api.hub.subscription_count == 1)
        started = time.monotonic()
        lv.emit("p", 5)
        lv.exit("p")
        lv.flush()
        reader.join(20)
        assert time.monotonic() - started < 3
        assert lv.api.hub.notifications == 0 and lv.api.hub.polls >= 1
    assert event_seqs(frames) == [1, 2, 3, 4, 5, 6]


def test_the_hub_resubscribes_after_losing_redis_and_catches_up(settings: Settings) -> None:
    no_poll = settings.model_copy(update={"stream_poll": 120.0})  # only the resubscription can help
    with live(no_poll) as lv, httpx.Client(timeout=httpx.Timeout(10.0, read=30.0)) as client:
        frames: list = []
        reader = _reader(client, f"{lv.url}/sse/tasks/k/events", frames)
        wait_for(lambda: lv.api.hub.subscription_count == 1 and lv.api.hub.subscribed == 1)
        admin = redis.Redis.from_url(settings.redis_url)
        try:
            for round_ in range(3):
                assert admin.client_kill_filter(_type="pubsub") >= 1
                lv.emit("k", 10, start=10 * round_)  # committed while the hub may be disconnected
                lv.flush()

                def resubscribed(r: int = round_) -> bool:
                    return lv.api.hub.subscribed >= r + 2

                def caught_up(r: int = round_) -> bool:
                    return len(event_seqs(frames)) >= 10 * (r + 1)

                wait_for(resubscribed, timeout=10)
                wait_for(caught_up, timeout=10)
        finally:
            admin.close()
        lv.exit("k")
        lv.flush()
        reader.join(20)
    assert event_seqs(frames) == list(range(1, 32))
