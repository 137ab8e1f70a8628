"""Process settings, read from TASKEVENTS_* environment variables when an object or process starts.

`ProducerSettings` holds what a runner's emitter reads; `Settings` (every process of the service)
adds the rest. Each field's default is written once, here: the emitter, the tail client and the
commands take a value they were not given from the environment through these classes, never from a
keyword default of their own.
"""

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar, cast
from urllib.parse import urlsplit

from pydantic import BeforeValidator, Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict
from redis.connection import parse_url

from taskevents.keys import partition_queue

ENV_PREFIX = "TASKEVENTS_"


def check_redis_url(url: str) -> str:
    """The URL as redis-py will read it, or ValueError: a mistake fails where it is made, not in a
    background thread later (`localhost:6379` without `redis://` is the usual one)."""
    try:
        parse_url(url)  # type: ignore[no-untyped-call]
    except ValueError as exc:
        raise ValueError(f"not a Redis URL ({exc}): {url!r}") from None
    path = urlsplit(url).path.strip("/")
    if url.startswith(("redis://", "rediss://")) and path and not path.isdigit():
        raise ValueError(f"not a Redis URL (the database must be a number, not {path!r}): {url!r}")
    return url


def check_http_url(url: str) -> str:
    if not url.startswith(("http://", "https://")) or len(url.split("://", 1)[1].strip("/")) == 0:
        raise ValueError(f"not an http:// or https:// URL: {url!r}")
    return url.rstrip("/")


_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(value: object) -> float:
    """Seconds from `30d`, `12h`, `15m`, `45s` or a plain number of seconds; ValueError otherwise."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        seconds = float(value)
    else:
        match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*", str(value))
        if match is None:
            raise ValueError(f"not a duration (e.g. 30d, 12h, 15m, 45s): {value!r}")
        seconds = float(match[1]) * _UNITS[match[2] or "s"]
    if seconds < 0:
        raise ValueError(f"a duration is not negative: {value!r}")
    return seconds


Duration = Annotated[float, BeforeValidator(parse_duration)]


def _text(default: str) -> float:
    return cast(float, default)


class ProducerSettings(BaseSettings):
    """What an emitter needs: where to push and how much to keep. Built when an Emitter is."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, frozen=True, extra="ignore")

    redis_url: str = Field("redis://localhost:6379/0", description="Redis holding the queue.")
    queue: str = Field("taskevents:events", min_length=1, description="Redis list the producers push to.")
    partitions: int = Field(
        1,
        ge=1,
        le=4096,
        description="Partitions of the queue, fixed for a deployment: a task's events go to partition "
        "crc32(task_id) % N, list `{<queue>:<P>}` (one partition: the queue itself).",
    )
    max_payload_bytes: int = Field(
        64 * 1024, ge=1024, description="Largest payload accepted, as serialized JSON bytes."
    )
    emitter_buffer: int = Field(
        100_000, ge=1, description="Events an emitter keeps while Redis is unreachable."
    )
    flush_timeout: float = Field(5.0, ge=0, description="Seconds an emitter may spend flushing at exit.")

    @field_validator("redis_url")
    @classmethod
    def _redis_url(cls, value: str) -> str:
        return check_redis_url(value)


class ApiClientSettings(BaseSettings):
    """What a client of the read API needs (the tail client)."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, frozen=True, extra="ignore")

    api_url: str = Field(
        "http://127.0.0.1:8000", description="The API `taskevents tail` and `TaskTail` read."
    )

    @field_validator("api_url")
    @classmethod
    def _api_url(cls, value: str) -> str:
        return check_http_url(value)


def _store_location(value: object) -> object:
    """A path object as its string: TASKEVENTS_DB is a file or a URL, compared as text."""
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, str) and is_postgres_url(value):
        check_postgres_url(value)
    return value


def is_postgres_url(db: object) -> bool:
    return isinstance(db, str) and db.startswith(("postgresql://", "postgres://"))


def check_postgres_url(url: str) -> str:
    """The URL or ValueError: it must name a database, as libpq reads it."""
    parts = urlsplit(url)
    if not parts.path.strip("/"):
        shown = url.replace(f":{parts.password}@", ":***@", 1) if parts.password else url
        raise ValueError(f"not a PostgreSQL URL with a database name (postgresql://host/db): {shown!r}")
    return url


def masked(url: str) -> str:
    """A URL with its password, if any, shown as ***."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    return parts._replace(netloc=parts.netloc.replace(f":{parts.password}@", ":***@", 1)).geturl()


