"""A private PostgreSQL server for the suite, the way it starts its own redis-server: `initdb` and
`pg_ctl` from the installed server (Debian's postgresql package; scripts/pg-tools installs it), a
cluster in a temporary directory, on a free port, listening on 127.0.0.1 only, so that tests can stop,
restart and SIGKILL it. Never the machine's own server on 5432.

PostgreSQL refuses to run as root; as root (CI here), the cluster belongs to the `postgres` system
user, and its commands run as that user (`runuser`).
"""

import glob
import os
import shutil
import signal
import subprocess
import tempfile
import time
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from taskevents.ingest.localredis import free_port


def find_pg_bin() -> Path | None:
    """The folder of initdb/pg_ctl/postgres: on PATH, else Debian's /usr/lib/postgresql/N/bin."""
    found = shutil.which("initdb")
    if found:  # a link on PATH (some images link initdb and pg_ctl only): the folder of the real one
        return Path(found).resolve().parent
    versions = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4]))
    return Path(versions[-1]).parent if versions else None


class PostgresServer:
    """`start()`, `stop()`, `kill()` (SIGKILL of the postmaster), `start()` again on the same data."""

    def __init__(self, root: Path | None = None, port: int | None = None, *, init: bool = True) -> None:
        """`root`: where the cluster goes; by default a new folder under the system's temp directory
        (pytest's own are private to root, which the `postgres` user could not enter). `init=False`:
        no cluster is made (a replica's comes from its primary, `replica()`)."""
        bindir = find_pg_bin()
        if bindir is None:
            raise RuntimeError("no PostgreSQL server installed (scripts/pg-tools installs Debian's)")
        self.bin = bindir
        self.port = port or free_port()
        root = root or Path(tempfile.mkdtemp(prefix="taskevents-pg-"))
        self.root = root
        self.data = root / "pgdata"
        self.sockets = root / "sockets"
        self.log = root / "postgres.log"
        self._as: list[str] = []
        if os.geteuid() == 0:  # postgres will not run as root
            self._as = ["runuser", "-u", "postgres", "--"]
        root.mkdir(parents=True, exist_ok=True)
        self.sockets.mkdir(exist_ok=True)
        if self._as:
            shutil.chown(root, "postgres")
            shutil.chown(self.sockets, "postgres")
            os.chmod(root, 0o700)
        if not init:
            return
        self._run(
            "initdb", "-D", str(self.data), "-U", "taskevents", "--auth=trust", "-E", "UTF8",
            "--locale=C.UTF-8", "-N",
        )  # fmt: skip
        with open(self.data / "postgresql.conf", "a") as conf:
            conf.write(
                f"port = {self.port}\nlisten_addresses = '127.0.0.1'\n"
                f"unix_socket_directories = '{self.sockets}'\n"
                "max_connections = 200\nshared_buffers = 128MB\nwal_level = replica\n"
                "fsync = on\nsynchronous_commit = on\n"
            )

    @property
    def url(self) -> str:
        return f"postgresql://taskevents@127.0.0.1:{self.port}/postgres"

    def database(self, name: str) -> str:
        return make_database(self.url, name)

    def _run(self, tool: str, *args: str) -> None:
        subprocess.run([*self._as, str(self.bin / tool), *args], check=True, capture_output=True, timeout=120)

    def start(self, timeout: float = 30.0) -> None:
        import psycopg  # the postgres extra's; conftest imports this module without it

        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-w", "-t", str(int(timeout)), "start")
        deadline = time.monotonic() + timeout
        while True:
            try:
                psycopg.connect(self.url, connect_timeout=2).close()
                return
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)

    def replica(self) -> "PostgresServer":
        """A streaming replica of this running server (pg_basebackup, hot standby), started on a
        port of its own. `SELECT pg_wal_replay_pause()` on it makes it lag on purpose."""
        replica = PostgresServer(init=False)
        self._run(
            "pg_basebackup", "-D", str(replica.data), "-h", "127.0.0.1", "-p", str(self.port),
            "-U", "taskevents", "-R", "-X", "stream", "-c", "fast",
        )  # fmt: skip
        with open(replica.data / "postgresql.conf", "a") as conf:  # later lines win
            conf.write(
                f"port = {replica.port}\nunix_socket_directories = '{replica.sockets}'\nhot_standby = on\n"
            )
        replica.start()
        return replica

    def stop(self) -> None:
        """A fast shutdown: sessions are ended, the server checkpoints and exits."""
        if self.pid() is not None:
            self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop")

    def kill(self) -> None:
        """SIGKILL of the postmaster and every backend: a crash; the next start recovers from the WAL."""
        pid = self.pid()
        if pid is None:
            return
        os.kill(pid, signal.SIGKILL)
        subprocess.run(["pkill", "-KILL", "-P", str(pid)], check=False)  # the backends
        deadline = time.monotonic() + 10
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        # A killed postmaster may stay a zombie for a while (its parent is init), which postgres would
        # take for a running server: the lock file goes, as a crashed machine's would have.
        (self.data / "postmaster.pid").unlink(missing_ok=True)
        for lock in self.sockets.glob(".s.PGSQL.*.lock"):
            lock.unlink(missing_ok=True)

    def pid(self) -> int | None:
        try:
            pid = int((self.data / "postmaster.pid").read_text().split("\n", 1)[0])
        except (OSError, ValueError):
            return None
        return pid if _alive(pid) else None

    def close(self) -> None:
        try:
            self.stop()
        except subprocess.SubprocessError:
            self.kill()
        shutil.rmtree(self.root, ignore_errors=True)


class ExternalPostgres:
    """A server the suite does not own (TASKEVENTS_TEST_POSTGRES_URL): tests make their databases in
    it, and never stop or kill it (those that do start their own)."""

    def __init__(self, url: str) -> None:
        self.url = url

    def database(self, name: str) -> str:
        return make_database(self.url, name)


@contextmanager
def running() -> Iterator[PostgresServer]:
    """A server of the suite's own, started; stopped and its folder removed afterwards."""
    server = PostgresServer()
    server.start()
    try:
        yield server
    finally:
        server.close()


def rows(url: str, sql: str) -> list[tuple[Any, ...]]:
    """A query's rows, on a connection of its own."""
    import psycopg

    with psycopg.connect(url, connect_timeout=5) as conn:
        return conn.execute(sql).fetchall()


def stored(url: str) -> int:
    """Events in the store; -1 while it cannot say (the server restarting, the schema not made)."""
    import psycopg

    try:
        return int(rows(url, "SELECT count(*) FROM task_events")[0][0])
    except psycopg.Error:
        return -1


def make_database(url: str, name: str) -> str:
    """A new, empty database of that name on the server at `url` (dropped first if a run left it);
    its URL."""
    import psycopg

    safe = "".join(c if c.isalnum() else "_" for c in name).lower()
    if len(safe) > 60:  # PostgreSQL keeps 63 bytes of a name: two long test names must not meet
        safe = f"{safe[:51]}_{zlib.crc32(name.encode()):08x}"
    name = safe
    with psycopg.connect(url, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.execute(f'CREATE DATABASE "{name}"')
    return url.rsplit("/", 1)[0] + "/" + name


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return True


# The stores a test runs on, when it holds on both: `pytest.mark.parametrize("settings", STORES,
# indirect=True)` gives it conftest.py's settings on its SQLite file, then on a database of its own.
STORES = ("sqlite", pytest.param("postgres", marks=pytest.mark.postgres))
