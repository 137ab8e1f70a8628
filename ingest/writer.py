"""Commits a batch of decoded events to SQLite: dedup by event_uid, per-task seq, summaries.

The worker is the store's only writer, so the seq it assigns cannot race with anyone: it holds the
queue's lease (ingest/lease.py), and `take_over` bumps the store's writer epoch, which every commit
checks inside its transaction, so a deposed worker cannot commit. Everything a batch changes (events,
task and span summaries, the batch id and its record) commits in one transaction.
"""

import functools
import itertools
import logging
import sqlite3
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Protocol

import orjson

from taskevents.archive import ArchiveError, TaskArchive, TaskRows, insert_rows
from taskevents.clock import format_ms
from taskevents.ingest.checkpointer import Checkpointer
from taskevents.ingest.lease import LeaseLost
from taskevents.ingest.plan import (
    Decoded,
    SpanChange,
    TaskChange,
    cached_latest,
    plan,
    span_rows,
    span_upsert_set,
)
from taskevents.ingest.walcap import WalCap

log = logging.getLogger("taskevents.writer")


@dataclass(frozen=True, slots=True)
class DeadMark:
    """An element of a claimed batch that is set aside instead of stored, and why."""

    index: int  # its position in the batch as claimed
    code: str
    reason: str


@dataclass(slots=True)
class CommitResult:
    """What a batch did. Stored with the batch (`ingest_state.last_batch`), so that a worker that
    acknowledges it after a crash sets aside, counts and announces exactly what its committer would
    have, whatever its own settings."""

    batch_id: int
    stored: int = 0
    duplicates: int = 0
    # task_id -> (first seq, last seq) written by this batch; what the live stream announces.
    tasks: dict[str, tuple[int, int]] = field(default_factory=dict)
    dead: list[DeadMark] = field(default_factory=list)
    dead_at: str = ""  # when the dead letters were made
    keep: int | None = None  # the bytes a dead letter keeps whole (max_element_bytes at the time)
    # PostgreSQL: the WAL position after the commit, for replicas' readers; not stored with the batch
    # (a batch acknowledged after a crash is announced without it, and readers then use the primary).
    lsn: str | None = None

    def to_json(self) -> bytes:
        return orjson.dumps(
            {
                "batch_id": self.batch_id,
                "stored": self.stored,
                "duplicates": self.duplicates,
                "tasks": self.tasks,
                "dead": [[m.index, m.code, m.reason] for m in self.dead],
                "dead_at": self.dead_at,
                "keep": self.keep,
            }
        )

    @classmethod
    def from_json(cls, data: str | bytes) -> "CommitResult":
        r = orjson.loads(data)
        return cls(
            int(r["batch_id"]),
            int(r["stored"]),
            int(r["duplicates"]),
            {str(t): (int(a), int(b)) for t, (a, b) in r["tasks"].items()},
            [DeadMark(int(i), str(code), str(reason)) for i, code, reason in r["dead"]],
            str(r["dead_at"]),
            None if r["keep"] is None else int(r["keep"]),
        )


@dataclass(slots=True)
class Prepared:
    """A batch planned ahead of its commit, on the worker's thread while the batch before it commits
    (ingest/lookahead.py): seqs assigned from `base`, the latest seq each task is expected to have
    once that batch lands (None: a task the store is not expected to have), and every statement's
    parameters built. The writer checks `base` inside its transaction; a batch whose base is wrong,
    or that holds an event_uid the store already has, is planned again there (StoreWriter.commit)."""

    base: dict[str, int | None]
    created_at: str
    fresh: int  # events left once the batch's own repeated event_uids are dropped
    tasks: dict[str, tuple[int, int]]  # task_id -> (first seq, last seq), as CommitResult.tasks
    task_changes: dict[str, TaskChange]
    statements: list[tuple[str, list[Any]]]  # (sql, parameters), in order: one step each


class StoreFenced(LeaseLost):
    """Another worker has taken the store over since this one did: its commit was refused."""


class PartitionsChanged(Exception):
    """The store records another partition count than this worker's: its tasks' events would be
    routed to other partitions than before, and two workers could write one task."""


