"""Clients of the live stream: the tail client (EventSource semantics), `taskevents tail`, the WebSocket."""

import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import orjson
import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from taskevents.api import stream as api_stream
from taskevents.api.tail import TailError, TaskTail
from taskevents.settings import Settings
from tests.helpers import wait_for
from tests.stream_helpers import ApiServer, live

pytestmark = pytest.mark.redis_server

TASKEVENTS = str(Path(sys.executable).with_name("taskevents"))  # the installed command


@pytest.mark.slow
def test_the_tail_client_reconnects_by_itself_when_the_server_goes_away(settings: Settings) -> None:
    quick = settings.model_copy(update={"stream_retry_ms": 200})
    with live(quick) as lv:
        stream = TaskTail("tc", url=lv.url, max_backoff=1.0)
        got: list[dict[str, Any]] = []
        follower = threading.Thread(target=lambda: got.extend(e for e in stream), daemon=True)
        follower.start()
        lv.emit("tc", 20)
        lv.flush()
        wait_for(lambda: len(got) == 20)

        lv.api.stop()  # the server closes the connection (and is gone for a moment)
        lv.emit("tc", 20, start=20)  # meanwhile the task goes on
        lv.flush()
        lv.wait_stored("tc", 40)
        time.sleep(0.5)
        lv.api = ApiServer(quick, port=lv.api.port).start()  # back, on the same address

        lv.emit("tc", 10, start=40)
        lv.exit("tc")
        lv.flush()
        follower.join(30)
        assert not follower.is_alive()
    assert [e["seq"] for e in got] == list(range(1, 52))
    assert [e["payload"].get("i") for e in got[:50]] == list(range(50))
    assert stream.connections >= 2
    assert stream.end == {"reason": "task_ended", "last_seq": 51, "status": "succeeded"}


def test_the_tail_client_starts_after_since_seq_and_refuses_a_400(settings: Settings) -> None:
    with live(settings) as lv:
        lv.emit("ts", 9)
        lv.exit("ts")
        lv.flush()
        lv.wait_stored("ts", 10)
        assert [e["seq"] for e in TaskTail("ts", since_seq=7, url=lv.url)] == [8, 9, 10]
        with pytest.raises(TailError) as refused:
            list(TaskTail("x" * 200, url=lv.url))
        assert refused.value.status == 400 and refused.value.code == "bad_parameter"


def test_taskevents_tail_prints_one_json_line_per_event(settings: Settings) -> None:
    with live(settings) as lv:
        lv.emit("cli", 4)
        lv.exit("cli")
        lv.flush()
        lv.wait_stored("cli", 5)
        done = subprocess.run(
            [TASKEVENTS, "tail", "cli", "--since-seq", "2", "--url", lv.url],
            capture_output=True,
            timeout=30,
        )
    assert done.returncode == 0, done.stderr
    events = [orjson.loads(line) for line in done.stdout.splitlines()]
    assert [e["seq"] for e in events] == [3, 4, 5]
    assert events[-1]["event_type"] == "runner_exit"
    assert b"stream ended: task_ended" in done.stderr


# --- WebSocket -----------------------------------------------------------------------------------


def _messages(ws: Any) -> list[dict[str, Any]]:
    out = []
    while True:
        try:
            out.append(orjson.loads(ws.recv(timeout=20)))
        except ConnectionClosed:
            return out


def test_websocket_replay_then_live_then_end(settings: Settings) -> None:
    with live(settings) as lv:
        lv.emit("ws", 5)
        lv.flush()
        lv.wait_stored("ws", 5)
        ws_url = lv.url.replace("http://", "ws://")
        with connect(f"{ws_url}/ws/tasks/ws/events?since_seq=2") as ws:
            replayed = [orjson.loads(ws.recv(timeout=10)) for _ in range(3)]
            lv.emit("ws", 2, start=5)
            lv.exit("ws")
            lv.flush()
            rest = _messages(ws)
            assert ws.close_code == 1000
        assert [m["event"]["seq"] for m in replayed + rest[:-1]] == [3, 4, 5, 6, 7, 8]
        assert all(m["type"] == "event" for m in replayed + rest[:-1])
        assert rest[-1] == {"type": "end", "reason": "task_ended", "last_seq": 8, "status": "succeeded"}

        # The resume point as the first message instead of a query parameter.
        with connect(f"{ws_url}/ws/tasks/ws/events") as ws:
            ws.send(orjson.dumps({"since_seq": 6}).decode())
            messages = _messages(ws)
        assert [m.get("event", {}).get("seq") for m in messages] == [7, 8, None]


def test_websocket_errors_are_close_codes(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(api_stream, "HELLO_TIMEOUT", 0.5)
    with live(settings) as lv:
        ws_url = lv.url.replace("http://", "ws://")
        for path, first in [
            ("/ws/tasks/t/events?since_seq=abc", None),
            ("/ws/tasks/t/events?since_seq=-1", None),
            ("/ws/tasks/t/events", "not json"),
            ("/ws/tasks/t/events", '{"since_seq": "3"}'),
            ("/ws/tasks/t/events", '{"since_seq": true}'),
        ]:
            with connect(ws_url + path) as ws:
                if first is not None:
                    ws.send(first)
                assert _messages(ws) == []
                assert ws.close_code == api_stream.WS_BAD_REQUEST, (path, first)
                reason = ws.close_reason or ""
                assert "since_seq" in reason or "first message" in reason
        with connect(f"{ws_url}/ws/tasks/t/events") as ws:  # says nothing
            assert _messages(ws) == []
            assert ws.close_code == api_stream.WS_HELLO_TIMEOUT
