"""Commits a batch of decoded events to PostgreSQL: the same contract as the SQLite writer
(ingest/writer.py), with the same planning (ingest/plan.py): dedup by event_uid per task, per-task
seq in queue order, task and span summaries, the batch id and its record, all in one transaction.

Rows go in as `unnest()` of one array per column: one statement, and one round trip, per table and
batch, whatever the batch's size (COPY would need a round trip per table too, and cannot upsert).

Exactly one writer per queue partition (`part`): `take_over` bumps the partition's writer epoch; every
commit locks the partition's `ingest_state` row (`FOR UPDATE`) and checks the epoch first, so a deposed
writer's commit is refused, and a take-over waits for a commit in progress to end. Two partitions'
writers never touch the same task (the queue routes each task to one partition).
"""

import logging
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import psycopg

from taskevents.clock import format_ms
from taskevents.ingest.plan import SpanChange, TaskChange, cached_latest, plan, span_rows, span_upsert_set
from taskevents.ingest.writer import CommitResult, DeadMark, Decoded, PartitionsChanged, StoreFenced

_INSERT_EVENTS = """
INSERT INTO task_events (task_id, seq, event_type, phase, actor, span_id, parent_span_id,
                         payload, created_at, event_uid, emitted_at)
SELECT * FROM unnest(%s::text[], %s::bigint[], %s::text[], %s::text[], %s::text[], %s::text[],
                     %s::text[], %s::text[], %s::text[], %s::text[], %s::text[])
"""
_INSERT_TASKS = """
INSERT INTO tasks (task_id, latest_seq, event_count, first_at, last_at, current_phase, status, exit_reason)
SELECT t, s, n, %s, %s, p, st, r
FROM unnest(%s::text[], %s::bigint[], %s::bigint[], %s::text[], %s::text[], %s::text[])
     AS c(t, s, n, p, st, r)
"""
_UPDATE_TASKS = """
UPDATE tasks SET latest_seq = c.s, event_count = tasks.event_count + c.n, last_at = %s,
                 current_phase = coalesce(c.p, tasks.current_phase), status = coalesce(c.st, tasks.status),
                 exit_reason = CASE WHEN c.changed THEN c.r ELSE tasks.exit_reason END
FROM unnest(%s::text[], %s::bigint[], %s::bigint[], %s::text[], %s::text[], %s::boolean[], %s::text[])
     AS c(t, s, n, p, st, changed, r)
WHERE tasks.task_id = c.t
"""
_SPAN_ARRAYS = (
    "%s::text[], %s::text[], %s::text[], %s::text[], %s::text[], %s::bigint[], %s::bigint[], %s::bigint[],"
    " %s::text[], %s::text[], %s::bigint[], %s::text[], %s::text[], %s::text[], %s::text[], %s::text[]"
)

log = logging.getLogger("taskevents.pgwriter")


def _upsert_spans_sql(state_changed: bool) -> str:
    return f"""
INSERT INTO spans (task_id, span_id, parent_span_id, event_type, phase, first_seq, last_seq, event_count,
                   state, started_at, end_seq, ended_at, work_item_id, work_type, progress, error_code)
SELECT * FROM unnest({_SPAN_ARRAYS})
{span_upsert_set(state_changed)}
"""


def _columns(rows: Sequence[Sequence[Any]], width: int) -> list[list[Any]]:
    """Rows to one list per column (what unnest() takes)."""
    return [list(column) for column in zip(*rows, strict=True)] if rows else [[] for _ in range(width)]