class BatchWriter(Protocol):
    """What the worker needs of a store's writer, SQLite's (StoreWriter) or PostgreSQL's
    (ingest/pgwriter.py): become the one writer, commit batches by id, remember the last one."""

    last_batch_id: int
    last_batch: "CommitResult | None"

    def take_over(self) -> int: ...

    def commit(
        self,
        batch_id: int,
        batch: Sequence[Decoded],
        dead: Sequence[DeadMark] = (),
        *,
        keep: int | None = None,
        prepared: "Prepared | None" = None,
    ) -> "CommitResult": ...

    def prepare(self, batch: Sequence[Decoded], base: dict[str, int | None]) -> "Prepared | None":
        """Plan `batch` ahead on the caller's thread (touching neither connection nor cache), or None
        if this store gains nothing by it."""
        ...

    def close(self) -> None: ...

    # Retention's steps (ingest/archived.py), each its own fenced transaction.
    def mark_archived(self, task_id: str, latest_seq: int) -> bool: ...

    def drop_archived_rows(self, limit: int) -> int: ...

    def archived_backlog(self) -> int: ...

    def reclaim(self, pages: int, keep: float = 0.0) -> int: ...

    def restore(self, task_id: str, rows: "TaskRows") -> bool: ...


# Rows go in as multi-row INSERTs of up to _ROWS_PER_INSERT rows: one statement step per chunk, so
# SQLite works in C, without taking the GIL back per row (executemany would), while the worker's next
# batch is validated on the other core. Fixed chunk sizes keep the statements in the sqlite3 cache.
_EVENT_COLUMNS = ", ".join(
    ("task_id", "seq", "event_type", "phase", "actor", "span_id", "parent_span_id")
    + ("payload", "created_at", "event_uid", "emitted_at")
)
_ROWS_PER_INSERT = 500  # 11 parameters a row: well under SQLite's 32,766 bound parameters


@functools.cache
def _insert_events_sql(rows: int) -> str:
    values = ",".join(["(?,?,?,?,?,?,?,?,?,?,?)"] * rows)
    return f"INSERT INTO task_events ({_EVENT_COLUMNS}) VALUES {values}"


@functools.cache
def _insert_tasks_sql(rows: int) -> str:
    values = ",".join(["(?,?,?,?,?,?,?,?)"] * rows)
    return (
        "INSERT INTO tasks (task_id, latest_seq, event_count, first_at, last_at, current_phase, status,"
        f" exit_reason) VALUES {values}"
    )


@functools.cache
def _update_tasks_sql(rows: int) -> str:
    """One statement for every task the batch goes on with (one step; executemany steps per row)."""
    values = ",".join(["(?,?,?,?,?,?,?,?)"] * rows)
    return f"""WITH c (tid, seq, n, at, ph, st, changed, reason) AS (VALUES {values})
UPDATE tasks SET latest_seq = c.seq, event_count = event_count + c.n, last_at = c.at,
                 current_phase = coalesce(c.ph, current_phase), status = coalesce(c.st, status),
                 exit_reason = CASE WHEN c.changed THEN c.reason ELSE exit_reason END
FROM c WHERE tasks.task_id = c.tid"""


_TASKS_PER_STATEMENT = 500  # 8 parameters a row


_SPAN_COLUMNS = ", ".join(
    ("task_id", "span_id", "parent_span_id", "event_type", "phase", "first_seq", "last_seq")
    + ("event_count", "state", "started_at", "end_seq", "ended_at")
    + ("work_item_id", "work_type", "progress", "error_code")
)
_ROWS_PER_UPSERT = 500


@functools.cache
def _upsert_spans_sql(rows: int, state_changed: bool) -> str:
    """Spans whose state this batch changed take the new state; the others keep theirs."""
    values = ",".join(["(?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)"] * rows)
    return f"INSERT INTO spans ({_SPAN_COLUMNS}) VALUES {values}\n{span_upsert_set(state_changed)}"


