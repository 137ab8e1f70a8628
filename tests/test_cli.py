"""The `taskevents` command: help, emit from a shell, dead-letter inspection and replay."""

import subprocess
import sys
from pathlib import Path

import orjson
import pytest
import redis
from click.testing import CliRunner

from taskevents.cli import main
from taskevents.ingest.worker import Worker
from taskevents.keys import QueueKeys
from taskevents.settings import Settings

COMMANDS = ["dead-letters", "emit", "ingest", "redis", "simulate"]


def run(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", "from taskevents.cli import main; main()", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={
            "TASKEVENTS_REDIS_URL": settings.redis_url,
            "TASKEVENTS_QUEUE": settings.queue,
            "TASKEVENTS_DB": str(settings.sqlite_path),
            "PATH": "",
        },
    )


def test_every_command_has_help_naming_its_environment() -> None:
    runner = CliRunner()
    top = runner.invoke(main, ["--help"])
    assert top.exit_code == 0
    for name in COMMANDS:
        assert name in top.output
        sub = runner.invoke(main, [name, "--help"])
        assert sub.exit_code == 0, sub.output
        assert "TASKEVENTS_REDIS_URL" in sub.output


def test_the_console_script_is_installed() -> None:
    script = Path(sys.executable).parent / "taskevents"  # beside the interpreter, in the venv
    done = subprocess.run([str(script), "--version"], capture_output=True, text=True)
    assert done.returncode == 0 and "taskevents" in done.stdout


@pytest.mark.redis_server
def test_emit_from_a_shell_runner(settings: Settings, client: redis.Redis) -> None:
    done = run(
        settings,
        "emit",
        "t1",
        "phase_enter",
        "--span-id",
        "p",
        "--phase",
        "planning",
        "--parent-span-id",
        "root",
        "--payload",
        '{"explanation": "plan"}',
        "--event-uid",
        "u1",
    )
    assert done.returncode == 0, done.stderr
    (pushed,) = [orjson.loads(x) for x in client.lrange(settings.queue, 0, -1)]
    assert pushed["task_id"] == "t1" and pushed["phase"] == "planning" and pushed["event_uid"] == "u1"
    assert pushed["payload"] == {"explanation": "plan"}


@pytest.mark.redis_server
def test_emit_refuses_bad_arguments_with_the_field_named(settings: Settings, client: redis.Redis) -> None:
    done = run(settings, "emit", "", "phase_enter", "--span-id", "p")
    assert done.returncode == 2 and "task_id:" in done.stderr
    done = run(settings, "emit", "t", "phase_enter", "--span-id", "p", "--payload", "{oops")
    assert done.returncode == 2 and "--payload" in done.stderr
    assert client.llen(settings.queue) == 0


def test_emit_fails_when_redis_cannot_take_the_event(tmp_path: Path) -> None:
    from taskevents.ingest.localredis import free_port

    settings = Settings(redis_url=f"redis://127.0.0.1:{free_port()}/0", db=tmp_path / "x.db")
    done = run(settings, "emit", "t", "runner_spawn", "--span-id", "r", "--timeout", "0.5")
    assert done.returncode == 1 and "not delivered" in done.stderr


@pytest.mark.redis_server
def test_dead_letters_are_counted_listed_and_replayed(settings: Settings, client: redis.Redis) -> None:
    keys = QueueKeys(settings.queue)
    client.rpush(
        settings.queue, b"not json", b'{"task_id": "t", "event_type": "x", "actor": "a", "span_id": ""}'
    )
    worker = Worker(settings)
    while worker.step():
        pass
    counted = run(settings, "dead-letters", "count")
    assert counted.returncode == 0
    assert "2 dead letters" in counted.stdout and "not_json" in counted.stdout and "invalid" in counted.stdout
    listed = run(settings, "dead-letters", "list")
    assert "span_id: String should have at least 1 character" in listed.stdout and "not json" in listed.stdout
    replayed = run(settings, "dead-letters", "replay", "--code", "not_json")
    assert "replayed 1" in replayed.stdout
    assert client.lrange(settings.queue, 0, -1) == [b"not json"]  # the original bytes, back on the queue
    assert client.llen(keys.dead) == 1
    purged = run(settings, "dead-letters", "purge", "--yes")
    assert "deleted 1" in purged.stdout and client.llen(keys.dead) == 0


@pytest.mark.redis_server
def test_simulate_makes_a_big_run_and_leaves_runs_running(settings: Settings, client: redis.Redis) -> None:
    big = run(settings, "simulate", "--events", "3000", "--spans", "200", "--seed", "1", "--prefix", "b")
    assert big.returncode == 0, big.stderr
    assert "emitted 3000 events and 200 spans for task b-big-" in big.stdout
    assert client.llen(settings.queue) == 3000
    client.delete(settings.queue)
    fleet = run(settings, "simulate", "--tasks", "6", "--leave-running", "2", "--rate", "0", "--seed", "2")
    assert fleet.returncode == 0, fleet.stderr
    exits = [
        e
        for e in (orjson.loads(x) for x in client.lrange(settings.queue, 0, -1))
        if e["event_type"] == "runner_exit"
    ]
    assert len(exits) == 4
    refused = run(settings, "simulate", "--events", "10")
    assert refused.returncode == 2 and "--events and --spans" in refused.stderr
