"""Process settings, read from TASKEVENTS_* environment variables when a process starts."""

from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Built once per process (`Settings()`) and passed down; nothing reads the environment at import."""

    model_config = SettingsConfigDict(env_prefix="TASKEVENTS_", frozen=True, extra="ignore")

    redis_url: str = Field("redis://localhost:6379/0", description="Redis holding the queue.")
    db: Path = Field(Path("taskevents.db"), description="SQLite file of the store.")
    queue: str = Field("taskevents:events", min_length=1, description="Redis list the producers push to.")
    batch_size: int = Field(
        5000, ge=1, le=20_000, description="Most events the worker commits in one transaction."
    )
    max_payload_bytes: int = Field(
        64 * 1024, ge=1024, description="Largest payload accepted, as serialized JSON bytes."
    )
    sqlite_synchronous: Literal["NORMAL", "FULL"] = Field(
        "NORMAL",
        description="SQLite `synchronous` of the worker: FULL also survives a power loss "
        "(docs/reliability.md).",
    )
    max_attempts: int = Field(
        3,
        ge=1,
        description="Worker crashes a batch may cause before its events are retried one at a time "
        "(and one event alone, before it is dead-lettered as `poison`).",
    )
    emitter_buffer: int = Field(
        100_000, ge=1, description="Events an emitter keeps while Redis is unreachable."
    )
    flush_timeout: float = Field(5.0, ge=0, description="Seconds an emitter may spend flushing at exit.")
    heartbeat_ttl: float = Field(
        10.0, gt=0, description="Seconds the worker heartbeat lives; `ingest --check` fails after it."
    )
    log_level: str = Field("INFO", description="Python logging level name.")
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