class StoreWriter:
    """Owns the read-write connection; `commit` is the only way events get into the store."""

    def __init__(
        self,
        conn: sqlite3.Connection,
        *,
        seq_cache_size: int = 100_000,
        archive: TaskArchive | None = None,
        checkpointer: Checkpointer | None = None,
    ) -> None:
        """`checkpointer`: the background one of this store (closed with the writer), if any."""
        self._conn = conn
        self.checkpointer = checkpointer
        self.archive = archive  # where an archived task's rows are, when a late event brings it back
        # task_id -> latest committed seq. Bounded: cleared when full, refilled from `tasks` on demand.
        self._latest: dict[str, int] = {}
        self._cache_size = seq_cache_size
        self.epoch: int | None = None  # set by take_over(); commits need it
        self.last_batch_id, self.last_batch = self._committed(
            conn.execute("SELECT last_batch_id, last_batch FROM ingest_state").fetchone()
        )
        if checkpointer is not None:  # it checkpoints instead, and WalCap restarts the WAL
            conn.execute("PRAGMA wal_autocheckpoint = 0")
        self.wal_cap = WalCap(conn, checkpointer=checkpointer)

    @staticmethod
    def _committed(row: tuple[int, str | None]) -> tuple[int, CommitResult | None]:
        last_id, record = row
        return last_id, CommitResult.from_json(record) if record is not None else None

    def take_over(self) -> int:
        """Become the store's writer: bump its writer epoch, which refuses every later commit of a
        writer that took over before, and reload what the store has committed. Returns the epoch."""
        conn = self._conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            epoch, last_id, record = conn.execute(
                "UPDATE ingest_state SET writer_epoch = writer_epoch + 1 "
                "RETURNING writer_epoch, last_batch_id, last_batch"
            ).fetchone()
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        self.epoch = epoch
        self.last_batch_id, self.last_batch = self._committed((last_id, record))
        self._latest.clear()  # another writer may have committed since this cache was filled
        return epoch

    def commit(
        self,
        batch_id: int,
        batch: Sequence[Decoded],
        dead: Sequence[DeadMark] = (),
        *,
        keep: int | None = None,
        prepared: Prepared | None = None,
    ) -> CommitResult:
        """Store the batch and record `batch_id` as committed, with what it did, all or nothing.

        `dead`: the batch's elements set aside (their dead letters are written at acknowledgement).
        `prepared`: the batch as `prepare` planned it, written as it is if its plan still holds; the
        transaction then runs SQLite's statements and nothing else.
        Raises StoreFenced if another writer took the store over, sqlite3.Error (locked, disk full,
        corrupt, …) with nothing written.
        """
        # The whole batch's time, and its dead letters': a prepared batch's, taken as it was planned.
        created_at = prepared.created_at if prepared is not None else format_ms(time.time_ns())
        result = CommitResult(batch_id, dead=list(dead), dead_at=created_at, keep=keep)
        # Fenced: no other writer can take over between the epoch's check and the commit.
        with self.fenced() as conn:
            # A late event of an archived task brings the task back first: its seq goes on from the
            # archived ones, and its event_uids are known again. Cached tasks are not archived.
            self._bring_back({d.event.task_id for d in batch if d.event.task_id not in self._latest})
            if prepared is not None and self._write_prepared(prepared):
                task_changes = prepared.task_changes
                result.stored, result.tasks = prepared.fresh, prepared.tasks
            else:
                fresh = self._drop_duplicates(batch)
                latest = self._load_latest({d.event.task_id for d in fresh})
                rows, task_changes, span_changes = plan(fresh, latest, created_at)
                for statement in _statements(rows, task_changes, span_changes.values(), created_at):
                    conn.execute(*statement)
                result.stored = len(rows)
                result.tasks = {t: (c.first_seq, c.last_seq) for t, c in task_changes.items()}
            result.duplicates = len(batch) - result.stored
            conn.execute(
                "UPDATE ingest_state SET last_batch_id = ?, last_batch = ?",
                (batch_id, result.to_json().decode()),
            )
        # Only now is the new state real: the cache never runs ahead of the store.
        if len(self._latest) + len(task_changes) > self._cache_size:
            self._latest.clear()
        for task_id, change in task_changes.items():
            self._latest[task_id] = change.last_seq
        self.last_batch_id, self.last_batch = batch_id, result
        return result

    def close(self) -> None:
        try:
            if self.checkpointer is not None:
                self.checkpointer.close()
        finally:
            self._conn.close()

    @contextmanager
    def fenced(self) -> Iterator[sqlite3.Connection]:
        """A write transaction that commits only while this writer holds the store (its epoch): every
        change of the store (a batch, retention's steps) is made in one."""
        if self.epoch is None:
            raise StoreFenced("take_over() the store before writing to it")
        conn = self._conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            (epoch,) = conn.execute("SELECT writer_epoch FROM ingest_state").fetchone()
            if epoch != self.epoch:
                raise StoreFenced(
                    f"another worker took the store over (epoch {epoch}; ours was {self.epoch})"
                )
            yield conn
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        self.wal_cap.after_commit()

    # --- retention (ingest/archived.py asks; only the writer changes the store) -------------------

    def mark_archived(self, task_id: str, latest_seq: int) -> bool:
        """The task's archive holds seq 1..latest_seq: if the task has ended there (no late event
        since), it is archived from now on and its rows are queued for removal. False if it is not."""
        with self.fenced() as conn:
            row = conn.execute(
                "SELECT latest_seq, status, archived FROM tasks WHERE task_id = ?", (task_id,)
            ).fetchone()
            if row is None or row[0] != latest_seq or row[1] == "running" or row[2] != 0:
                return False
            (failed,) = conn.execute(
                "SELECT count(*) FROM spans INDEXED BY idx_spans_failed"
                " WHERE task_id = ? AND state = 'failed'",
                (task_id,),
            ).fetchone()
            conn.execute(
                "UPDATE tasks SET archived = 1, archived_failed = ? WHERE task_id = ?", (failed, task_id)
            )
            conn.execute(
                "INSERT OR IGNORE INTO archive_pending (task_id, last_seq) VALUES (?, ?)",
                (task_id, latest_seq),
            )
        self._latest.pop(task_id, None)  # its next event must find it archived
        return True

    def drop_archived_rows(self, limit: int) -> int:
        """Remove up to `limit` rows of archived tasks not yet emptied; returns how many (0: none left)."""
        with self.fenced() as conn:
            dropped = 0
            pending = conn.execute("SELECT task_id, last_seq FROM archive_pending LIMIT 8").fetchall()
            for task_id, last_seq in pending:
                events = conn.execute(
                    "DELETE FROM task_events WHERE event_id IN "
                    "(SELECT event_id FROM task_events WHERE task_id = ? AND seq <= ? LIMIT ?)",
                    (task_id, last_seq, limit - dropped),
                ).rowcount
                dropped += events
                if dropped < limit:
                    dropped += conn.execute(
                        "DELETE FROM spans WHERE task_id = ? AND span_id IN "
                        "(SELECT span_id FROM spans WHERE task_id = ? AND last_seq <= ? LIMIT ?)",
                        (task_id, task_id, last_seq, limit - dropped),
                    ).rowcount
                if dropped < limit:  # both emptied
                    conn.execute("DELETE FROM archive_pending WHERE task_id = ?", (task_id,))
                if dropped >= limit:
                    break
        return dropped

    def archived_backlog(self) -> int:
        """About how many rows of archived tasks wait to be removed (each waiting task counted whole:
        a task partly removed counts a little high)."""
        (rows,) = self._conn.execute("SELECT total(last_seq) FROM archive_pending").fetchone()
        return int(rows)

    def reclaim(self, pages: int, keep: float = 0.0) -> int:
        """Give up to `pages` free pages back to the file system (incremental vacuum), keeping `keep`
        of the file's pages free for inserts to reuse; returns how many free pages are still beyond
        that. Its own small transaction: a bounded amount of WAL, never a full VACUUM."""
        conn = self._conn

        def spare() -> int:
            (free,) = conn.execute("PRAGMA freelist_count").fetchone()
            (total,) = conn.execute("PRAGMA page_count").fetchone()
            return max(0, int(free) - int(total * keep))

        if (extra := spare()) > 0:
            # executescript steps the pragma to its end: execute() would free one page a call.
            conn.executescript(f"PRAGMA incremental_vacuum({min(int(pages), extra)});")
            self.wal_cap.after_commit()
            extra = spare()
        return extra

    def restore(self, task_id: str, rows: TaskRows) -> bool:
        """Put an archived task's rows back (those still in the store are kept); False if it is not
        archived."""
        with self.fenced() as conn:
            row = conn.execute("SELECT archived FROM tasks WHERE task_id = ?", (task_id,)).fetchone()
            if row is None or row[0] == 0:
                return False
            self._put_back(conn, task_id, rows)
        return True

    def _put_back(self, conn: sqlite3.Connection, task_id: str, rows: TaskRows) -> None:
        """Raises ArchiveError, with nothing changed, if the rows do not fit the store."""
        conn.execute("SAVEPOINT put_back")
        try:
            insert_rows(conn, rows, task_row=False)  # the task row is the store's: it may be newer
        except sqlite3.Error as exc:
            conn.execute("ROLLBACK TO put_back")
            conn.execute("RELEASE put_back")
            raise ArchiveError(f"its rows do not fit the store: {exc}") from None
        conn.execute("RELEASE put_back")
        conn.execute("UPDATE tasks SET archived = 0, archived_failed = NULL WHERE task_id = ?", (task_id,))
        conn.execute(
            "INSERT OR REPLACE INTO task_restores (task_id, restored_at) VALUES (?, ?)",
            (task_id, format_ms(time.time_ns())),
        )
        conn.execute("DELETE FROM archive_pending WHERE task_id = ?", (task_id,))

    def _bring_back(self, task_ids: Iterable[str]) -> None:
        """Restore, inside the batch's transaction, the archived tasks among `task_ids`. One whose archive
        cannot be read stays archived (logged), and none of its rows are removed any more: its late
        events are stored after the archived seqs all the same (never removed: only seqs up to the
        archive's are), and `taskevents restore` brings the archive's events back once it can be read."""
        ids = list(task_ids)
        if not ids:
            return
        archived = self._conn.execute(
            "SELECT task_id, latest_seq FROM tasks"
            " WHERE archived = 1 AND task_id IN (SELECT value FROM json_each(?))",
            (orjson.dumps(ids),),
        ).fetchall()
        for task_id, latest_seq in archived:
            try:
                if self.archive is None:
                    raise ArchiveError("no archive directory configured")
                self._put_back(self._conn, task_id, self.archive.read(task_id))
            except ArchiveError as exc:
                log.error("a late event for archived task %r, whose archive cannot be read: %s", task_id, exc)
                self._conn.execute("DELETE FROM archive_pending WHERE task_id = ?", (task_id,))
                continue
            log.info("task %r restored from its archive (seq 1..%d) for a late event", task_id, latest_seq)

    def _drop_duplicates(self, batch: Sequence[Decoded]) -> list[Decoded]:
        """Events whose event_uid is already stored, or repeated in this batch, are stored once."""
        uids = [d.event.event_uid for d in batch if d.event.event_uid is not None]
        if not uids:
            return list(batch)
        seen = {
            row[0]
            for row in self._conn.execute(
                "SELECT event_uid FROM task_events WHERE event_uid IN (SELECT value FROM json_each(?))",
                (orjson.dumps(uids),),
            )
        }
        return _first_of_each_uid(batch, seen)

    def _load_latest(self, task_ids: Iterable[str]) -> dict[str, int | None]:
        """Latest committed seq of each task; None for a task the store has never seen."""
        latest, missing = cached_latest(self._latest, task_ids)
        if missing:
            found = dict(
                self._conn.execute(
                    "SELECT task_id, latest_seq FROM tasks WHERE task_id IN (SELECT value FROM json_each(?))",
                    (orjson.dumps(missing),),
                ).fetchall()
            )
            for task_id in missing:
                latest[task_id] = found.get(task_id)
        return latest

    def prepare(self, batch: Sequence[Decoded], base: dict[str, int | None]) -> Prepared:
        """`prepare_batch`: none of this writer's state, so the worker's thread runs it while the
        batch before commits here."""
        return prepare_batch(batch, base)

    def _write_prepared(self, prepared: Prepared) -> bool:
        """Write a prepared batch if its base is the store's and none of its events is stored yet;
        False, with nothing written, if not (the caller plans it again)."""
        if self._load_latest(prepared.base) != prepared.base:
            return False
        conn = self._conn
        conn.execute("SAVEPOINT prepared")
        try:
            for statement in prepared.statements:
                conn.execute(*statement)
        except sqlite3.IntegrityError as exc:
            # The unique index on event_uid finds a repeat of a stored event without a read of its
            # own; any other constraint met is the store's fault, as in the batch planned here.
            if exc.sqlite_errorname != "SQLITE_CONSTRAINT_UNIQUE" or "task_events.event_uid" not in str(exc):
                raise
            conn.execute("ROLLBACK TO prepared")
            conn.execute("RELEASE prepared")
            return False
        conn.execute("RELEASE prepared")
        return True


