"""Helpers the tests share: the real worker in a subprocess, polling, reading the store."""

import os
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from taskevents.ingest.worker import Worker
from taskevents.ingest.writer import StoreWriter
from taskevents.settings import Settings


def worker_env(settings: Settings, **extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        TASKEVENTS_REDIS_URL=settings.redis_url,
        TASKEVENTS_DB=str(settings.db),
        TASKEVENTS_QUEUE=settings.queue,
        TASKEVENTS_PARTITIONS=str(settings.partitions),
        TASKEVENTS_PARTITION=str(settings.partition),
        TASKEVENTS_BATCH_SIZE=str(settings.batch_size),
        TASKEVENTS_ARCHIVE_DIR=str(settings.archive_dir),
    )
    env.update(extra)
    return env


# Every worker a test starts; conftest's autouse fixture kills those still running after the test,
# so a failing test never leaves a worker behind.
started_workers: list[subprocess.Popen[bytes]] = []


def start_worker(settings: Settings, *, log: Path | None = None, **extra: str) -> subprocess.Popen[bytes]:
    """The real worker, `python -m taskevents.ingest`, in a process of its own; stderr to `log` if given."""
    command = [sys.executable, "-m", "taskevents.ingest"]
    if log is None:
        proc = subprocess.Popen(command, env=worker_env(settings, **extra))
    else:
        with log.open("ab") as out:
            proc = subprocess.Popen(command, env=worker_env(settings, **extra), stderr=out)
    started_workers.append(proc)
    return proc


def reap_workers() -> None:
    while started_workers:
        proc = started_workers.pop()
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


def wait_for(predicate: Callable[[], object], timeout: float = 30.0, interval: float = 0.02) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {predicate}")
        time.sleep(interval)


def rows(db: Path, sql: str, *params: object) -> list[tuple]:
    conn = sqlite3.connect(db)
    try:
        return conn.execute(sql, params).fetchall()
    finally:
        conn.close()


def store_rows(settings: Settings, sql: str, *params: object) -> list[tuple]:
    """A query's rows on the test's store, SQLite or PostgreSQL (`?` placeholders for both)."""
    if not settings.postgres:
        return rows(settings.sqlite_path, sql, *params)
    import psycopg

    with psycopg.connect(str(settings.db), connect_timeout=5) as conn:
        return conn.execute(sql.replace("?", "%s"), params).fetchall()


def store_made(settings: Settings) -> bool:
    """The worker has created the test's store (the SQLite file; PostgreSQL's tables)."""
    if not settings.postgres:
        return settings.sqlite_path.exists()
    import psycopg

    try:
        store_rows(settings, "SELECT 1 FROM tasks LIMIT 1")
    except psycopg.Error:
        return False
    return True


def store_count(settings: Settings) -> int:
    """Events in the test's store, either kind; 0 while the worker has not made it yet."""
    if not settings.postgres:
        return stored_count(settings.sqlite_path)
    return store_rows(settings, "SELECT count(*) FROM task_events")[0][0] if store_made(settings) else 0


def stored_count(db: Path) -> int:
    """Events in the store; 0 while the worker has not created the file or its schema yet."""
    try:
        return rows(db, "SELECT count(*) FROM task_events")[0][0] if db.exists() else 0
    except sqlite3.OperationalError:  # the file exists, the schema does not yet
        return 0


def seqs_by_task(db: Path) -> dict[str, list[int]]:
    out: dict[str, list[int]] = {}
    for task_id, seq in rows(db, "SELECT task_id, seq FROM task_events ORDER BY task_id, seq"):
        out.setdefault(task_id, []).append(seq)
    return out


def sqlite_writer(worker: Worker) -> StoreWriter:
    """The worker's writer, which is SQLite's in these tests."""
    writer = worker.writer
    assert isinstance(writer, StoreWriter)
    return writer
