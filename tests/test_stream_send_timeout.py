"""The SSE response's send timeout (api/stream.py `_EventStream`): a watchdog inside the response's
task group, the library's own timeout for the sends made outside it (HEAD, the farewell at shutdown)."""

import asyncio
import time
from collections.abc import AsyncIterator

import pytest
from sse_starlette.sse import SendTimeoutError
from starlette.types import Message

from taskevents.api.stream import _EventStream


async def _nothing() -> AsyncIterator[bytes]:
    if False:
        yield b""


async def _stuck(message: object) -> None:
    await asyncio.sleep(3600)  # a client that never reads: uvicorn's send waits for the socket to drain


def test_a_send_outside_the_watchdog_still_times_out() -> None:
    stream = _EventStream(_nothing(), send_timeout=0.2)

    async def send_once() -> float:
        started = time.monotonic()
        with pytest.raises(SendTimeoutError):
            await stream._send_with_timeout(_stuck, {"type": "http.response.body", "body": b"x"})
        return time.monotonic() - started

    assert asyncio.run(send_once()) < 2


def test_the_watchdog_drops_a_stuck_send_and_ends_the_response() -> None:
    async def body() -> AsyncIterator[bytes]:
        yield b"data: x\n\n"

    stream = _EventStream(body(), send_timeout=0.2, ping=0)
    sent: list[object] = []

    async def send(message: Message) -> None:
        sent.append(message["type"])
        if message["type"] == "http.response.body":
            await _stuck(message)

    async def receive() -> Message:
        await asyncio.sleep(3600)
        return {"type": "http.disconnect"}

    scope = {"type": "http", "method": "GET", "headers": [], "path": "/sse"}

    async def respond() -> float:
        started = time.monotonic()
        await asyncio.wait_for(stream(scope, receive, send), timeout=5)  # logged and dropped, not raised
        return time.monotonic() - started

    assert asyncio.run(respond()) < 2
    assert sent == ["http.response.start", "http.response.body"]
