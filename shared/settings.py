"""Process settings, read from TASKEVENTS_* environment variables when a process starts."""

from pathlib import Path

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
    emitter_buffer: int = Field(
        100_000, ge=1, description="Events an emitter keeps while Redis is unreachable."
    )
    flush_timeout: float = Field(5.0, ge=0, description="Seconds an emitter may spend flushing at exit.")
    heartbeat_ttl: float = Field(
        10.0, gt=0, description="Seconds the worker heartbeat lives; `ingest --check` fails after it."
    )
    log_level: str = Field("INFO", description="Python logging level name.")
