"""The producer: validation at the call site, no I/O on emit, bounded buffering, fork and exit."""

import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import fakeredis
import orjson
import pytest
import redis

from taskevents import (
    Emitter,
    emit_checkpoint_commit,
    emit_phase_enter,
    emit_runner_spawn,
    emit_work_item_start,
)
from taskevents.ingest.localredis import RedisServer, free_port
from taskevents.settings import Settings
from tests.helpers import wait_for

QUEUE = "taskevents:events"


@pytest.fixture
def fake() -> fakeredis.FakeRedis:
    return fakeredis.FakeRedis()


def queued(client: redis.Redis, queue: str = QUEUE) -> list[dict]:
    return [orjson.loads(x) for x in client.lrange(queue, 0, -1)]


def _nested(depth: int) -> dict:
    top: dict[str, Any] = {}
    level = top
    for _ in range(depth):
        level["a"] = level = {}
    return top


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"task_id": ""}, "task_id"),
        ({"task_id": "a\x00b"}, "task_id"),
        ({"event_type": "Not Snake"}, "event_type"),
        ({"phase": "lunch"}, "phase"),
        ({"actor": ""}, "actor"),
        ({"span_id": ""}, "span_id"),
        ({"parent_span_id": ""}, "parent_span_id"),
        ({"payload": ["not", "an", "object"]}, "payload"),
        ({"payload": {"when": object()}}, "payload"),
        ({"payload": {"x": float("inf")}}, "payload"),
        ({"payload": {"big": "x" * 70_000}}, "payload"),
        ({"event_uid": "has space"}, "event_uid"),
        # Every field: wrong type, too long, control characters, empty.
        ({"task_id": "x" * 129}, "task_id"),
        ({"task_id": 7}, "task_id"),
        ({"task_id": None}, "task_id"),
        ({"event_type": ""}, "event_type"),
        ({"event_type": "a" * 65}, "event_type"),
        ({"event_type": 3}, "event_type"),
        ({"actor": 5}, "actor"),
        ({"actor": "a\tb"}, "actor"),
        ({"actor": "a" * 65}, "actor"),
        ({"span_id": "s" * 129}, "span_id"),
        ({"span_id": None}, "span_id"),
        ({"parent_span_id": "a\x1fb"}, "parent_span_id"),
        ({"parent_span_id": 1}, "parent_span_id"),
        ({"phase": 3}, "phase"),
        ({"phase": "Planning"}, "phase"),
        ({"payload": "{}"}, "payload"),
        ({"payload": {"x": float("nan")}}, "payload"),
        ({"payload": {"x": "\ud800"}}, "payload"),
        ({"payload": {1: "non-string key"}}, "payload"),
        ({"payload": {"b": b"bytes"}}, "payload"),
        ({"payload": _nested(300)}, "payload"),
        ({"event_uid": ""}, "event_uid"),
        ({"event_uid": "u" * 65}, "event_uid"),
        ({"event_uid": 5}, "event_uid"),
    ],
)
def test_bad_arguments_raise_value_error_naming_the_field(
    fake: fakeredis.FakeRedis, kwargs: dict, field: str
) -> None:
    args = {"task_id": "t", "event_type": "phase_enter", "span_id": "s", "actor": "runner", **kwargs}
    emitter = Emitter(client=fake)
    with pytest.raises(ValueError, match=rf"^{field}[:.]"):
        emitter.emit(args.pop("task_id"), args.pop("event_type"), **args)
    assert emitter.pending() == 0


def test_convenience_functions_send_the_originals_payloads(fake: fakeredis.FakeRedis) -> None:
    emitter = Emitter(client=fake)
    emit_runner_spawn("t", "root", 4242, "1.2.3", emitter=emitter)
    emit_phase_enter("t", "p", "planning", "root", explanation="start planning", emitter=emitter)
    emit_work_item_start("t", "w1", "p", "wi-1", "code", emitter=emitter)
    emit_checkpoint_commit(
        "t", "root", "ck1", "iteration_complete", "executing", {"artifacts": ["a"]}, emitter=emitter
    )
    assert emitter.flush(5)
    events = queued(fake)
    assert [e["event_type"] for e in events] == [
        "runner_spawn",
        "phase_enter",
        "work_item_start",
        "checkpoint_commit",
    ]
    assert events[0]["payload"] == {"runner_pid": 4242, "runner_version": "1.2.3"}
    assert events[1]["payload"] == {"explanation": "start planning"}
    assert (events[1]["phase"], events[1]["parent_span_id"]) == ("planning", "root")
    assert (
        events[2]["payload"] == {"work_item_id": "wi-1", "work_type": "code"}
        and events[2]["actor"] == "worker"
    )
    assert events[3]["payload"]["evidence_refs"] == {"artifacts": ["a"]}
    for e in events:
        assert len(e["event_uid"]) == 26  # a ULID
        assert e["emitted_at"].endswith("Z") and len(e["emitted_at"]) == 24


def test_one_emitter_keeps_emit_order_and_ids_are_unique(fake: fakeredis.FakeRedis) -> None:
    emitter = Emitter(client=fake, chunk_size=7)
    for i in range(1000):
        emitter.emit("t", "work_item_progress", span_id="s", actor="worker", payload={"i": i})
    assert emitter.flush(5)
    events = queued(fake)
    assert [e["payload"]["i"] for e in events] == list(range(1000))
    assert len({e["event_uid"] for e in events}) == 1000


