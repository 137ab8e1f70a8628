"""SQLite's ceiling for the ingest benchmark: the production rows, inserted by a loop that does nothing else.

`prepare()` runs, untimed, everything the worker does that is not SQLite's work: decoding, seq
planning, span folding, the statements' parameters (`ingest.writer.prepare_batch`, the production
code), for the same events cut into the same batches. `insert()` then times only those statements,
one transaction per batch, into a fresh store opened as the worker opens it (every index, its
pragmas, its checkpointer thread and WAL cap). No Redis, no epoch check, no base check, no
acknowledgement: what is left is SQLite's own cost, the figure the production loop is compared with.

`insert_beside()` times the same loop while the other core does the Python work production does
beside the writer: the worker's own decoding of the same frames, over and over, on a thread of this
process (sharing the GIL, as the worker's thread does, at the worker's switch interval) or in a
process of its own (nothing shared but the machine: what moving that work to another process
would leave). The two bound what moving work off the writer's path can gain on this machine.
"""

import multiprocessing
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

from taskevents.archive import TaskArchive
from taskevents.event import decode
from taskevents.ingest.batch import decode_batch
from taskevents.ingest.stores import open_store_writer
from taskevents.ingest.worker import _prompt_gil_handoff
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


Beside = Literal["thread", "process"]
SPIN_FRAMES = 5000  # the frames the busy side decodes in a loop (one batch's worth is enough)


def insert_beside(
    batches: list[Prepared], db: Path, settings: Settings, frames: list[bytes], beside: Beside
) -> float:
    """insert()'s seconds while a `beside` (thread or process) decodes `frames` without a pause."""
    with _busy(frames[:SPIN_FRAMES], settings.max_payload_bytes, beside):
        return insert(batches, db, settings)


@contextmanager
def _busy(frames: list[bytes], max_payload_bytes: int, beside: Beside) -> Iterator[None]:
    if beside == "thread":
        stop = threading.Event()
        thread = threading.Thread(target=_spin, args=(frames, max_payload_bytes, stop), daemon=True)
        with _prompt_gil_handoff():
            thread.start()
            try:
                yield
            finally:
                stop.set()
                thread.join()
        return
    # spawn, not fork: a clean interpreter, as another process of the worker's would be.
    context = multiprocessing.get_context("spawn")
    stopping = context.Event()
    ready = context.Event()
    process = context.Process(target=_spin_process, args=(frames, max_payload_bytes, stopping, ready))
    process.start()
    try:
        if not ready.wait(60):
            raise RuntimeError("the busy process did not start")
        yield
    finally:
        stopping.set()
        process.join(30)


def _spin(frames: list[bytes], max_payload_bytes: int, stop: Any) -> None:
    """Decode the frames round and round until `stop` (a threading or multiprocessing Event)."""
    while True:
        for start in range(0, len(frames), 100):
            if stop.is_set():
                return
            for raw in frames[start : start + 100]:
                decode(raw, max_payload_bytes)


def _spin_process(frames: list[bytes], max_payload_bytes: int, stop: Any, ready: Any) -> None:
    ready.set()
    _spin(frames, max_payload_bytes, stop)
