"""The live stream of a task's events: Server-Sent Events and WebSocket, replay then live, with resume.

Both first replay what the store has after the resume point (in pages), then stream events as the
worker commits them, each event once, in seq order; after the task's `runner_exit` they send an end
message and close. The router brings its own lifespan (FastAPI merges it into the app's): it runs the
process's LiveHub (api/live.py) and puts it on `app.state.live_hub`.

SSE frames (`text/event-stream`):
- first `retry: <stream_retry_ms>` alone (how soon a browser reconnects; no `id:`, no event);
- each event: `id: <seq>`, `event: task_event`, `data: <the event JSON, as the REST API returns it>`;
- at the end: `event: end`, `data: {"reason", "last_seq", "status"}`, without `id:` (an id on a control
  frame would move the browser's Last-Event-ID past events it has not seen);
- a `: keep-alive` comment every `stream_ping` seconds, during a replay as well.

Resume point: the `Last-Event-ID` header if sent, else `since_seq`, else 0 (everything). The header wins
because a browser's EventSource adds it when it reconnects, to the same URL, whose `since_seq` is the
original (older) one.
"""

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import aclosing, asynccontextmanager
from typing import Annotated, Any

import anyio
import orjson
from fastapi import APIRouter, FastAPI, Header, Path, Query, Request, WebSocket, WebSocketDisconnect
from sse_starlette import EventSourceResponse, ServerSentEvent
from sse_starlette.sse import SendTimeoutError
from starlette.types import Receive, Scope, Send

from taskevents.api.errors import ApiError, BadParameter
from taskevents.api.live import End, LiveEvent, LiveHub, follow
from taskevents.api.livereads import Head
from taskevents.api.models import ERRORS_400, ERRORS_TASK
from taskevents.api.store import StoreUnavailable
from taskevents.api.tasks import MAX_SEQ
from taskevents.event import NAME_MAX_LENGTH, is_name

log = logging.getLogger("taskevents.api.stream")

SEP = "\n"
HELLO_TIMEOUT = 10.0  # seconds a WebSocket without ?since_seq has to send {"since_seq": N}
HELLO_MAX_BYTES = 1024  # a first message is `{"since_seq": N}`: anything longer is refused unread
WS_MAX_SIZE = 64 * 1024  # uvicorn's limit on a client's frame (closes with 1009): clients send one hello

# WebSocket close codes: 4000 + the HTTP status an SSE request would get, and the standard ones.
WS_BAD_REQUEST = 4400  # since_seq or task_id is garbage
WS_HELLO_TIMEOUT = 4408  # no ?since_seq and no first message in time
WS_TRY_AGAIN = 1013  # the store is unavailable (an SSE request gets 503)
WS_POLICY = 1008  # the client stopped reading (send timeout)
WS_GONE = 4410  # the task is archived and its archive is gone (an SSE request gets 410)


@asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    async with LiveHub(app.state.settings, app.state.store, app.state.primary) as hub:
        app.state.live_hub = hub
        yield


router = APIRouter(tags=["live stream"], lifespan=_lifespan)

TaskId = Annotated[str, Path(description="The task's id; it need not exist yet.")]
SinceSeq = Annotated[
    int | None,
    Query(ge=0, le=MAX_SEQ, description="Stream events with a greater seq; `Last-Event-ID` wins if sent."),
]


def parse_seq(text: str, name: str) -> int:
    """A seq written in decimal ASCII digits, 0 to 2^63-1; BadParameter otherwise.

    The length is checked before any int(): Python refuses to convert over 4,300 digits (a ValueError
    that would otherwise surface as a 500), and a seq never needs more than 19.
    """
    digits = text.strip()
    significant = digits.lstrip("0") or "0"
    if not digits.isascii() or not digits.isdigit() or len(significant) > 19 or int(significant) > MAX_SEQ:
        shown = digits[:40] + ("…" if len(digits) > 40 else "")
        raise BadParameter(name, f"must be a seq, an integer from 0 to {MAX_SEQ} (got {shown!r})")
    return int(significant)


def resume_point(since_seq: int | None, last_event_id: str | None) -> int:
    """The seq after which to stream: Last-Event-ID if present (the browser's own), else since_seq."""
    if last_event_id is not None and last_event_id.strip():
        return parse_seq(last_event_id, "Last-Event-ID")
    return since_seq or 0


def check_task_id(task_id: str) -> None:
    if not is_name(task_id):
        raise BadParameter("task_id", f"must be 1-{NAME_MAX_LENGTH} characters without control characters")


def _hub(app: Any) -> LiveHub:
    return app.state.live_hub


# --- Server-Sent Events --------------------------------------------------------------------------