class PgStoreWriter:
    """Owns the partition's read-write connection; `commit` is the only way its events get stored."""

    def __init__(
        self, conn: psycopg.Connection, *, part: int = 0, partitions: int = 1, seq_cache_size: int = 100_000
    ) -> None:
        self._conn = conn
        self.part = part
        self.partitions = partitions
        self._latest: dict[str, int] = {}  # task_id -> latest committed seq (bounded, refilled)
        self._cache_size = seq_cache_size
        self.epoch: int | None = None
        row = conn.execute(
            "SELECT last_batch_id, last_batch FROM ingest_state WHERE part = %s", (part,)
        ).fetchone()
        if row is None:  # a partition this store has not had yet
            conn.execute("INSERT INTO ingest_state (part) VALUES (%s) ON CONFLICT DO NOTHING", (part,))
            row = (0, None)
        self.last_batch_id, self.last_batch = self._committed(row)

    @staticmethod
    def _committed(row: tuple[int, str | None]) -> tuple[int, CommitResult | None]:
        last_id, record = row
        return int(last_id), CommitResult.from_json(record) if record is not None else None

    def take_over(self) -> int:
        """Become the partition's writer: bump its epoch (refusing every later commit of an earlier
        writer) and reload what it has committed. Returns the epoch. Raises PartitionsChanged if the
        store's queue was partitioned otherwise (the first worker records the count)."""
        with self._conn.transaction():
            self._conn.execute(
                "INSERT INTO deployment (partitions) VALUES (%s) ON CONFLICT DO NOTHING", (self.partitions,)
            )
            recorded = self._conn.execute("SELECT partitions FROM deployment").fetchone()
            if recorded is not None and int(recorded[0]) != self.partitions:
                raise PartitionsChanged(
                    f"the store's queue has {recorded[0]} partitions and this worker was given "
                    f"{self.partitions} (TASKEVENTS_PARTITIONS): docs/scaling.md says how to change it"
                )
            row = self._conn.execute(
                "UPDATE ingest_state SET writer_epoch = writer_epoch + 1 WHERE part = %s"
                " RETURNING writer_epoch, last_batch_id, last_batch",
                (self.part,),
            ).fetchone()
        assert row is not None  # made in __init__
        self.epoch = int(row[0])
        self.last_batch_id, self.last_batch = self._committed((row[1], row[2]))
        self._latest.clear()
        return self.epoch

    @contextmanager
    def fenced(self) -> Iterator[psycopg.Connection]:
        """A transaction that commits only while this writer holds the partition (its epoch)."""
        if self.epoch is None:
            raise StoreFenced("take_over() the store before writing to it")
        with self._conn.transaction():
            row = self._conn.execute(
                "SELECT writer_epoch FROM ingest_state WHERE part = %s FOR UPDATE", (self.part,)
            ).fetchone()
            epoch = None if row is None else int(row[0])
            if epoch != self.epoch:
                raise StoreFenced(
                    f"another worker took the store over (epoch {epoch}; ours was {self.epoch})"
                )
            yield self._conn

    def commit(
        self,
        batch_id: int,
        batch: Sequence[Decoded],
        dead: Sequence[DeadMark] = (),
        *,
        keep: int | None = None,
    ) -> CommitResult:
        """Store the batch and record `batch_id` as committed, with what it did, all or nothing.
        Raises StoreFenced if another writer took the partition over, psycopg.Error with nothing written."""
        created_at = format_ms(time.time_ns())
        result = CommitResult(batch_id, dead=list(dead), dead_at=created_at, keep=keep)
        with self.fenced() as conn:
            fresh = self._drop_duplicates(conn, batch)
            result.duplicates = len(batch) - len(fresh)
            latest = self._load_latest(conn, {d.event.task_id for d in fresh})
            rows, task_changes, span_changes = plan(fresh, latest, created_at)
            if rows:
                conn.execute(_INSERT_EVENTS, _columns(rows, 11))
            self._write_tasks(conn, task_changes, created_at)
            self._write_spans(conn, span_changes.values(), created_at)
            result.stored = len(rows)
            result.tasks = {t: (c.first_seq, c.last_seq) for t, c in task_changes.items()}
            conn.execute(
                "UPDATE ingest_state SET last_batch_id = %s, last_batch = %s WHERE part = %s",
                (batch_id, result.to_json().decode(), self.part),
            )
        result.lsn = self._wal_position(batch_id)
        if len(self._latest) + len(task_changes) > self._cache_size:
            self._latest.clear()
        for task_id, change in task_changes.items():
            self._latest[task_id] = change.last_seq
        self.last_batch_id, self.last_batch = batch_id, result
        return result

    def _wal_position(self, batch_id: int) -> str | None:
        """After a commit: a WAL position at or past its commit record (the insert position, since
        with synchronous_commit off the write position may not have reached it yet), which a replica
        must have replayed to serve the batch. None if the server did not answer: readers then use
        the primary, and the next batch finds out about the connection."""
        try:
            row = self._conn.execute("SELECT pg_current_wal_insert_lsn()::text").fetchone()
        except psycopg.Error as exc:
            log.warning("the WAL position after batch %s is unknown: %s", batch_id, exc)
            return None
        return None if row is None else str(row[0])

    def close(self) -> None:
        self._conn.close()

    def _drop_duplicates(self, conn: psycopg.Connection, batch: Sequence[Decoded]) -> list[Decoded]:
        """Events whose (task_id, event_uid) is already stored, or repeated in this batch, are stored once."""
        keyed = [(d.event.task_id, d.event.event_uid) for d in batch if d.event.event_uid is not None]
        if not keyed:
            return list(batch)
        tasks, uids = _columns(keyed, 2)
        seen = {
            (row[0], row[1])
            for row in conn.execute(
                "SELECT e.task_id, e.event_uid FROM task_events AS e"
                " JOIN unnest(%s::text[], %s::text[]) AS k(t, u) ON e.task_id = k.t AND e.event_uid = k.u",
                (tasks, uids),
            )
        }
        fresh = []
        for d in batch:
            uid = d.event.event_uid
            if uid is not None:
                key = (d.event.task_id, uid)
                if key in seen:
                    continue
                seen.add(key)
            fresh.append(d)
        return fresh

    def _load_latest(self, conn: psycopg.Connection, task_ids: Iterable[str]) -> dict[str, int | None]:
        latest, missing = cached_latest(self._latest, task_ids)
        if missing:
            found = {
                row[0]: int(row[1])
                for row in conn.execute(
                    "SELECT task_id, latest_seq FROM tasks WHERE task_id = ANY(%s)", (missing,)
                )
            }
            for task_id in missing:
                latest[task_id] = found.get(task_id)
        return latest

    @staticmethod
    def _write_tasks(conn: psycopg.Connection, changes: dict[str, TaskChange], at: str) -> None:
        new = [
            (tid, c.last_seq, c.count, c.phase, c.status or "running", c.exit_reason)
            for tid, c in changes.items()
            if not c.existing
        ]
        old = [
            (tid, c.last_seq, c.count, c.phase, c.status, c.reason_changed, c.exit_reason)
            for tid, c in changes.items()
            if c.existing
        ]
        if new:
            conn.execute(_INSERT_TASKS, [at, at, *_columns(new, 6)])
        if old:
            conn.execute(_UPDATE_TASKS, [at, *_columns(old, 7)])

    @staticmethod
    def _write_spans(conn: psycopg.Connection, changes: Iterable[SpanChange], at: str) -> None:
        for state_changed, rows in span_rows(changes, at).items():
            if rows:
                conn.execute(_upsert_spans_sql(state_changed), _columns(rows, 16))
