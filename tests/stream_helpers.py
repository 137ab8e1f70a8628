"""Helpers of the live-stream tests: the API served by a real uvicorn, a byte-level SSE reader.

The API runs in a thread of the test process (so a test can look at its LiveHub), on a real socket, so
SSE and WebSocket go over real HTTP; the worker is the real one, `python -m taskevents.ingest`, in a
subprocess.
"""

import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx
import orjson
import uvicorn
from fastapi import FastAPI

from taskevents.api.app import create_app
from taskevents.api.live import LiveHub
from taskevents.api.stream import WS_MAX_SIZE
from taskevents.emitter import Emitter
from taskevents.settings import Settings
from tests.helpers import start_worker, store_made, store_rows, wait_for


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ApiServer:
    """uvicorn serving the API on 127.0.0.1:`port` in a background thread; restartable on that port."""

    def __init__(self, settings: Settings, port: int | None = None, *, sndbuf: int | None = None) -> None:
        """`sndbuf`: a small, fixed kernel send buffer for each connection (Linux: accepted sockets
        inherit it from the listening one), so a client that does not read blocks the server soon."""
        self.settings = settings
        self.port = port or free_port()
        self.sndbuf = sndbuf
        self.app: FastAPI | None = None
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def hub(self) -> LiveHub:
        assert self.app is not None
        return self.app.state.live_hub

    def start(self) -> "ApiServer":
        self.app = create_app(self.settings)
        config = uvicorn.Config(
            self.app,
            host="127.0.0.1",
            port=self.port,
            log_level="warning",
            timeout_graceful_shutdown=1,  # open streams are cut after 1 s when the server stops
            ws_max_size=WS_MAX_SIZE,  # as `taskevents api` runs it
        )
        self._server = uvicorn.Server(config)
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if self.sndbuf:
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, self.sndbuf)
        listener.bind(("127.0.0.1", self.port))
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [listener]}, name="test-api", daemon=True
        )
        self._thread.start()
        server, thread = self._server, self._thread
        wait_for(lambda: server.started or not thread.is_alive(), timeout=10)
        assert server.started, "the API did not start"
        return self

    def stop(self) -> None:
        if self._server is not None and self._thread is not None:
            self._server.should_exit = True
            self._thread.join(15)
            assert not self._thread.is_alive(), "the API did not stop"


@dataclass
class Live:
    """What a stream test works with: the API, the worker, an emitter and the settings."""

    settings: Settings
    api: ApiServer
    worker: subprocess.Popen[bytes]
    emitter: Emitter

    @property
    def url(self) -> str:
        return self.api.url

    def emit(self, task_id: str, n: int, *, start: int = 0, pad: int = 0, **extra: Any) -> None:
        """`n` heartbeats for the task, each with payload {"i": start + k, "t": emit time}."""
        filler = "x" * pad
        for k in range(n):
            payload: dict[str, Any] = {"i": start + k, "t": time.time()}
            if pad:
                payload["pad"] = filler
            self.emitter.emit(task_id, "runner_heartbeat", span_id=f"{task_id}/runner", actor="runner",
                              payload=payload, **extra)  # fmt: skip

    def exit(self, task_id: str, code: int = 0) -> None:
        self.emitter.emit(
            task_id, "runner_exit", span_id=f"{task_id}/runner", actor="runner", payload={"exit_code": code}
        )

    def flush(self) -> None:
        assert self.emitter.flush(10), "the emitter could not deliver to Redis"

    def latest_seq(self, task_id: str) -> int:
        found = store_rows(self.settings, "SELECT latest_seq FROM tasks WHERE task_id = ?", task_id)
        return found[0][0] if found else 0

    def wait_stored(self, task_id: str, seq: int, timeout: float = 30) -> None:
        wait_for(lambda: self.latest_seq(task_id) >= seq, timeout=timeout, interval=0.05)


@contextmanager
def live(
    settings: Settings, api_settings: Settings | None = None, *, sndbuf: int | None = None
) -> Iterator[Live]:
    """The real worker (subprocess), the API (uvicorn thread) and an emitter, torn down after."""
    worker = start_worker(settings)
    emitter = Emitter.from_settings(settings)
    lv = Live(settings, ApiServer(api_settings or settings, sndbuf=sndbuf), worker, emitter)
    try:
        wait_for(lambda: store_made(settings), timeout=20)  # the worker creates the store
        lv.api.start()
        yield lv
    finally:
        emitter.close(5)
        lv.api.stop()  # the test may have replaced it
        worker.terminate()
        worker.wait(20)


# --- reading SSE byte by byte ----------------------------------------------------------------------


@dataclass
class Frame:
    """One dispatched SSE frame (a comment-only or empty block is not a frame)."""

    event: str | None = None
    id: str | None = None
    data: str | None = None
    retry: int | None = None
    fields: list[str] = field(default_factory=list)

    def json(self) -> Any:
        assert self.data is not None
        return orjson.loads(self.data)


class FrameParser:
    """Feed bytes; complete frames come out. What follows the last blank line is held back, and lost if
    the connection ends there, as an EventSource would lose it."""

    def __init__(self) -> None:
        self._buf = b""
        self.comments = 0

    def feed(self, data: bytes) -> list[Frame]:
        self._buf += data
        *blocks, self._buf = self._buf.replace(b"\r\n", b"\n").split(b"\n\n")
        frames = []
        for block in blocks:
            frame = Frame()
            for line in block.decode().split("\n"):
                if line.startswith(":"):
                    self.comments += 1
                    continue
                name, _, value = line.partition(":")
                value = value[1:] if value.startswith(" ") else value
                frame.fields.append(name)
                if name == "data":
                    frame.data = value if frame.data is None else frame.data + "\n" + value
                elif name == "id":
                    frame.id = value
                elif name == "event":
                    frame.event = value
                elif name == "retry":
                    frame.retry = int(value)
            if frame.fields:
                frames.append(frame)
        return frames


def small_receive_buffer_client(rcvbuf: int = 4096) -> httpx.Client:
    """A client whose socket holds little: a server writing to it blocks soon when it does not read."""
    transport = httpx.HTTPTransport(socket_options=[(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)])
    return httpx.Client(transport=transport, timeout=httpx.Timeout(10.0, read=30.0))


def read_frames(
    client: httpx.Client,
    url: str,
    *,
    out: list[Frame] | None = None,
    until_end: bool = True,
    timeout: float = 30.0,
    **kwargs: Any,
) -> list[Frame]:
    """The frames of one SSE request (appended to `out` as they come), until `end`, the server closes,
    or `timeout` passes."""
    frames: list[Frame] = [] if out is None else out
    parser = FrameParser()
    deadline = time.monotonic() + timeout
    with client.stream("GET", url, **kwargs) as response:
        assert response.status_code == 200, response.read()
        for chunk in response.iter_raw():
            frames += parser.feed(chunk)
            if until_end and frames and frames[-1].event == "end":
                break
            if time.monotonic() > deadline:
                break
    return frames


def event_seqs(frames: list[Frame]) -> list[int]:
    return [frame.json()["seq"] for frame in frames if frame.event == "task_event"]
