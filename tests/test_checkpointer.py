"""The worker's background checkpointer (ingest/checkpointer.py): committed pages reach the database
file with no commit checkpointing, the WAL still starts over under continuous commits, and the
thread ends with the writer."""

import sqlite3
import threading
from pathlib import Path

import orjson
import pytest
import redis

from taskevents.ingest.worker import Worker
from taskevents.settings import Settings
from tests.helpers import sqlite_writer, wait_for

pytestmark = pytest.mark.redis_server


def _events(n: int, tasks: int = 4) -> list[bytes]:
    return [
        orjson.dumps(
            {
                "task_id": f"t{i % tasks}",
                "event_type": "runner_heartbeat",
                "actor": "runner",
                "span_id": "root",
                "payload": {"i": i},
            }
        )  # fmt: skip
        for i in range(n)
    ]


def _in_the_file(db: Path) -> int:
    """Events in the database file itself, ignoring the WAL (`immutable` reads the file only)."""
    conn = sqlite3.connect(f"file:{db}?immutable=1", uri=True)
    try:
        return int(conn.execute("SELECT count(*) FROM task_events").fetchone()[0])
    except sqlite3.OperationalError:  # the schema itself is still only in the WAL
        return 0
    except sqlite3.DatabaseError:  # read while a checkpoint was writing the file: read again
        return -1
    finally:
        conn.close()


def _drain(worker: Worker) -> None:
    while worker.step():
        pass


def _checkpointers() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "wal-checkpointer"]


@pytest.mark.parametrize("interval", [0.02, 0.0])
def test_commits_reach_the_database_file_without_a_checkpoint_in_any_commit(
    settings: Settings, client: redis.Redis, interval: float
) -> None:
    with Worker(settings.model_copy(update={"checkpoint_interval": interval})) as worker:
        autocheckpoint = sqlite_writer(worker)._conn.execute("PRAGMA wal_autocheckpoint").fetchone()[0]
        assert autocheckpoint == (0 if interval else 16384)  # with the thread, no commit copies
        client.rpush(settings.queue, *_events(300))
        _drain(worker)
        if interval:
            wait_for(lambda: _in_the_file(settings.sqlite_path) == 300, timeout=10)
            checkpointer = sqlite_writer(worker).checkpointer
            assert checkpointer is not None and checkpointer.passes > 0
        else:  # the control: without the thread nothing leaves the WAL before 64 MiB of it
            assert sqlite_writer(worker).checkpointer is None
            assert _in_the_file(settings.sqlite_path) == 0


@pytest.mark.parametrize("pages", [64, 1 << 30])
def test_the_wal_starts_over_under_continuous_commits(
    settings: Settings, client: redis.Redis, pages: int
) -> None:
    """Once the thread has copied a WAL of `pages` frames, the writer copies the last commit's and its
    next commit starts the WAL from its beginning: many small commits keep it near `pages`, not
    growing with the data. The control (no restart asked for) is why the writer has that part: the
    thread's copies race the next commit, and the WAL grows until a pass happens to finish between two
    commits (the file keeps its largest size: 2.8-5 times the bound in clean-clone runs)."""
    small = settings.model_copy(update={"checkpoint_interval": 0.01, "batch_size": 20})
    wal = Path(f"{settings.sqlite_path}-wal")
    with Worker(small) as worker:
        checkpointer = sqlite_writer(worker).checkpointer
        assert checkpointer is not None
        checkpointer.restart_frames = pages
        largest = 0
        for _ in range(10):
            client.rpush(settings.queue, *_events(500, tasks=50))
            _drain(worker)
            largest = max(largest, wal.stat().st_size)
        page_size = sqlite_writer(worker)._conn.execute("PRAGMA page_size").fetchone()[0]
        written = sqlite_writer(worker)._conn.execute("SELECT count(*) FROM task_events").fetchone()[0]
    assert written == 5000
    # A commit of 20 events writes a few dozen pages, and the drain commits a few hundred of them in
    # the thread's 10 ms: the WAL stays within ~1,000 pages, and holds up to ~9,000 if it never
    # restarts (how soon the control's restarts by chance is timing: only "past the bound" is sure).
    bound = 1000 * (page_size + 24)
    if pages == 64:
        assert largest < bound, largest
    else:
        assert largest > bound, largest


def test_the_thread_ends_with_the_writer(settings: Settings, client: redis.Redis) -> None:
    before = len(_checkpointers())
    worker = Worker(settings)
    client.rpush(settings.queue, *_events(10))
    _drain(worker)
    assert len(_checkpointers()) == before + 1
    worker.close()
    assert len(_checkpointers()) == before