def prepare_batch(batch: Sequence[Decoded], base: dict[str, int | None]) -> Prepared:
    """Plan `batch` from `base` (naming every task of the batch) and build its statements for
    StoreWriter.commit: pure Python, no connection, no cache."""
    created_at = format_ms(time.time_ns())
    # The batch's own repeats; those of stored events are the commit's to find (the unique index).
    rows, task_changes, span_changes = plan(_first_of_each_uid(batch, set()), base, created_at)
    return Prepared(
        base={t: base[t] for t in task_changes},
        created_at=created_at,
        fresh=len(rows),
        tasks={t: (c.first_seq, c.last_seq) for t, c in task_changes.items()},
        task_changes=task_changes,
        statements=_statements(rows, task_changes, span_changes.values(), created_at),
    )


def _first_of_each_uid(batch: Sequence[Decoded], seen: set[str]) -> list[Decoded]:
    """The batch without the events whose event_uid is in `seen` or came earlier in it (`seen`
    takes the batch's uids)."""
    fresh = []
    for d in batch:
        uid = d.event.event_uid
        if uid is not None:
            if uid in seen:
                continue
            seen.add(uid)
        fresh.append(d)
    return fresh


def _statements(
    rows: Sequence[tuple[object, ...]], tasks: dict[str, TaskChange], spans: Iterable[SpanChange], at: str
) -> list[tuple[str, list[Any]]]:
    """A batch's statements: its events, its tasks' summaries and its spans', in multi-row chunks."""
    new = [
        (tid, c.last_seq, c.count, at, at, c.phase, c.status or "running", c.exit_reason)
        for tid, c in tasks.items()
        if not c.existing
    ]
    old = [
        (tid, c.last_seq, c.count, at, c.phase, c.status, c.reason_changed, c.exit_reason)
        for tid, c in tasks.items()
        if c.existing
    ]
    out = _chunked(rows, _ROWS_PER_INSERT, _insert_events_sql)
    out += _chunked(new, _TASKS_PER_STATEMENT, _insert_tasks_sql)
    out += _chunked(old, _TASKS_PER_STATEMENT, _update_tasks_sql)
    for state_changed, span_values in span_rows(spans, at).items():
        out += _chunked(
            span_values, _ROWS_PER_UPSERT, functools.partial(_upsert_spans_sql, state_changed=state_changed)
        )
    return out


def _chunked(
    rows: Sequence[tuple[object, ...]], size: int, sql: Callable[[int], str]
) -> list[tuple[str, list[Any]]]:
    """Multi-row statements of up to `size` rows: fixed sizes keep them in the statement cache."""
    out = []
    for start in range(0, len(rows), size):
        chunk = rows[start : start + size]
        out.append((sql(len(chunk)), list(itertools.chain.from_iterable(chunk))))
    return out