def test_payload_is_copied_at_emit_time(fake: fakeredis.FakeRedis) -> None:
    emitter = Emitter(client=fake)
    payload = {"progress": 0.1}
    emitter.emit("t", "work_item_progress", span_id="s", actor="worker", payload=payload)
    payload["progress"] = 0.9
    assert emitter.flush(5)
    assert queued(fake)[0]["payload"] == {"progress": 0.1}


def test_emit_does_no_io_and_never_raises_when_redis_is_down() -> None:
    emitter = Emitter(f"redis://127.0.0.1:{free_port()}/0", buffer_size=10, chunk_size=5)
    started = time.perf_counter()
    for i in range(25):
        emitter.emit("t", "runner_heartbeat", span_id="s", actor="runner", payload={"i": i})
    assert time.perf_counter() - started < 0.5  # no connect attempt on the caller's thread
    wait_for(lambda: emitter.dropped >= 10, timeout=5)
    # At most one chunk in flight plus a full buffer; what was dropped is counted, oldest first.
    assert emitter.pending() + emitter.dropped == 25
    assert emitter.pending() <= 10 + 5
    assert not emitter.flush(0.2)
    assert not emitter.close(0.1)


@pytest.mark.redis_server
def test_events_buffered_during_an_outage_are_delivered_when_redis_returns(tmp_path: Path) -> None:
    server = RedisServer(tmp_path / "r")  # port chosen, not started yet
    emitter = Emitter(server.url)
    for i in range(500):
        emitter.emit("t", "work_item_progress", span_id="s", actor="worker", payload={"i": i})
    time.sleep(0.3)
    assert emitter.pending() == 500
    server.start()
    try:
        assert emitter.flush(15)
        client = redis.Redis.from_url(server.url)
        assert [e["payload"]["i"] for e in queued(client)] == list(range(500))
    finally:
        emitter.close(1)
        server.kill()


@pytest.mark.redis_server
def test_many_threads_share_one_emitter(settings: Settings, client: redis.Redis) -> None:
    emitter = Emitter.from_settings(settings)

    def produce(n: int) -> None:
        for i in range(500):
            emitter.emit(
                f"t{n % 5}", "work_item_progress", span_id=f"s{n}", actor="worker", payload={"n": n, "i": i}
            )

    threads = [threading.Thread(target=produce, args=(n,)) for n in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert emitter.close(10)
    events = queued(client, settings.queue)
    assert len(events) == 10_000
    for n in range(20):  # each thread's events in the order it emitted them
        assert [e["payload"]["i"] for e in events if e["payload"]["n"] == n] == list(range(500))


@pytest.mark.redis_server
def test_a_forked_child_gets_a_working_emitter_of_its_own(settings: Settings, client: redis.Redis) -> None:
    emitter = Emitter.from_settings(settings)
    emitter.emit("parent", "runner_spawn", span_id="p", actor="runner")
    assert emitter.flush(5)
    # Fork while an event sits in the parent's buffer: hold the emitter's lock so the sender cannot
    # take it first. The child starts with a fresh lock and an empty buffer.
    body = orjson.dumps(
        {"task_id": "parent", "event_type": "runner_heartbeat", "span_id": "p", "actor": "runner"}
    )
    with emitter._lock:
        emitter._buffer.append((time.time_ns(), None, body, emitter.queue))
        pid = os.fork()
        if pid == 0:  # child: emit, flush, and leave without the parent's atexit hooks
            code = 1
            try:
                emitter.emit("child", "runner_spawn", span_id="c", actor="runner")
                code = 0 if emitter.flush(5) else 2
            finally:
                os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert emitter.close(5)
    tasks = [e["task_id"] for e in queued(client, settings.queue)]
    assert sorted(tasks) == ["child", "parent", "parent"]  # the parent's pending event is sent once


@pytest.mark.redis_server
def test_pending_events_are_flushed_at_interpreter_exit(settings: Settings, client: redis.Redis) -> None:
    script = (
        "import sys\n"
        "from taskevents import Emitter\n"
        "e = Emitter(sys.argv[1], queue=sys.argv[2])\n"
        "for i in range(2000):\n"
        "    e.emit('t', 'work_item_progress', span_id='s', actor='worker', payload={'i': i})\n"
    )
    subprocess.run([sys.executable, "-c", script, settings.redis_url, settings.queue], check=True, timeout=30)
    assert client.llen(settings.queue) == 2000


@pytest.mark.redis_server
def test_exit_is_bounded_when_redis_is_unreachable() -> None:
    script = (
        "from taskevents import Emitter\n"
        f"e = Emitter('redis://127.0.0.1:{free_port()}/0', flush_timeout=1.0)\n"
        "e.emit('t', 'runner_spawn', span_id='s', actor='runner')\n"
    )
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=30)
    assert time.monotonic() - started < 10
    assert done.returncode == 0
    assert "1 events not delivered" in done.stderr  # reported through logging, not lost silently


def test_emit_after_close_is_counted_not_raised(fake: fakeredis.FakeRedis) -> None:
    emitter = Emitter(client=fake)
    assert emitter.close(1)
    emitter.emit("t", "runner_heartbeat", span_id="s", actor="runner")
    assert emitter.dropped == 1 and fake.llen(QUEUE) == 0