class _EventStream(EventSourceResponse):
    """An EventSourceResponse whose send timeout drops the client quietly (it is not a server error),
    and is kept by a watchdog instead of a cancel scope around every send.

    sse_starlette wraps each send in `anyio.move_on_after`: with a thousand clients that is tens of
    thousands of cancel scopes a second, about a fifth of the API's CPU for the fan-out. A send that
    returns within the timeout needs none; the watchdog, a task of the response's own task group
    waking every quarter of the timeout, raises SendTimeoutError for a send stuck past it, which
    ends the response as the library's own timeout does (the client is dropped within 1.25x the
    timeout instead of 1x).
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._sends: dict[object, float] = {}  # loop time each pending send began (a ping may overlap)
        self._watching = False  # the watchdog runs: only inside the library's task group
        if self.send_timeout is not None:
            self.data_sender_callable = self._watchdog

    async def _send_with_timeout(self, send: Send, message: Any) -> None:
        if not self._watching:  # HEAD, the farewell at shutdown: the library's own timeout
            await super()._send_with_timeout(send, message)
            return
        token = object()
        self._sends[token] = asyncio.get_running_loop().time()
        try:
            await send(message)
        except BaseException:
            self._send_interrupted = True
            raise
        finally:
            del self._sends[token]

    async def _watchdog(self) -> None:
        assert self.send_timeout is not None
        loop = asyncio.get_running_loop()
        self._watching = True
        try:
            while True:
                await asyncio.sleep(self.send_timeout / 4)
                oldest = min(self._sends.values(), default=None)
                if oldest is not None and loop.time() - oldest > self.send_timeout:
                    self._send_interrupted = True
                    raise SendTimeoutError()
        finally:
            self._watching = False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        except SendTimeoutError:
            log.info("dropped an SSE client that read nothing for %ss", self.send_timeout)


def _end_frame(end: End) -> bytes:
    return b"event: end\ndata: %s\n\n" % orjson.dumps(end.as_dict())


async def _sse_body(hub: LiveHub, task_id: str, after: int, start: Head | None) -> AsyncIterator[bytes]:
    yield b"retry: %d\n\n" % hub.settings.stream_retry_ms
    try:
        async with aclosing(follow(hub, task_id, after, start)) as items:
            async for item in items:
                if isinstance(item, End):
                    yield _end_frame(item)
                    return
                yield b"".join(event.sse for event in item)  # one write for the whole batch
    except (StoreUnavailable, ApiError) as exc:
        # Close without an end frame: the client reconnects (Last-Event-ID) and gets a 503 or resumes
        # (an archive that went missing under the stream: 410).
        log.warning("SSE stream of %r closed: %s", task_id, exc)


@router.get(
    "/sse/tasks/{task_id}/events",
    response_class=EventSourceResponse,
    responses={
        200: {"content": {"text/event-stream": {}}, "description": "The event stream (see the README)."},
        **ERRORS_400,
        503: ERRORS_TASK[503],  # the store unreadable when the stream starts
    },
)
async def sse_task_events(
    request: Request,
    task_id: TaskId,
    since_seq: SinceSeq = None,
    last_event_id: Annotated[
        str | None, Header(description="Resume after this seq (sent by EventSource on reconnect).")
    ] = None,
) -> EventSourceResponse:
    """Server-Sent Events: the task's events after the resume point, replayed then live.

    Frames `id: <seq>` / `event: task_event` / `data: <event JSON>`; a final `event: end` (no id) after
    the task's `runner_exit`, or when a task not seen yet has had no event for `TASKEVENTS_STREAM_IDLE`
    seconds. A resume point beyond the task's latest seq waits for that seq.
    """
    after = resume_point(since_seq, last_event_id)
    check_task_id(task_id)
    hub = _hub(request.app)
    start = await hub.head(task_id)  # 503 here, before the stream starts, if the store is unreadable
    settings = hub.settings
    return _EventStream(
        _sse_body(hub, task_id, after, start),
        ping=settings.stream_ping,
        ping_message_factory=lambda: ServerSentEvent(comment="keep-alive", sep=SEP),
        send_timeout=settings.stream_send_timeout,
        sep=SEP,
    )


async def _task_list_body(hub: LiveHub) -> AsyncIterator[bytes]:
    yield b"retry: %d\n\n" % hub.settings.stream_retry_ms
    feed = hub.watch_task_list()
    try:
        while not hub.closed:
            frames = await feed.next_frames()
            if frames:
                yield frames
    finally:
        hub.unwatch_task_list(feed)


@router.get(
    "/sse/tasks",
    response_class=EventSourceResponse,
    responses={200: {"content": {"text/event-stream": {}}, "description": "The task list's feed."}},
)
async def sse_task_list(request: Request) -> EventSourceResponse:
    """Server-Sent Events: the summaries of tasks as they change (what `GET /api/tasks` lists), pushed as
    the worker commits, merged over a quarter of a second: `event: tasks` with a JSON array of task
    summaries, and `event: resync` when what changed is not known (the client reads its page again).
    Connect first, then read the page: a summary with a higher `latest_seq` is the newer one."""
    hub = _hub(request.app)
    settings = hub.settings
    return _EventStream(
        _task_list_body(hub),
        ping=settings.stream_ping,
        ping_message_factory=lambda: ServerSentEvent(comment="keep-alive", sep=SEP),
        send_timeout=settings.stream_send_timeout,
        sep=SEP,
    )


# --- WebSocket -----------------------------------------------------------------------------------


def _ws_event(event: LiveEvent) -> str:
    return '{"type":"event","event":' + event.json.decode() + "}"


async def _ws_resume_point(websocket: WebSocket) -> int:
    """?since_seq=N, or else the first message {"since_seq": N} (within HELLO_TIMEOUT).

    Every mistake is a BadParameter (close 4400): a binary frame, a text frame over HELLO_MAX_BYTES,
    anything but a JSON object whose `since_seq` is an integer from 0 to 2^63-1.
    """
    raw = websocket.query_params.get("since_seq")
    if raw is not None:
        return parse_seq(raw, "since_seq")
    with anyio.fail_after(HELLO_TIMEOUT):
        message = await websocket.receive()
    if message["type"] == "websocket.disconnect":
        raise WebSocketDisconnect(message.get("code", 1000))
    text = message.get("text")
    if text is None:
        raise BadParameter("first message", 'must be a text frame {"since_seq": N}, not binary')
    if len(text) > HELLO_MAX_BYTES:
        raise BadParameter("first message", f'must be {{"since_seq": N}}, not {len(text)} characters')
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError:
        value = None
    if not isinstance(value, dict) or "since_seq" not in value:
        raise BadParameter("first message", 'must be {"since_seq": N}')
    seq = value["since_seq"]
    if isinstance(seq, bool) or not isinstance(seq, int) or not 0 <= seq <= MAX_SEQ:
        raise BadParameter("since_seq", f"must be an integer from 0 to {MAX_SEQ}")
    return seq


async def _close(websocket: WebSocket, code: int, reason: str) -> None:
    with anyio.move_on_after(1):  # a client that reads nothing cannot take a close frame either
        await websocket.close(code, reason.encode()[:123].decode(errors="ignore"))


@router.websocket("/ws/tasks/{task_id}/events")
async def ws_task_events(websocket: WebSocket, task_id: str) -> None:
    """WebSocket: `{"type":"event","event":{…}}` per event, `{"type":"end",…}` at the end, then close."""
    await websocket.accept()
    hub = _hub(websocket.app)
    try:
        check_task_id(task_id)
        after = await _ws_resume_point(websocket)
        start = await hub.head(task_id)
    except BadParameter as exc:
        return await _close(websocket, WS_BAD_REQUEST, exc.detail)
    except TimeoutError:
        return await _close(websocket, WS_HELLO_TIMEOUT, 'send {"since_seq": N} or use ?since_seq=N')
    except StoreUnavailable as exc:
        return await _close(websocket, WS_TRY_AGAIN, str(exc))
    except ApiError as exc:  # an archived task whose archive is missing (410) or damaged (503)
        return await _close(websocket, WS_TRY_AGAIN if exc.status == 503 else WS_GONE, exc.detail)
    except WebSocketDisconnect:
        return

    code: int | None = None  # stays None if the client goes away first
    reason = ""
    async with anyio.create_task_group() as tg:
        tg.start_soon(_watch_disconnect, websocket, tg.cancel_scope)
        code, reason = await _ws_send(websocket, hub, task_id, after, start)
        tg.cancel_scope.cancel()
    if code is not None:
        await _close(websocket, code, reason)


async def _watch_disconnect(websocket: WebSocket, scope: anyio.CancelScope) -> None:
    """Read (and ignore) what the client sends, until it goes away; then stop the sender."""
    try:
        while True:
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                break
    finally:
        scope.cancel()


async def _ws_send(
    websocket: WebSocket, hub: LiveHub, task_id: str, after: int, start: Head | None
) -> tuple[int | None, str]:
    """Send until the end; the close code and reason to finish with (None: the client is gone)."""
    timeout = hub.settings.stream_send_timeout
    try:
        async with aclosing(follow(hub, task_id, after, start)) as items:
            async for item in items:
                with anyio.fail_after(timeout):
                    if isinstance(item, End):
                        await websocket.send_text(orjson.dumps({"type": "end", **item.as_dict()}).decode())
                        return 1000, item.reason
                    for event in item:
                        await websocket.send_text(_ws_event(event))
    except TimeoutError:
        log.info("dropped a WebSocket client that read nothing for %ss", timeout)
        return WS_POLICY, "too slow: stopped reading"
    except StoreUnavailable as exc:
        log.warning("WebSocket stream of %r closed: %s", task_id, exc)
        return WS_TRY_AGAIN, str(exc)
    except ApiError as exc:  # the task's archive, missing or damaged under the stream
        log.warning("WebSocket stream of %r closed: %s", task_id, exc)
        return (WS_TRY_AGAIN if exc.status == 503 else WS_GONE), exc.detail
    except (WebSocketDisconnect, OSError):
        return None, ""
    return 1001, "server shutting down"
