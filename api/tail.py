"""Tail a task's live stream from Python, with EventSource semantics: resume, reconnect, stop at the end.

    for event in TaskTail("t-42", url="http://127.0.0.1:8000"):  # url: TASKEVENTS_API_URL if left out
        print(event["seq"], event["event_type"])

It reads the API's Server-Sent Events (`GET /sse/tasks/{task_id}/events`). After a dropped connection,
a server restart or a 5xx it reconnects by itself, sending `Last-Event-ID` (the seq of the last event it
yielded), so each event is yielded once and in order; it waits the server's `retry:` before the first
attempt and backs off exponentially (with jitter, up to `max_backoff`) while attempts keep failing. It
stops when the server sends `end` (the task's runner exited), with `.end` holding why. A 4xx answer
(a bad parameter) raises TailError: trying again would not help.
"""

import logging
import random
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import httpx
import orjson
from httpx_sse import SSEError, connect_sse

from taskevents.settings import ApiClientSettings, build

log = logging.getLogger("taskevents.tail")

DEFAULT_RETRY = 2.0  # seconds before reconnecting, until the server's `retry:` says otherwise
READ_TIMEOUT = 60.0  # the server sends a keep-alive comment every 15 s by default


class TailError(Exception):
    """The server refused the request (4xx); `status` and `code` say why."""

    def __init__(self, status: int, code: str, detail: str) -> None:
        super().__init__(f"{status} {code}: {detail}")
        self.status = status
        self.code = code
        self.detail = detail


class TaskTail:
    """An iterator over a task's events (dicts, the REST API's event fields), resuming across reconnects."""

    def __init__(
        self,
        task_id: str,
        since_seq: int | None = None,
        *,
        url: str | None = None,
        max_backoff: float = 30.0,
        read_timeout: float = READ_TIMEOUT,
        client: httpx.Client | None = None,
    ) -> None:
        """`url`: the API's base URL; left out, `TASKEVENTS_API_URL` (read now). ValueError if malformed."""
        base_url = build(ApiClientSettings, api_url=url).api_url
        self.url = f"{base_url}/sse/tasks/{quote(task_id, safe='')}/events"
        self.task_id = task_id
        self.since_seq = since_seq
        self.last_seq: int | None = None  # the seq of the last event yielded
        self.end: dict[str, Any] | None = None  # the end message, once the stream has ended
        self.connections = 0  # successful connections (1 + the reconnects)
        self.max_backoff = max_backoff
        self._retry = DEFAULT_RETRY
        self._client = client or httpx.Client(
            timeout=httpx.Timeout(10.0, read=read_timeout), headers={"User-Agent": "taskevents-tail"}
        )
        self._own_client = client is None

    def __iter__(self) -> Iterator[dict[str, Any]]:
        failures = 0
        try:
            while self.end is None:
                try:
                    for event in self._connect():
                        failures = 0
                        yield event
                except (httpx.TransportError, SSEError, _ServerError) as exc:
                    log.info("stream of %s interrupted (%s); reconnecting", self.task_id, exc)
                else:
                    if self.end is not None:
                        return
                    log.info("stream of %s closed by the server; reconnecting", self.task_id)
                failures += 1
                time.sleep(self._delay(failures))
        finally:
            self.close()

    def close(self) -> None:
        if self._own_client:
            self._client.close()

    def _delay(self, failures: int) -> float:
        """The server's retry for the first attempt, then exponential backoff with jitter."""
        delay = min(self.max_backoff, self._retry * 2 ** (failures - 1))
        return delay * random.uniform(0.8, 1.2) if failures > 1 else delay

    def _connect(self) -> Iterator[dict[str, Any]]:
        headers, params = {}, {}
        if self.last_seq is not None:
            headers["Last-Event-ID"] = str(self.last_seq)
        elif self.since_seq is not None:
            params["since_seq"] = str(self.since_seq)
        with connect_sse(self._client, "GET", self.url, headers=headers, params=params) as source:
            response = source.response
            if response.status_code != 200:
                response.read()
                _raise_for(response)
            self.connections += 1
            for sse in source.iter_sse():
                if sse.retry is not None:
                    self._retry = sse.retry / 1000
                if sse.event == "task_event":
                    event = orjson.loads(sse.data)
                    self.last_seq = event["seq"]
                    yield event
                elif sse.event == "end":
                    self.end = orjson.loads(sse.data)
                    return


class _ServerError(Exception):
    """A 5xx: the store or the server is unavailable for now; worth retrying."""


def _raise_for(response: httpx.Response) -> None:
    try:
        body = response.json()
        code, detail = str(body["code"]), str(body["detail"])
    except (ValueError, KeyError, TypeError):
        code, detail = f"http_{response.status_code}", response.text[:200]
    if response.status_code >= 500:
        raise _ServerError(f"{response.status_code} {code}: {detail}")
    raise TailError(response.status_code, code, detail)


def tail(task_id: str, since_seq: int | None = None, **options: Any) -> Iterator[dict[str, Any]]:
    """The task's events after `since_seq` (all of them if None), until its runner exits."""
    return iter(TaskTail(task_id, since_seq, **options))
