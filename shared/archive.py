"""Archives of ended tasks: one zstd-compressed JSON Lines file per task, with a manifest beside it.

A task's archive holds its rows exactly as the store had them, so that a restore puts back the same
rows and a read answers the same JSON: line 1 is the `tasks` row (`"kind": "task"`), then its `spans`
rows (`"kind": "span"`), then its events in seq order (`"kind": "event"`), each event's `payload` its
stored JSON text verbatim (the line's last member), so `zstdcat F | jq 'select(.kind == "event")'`
reads it. The manifest (`*.manifest.json`, plain JSON) names the task, its seq range, event and span
counts, the file's size and its SHA-256: enough to list archives and to check one without opening it.

Where the files go is a `BlobStore`: put, get, list and delete of whole objects by name, each `put`
durable and atomic when it returns. `DirectoryStore` keeps them under a directory (written to a
temporary name, fsynced, renamed, the directory fsynced). An object store fits the same four calls
(S3's PutObject is atomic and durable when it answers; GetObject, ListObjectsV2, DeleteObject), so
adding one is a class of its own and nothing else changes.

Names: `tasks/<h[:2]>/<h>.jsonl.zst` where h is the SHA-256 of the task id (any characters, any
length, evenly spread over 256 folders), the manifest at the same name with `.manifest.json`.
"""

import hashlib
import os
import sqlite3
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Final, Protocol

import orjson
import zstandard

FORMAT: Final = 1
LEVEL: Final = 9  # zstd level: ~2x smaller than level 3 on event JSON, still ~100 MB/s to write here
MAX_ARCHIVE_BYTES: Final = 4 * 1024**3  # a decompressed archive larger than this is refused as corrupt


class ArchiveError(Exception):
    """An archive cannot be read as it should: missing, corrupt, or not what its manifest says."""


class ArchiveMissing(ArchiveError):
    """No archive (or no manifest) under that name."""


class BlobStore(Protocol):
    """Whole objects by name. `put` is atomic and durable when it returns."""

    def put(self, name: str, data: bytes) -> None: ...

    def get(self, name: str) -> bytes: ...  # raises ArchiveMissing

    def list(self, prefix: str) -> Iterator[str]: ...

    def delete(self, name: str) -> None: ...


