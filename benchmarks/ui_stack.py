"""A private taskevents stack for driving the runner UI in a browser: the UI benchmark
(benchmarks/ui_bench.py) and the README's screenshots (benchmarks/screenshots.py) use it.

Every part is a process of its own, as deployed: a redis-server on a free port with its data in a
temporary directory (never the machine's Redis on 6379), the worker (`python -m taskevents.ingest`) and
ONE API process (`python -m taskevents.api`, which also serves the UI from api/ui/dist/) on a free port.
Runs are emitted from this process with the simulator; `wait_stored` waits until the worker has
committed them. The browser is Debian's Chromium driven by Playwright (never a browser Playwright
downloads).
"""

import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from taskevents.emitter import Emitter
from taskevents.ingest.localredis import RedisServer, free_port

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
QUEUE = "ui:events"


@dataclass
class Stack:
    workdir: Path
    redis: RedisServer
    port: int
    db: Path
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def emitter(self) -> Emitter:
        return Emitter(self.redis.url, queue=QUEUE)

    def stored(self) -> dict[str, int]:
        """task id -> its latest seq, as the worker has committed them (read-only)."""
        if not self.db.exists():
            return {}
        conn = sqlite3.connect(f"file:{self.db}?mode=ro", uri=True)
        try:
            return dict(conn.execute("SELECT task_id, latest_seq FROM tasks").fetchall())
        except sqlite3.OperationalError:  # the schema is not there yet
            return {}
        finally:
            conn.close()

    def wait_stored(self, events: int, timeout: float = 600.0) -> dict[str, int]:
        """Wait until the store holds `events` events in all (every seq gap-free from 1, so the
        sum of the latest seqs); returns task id -> latest seq."""
        deadline = time.monotonic() + timeout
        while True:
            stored = self.stored()
            if sum(stored.values()) >= events:
                return stored
            self.check_alive()
            if time.monotonic() > deadline:
                raise RuntimeError(f"only {sum(stored.values())} of {events} events stored in {timeout} s")
            time.sleep(0.2)

    def check_alive(self) -> None:
        for name, proc in self.procs.items():
            if proc.poll() is not None:
                log = self.workdir / f"{name}.log"
                raise RuntimeError(f"{name} exited with {proc.returncode}: {log.read_text()[-2000:]}")

    def pids(self) -> dict[str, int]:
        return {name: proc.pid for name, proc in self.procs.items()}

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs.values():
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        self.redis.stop()


def _start(stack: Stack, name: str, args: list[str], env: dict[str, str]) -> None:
    with (stack.workdir / f"{name}.log").open("wb") as log:
        stack.procs[name] = subprocess.Popen(
            [sys.executable, "-m", *args], env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT
        )


@contextmanager
def private_stack(workdir: Path) -> Iterator[Stack]:
    """Redis, the worker and the API, each in a process of its own, stopped on the way out."""
    redis_server = RedisServer(workdir / "redis").start()
    stack = Stack(workdir, redis_server, free_port(), workdir / "events.db")
    env = dict(
        os.environ,
        TASKEVENTS_REDIS_URL=redis_server.url,
        TASKEVENTS_DB=str(stack.db),
        TASKEVENTS_QUEUE=QUEUE,
        TASKEVENTS_LOG_LEVEL="WARNING",
    )
    try:
        _start(stack, "worker", ["taskevents.ingest"], env)
        _start(stack, "api", ["taskevents.api", "--port", str(stack.port)], env)
        deadline = time.monotonic() + 60
        while True:
            stack.check_alive()
            try:
                if stack.db.exists() and httpx.get(f"{stack.base_url}/api/events/health").is_success:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("the API or the worker did not start within 60 s")
            time.sleep(0.1)
        yield stack
    finally:
        stack.stop()
