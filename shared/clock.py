"""One time format everywhere: ISO 8601, UTC, milliseconds, `Z` suffix."""

from datetime import UTC, datetime


def format_ms(epoch_ns: int) -> str:
    """`2026-11-25T05:55:33.123Z` for a `time.time_ns()` value."""
    dt = datetime.fromtimestamp(epoch_ns // 1_000_000 / 1000, UTC)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}Z"


def utc_now_ms() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
