"""SQLite's ceiling for the ingest benchmark: the production rows, inserted by a loop that does nothing else.

`prepare()` runs, untimed, everything the worker does that is not SQLite's work: decoding, seq
planning, span folding, the statements' parameters (`ingest.writer.prepare_batch`, the production
code), for the same events cut into the same batches. `insert()` then times only those statements,
one transaction per batch, into a fresh store opened as the worker opens it (every index, its
pragmas, its checkpointer thread and WAL cap). No Redis, no epoch check, no base check, no
acknowledgement: what is left is SQLite's own cost, the figure the production loop is compared with.
"""

import time
from pathlib import Path

from taskevents.archive import TaskArchive
from taskevents.ingest.batch import decode_batch
from taskevents.ingest.stores import open_store_writer
from taskevents.ingest.writer import Prepared, StoreWriter, prepare_batch
from taskevents.settings import Settings


def prepare(frames: list[bytes], batch_size: int, max_payload_bytes: int) -> list[Prepared]:
    latest: dict[str, int] = {}
    batches = []
    for start in range(0, len(frames), batch_size):
        good, dead = decode_batch(frames[start : start + batch_size], max_payload_bytes)
        assert not dead, "benchmark events are all valid"
        prepared = prepare_batch(good, {d.event.task_id: latest.get(d.event.task_id) for d in good})
        latest.update((t, last) for t, (_, last) in prepared.tasks.items())
        batches.append(prepared)
    return batches


def insert(batches: list[Prepared], db: Path, settings: Settings) -> float:
    """Seconds to insert every prepared batch into a fresh store at `db`."""
    writer = open_store_writer(settings.model_copy(update={"db": db}), TaskArchive.at(settings.archive_dir))
    assert isinstance(writer, StoreWriter)
    conn = writer._conn  # the writer's own connection, as the worker opened it
    started = time.perf_counter()
    for batch in batches:
        conn.execute("BEGIN IMMEDIATE")
        for sql, params in batch.statements:
            conn.execute(sql, params)
        conn.execute("COMMIT")
        writer.wal_cap.after_commit()
    seconds = time.perf_counter() - started
    writer.close()
    return seconds