class DirectoryStore:
    """Objects as files under `root`: written to a temporary file, fsynced, renamed into place, the
    folder fsynced, so a crash leaves the old object or the new one, never a part."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def _path(self, name: str) -> Path:
        if name.startswith("/") or ".." in name.split("/"):
            raise ValueError(f"not an object name: {name!r}")
        return self.root / name

    def put(self, name: str, data: bytes) -> None:
        path = self._path(name)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as out:
                out.write(data)
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        _fsync_dir(path.parent)

    def get(self, name: str) -> bytes:
        try:
            return self._path(name).read_bytes()
        except FileNotFoundError:
            raise ArchiveMissing(f"no archive file {self._path(name)}") from None
        except OSError as exc:
            raise ArchiveError(f"cannot read {self._path(name)}: {exc}") from None

    def list(self, prefix: str) -> Iterator[str]:
        base = self._path(prefix) if prefix else self.root
        if not base.is_dir():
            return
        for path in sorted(base.rglob("*")):
            if path.is_file() and not path.name.startswith("."):
                yield path.relative_to(self.root).as_posix()

    def delete(self, name: str) -> None:
        self._path(name).unlink(missing_ok=True)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@dataclass(frozen=True, slots=True)
class Manifest:
    task_id: str
    first_seq: int
    last_seq: int
    event_count: int
    span_count: int
    status: str
    last_at: str
    archived_at: str
    size: int  # of the archive file, bytes
    sha256: str
    file: str
    format: int = FORMAT

    def to_json(self) -> bytes:
        return orjson.dumps(asdict(self), option=orjson.OPT_INDENT_2)

    @classmethod
    def from_json(cls, data: bytes) -> "Manifest":
        try:
            obj = orjson.loads(data)
            return cls(**obj)
        except (orjson.JSONDecodeError, TypeError) as exc:
            raise ArchiveError(f"not a manifest: {exc}") from None


@dataclass(frozen=True, slots=True)
class TaskRows:
    """A task's rows as the store holds them: column name -> value, events in seq order; each event's
    payload is its stored JSON text."""

    task: dict[str, Any]
    spans: list[dict[str, Any]]
    events: list[dict[str, Any]]

    @property
    def task_id(self) -> str:
        return str(self.task["task_id"])


def read_rows(conn: Any, task_id: str) -> TaskRows | None:
    """The task's rows, read in the caller's transaction (one snapshot); None if the store has none.
    `conn`: a sqlite3 connection, or a psycopg one (a PostgreSQL store: the same tables)."""
    mark = "?" if isinstance(conn, sqlite3.Connection) else "%s"

    def rows(sql: str) -> list[dict[str, Any]]:
        cur = conn.execute(sql.replace("?", mark), (task_id,))
        names = [d[0] for d in cur.description]
        return [dict(zip(names, row, strict=True)) for row in cur]

    tasks = rows("SELECT * FROM tasks WHERE task_id = ?")
    if not tasks:
        return None
    # Spans by span_id in code point order on both stores (SQLite's text order), so that an archive
    # written from either has its rows in the same order.
    order = "" if mark == "?" else ' COLLATE "C"'
    spans = rows(f"SELECT * FROM spans WHERE task_id = ? ORDER BY span_id{order}")
    events = rows("SELECT * FROM task_events WHERE task_id = ? ORDER BY seq")
    return TaskRows(tasks[0], spans, events)


def insert_rows(conn: sqlite3.Connection, rows: TaskRows, *, task_row: bool = True) -> None:
    """Put a task's rows (back) into a store, in the caller's transaction; rows already there (by
    their keys) are kept as they are."""
    if task_row:
        _insert(conn, "tasks", [rows.task])
    _insert(conn, "spans", rows.spans)
    _insert(conn, "task_events", rows.events)


def _insert(conn: sqlite3.Connection, table: str, rows: Sequence[dict[str, Any]]) -> None:
    if not rows:
        return
    names = list(rows[0])
    columns = {row[1] for row in conn.execute(f"PRAGMA table_info({table})")}
    if not set(names) <= columns or any(list(row) != names for row in rows):
        raise ArchiveError(
            f"{table} rows with columns the store does not have: {sorted(set(names) - columns)}"
        )
    sql = f"INSERT OR IGNORE INTO {table} ({', '.join(names)}) VALUES ({', '.join('?' * len(names))})"
    conn.executemany(sql, [[row[n] for n in names] for row in rows])


def key(task_id: str) -> str:
    h = hashlib.sha256(task_id.encode()).hexdigest()
    return f"tasks/{h[:2]}/{h}.jsonl.zst"


def manifest_key(task_id: str) -> str:
    return key(task_id).removesuffix(".jsonl.zst") + ".manifest.json"


def encode(rows: TaskRows) -> bytes:
    """The archive's JSON Lines, uncompressed."""
    out = [orjson.dumps({"kind": "task", **rows.task})]
    out += [orjson.dumps({"kind": "span", **span}) for span in rows.spans]
    for event in rows.events:
        out.append(_event_line(event))
    return b"\n".join(out) + b"\n"


def _event_head(event: dict[str, Any]) -> bytes:
    fields = {"kind": "event", **{k: v for k, v in event.items() if k != "payload"}}
    return orjson.dumps(fields)[:-1] + b',"payload":'


def _event_line(event: dict[str, Any]) -> bytes:
    return _event_head(event) + str(event["payload"]).encode() + b"}"


def decode(data: bytes) -> TaskRows:
    """Rows back from the JSON Lines; raises ArchiveError if they are not a task's archive."""
    lines = data.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    task: dict[str, Any] | None = None
    spans: list[dict[str, Any]] = []
    events: list[dict[str, Any]] = []
    for number, line in enumerate(lines, 1):
        try:
            obj = orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            raise ArchiveError(f"line {number} is not JSON: {exc}") from None
        kind = obj.pop("kind", None) if isinstance(obj, dict) else None
        if kind == "task" and number == 1:
            task = obj
        elif kind == "span" and task is not None and not events:
            spans.append(obj)
        elif kind == "event" and task is not None:
            payload = obj.get("payload")
            obj["payload"] = None  # placeholder, so the head is rebuilt with the members in order
            head = _event_head(obj)
            if not (line.startswith(head) and line.endswith(b"}")) or payload is None:
                raise ArchiveError(f"line {number}: an event line of another shape")
            obj["payload"] = line[len(head) : -1].decode()  # the stored text, byte for byte
            events.append(obj)
        else:
            raise ArchiveError(f"line {number}: unexpected {kind!r} line")
    if task is None:
        raise ArchiveError("no task line")
    return TaskRows(task, spans, events)


