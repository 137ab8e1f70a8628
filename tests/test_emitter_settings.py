"""Clients take their settings from the TASKEVENTS_* environment, when built; mistakes fail at the call.

`Emitter()` in a runner started with TASKEVENTS_REDIS_URL and TASKEVENTS_QUEUE pushes where they say
(not to localhost:6379), an explicit argument wins, the environment is read when the object is built
(never at import), and a malformed URL or option raises ValueError where the emitter is made, not
later in the sender thread. An unexpected error in the sender is logged and retried.
"""

import logging
import subprocess
import sys
from typing import Any

import fakeredis
import orjson
import pytest
import redis

from taskevents import Emitter
from taskevents.api.tail import TaskTail
from taskevents.ingest.localredis import RedisServer
from taskevents.settings import ProducerSettings, Settings


@pytest.mark.redis_server
def test_emitter_without_arguments_pushes_where_the_environment_says(
    redis_server: RedisServer, client: redis.Redis
) -> None:
    # A process of its own: the environment is the runner's, and 6379 must not receive anything.
    code = (
        "from taskevents import Emitter\n"
        "e = Emitter()\n"
        "e.emit('t-env', 'runner_spawn', span_id='r', actor='runner')\n"
        "assert e.close(5)\n"
        "print(e.redis_url, e.queue)\n"
    )
    env = {"TASKEVENTS_REDIS_URL": redis_server.url, "TASKEVENTS_QUEUE": "envtest:events", "PATH": ""}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == [redis_server.url, "envtest:events"]
    assert [orjson.loads(x)["task_id"] for x in client.lrange("envtest:events", 0, -1)] == ["t-env"]


def test_the_environment_is_read_when_the_emitter_is_built_and_arguments_win(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("TASKEVENTS_REDIS_URL", "redis://envhost:7000/2")
    monkeypatch.setenv("TASKEVENTS_QUEUE", "from:env")
    monkeypatch.setenv("TASKEVENTS_EMITTER_BUFFER", "77")
    monkeypatch.setenv("TASKEVENTS_MAX_PAYLOAD_BYTES", "2048")
    monkeypatch.setenv("TASKEVENTS_FLUSH_TIMEOUT", "1.5")
    fake = fakeredis.FakeRedis()
    built = Emitter(client=fake)
    assert (
        built.redis_url,
        built.queue,
        built.buffer_size,
        built.max_payload_bytes,
        built.flush_timeout,
    ) == (
        "redis://envhost:7000/2",
        "from:env",
        77,
        2048,
        1.5,
    )
    explicit = Emitter("redis://other:1/0", queue="mine", buffer_size=5, client=fake)
    assert (explicit.redis_url, explicit.queue, explicit.buffer_size) == ("redis://other:1/0", "mine", 5)
    # One source of defaults: without environment, the emitter's are the settings' own.
    for name in ("TASKEVENTS_REDIS_URL", "TASKEVENTS_QUEUE", "TASKEVENTS_EMITTER_BUFFER"):
        monkeypatch.delenv(name)
    plain = Emitter(client=fake)
    defaults = ProducerSettings.model_fields
    assert plain.redis_url == defaults["redis_url"].default and plain.queue == defaults["queue"].default
    assert plain.buffer_size == defaults["emitter_buffer"].default
    for emitter in (built, explicit, plain):
        emitter.close(0)


def test_importing_the_package_reads_no_environment() -> None:
    code = (
        "import os\n"
        "import taskevents, taskevents.api.tail\n"
        "os.environ['TASKEVENTS_QUEUE'] = 'set:after:import'\n"
        "import fakeredis\n"
        "e = taskevents.Emitter(client=fakeredis.FakeRedis())\n"
        "print(e.queue)\n"
        "e.close(0)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "set:after:import"


@pytest.mark.parametrize(
    ("kwargs", "named"),
    [
        ({"redis_url": "localhost:6379"}, "redis_url"),
        ({"redis_url": "http://localhost:6379"}, "redis_url"),
        ({"redis_url": "redis://localhost:notaport/0"}, "redis_url"),
        ({"redis_url": "redis://localhost:6379/zero"}, "redis_url"),
        ({"redis_url": "redis://localhost:6379/0?socket_timeout=soon"}, "redis_url"),
        ({"queue": ""}, "queue"),
        ({"buffer_size": 0}, "buffer_size"),
        ({"max_payload_bytes": 10}, "max_payload_bytes"),
        ({"flush_timeout": -1}, "flush_timeout"),
        ({"chunk_size": 0}, "chunk_size"),
    ],
)
def test_a_malformed_url_or_option_raises_at_the_call_site(kwargs: dict, named: str) -> None:
    with pytest.raises(ValueError, match=rf"^{named}"):
        Emitter(**kwargs)


def test_a_malformed_environment_raises_at_the_call_site(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TASKEVENTS_REDIS_URL", "localhost:6379")
    with pytest.raises(ValueError, match=r"^redis_url \(TASKEVENTS_REDIS_URL\): not a Redis URL"):
        Emitter()
    monkeypatch.setenv("TASKEVENTS_API_URL", "127.0.0.1:8000")
    with pytest.raises(ValueError, match=r"api_url \(TASKEVENTS_API_URL\)"):
        TaskTail("t")
    # A setting of the service that a producer does not read does not break a producer.
    monkeypatch.delenv("TASKEVENTS_REDIS_URL")
    monkeypatch.setenv("TASKEVENTS_BATCH_SIZE", "lots")
    Emitter(client=fakeredis.FakeRedis()).close(0)
    with pytest.raises(ValueError, match="batch_size"):
        Settings()


def test_the_tail_client_takes_its_url_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TASKEVENTS_API_URL", "http://api.example:9000/")
    tail = TaskTail("t/1")
    assert tail.url == "http://api.example:9000/sse/tasks/t%2F1/events"
    assert TaskTail("t", url="https://x").url == "https://x/sse/tasks/t/events"
    tail.close()


class FlakyClient(fakeredis.FakeRedis):
    """A client whose first pushes fail with an error that is not Redis's (a bug, a broken socket)."""

    failures = 2

    def rpush(self, *args: Any) -> int:
        if FlakyClient.failures > 0:
            FlakyClient.failures -= 1
            raise RuntimeError("not a Redis error")
        return super().rpush(*args)


def test_an_unexpected_error_in_the_sender_is_logged_and_retried(caplog: pytest.LogCaptureFixture) -> None:
    client = FlakyClient()
    emitter = Emitter(client=client, queue="flaky")
    with caplog.at_level(logging.ERROR, logger="taskevents.emitter"):
        for i in range(10):
            emitter.emit("t", "runner_heartbeat", span_id="r", actor="runner", payload={"i": i})
        assert emitter.flush(10)  # delivered after the retries: the sender did not die
    assert [orjson.loads(x)["payload"]["i"] for x in client.lrange("flaky", 0, -1)] == list(range(10))
    errors = [r for r in caplog.records if "unexpected error" in r.getMessage()]
    assert len(errors) == 2 and all(r.exc_info for r in errors)
    emitter.close(0)
