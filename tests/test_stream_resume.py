"""The SSE stream's resume rules, against the real worker and a real uvicorn: every seq once, in order."""

import random
import threading
import time

import httpx
import pytest

from taskevents.settings import Settings
from tests.pgserver import STORES
from tests.stream_helpers import ApiServer, FrameParser, Live, event_seqs, live, read_frames

pytestmark = [pytest.mark.redis_server, pytest.mark.parametrize("settings", STORES, indirect=True)]


@pytest.mark.slow
def test_a_client_cut_off_100_times_gets_every_event_once_and_in_order(settings: Settings) -> None:
    total = 10_000
    rng = random.Random(20261125)
    with live(settings) as lv:

        def produce() -> None:
            for start in range(0, total - 1, 50):  # ~2,500 events/s, the last one runner_exit
                lv.emit("t", min(50, total - 1 - start), start=start)
                time.sleep(0.02)
            lv.exit("t")
            lv.flush()

        producer = threading.Thread(target=produce)
        producer.start()
        received: list[int] = []
        last_id: str | None = None
        cuts = resumed_with_header = 0
        ended = False
        with httpx.Client(timeout=httpx.Timeout(10.0, read=30.0)) as client:
            while not ended:
                # Cut after a random number of body bytes: mid-frame, mid-line, or between frames.
                budget = None
                if cuts < 100:
                    budget = rng.randint(1, 300) if rng.random() < 0.2 else rng.randint(300, 60_000)
                headers = {"Last-Event-ID": last_id} if last_id is not None else {}
                resumed_with_header += bool(headers)
                parser, read = FrameParser(), 0
                with client.stream("GET", f"{lv.url}/sse/tasks/t/events", headers=headers) as response:
                    assert response.status_code == 200
                    for chunk in response.iter_raw():
                        cut = budget is not None and read + len(chunk) >= budget
                        if cut:
                            chunk = chunk[: budget - read]  # type: ignore[operator]
                        read += len(chunk)
                        for frame in parser.feed(chunk):
                            if frame.event == "task_event":
                                received.append(frame.json()["seq"])
                                last_id = frame.id
                            elif frame.event == "end":
                                ended = True
                        if cut:
                            cuts += 1
                            break
                        if ended:
                            break
        producer.join()

    assert cuts == 100
    assert resumed_with_header >= 99
    assert received == list(range(1, total + 1))


def _ended_task(lv: Live, task_id: str, n: int) -> None:
    lv.emit(task_id, n - 1)
    lv.exit(task_id)
    lv.flush()
    lv.wait_stored(task_id, n)


def test_resume_by_since_seq_and_by_last_event_id_which_wins(settings: Settings) -> None:
    with live(settings) as lv, httpx.Client(timeout=10) as client:
        _ended_task(lv, "r", 50)
        url = f"{lv.url}/sse/tasks/r/events"

        frames = read_frames(client, url)
        assert frames[0].retry == 2000 and frames[0].fields == ["retry"]  # retry up front, alone
        assert event_seqs(frames) == list(range(1, 51))
        assert all(f.id == str(f.json()["seq"]) for f in frames if f.event == "task_event")
        assert frames[-1].event == "end" and frames[-1].id is None  # only event frames carry an id
        assert frames[-1].json() == {"reason": "task_ended", "last_seq": 50, "status": "succeeded"}

        assert event_seqs(read_frames(client, url, params={"since_seq": 20})) == list(range(21, 51))
        assert event_seqs(read_frames(client, url, headers={"Last-Event-ID": "30"})) == list(range(31, 51))
        # Both: the header wins (a browser adds it on reconnect to the URL with the original since_seq).
        both = read_frames(client, url, params={"since_seq": 5}, headers={"Last-Event-ID": "40"})
        assert event_seqs(both) == list(range(41, 51))
        # An empty Last-Event-ID is no Last-Event-ID.
        empty = read_frames(client, url, params={"since_seq": 45}, headers={"Last-Event-ID": ""})
        assert event_seqs(empty) == [46, 47, 48, 49, 50]
        # Resuming after the last event of an ended task: just the end.
        last = read_frames(client, url, headers={"Last-Event-ID": "50"})
        assert [f.event for f in last] == [None, "end"]

        event = read_frames(client, url, params={"since_seq": 49})[1].json()
        page = client.get(f"{lv.url}/api/tasks/r/events", params={"since_seq": 49}).json()
        assert event == page["events"][0]  # the same fields and values as the REST API


GARBAGE: list[tuple[dict[str, str], dict[bytes, bytes], str]] = [
    ({"since_seq": "abc"}, {}, "since_seq"),
    ({"since_seq": "-1"}, {}, "since_seq"),
    ({"since_seq": "1.5"}, {}, "since_seq"),
    ({"since_seq": str(2**63)}, {}, "since_seq"),
    ({}, {b"Last-Event-ID": b"abc"}, "Last-Event-ID"),
    ({}, {b"Last-Event-ID": b"-3"}, "Last-Event-ID"),
    ({}, {b"Last-Event-ID": b"1e3"}, "Last-Event-ID"),
    ({"since_seq": "\u0663"}, {}, "since_seq"),  # a digit, but not an ASCII one
    ({}, {b"Last-Event-ID": "\u0663".encode()}, "Last-Event-ID"),
    ({}, {b"Last-Event-ID": str(2**63).encode()}, "Last-Event-ID"),
    ({"since_seq": "3"}, {b"Last-Event-ID": b"x"}, "Last-Event-ID"),
]


def test_garbage_resume_points_and_task_ids_are_a_400(settings: Settings) -> None:
    with live(settings) as lv, httpx.Client(timeout=10) as client:
        for params, headers, name in GARBAGE:
            response = client.get(f"{lv.url}/sse/tasks/t/events", params=params, headers=headers)
            assert response.status_code == 400, (params, headers)
            body = response.json()
            assert body["code"] == "bad_parameter" and set(body) == {"detail", "code"}
            assert body["detail"].startswith(name), body
        response = client.get(f"{lv.url}/sse/tasks/{'x' * 129}/events")
        assert response.status_code == 400 and response.json()["detail"].startswith("task_id")


def test_a_resume_point_beyond_the_latest_seq_waits_for_that_seq(settings: Settings) -> None:
    with live(settings) as lv, httpx.Client(timeout=httpx.Timeout(10.0, read=30.0)) as client:
        lv.emit("w", 10)
        lv.flush()
        lv.wait_stored("w", 10)
        got: list[int] = []

        def stream() -> None:
            got.extend(
                event_seqs(read_frames(client, f"{lv.url}/sse/tasks/w/events", params={"since_seq": 15}))
            )

        reader = threading.Thread(target=stream)
        reader.start()
        time.sleep(0.5)
        assert got == []
        lv.emit("w", 9, start=10)
        lv.exit("w")  # seq 20
        lv.flush()
        reader.join(20)
        assert got == [16, 17, 18, 19, 20]


def test_a_stream_before_the_store_exists_is_a_503(settings: Settings) -> None:
    api = ApiServer(settings).start()  # no worker: the store file does not exist yet
    try:
        response = httpx.get(f"{api.url}/sse/tasks/t/events", timeout=10)
    finally:
        api.stop()
    assert response.status_code == 503
    assert response.json()["code"] == "store_unavailable"