def check(rows: TaskRows, manifest: Manifest) -> None:
    """The rows are the manifest's task, with every seq from 1 to its last exactly once (a task is
    archived whole)."""
    seqs = [e["seq"] for e in rows.events]
    if rows.task_id != manifest.task_id or any(e["task_id"] != manifest.task_id for e in rows.events):
        raise ArchiveError(f"the archive is not of task {manifest.task_id!r}")
    whole = manifest.first_seq == 1 and len(seqs) == manifest.event_count
    if not whole or seqs != list(range(1, manifest.last_seq + 1)):
        raise ArchiveError(f"the archive's events are not seq 1..{manifest.last_seq}, each once")
    if len(rows.spans) != manifest.span_count:
        raise ArchiveError(f"the archive has {len(rows.spans)} spans, its manifest {manifest.span_count}")


class TaskArchive:
    """Tasks' archives in a BlobStore."""

    def __init__(self, blobs: BlobStore) -> None:
        self.blobs = blobs

    @classmethod
    def at(cls, directory: Path) -> "TaskArchive":
        return cls(DirectoryStore(directory))

    def write(self, rows: TaskRows, archived_at: str) -> Manifest:
        """Write a task's archive and its manifest, durably, then read both back and check them.
        Writing the same rows again writes the same archive (idempotent)."""
        events = rows.events
        if not events:
            raise ValueError(f"task {rows.task_id!r} has no events to archive")
        data = zstandard.ZstdCompressor(level=LEVEL).compress(encode(rows))
        manifest = Manifest(
            task_id=rows.task_id,
            first_seq=int(events[0]["seq"]),
            last_seq=int(events[-1]["seq"]),
            event_count=len(events),
            span_count=len(rows.spans),
            status=str(rows.task["status"]),
            last_at=str(rows.task["last_at"]),
            archived_at=archived_at,
            size=len(data),
            sha256=hashlib.sha256(data).hexdigest(),
            file=key(rows.task_id),
        )
        check(rows, manifest)
        self.blobs.put(manifest.file, data)
        self.blobs.put(manifest_key(rows.task_id), manifest.to_json())
        back = self.read(rows.task_id)  # verified by reading it back, as a restore would
        if back != rows:
            raise ArchiveError(f"the archive of {rows.task_id!r} does not read back as written")
        return manifest

    def manifest(self, task_id: str) -> Manifest:
        manifest = Manifest.from_json(self.blobs.get(manifest_key(task_id)))
        if manifest.task_id != task_id:
            raise ArchiveError(f"the manifest for {task_id!r} is of {manifest.task_id!r}")
        return manifest

    def verified(self, task_id: str) -> Manifest:
        """The manifest, once the archive file is checked against it (size, SHA-256) without decoding
        it: what the worker checks before it removes rows (the pass decoded it when it wrote it)."""
        manifest = self.manifest(task_id)
        self._data(manifest)
        return manifest

    def _data(self, manifest: Manifest) -> bytes:
        data = self.blobs.get(manifest.file)
        if len(data) != manifest.size or hashlib.sha256(data).hexdigest() != manifest.sha256:
            raise ArchiveError(f"the archive of {manifest.task_id!r} does not match its manifest's SHA-256")
        return data

    def read(self, task_id: str) -> TaskRows:
        """The task's rows; raises ArchiveMissing or ArchiveError (checksum, shape, seqs)."""
        manifest = self.manifest(task_id)
        data = self._data(manifest)
        try:
            text = zstandard.ZstdDecompressor().decompress(data, max_output_size=MAX_ARCHIVE_BYTES)
        except zstandard.ZstdError as exc:
            raise ArchiveError(f"the archive of {task_id!r} is not zstd: {exc}") from None
        try:
            rows = decode(text)
            check(rows, manifest)
        except (KeyError, TypeError, ValueError) as exc:  # a line without the fields a row needs
            raise ArchiveError(f"the archive of {task_id!r} is not a task's rows: {exc!r}") from None
        return rows

    def manifests(self) -> Iterator[Manifest]:
        for name in self.blobs.list("tasks"):
            if name.endswith(".manifest.json"):
                try:
                    yield Manifest.from_json(self.blobs.get(name))
                except ArchiveError:
                    continue  # listed by the pass's check instead

    def delete(self, task_id: str) -> None:
        self.blobs.delete(manifest_key(task_id))
        self.blobs.delete(key(task_id))
