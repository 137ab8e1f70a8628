"""Several API processes on one port (`taskevents api --workers N`): each serves the reads and the
live stream; /metrics, whichever process answers, counts the requests of all of them; SIGTERM stops
every one of them and leaves nothing behind."""

import contextlib
import signal
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psutil
import pytest
from prometheus_client.parser import text_string_to_metric_families

from taskevents.emitter import Emitter
from taskevents.settings import Settings
from tests.helpers import start_worker, store_made, wait_for, worker_env
from tests.stream_helpers import event_seqs, free_port, read_frames

pytestmark = pytest.mark.redis_server

PROCESSES = 2
REQUESTS = 80


@dataclass
class Api:
    url: str
    supervisor: subprocess.Popen[bytes]
    seen: list[psutil.Process] = field(default_factory=list)  # killed after the test, whatever happened

    def serving(self) -> list[psutil.Process]:
        """The API processes under uvicorn's supervisor (not multiprocessing's resource tracker)."""
        try:
            children = psutil.Process(self.supervisor.pid).children()
        except psutil.NoSuchProcess:
            return []
        found = [p for p in children if "spawn_main" in " ".join(p.cmdline())]
        self.seen += found
        return found


@pytest.fixture
def api_processes(settings: Settings) -> Iterator[Api]:
    worker = start_worker(settings)
    port = free_port()
    api = subprocess.Popen(
        [sys.executable, "-m", "taskevents", "api", "--workers", str(PROCESSES), "--port", str(port)],
        env=worker_env(settings),
    )
    try:
        wait_for(lambda: store_made(settings), timeout=20)
        yield (server := Api(f"http://127.0.0.1:{port}", api))
    finally:
        with contextlib.suppress(ProcessLookupError):
            api.kill()
        for process in server.seen:
            with contextlib.suppress(psutil.NoSuchProcess):
                process.kill()
        api.wait(10)
        worker.terminate()
        worker.wait(20)


def _requests_counted(url: str, route: str) -> float:
    text = httpx.get(f"{url}/metrics", headers={"Connection": "close"}).text
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "taskevents_api_requests_total" and sample.labels.get("route") == route
    )


def test_processes_share_the_port_the_stream_and_their_metrics(
    settings: Settings, api_processes: Api
) -> None:
    url, api = api_processes.url, api_processes.supervisor
    wait_for(lambda: len(api_processes.serving()) == PROCESSES, timeout=30)
    wait_for(lambda: _answers(f"{url}/api/ready"), timeout=30)
    children = api_processes.serving()
    metrics_dir = Path(children[0].environ()["PROMETHEUS_MULTIPROC_DIR"])

    # Requests on connections of their own, several at once: the processes take them as they come.
    def one(_: int) -> int:
        return httpx.get(f"{url}/api/tasks", headers={"Connection": "close"}).status_code

    with ThreadPoolExecutor(8) as pool:
        assert set(pool.map(one, range(REQUESTS))) == {200}
    counted = {p.name for p in metrics_dir.glob("counter_*.db")}
    assert {f"counter_{child.pid}.db" for child in children} <= counted, "a process served nothing"
    # Whichever process answers /metrics sums every process's requests.
    for _ in range(4):
        assert _requests_counted(url, "/api/tasks") == REQUESTS

    # The live stream, from whichever process takes the connection.
    emitter = Emitter.from_settings(settings)
    try:
        for i in range(5):
            emitter.emit("t-live", "runner_heartbeat", span_id="root", actor="runner", payload={"i": i})
        emitter.emit("t-live", "runner_exit", span_id="root", actor="runner", payload={"exit_code": 0})
        assert emitter.flush(10)
    finally:
        emitter.close(5)
    with httpx.Client(timeout=httpx.Timeout(10.0, read=30.0)) as client:
        frames = read_frames(client, f"{url}/sse/tasks/t-live/events")
    assert event_seqs(frames) == [1, 2, 3, 4, 5, 6] and frames[-1].event == "end"

    api.terminate()
    assert api.wait(30) == 0
    wait_for(lambda: not any(_alive(child) for child in children), timeout=10)
    assert not metrics_dir.exists()  # the metrics' files go with the processes


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, headers={"Connection": "close"}).status_code == 200
    except httpx.TransportError:
        return False


def test_processes_stop_when_their_supervisor_is_killed(
    api_processes: Api,
) -> None:
    """A SIGKILLed supervisor (nothing of it runs to stop them) leaves no API process serving: each
    gets SIGTERM from the kernel when its parent dies (PR_SET_PDEATHSIG) and stops as on SIGTERM."""
    url, api = api_processes.url, api_processes.supervisor
    wait_for(lambda: len(api_processes.serving()) == PROCESSES, timeout=30)
    wait_for(lambda: _answers(f"{url}/api/ready"), timeout=30)
    children = api_processes.serving()
    api.send_signal(signal.SIGKILL)
    api.wait(10)
    wait_for(lambda: not any(_alive(child) for child in children), timeout=30)
    assert not _answers(f"{url}/api/ready")


def _alive(process: psutil.Process) -> bool:
    try:
        return process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
