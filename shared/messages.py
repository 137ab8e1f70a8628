"""The messages that cross between processes, each defined once, here, and used by both sides.

- `CommitNotice`: written by the worker after each commit, published on `<queue>:commits`, read by
  every API process's live hub.
- `Heartbeat`: written by the active worker at least every TTL/3 to `<queue>:worker:heartbeat` (it
  expires), read by `ingest --check`, /api/ready and /metrics.
- `WorkerStats`: counted by the worker at each acknowledgement (HINCRBY) in the hash
  `<queue>:worker:stats`, read by /api/ready and /metrics.
- `ControlRequest`: pushed by an archive pass or `taskevents restore` to `<queue>:control`, applied
  by the worker, the store's one writer (ingest/archived.py).

A reader never trusts the bytes: `decode` raises ValueError for anything that is not the message, and
the reader decides what that means (a notification ignored, a heartbeat taken as absent).
"""

from collections.abc import Mapping
from typing import Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError

_Config = ConfigDict(frozen=True, extra="ignore")  # extra: a newer writer may add fields


def _decode(cls: type[BaseModel], data: bytes | str) -> Any:
    try:
        return cls.model_validate_json(data)
    except ValidationError as exc:
        raise ValueError(f"not a {cls.__name__}: {exc.error_count()} problems") from None


class CommitNotice(BaseModel):
    """One committed batch: which seqs of which tasks it stored (`[first, last]`, inclusive)."""

    model_config = _Config

    batch: int = Field(description="The batch id.")
    tasks: dict[str, tuple[int, int]] = Field(description="task_id -> (first seq, last seq) stored.")
    lsn: str | None = Field(
        None,
        description="PostgreSQL: the WAL position after the commit (`pg_current_wal_lsn()`), which a "
        "replica must have replayed to serve it. Absent for SQLite, and for a batch announced again "
        "after a crash.",
    )

    @classmethod
    def of(cls, batch: int, tasks: Mapping[str, tuple[int, int]], lsn: str | None = None) -> "CommitNotice":
        """Built by the worker from what it just committed: trusted, so not validated again."""
        return cls.model_construct(batch=batch, tasks=dict(tasks), lsn=lsn)

    def encode(self) -> bytes:
        if self.lsn is None:
            return orjson.dumps({"batch": self.batch, "tasks": self.tasks})
        return orjson.dumps({"batch": self.batch, "tasks": self.tasks, "lsn": self.lsn})

    @classmethod
    def decode(cls, data: bytes | str) -> "CommitNotice":
        notice: CommitNotice = _decode(cls, data)
        return notice


class WorkerStats(BaseModel):
    """The worker's running counters, summed over every worker the queue has had."""

    model_config = _Config

    ingested: int = Field(0, description="Events stored.")
    duplicates: int = Field(0, description="Events dropped as already stored (by event_uid).")
    dead_lettered: int = Field(0, description="Events set aside in <queue>:dead.")
    batches: int = Field(0, description="Batches acknowledged.")

    def __add__(self, other: "WorkerStats") -> "WorkerStats":
        return WorkerStats(**{name: getattr(self, name) + getattr(other, name) for name in self.counters()})

    @classmethod
    def counters(cls) -> tuple[str, ...]:
        """The hash's field names."""
        return tuple(cls.model_fields)

    def increments(self) -> dict[str, int]:
        """What to HINCRBY: the non-zero counters."""
        return {name: value for name, value in self.model_dump().items() if value}

    @classmethod
    def from_hash(cls, fields: Mapping[Any, Any]) -> "WorkerStats":
        """The counters in a Redis hash; a field that is not one of ours, or not a number, is skipped."""
        known = set(cls.counters())
        values: dict[str, int] = {}
        for raw_name, raw_value in fields.items():
            name = raw_name.decode("utf-8", "replace") if isinstance(raw_name, bytes) else str(raw_name)
            if name in known:
                try:
                    values[name] = int(raw_value)
                except ValueError:
                    continue
        return cls(**values)


class Heartbeat(WorkerStats):
    """The active worker's state: who it is, when it wrote this, its counters since it started, and
    why it cannot write the store, if it cannot (it then consumes nothing)."""

    pid: int
    host: str
    at: float = Field(description="Unix time the worker wrote it (by the worker's clock).")
    store_error: str | None = Field(None, description="Why the store cannot be written; null when it can.")

    def encode(self) -> bytes:
        return orjson.dumps(self.model_dump())

    @classmethod
    def decode(cls, data: bytes | str) -> "Heartbeat":
        beat: Heartbeat = _decode(cls, data)
        return beat


class ControlRequest(BaseModel):
    """A change to the store that only the worker may make.

    `archived`: the task's archive, written and verified, holds seq 1..`latest_seq` with this SHA-256;
    if the task still ends there, the worker marks it archived and removes its rows. `restore`: put
    the task's rows back from its archive. Both are idempotent: a request applied twice, or one that
    no longer fits the task (a late event arrived), changes nothing.
    """

    model_config = _Config

    op: Literal["archived", "restore"]
    task_id: str = Field(min_length=1)
    latest_seq: int | None = Field(None, ge=1, description="`archived`: the archive's last seq.")
    sha256: str | None = Field(None, description="`archived`: the archive file's SHA-256.")

    def encode(self) -> bytes:
        return orjson.dumps(self.model_dump(exclude_none=True))

    @classmethod
    def decode(cls, data: bytes | str) -> "ControlRequest":
        request: ControlRequest = _decode(cls, data)
        return request
