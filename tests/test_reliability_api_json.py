"""The API only ever emits strict JSON, whatever odd-but-valid content the worker accepted.

Events with unicode from every plane, separators that split lines in some decoders (U+2028, U+0085,
CR, LF), every control character and NUL escaped in strings, an attempt to forge SSE fields from inside
a payload, integers at the ends of 64 bits, floats at the ends of doubles and -0.0, the deepest
payload the producer accepts, and odd task ids, actors and span ids go through the real worker, and
come back from every REST endpoint, the SSE stream (raw bytes, a standard SSE client and our tail
client) and the WebSocket as JSON that strict parsers accept (orjson; the standard library with NaN and
Infinity refused), value for value what was emitted.
"""

import json
import math
from typing import Any
from urllib.parse import quote

import httpx
import orjson
import pytest
from httpx_sse import connect_sse
from websockets.sync.client import connect

from taskevents.api.tail import TaskTail
from taskevents.settings import Settings
from tests.stream_helpers import Live, live, read_frames

pytestmark = pytest.mark.redis_server

TASKS = (
    "tâche-😀",
    "t\u2028line\u2029sep\u0085nel",
    'q"uote\\back<b>&amp;',
    "sp ace?#%x",  # (a `/` cannot be addressed in a path: README, Limits)
    "ключ-中文-\U0010ffff",
)


def _refuse(constant: str) -> Any:
    raise ValueError(f"not strict JSON: {constant}")


def strict(body: bytes) -> Any:
    """Parse with both strict parsers; they must agree (orjson also refuses bad UTF-8 and lone surrogates)."""
    fast = orjson.loads(body)
    slow = json.loads(body.decode("utf-8"), parse_constant=_refuse)
    assert fast == slow
    return fast


def _deepest(make: Any) -> Any:
    """The deepest value the producer takes (orjson's recursion limit), built by `make(inner)`."""
    for depth in range(300, 0, -1):
        value: Any = "bottom"
        for _ in range(depth):
            value = make(value)
        try:
            orjson.dumps({"v": value})
        except orjson.JSONEncodeError:
            continue
        return value
    raise AssertionError("no depth works")


PAYLOADS: dict[str, dict[str, Any]] = {
    "unicode": {
        "s": "é ß 中文 😀 👩‍👩‍👧 e\u0301 \u202eRTL\u202c \ufeff \ufffd \ud7ff \ue000 \U0010ffff",
        "keys": {"": 1, "ключ": 2, "😀": 3, "\u2028": 4, "\u0000nul": 5},
    },
    "separators": {"ls": "a\u2028b\u2029c\u0085d", "newlines": "one\r\ntwo\rthree\nfour"},
    "sse_forgery": {"x": "\n\nid: 999\nevent: end\ndata: {}\n\n", "y": "\r\rretry: 1\r"},
    "escapes": {
        "quotes": "\"double\" 'single' \\back\\ /slash",
        "controls": "".join(chr(c) for c in range(32)) + "\x7f",
        "html": "</script><script>alert(1)</script>",
    },
    "integers": {"max": 2**63 - 1, "min": -(2**63), "u64": 2**64 - 1, "zero": 0, "list": [-1, 2**53 + 1]},
    "floats": {
        "tiny": 5e-324,
        "min_normal": 2.2250738585072014e-308,
        "max": 1.7976931348623157e308,
        "neg_zero": -0.0,
        "tenth": 0.1,
        "third": 1 / 3,
        "e16": 1e16,
        "neg_big": -1.5e300,
    },
    "shapes": {
        "empty_obj": {},
        "empty_list": [],
        "mixed": [None, True, False, "", 0, 0.0, [], {}],
        "n": None,
    },
    "deep_object": {"v": _deepest(lambda inner: {"d": inner})},
    "deep_list": {"v": _deepest(lambda inner: [inner])},
    "long_string": {"s": "ü" * 30_000},  # 60,000 bytes of UTF-8, under the 64 KiB payload limit
}


def _emit_odd_task(lv: Live, task: str) -> list[dict[str, Any]]:
    """The task's events, as emitted: spawn, phase, one event per odd payload, a checkpoint, exit."""
    root, phase_span = f"{task}/rünner\u2028", f"{task}/exécution"
    events: list[dict[str, Any]] = [
        {"event_type": "runner_spawn", "span_id": root, "actor": "rünner-😀", "payload": PAYLOADS["unicode"]},
        {
            "event_type": "phase_enter",
            "span_id": phase_span,
            "parent_span_id": root,
            "actor": "runner",
            "phase": "executing",
            "payload": PAYLOADS["escapes"],
        },  # fmt: skip
    ]
    for name, payload in PAYLOADS.items():
        events.append({"event_type": "work_item_progress", "span_id": f"{task}/w-{name}",
                       "parent_span_id": phase_span, "actor": "wörker", "phase": "executing",
                       "payload": payload})  # fmt: skip
    events.append({"event_type": "checkpoint_commit", "span_id": phase_span, "actor": "runner",
                   "phase": "executing", "payload": {"checkpoint_id": "ckpt-😀",
                   "evidence_refs": PAYLOADS["floats"] | PAYLOADS["integers"]}})  # fmt: skip
    events.append(
        {"event_type": "runner_exit", "span_id": root, "actor": "runner", "payload": {"exit_code": 0}}
    )
    for event in events:
        lv.emitter.emit(task, **event)
    return events


