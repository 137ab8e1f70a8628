"""Helpers of the UI's end-to-end tests: the real stack as a user runs it (a private redis-server, the
worker and the API each in a process of their own, so the API can be killed and restarted under an
open page) and Debian's Chromium driven by Playwright, watched for console errors and for any request
that leaves 127.0.0.1. Every step can be kept as a screenshot in build/test-artifacts/ui/.

Playwright launches the machine's /usr/bin/chromium (`executable_path`); it never downloads a browser.
"""

import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import httpx

from taskevents.emitter import Emitter
from taskevents.settings import Settings
from tests.helpers import start_worker, store_made, store_rows, wait_for, worker_env

if TYPE_CHECKING:
    from playwright.sync_api import Browser, ConsoleMessage, Page, Request

ROOT = Path(__file__).resolve().parent.parent
UI_DIR = ROOT / "api" / "ui"
ARTIFACTS = Path(os.environ.get("TASKEVENTS_TEST_ARTIFACTS", ROOT / "build" / "test-artifacts")) / "ui"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
# What Chromium logs on its own while the API is down (a refused connection); nothing else may appear.
NETWORK_NOISE = re.compile(r"net::ERR_|Failed to load resource|EventSource's response has a status")


def find_chromium() -> str | None:
    """Debian's chromium (the package scripts/test installs), never a browser Playwright downloaded."""
    for candidate in ("/usr/bin/chromium", shutil.which("chromium")):
        if candidate and Path(candidate).exists():
            return candidate
    return None


class ApiProcess:
    """`python -m taskevents.api` on 127.0.0.1:`port`, as `scripts/serve` runs it; killable."""

    def __init__(self, settings: Settings, port: int) -> None:
        self.settings = settings
        self.port = port
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> "ApiProcess":
        command = [sys.executable, "-m", "taskevents.api", "--host", "127.0.0.1", "--port", str(self.port)]
        self.proc = subprocess.Popen(command, env=worker_env(self.settings))

        def answers() -> bool:
            assert self.proc is not None and self.proc.poll() is None, "the API exited"
            try:
                return httpx.get(f"{self.url}/api/events/health", timeout=1).status_code == 200
            except httpx.HTTPError:
                return False

        wait_for(answers, timeout=20, interval=0.1)
        return self

    def kill(self) -> None:
        """SIGKILL: no graceful end for the open streams, as a crash or a lost machine."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()


@dataclass
class UiStack:
    settings: Settings
    api: ApiProcess
    emitter: Emitter

    @property
    def url(self) -> str:
        return self.api.url

    def flush(self) -> None:
        assert self.emitter.flush(10), "the emitter could not deliver to Redis"

    def latest_seq(self, task_id: str) -> int:
        found = store_rows(self.settings, "SELECT latest_seq FROM tasks WHERE task_id = ?", task_id)
        return found[0][0] if found else 0

    def stored(self, task_id: str, seq: int, timeout: float = 30) -> None:
        """Flush and wait until the task's events up to `seq` are in the store."""
        self.flush()
        wait_for(lambda: self.latest_seq(task_id) >= seq, timeout=timeout, interval=0.05)


@contextmanager
def ui_stack(settings: Settings, port: int) -> Iterator[UiStack]:
    worker = start_worker(settings)
    emitter = Emitter.from_settings(settings)
    api = ApiProcess(settings, port)
    try:
        wait_for(lambda: store_made(settings), timeout=20)  # the worker creates the store
        api.start()
        yield UiStack(settings, api, emitter)
    finally:
        emitter.close(5)
        api.stop()
        worker.terminate()
        worker.wait(20)


class _Refusing(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.server.count += 1  # type: ignore[attr-defined]
        body = b'{"detail": "the store is unavailable", "code": "store_unavailable"}'
        self.send_response(503)
        self.send_header("Content-Type", "application/json")
        self.send_header("Retry-After", "1")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@contextmanager
def refusing_server(port: int) -> Iterator[Any]:
    """Something on `port` that answers every request with 503: `.count` of requests so far."""
    server = ThreadingHTTPServer(("127.0.0.1", port), _Refusing)
    server.count = 0  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


@dataclass
class Watched:
    """A page and what it did: console errors, uncaught exceptions, every request's URL."""

    page: "Page"
    shots: Path
    errors: list[str] = field(default_factory=list)
    noise: list[str] = field(default_factory=list)  # the network errors allowed while a server is down
    requests: list[str] = field(default_factory=list)
    allow_network_noise: bool = False
    _step: int = 0

    def on_console(self, message: "ConsoleMessage") -> None:
        if message.type != "error":
            return
        if self.allow_network_noise and NETWORK_NOISE.search(message.text):
            self.noise.append(message.text)
        else:
            self.errors.append(f"console: {message.text}")

    def on_request(self, request: "Request") -> None:
        self.requests.append(request.url)

    def shot(self, name: str) -> None:
        """A screenshot of this step, kept as a test artifact."""
        self._step += 1
        self.shots.mkdir(parents=True, exist_ok=True)
        self.page.screenshot(path=str(self.shots / f"{self._step:02d}-{name}.png"))

    def open(self, url: str) -> None:
        self.page.goto(url)
        self.ready()

    def ready(self) -> None:
        """First paint done: the page sets data-ready on <body> (the CSP forbids wait_for_function)."""
        self.page.wait_for_selector("body[data-ready='1']", state="attached", timeout=15_000)

    def check_clean(self, origin: str) -> None:
        """No error was logged, and nothing was asked of anyone but the API's own origin."""
        assert not self.errors, self.errors
        host = urlsplit(origin).netloc
        elsewhere = [u for u in self.requests if urlsplit(u).netloc != host and not u.startswith("data:")]
        assert not elsewhere, elsewhere


@contextmanager
def watched_page(browser: "Browser", name: str, **context: Any) -> Iterator[Watched]:
    ctx = browser.new_context(viewport={"width": 1400, "height": 1000}, **context)
    page = ctx.new_page()
    page.set_default_timeout(15_000)
    shutil.rmtree(ARTIFACTS / name, ignore_errors=True)  # this run's steps only
    watched = Watched(page, ARTIFACTS / name)
    page.on("console", watched.on_console)
    page.on("pageerror", lambda exc: watched.errors.append(f"pageerror: {exc}"))
    page.on("request", watched.on_request)
    try:
        yield watched
    finally:
        try:
            watched.shot("last")
        finally:
            ctx.close()


def settle(seconds: float = 0.3) -> None:
    """Let the page apply a batch (the UI applies live events every ~100 ms)."""
    time.sleep(seconds)