class StoreKindError(ValueError):
    """A command that works on one kind of store was given the other (SQLite file vs PostgreSQL)."""


class Settings(ProducerSettings, ApiClientSettings):
    """Built once per process (`Settings()`) and passed down; nothing reads the environment at import."""

    db: Annotated[str, BeforeValidator(_store_location)] = Field(
        "taskevents.db",
        description="The store: a SQLite file (the embedded default) or a `postgresql://` URL "
        "(docs/scaling.md).",
    )
    db_read_url: str | None = Field(
        None,
        description="A PostgreSQL replica of TASKEVENTS_DB the API reads from (the live stream waits for "
        "it to replay each commit, at most TASKEVENTS_REPLICA_WAIT, then reads the primary).",
    )
    replica_wait: float = Field(
        0.5,
        ge=0,
        description="Seconds the live stream waits for the replica to replay a commit before it reads "
        "the primary instead.",
    )

    batch_size: int = Field(
        5000, ge=1, le=20_000, description="Most events the worker commits in one transaction."
    )
    sqlite_synchronous: Literal["NORMAL", "FULL"] = Field(
        "NORMAL",
        description="SQLite `synchronous` of the worker: FULL also survives a power loss "
        "(docs/reliability.md).",
    )
    checkpoint_interval: float = Field(
        0.25,
        ge=0,
        description="Seconds between the worker's WAL checkpoints, run on a thread of their own so "
        "that no commit waits for one (docs/reliability.md); 0 leaves them to SQLite, inside the "
        "commit that crosses 64 MiB of WAL.",
    )
    max_attempts: int = Field(
        3,
        ge=1,
        description="Worker crashes a batch may cause before its events are retried one at a time "
        "(and one event alone, before it is dead-lettered as `poison`).",
    )
    heartbeat_ttl: float = Field(
        5.0,
        gt=0,
        description="Seconds the worker's heartbeat and lease live: `ingest --check` fails, and a standby "
        "takes over, this long after the worker stops refreshing them.",
    )
    log_level: str = Field("INFO", description="Python logging level name.")
    # The read API (api/).
    query_timeout: float = Field(
        5.0,
        gt=0,
        description="Seconds one read of the API may run before it is stopped (503 `query_timeout`).",
    )
    api_host: str = Field(
        "127.0.0.1", min_length=1, description="Address `taskevents api` listens on (compose: 0.0.0.0)."
    )
    api_port: int = Field(8000, ge=0, le=65535, description="Port `taskevents api` listens on.")
    api_workers: int = Field(
        1,
        ge=1,
        le=64,
        description="API processes `taskevents api` runs on its port, each with its own live feed.",
    )
    # The live stream (api/live.py, api/stream.py).
    stream_buffer: int = Field(
        1000, ge=1, description="Events a live client may have queued; past it, it catches up from the store."
    )
    stream_ping: float = Field(
        15.0, gt=0, description="Seconds between keep-alive comments on an SSE stream."
    )
    stream_retry_ms: int = Field(
        2000, ge=0, description="The `retry:` sent to SSE clients (reconnect delay, ms)."
    )
    stream_send_timeout: float = Field(
        30.0, gt=0, description="Seconds a send may block before a client that stopped reading is dropped."
    )
    stream_idle: float = Field(
        600.0, gt=0, description="Seconds a stream waits for the first event of a task not seen yet."
    )
    stream_poll: float = Field(
        5.0,
        gt=0,
        description="Seconds without a notification after which streamed tasks are checked in the store.",
    )
    # Retention (ingest/retention.py, the `jobs` process). A duration's default is text, parsed like
    # any value (pydantic validates defaults here); `_text` only tells mypy so.
    retention: Duration = Field(
        _text("30d"),
        description="An ended task with no event for this long is archived (30d, 12h, 15m, 45s).",
    )
    archive_dir: Path = Field(
        Path("data/archive"), description="Where task archives and old dead letters go."
    )
    archive_every: Duration = Field(
        _text("1h"), gt=0, description="How often the `jobs` process runs an archive pass."
    )
    dead_retention: Duration = Field(
        _text("7d"), description="Dead letters older than this are moved to a file in the archive directory."
    )
    partition: int = Field(
        0, ge=0, description="The queue partition a worker consumes (`taskevents ingest --partition`)."
    )
    # Local runs only.
    redis_dir: Path = Field(
        Path("data/redis"), description="Where `taskevents redis` keeps its append-only file."
    )

    @field_validator("db_read_url")
    @classmethod
    def _read_url(cls, value: str | None) -> str | None:
        if value is None or value == "":
            return None
        if not is_postgres_url(value):
            raise ValueError("must be a postgresql:// URL: a replica of the PostgreSQL store")
        return check_postgres_url(value)

    @model_validator(mode="after")
    def _replica_of_postgresql(self) -> "Settings":
        if self.db_read_url is not None and not self.postgres:
            raise ValueError(
                "TASKEVENTS_DB_READ_URL needs TASKEVENTS_DB to be a PostgreSQL URL (its primary)"
            )
        return self

    @model_validator(mode="after")
    def _partition_in_range(self) -> "Settings":
        if self.partition >= self.partitions:
            raise ValueError(
                f"partition {self.partition} of {self.partitions}: must be 0 to {self.partitions - 1}"
            )
        return self

    @property
    def postgres(self) -> bool:
        """The store is PostgreSQL (TASKEVENTS_DB is a `postgresql://` URL)."""
        return is_postgres_url(str(self.db))

    @property
    def sqlite_path(self) -> Path:
        """The SQLite file of the store; StoreKindError when the store is PostgreSQL."""
        if self.postgres:
            raise StoreKindError(
                "TASKEVENTS_DB is a PostgreSQL URL, and this part of taskevents reads SQLite stores only "
                "so far (docs/scaling.md says what runs on PostgreSQL)"
            )
        return Path(self.db)

    @property
    def store_name(self) -> str:
        """TASKEVENTS_DB as logs may show it: a URL's password masked."""
        return masked(str(self.db)) if self.postgres else str(self.db)

    @property
    def replica_name(self) -> str | None:
        """TASKEVENTS_DB_READ_URL as logs may show it."""
        return None if self.db_read_url is None else masked(self.db_read_url)

    def check_partitions(self) -> None:
        """ValueError if the store cannot take the partitioning: a SQLite file has one writer. Asked
        by the worker and the API, not at construction: a producer needs only N, not the store."""
        if self.partitions > 1 and not self.postgres:
            raise ValueError(
                f"{self.partitions} partitions (TASKEVENTS_PARTITIONS) need a PostgreSQL store "
                "(TASKEVENTS_DB=postgresql://…): a SQLite file has one writer, so its queue has one partition"
            )

    @property
    def partition_queue(self) -> str:
        """The Redis list of this worker's partition (the queue itself with one partition)."""
        return partition_queue(self.queue, self.partition, self.partitions)


def settings_error(exc: ValidationError, names: Mapping[str, str] | None = None) -> str:
    """`redis_url (TASKEVENTS_REDIS_URL): not a Redis URL …; …`: one clause per malformed setting,
    named as the caller's argument (`names` maps setting -> argument) and as its variable."""
    parts = []
    for err in exc.errors(include_url=False):
        field = ".".join(str(p) for p in err["loc"]) or "settings"
        arg = (names or {}).get(field, field)
        msg = str(err["msg"]).removeprefix("Value error, ")
        parts.append(f"{arg} ({ENV_PREFIX}{field.upper()}): {msg}")
    return "; ".join(parts)


S = TypeVar("S", bound=BaseSettings)


def build(cls: type[S], names: Mapping[str, str] | None = None, **given: Any) -> S:
    """`cls` from the environment, with the arguments that were given (not None) winning.

    Raises ValueError naming the setting when a value, given or from the environment, is malformed.
    """
    try:
        return cls(**{name: value for name, value in given.items() if value is not None})
    except ValidationError as exc:
        raise ValueError(settings_error(exc, names)) from None