def _same_event(served: dict[str, Any], emitted: dict[str, Any], task: str, seq: int) -> None:
    assert served["task_id"] == task and served["seq"] == seq
    for key in ("event_type", "span_id", "actor"):
        assert served[key] == emitted[key]
    assert served["payload"] == emitted["payload"]
    if emitted["payload"] is PAYLOADS["floats"]:
        assert math.copysign(1.0, served["payload"]["neg_zero"]) == -1.0  # -0.0 keeps its sign


def _get(http: httpx.Client, path: str, **params: Any) -> Any:
    response = http.get(path, params=params)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    return strict(response.content)


def test_odd_but_valid_content_is_served_as_strict_json_by_rest_sse_and_websocket(settings: Settings) -> None:
    with live(settings) as lv:
        emitted = {task: _emit_odd_task(lv, task) for task in TASKS}
        lv.flush()
        for task in TASKS:
            lv.wait_stored(task, len(emitted[task]))
        with httpx.Client(base_url=lv.url, timeout=30) as http:
            _check_every_reader(lv, http, emitted)


def _check_every_reader(lv: Live, http: httpx.Client, emitted: dict[str, list[dict[str, Any]]]) -> None:
    """Every endpoint and stream, for every task: strict JSON, the values that were emitted."""
    for task in TASKS:
        path, events = f"/api/tasks/{quote(task, safe='')}", emitted[task]
        n = len(events)

        page = _get(http, f"{path}/events", limit=1000)
        assert [e["seq"] for e in page["events"]] == list(range(1, n + 1))
        for seq, (served, sent) in enumerate(zip(page["events"], events, strict=True), start=1):
            _same_event(served, sent, task, seq)
        by_seq = {e["seq"]: e for e in page["events"]}

        assert _get(http, f"{path}/events/latest", limit=500)["events"] == page["events"][::-1]
        snapshot = _get(http, f"{path}/events/snapshot", limit=500)
        assert snapshot["task_id"] == task and snapshot["events"] == page["events"]
        phase = _get(http, f"{path}/events/phase/executing")
        assert phase["events"] == [e for e in page["events"] if e["phase"] == "executing"]
        checkpoints = _get(http, f"{path}/checkpoints")
        assert [e["payload"]["checkpoint_id"] for e in checkpoints] == ["ckpt-😀"]
        graph = _get(http, f"{path}/graph")
        assert {node["span_id"] for node in graph["spans"]} == {e["span_id"] for e in events}
        for node in graph["spans"]:
            assert node["payload"] == by_seq[node["seq"]]["payload"]

        # SSE, byte by byte: one frame per event, nothing forged by the payloads, strict data.
        frames = read_frames(http, f"{path.replace('/api/tasks', '/sse/tasks')}/events")
        assert [f.event for f in frames] == [None] + ["task_event"] * n + ["end"]
        assert [f.id for f in frames[1:-1]] == [str(seq) for seq in range(1, n + 1)]
        assert [strict(f.data.encode()) for f in frames[1:-1]] == page["events"]  # type: ignore[union-attr]
        assert strict(frames[-1].data.encode())["last_seq"] == n  # type: ignore[union-attr]
        # A standard SSE client (httpx-sse) and our tail client read the same events.
        with connect_sse(http, "GET", f"{path.replace('/api/tasks', '/sse/tasks')}/events") as source:
            parsed = [strict(s.data.encode()) for s in source.iter_sse() if s.event == "task_event"]
        assert parsed == page["events"]
        tail = TaskTail(task, since_seq=0, url=lv.url)
        assert list(tail) == page["events"] and tail.end is not None and tail.end["last_seq"] == n

        ws_url = lv.url.replace("http://", "ws://") + path.replace("/api/tasks", "/ws/tasks") + "/events"
        with connect(f"{ws_url}?since_seq=0") as ws:
            messages = [strict(str(ws.recv(timeout=10)).encode()) for _ in range(n + 1)]
        assert [m["event"] for m in messages[:-1]] == page["events"] and messages[-1]["type"] == "end"

    tasks = _get(http, "/api/tasks", limit=500)["tasks"]
    assert {t["task_id"] for t in tasks} == set(TASKS)
    missing = http.get(f"/api/tasks/{quote(TASKS[1] + '-missing', safe='')}/events")
    assert missing.status_code == 404 and strict(missing.content)["code"] == "task_not_found"
