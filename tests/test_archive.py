"""Task archives (shared/archive.py): rows written by the real worker, archived, read back and put into
another store exactly as they were; damaged or missing archives refused with a clear error."""

import hashlib
import shutil
import sqlite3
import subprocess
from pathlib import Path

import orjson
import pytest
import zstandard

from taskevents.archive import (
    ArchiveError,
    ArchiveMissing,
    Manifest,
    TaskArchive,
    insert_rows,
    key,
    manifest_key,
    read_rows,
)
from taskevents.db import open_reader, open_writer
from taskevents.settings import Settings
from taskevents.simulate import simulate
from tests.api_helpers import ingest, stored

ODD = {"s": "a\u0000b 😀 \\u0041 </script>", "x": 1.5e308, "n": [1, {"k": None}], "e": {}}
AT = "2026-12-02T00:00:00.000Z"


@pytest.fixture
def store(settings: Settings) -> Path:
    ingest(settings, lambda em: simulate(em, tasks=4, concurrency=4, rate=0, seed=5, prefix="arc"))
    stored(
        settings,
        {"task_id": "odd", "event_type": "runner_spawn", "span_id": "odd/runner", "payload": ODD},
        {"task_id": "odd", "event_type": "runner_exit", "span_id": "odd/runner", "payload": {"exit_code": 0}},
    )
    return settings.sqlite_path


def _all_rows(db: Path, table: str, task_id: str) -> list[tuple[object, ...]]:
    conn = sqlite3.connect(db)
    try:
        return conn.execute(
            f"SELECT * FROM {table} WHERE task_id = ? ORDER BY 1, 2, 3", (task_id,)
        ).fetchall()
    finally:
        conn.close()


def _task_ids(db: Path) -> list[str]:
    return [t for (t,) in sqlite3.connect(db).execute("SELECT task_id FROM tasks ORDER BY task_id")]


@pytest.mark.redis_server
def test_archived_rows_read_back_and_restore_into_another_store_exactly(store: Path, tmp_path: Path) -> None:
    archive = TaskArchive.at(tmp_path / "archive")
    other = tmp_path / "other.db"
    open_writer(other).close()  # a fresh store of the same schema
    reader = open_reader(store)
    tasks = _task_ids(store)
    assert len(tasks) == 5
    for task_id in tasks:
        rows = read_rows(reader, task_id)
        assert rows is not None and rows.events
        manifest = archive.write(rows, AT)
        assert (manifest.first_seq, manifest.last_seq, manifest.event_count) == (
            1,
            len(rows.events),
            len(rows.events),
        )
        assert archive.read(task_id) == rows
        assert archive.write(rows, AT) == manifest  # written again: the same archive
        conn = open_writer(other)
        conn.execute("BEGIN IMMEDIATE")
        insert_rows(conn, archive.read(task_id))
        conn.execute("COMMIT")
        conn.close()
        for table in ("task_events", "spans", "tasks"):
            assert _all_rows(other, table, task_id) == _all_rows(store, table, task_id), (task_id, table)
    # The payload's stored text, byte for byte (escapes, a huge float, NUL), not a re-encoding of it.
    (payload,) = sqlite3.connect(other).execute(
        "SELECT payload FROM task_events WHERE task_id='odd' AND seq=1"
    )
    (original,) = sqlite3.connect(store).execute(
        "SELECT payload FROM task_events WHERE task_id='odd' AND seq=1"
    )
    assert payload[0] == original[0] and orjson.loads(payload[0]) == ODD
    assert sorted(m.task_id for m in archive.manifests()) == tasks
    assert not [p for p in (tmp_path / "archive").rglob(".*")]  # no temporary file left behind


@pytest.mark.redis_server
@pytest.mark.skipif(shutil.which("zstdcat") is None or shutil.which("jq") is None, reason="no zstdcat/jq")
def test_an_archive_reads_with_common_tools(store: Path, tmp_path: Path) -> None:
    archive = TaskArchive.at(tmp_path)
    rows = read_rows(open_reader(store), "odd")
    assert rows is not None
    archive.write(rows, AT)
    done = subprocess.run(
        f"zstdcat {tmp_path / key('odd')} | jq -c 'select(.kind == \"event\") | [.seq, .payload]'",
        shell=True, capture_output=True, text=True, check=True,
    )  # fmt: skip
    lines = [orjson.loads(line) for line in done.stdout.splitlines()]
    assert lines == [[1, ODD], [2, {"exit_code": 0}]]
    manifest = orjson.loads((tmp_path / manifest_key("odd")).read_bytes())
    assert manifest["task_id"] == "odd" and manifest["event_count"] == 2


@pytest.mark.redis_server
def test_a_damaged_or_missing_archive_is_refused_with_what_is_wrong(store: Path, tmp_path: Path) -> None:
    archive = TaskArchive.at(tmp_path)
    rows = read_rows(open_reader(store), "odd")
    assert rows is not None
    archive.write(rows, AT)
    path = tmp_path / key("odd")
    good = path.read_bytes()

    path.write_bytes(good[:-1] + bytes([good[-1] ^ 1]))  # one bit
    with pytest.raises(ArchiveError, match="SHA-256"):
        archive.read("odd")
    path.write_bytes(good[: len(good) // 2])
    with pytest.raises(ArchiveError, match="SHA-256"):
        archive.read("odd")

    # Consistent with its manifest but not an archive of the task: its content is checked too.
    forged = zstandard.ZstdCompressor().compress(b'{"kind":"task","task_id":"odd"}\n{"kind":"event"}\n')
    path.write_bytes(forged)
    manifest = Manifest.from_json((tmp_path / manifest_key("odd")).read_bytes())
    patched = orjson.loads(manifest.to_json()) | {
        "size": len(forged),
        "sha256": hashlib.sha256(forged).hexdigest(),
    }
    (tmp_path / manifest_key("odd")).write_bytes(orjson.dumps(patched))
    with pytest.raises(ArchiveError, match="another shape"):
        archive.read("odd")

    path.unlink()
    with pytest.raises(ArchiveMissing):
        archive.read("odd")
    with pytest.raises(ArchiveMissing):
        archive.read("never-archived")


@pytest.mark.redis_server
def test_rows_with_a_gap_are_not_archived(store: Path, tmp_path: Path) -> None:
    rows = read_rows(open_reader(store), "odd")
    assert rows is not None
    rows.events.pop(0)
    with pytest.raises(ArchiveError, match="seq"):
        TaskArchive.at(tmp_path).write(rows, AT)
    assert not list(tmp_path.rglob("*.zst"))
