"""The event: its wire format, its vocabulary and the rules every producer and the worker apply.

Producers push one JSON object per Redis list element (see README, "Wire format"). The same model
validates an event at the producer's call site and again in the worker, so both give the same
reason for the same mistake.
"""

import re
from typing import Annotated, Any, Final, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError

PHASES: Final = ("planning", "executing", "verifying", "recovery")
Phase = Literal["planning", "executing", "verifying", "recovery"]

# The vocabulary the convenience functions emit. Other snake_case types are stored too, so a runner
# can add its own without a release of the store.
EVENT_TYPES: Final = frozenset(
    {
        "runner_spawn",
        "runner_exit",
        "runner_heartbeat",
        "phase_enter",
        "phase_exit",
        "work_item_start",
        "work_item_progress",
        "work_item_complete",
        "work_item_failed",
        "checkpoint_commit",
        "checkpoint_verified",
        "checkpoint_invalid",
        "evidence_collected",
        "evidence_linked",
        "recovery_initiated",
        "recovery_checkpoint_loaded",
        "recovery_complete",
    }
)
CHECKPOINT_TYPES: Final = ("checkpoint_commit", "checkpoint_verified", "checkpoint_invalid")

# How an event changes the state of its span.
SPAN_OPENERS: Final = frozenset({"runner_spawn", "phase_enter", "work_item_start"})
SPAN_CLOSERS: Final = {
    "runner_exit": "closed",
    "phase_exit": "closed",
    "work_item_complete": "closed",
    "work_item_failed": "failed",
}

# How a runner_exit's payload decides the task's status (`exit_status`). Compared trimmed, lower case.
SUCCESS_OUTCOMES: Final = frozenset(
    {"succeeded", "success", "successful", "ok", "completed", "passed", "done"}
)
FAILURE_OUTCOMES: Final = frozenset(
    {"failed", "failure", "error", "errored", "cancelled", "canceled", "aborted", "killed", "crashed"}
    | {"timeout", "timed_out", "terminated", "rejected", "invalid"}
)

# Names and ids: printable, bounded. Control characters would break logs, SSE frames and terminals.
_PRINTABLE_CHARS: Final = r"[^\x00-\x1f\x7f]+"
PRINTABLE: Final = f"^{_PRINTABLE_CHARS}$"
NAME_MAX_LENGTH: Final = 128
_Name = Annotated[str, StringConstraints(min_length=1, max_length=NAME_MAX_LENGTH, pattern=PRINTABLE)]
# The rule for an event type (snake_case), shared with the API's event-type filters.
EventTypeName = Annotated[str, StringConstraints(max_length=64, pattern=r"^[a-z][a-z0-9]*(_[a-z0-9]+)*$")]
_Uid = Annotated[str, StringConstraints(min_length=1, max_length=64, pattern=r"^[0-9A-Za-z_-]+$")]
_Instant = Annotated[
    str, StringConstraints(pattern=r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,9})?(Z|\+00:00)$")
]


class WireEvent(BaseModel):
    """One event as a producer sends it. Unknown extra fields are ignored (newer producers)."""

    model_config = ConfigDict(strict=True, frozen=True, extra="ignore")

    task_id: _Name
    event_type: EventTypeName
    phase: Phase | None = None
    actor: Annotated[str, StringConstraints(min_length=1, max_length=64, pattern=PRINTABLE)]
    span_id: _Name
    parent_span_id: _Name | None = None
    payload: dict[str, Any] = Field(default_factory=dict)
    event_uid: _Uid | None = None
    emitted_at: _Instant | None = None


class BadEvent(ValueError):
    """An event the store will not take; `code` is stable, `reason` is for a person."""

    def __init__(self, code: str, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


def is_name(text: str) -> bool:
    """True if `text` could be a task or span id: what the store accepts (the API checks paths with it)."""
    # fullmatch, not PRINTABLE's `$`: Python's `$` also matches before a final newline.
    return len(text) <= NAME_MAX_LENGTH and re.fullmatch(_PRINTABLE_CHARS, text) is not None


def exit_status(payload: dict[str, Any]) -> str:
    """The status a `runner_exit` gives its task: `succeeded` or `failed`.

    1. `outcome`, a known word (SUCCESS_OUTCOMES, FAILURE_OUTCOMES; any case, spaces trimmed), decides.
    2. Else `exit_code`, an integer (or a string or float that is one: "0", 0.0), decides: 0 succeeded,
       anything else failed.
    3. Else: a payload that says nothing (neither key) succeeded, as a process that exits without
       reporting an error does; one that says something unreadable (an unknown outcome without an exit
       code, an exit_code that is not a number) failed: a success is never assumed from a word we do
       not know.
    """
    outcome = payload.get("outcome")
    word = outcome.strip().lower() if isinstance(outcome, str) else None
    if word in SUCCESS_OUTCOMES:
        return "succeeded"
    if word in FAILURE_OUTCOMES:
        return "failed"
    code = _integer(payload.get("exit_code"))
    if code is not None:
        return "succeeded" if code == 0 else "failed"
    if "exit_code" not in payload and outcome is None:
        return "succeeded"
    return "failed"


def exit_reason(payload: dict[str, Any]) -> str | None:
    """Why a run ended, in a few words, as the UI shows it: its explanation, else its error code,
    else its outcome, else a non-zero exit code; None when it said nothing."""
    for key in ("explanation", "error_code", "outcome"):
        value = payload.get(key)
        if isinstance(value, str) and value.strip():
            return value.replace("\x00", "").strip()[:500]  # no NUL: PostgreSQL's text cannot hold one
    code = _integer(payload.get("exit_code"))
    return f"exit code {code}" if code else None


_SPACES = " \t\n\r"
_INTEGER_TEXT = re.compile(r"[ \t\n\r]*[+-]?[0-9]{1,20}[ \t\n\r]*")


def _integer(value: object) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    # ASCII digits and spaces only: what int() takes besides (other Unicode digits and spaces, some of
    # which `\s` matches and int() refuses) would differ from the UI's rule, or raise.
    if isinstance(value, str) and _INTEGER_TEXT.fullmatch(value):
        return int(value.strip(_SPACES))
    return None


def describe(exc: ValidationError) -> str:
    """`task_id: String should have at least 1 character; phase: ...` (field first, one line)."""
    parts = []
    for err in exc.errors(include_url=False):
        where = ".".join(str(p) for p in err["loc"]) or "event"
        parts.append(f"{where}: {err['msg']}")
    return "; ".join(parts)


def encode_payload(payload: dict[str, Any] | None, max_bytes: int) -> bytes:
    """Serialize a payload strictly: JSON only, finite numbers, at most `max_bytes`."""
    if payload is None:
        return b"{}"
    if not isinstance(payload, dict):
        raise BadEvent("invalid", f"payload: must be a JSON object, not {type(payload).__name__}")
    try:
        data = orjson.dumps(payload)
    except (TypeError, orjson.JSONEncodeError) as exc:
        raise BadEvent("invalid", f"payload: not JSON-serializable ({exc})") from None
    # orjson writes NaN and infinities as null; only then pay for the strict standard-library check.
    if b"null" in data:
        import json

        try:
            json.dumps(payload, allow_nan=False)
        except ValueError:
            raise BadEvent("invalid", "payload: NaN and infinite numbers are not JSON") from None
    if len(data) > max_bytes:
        raise BadEvent("payload_too_large", f"payload: {len(data)} bytes, more than the limit of {max_bytes}")
    return data


def max_element_bytes(max_payload_bytes: int) -> int:
    """The largest queue element parsed at all; a larger one is refused unread (`too_large`).

    Room for a payload at the limit written with escapes or indentation (up to 4x its compact size:
    `\\ud83d\\ude00` is 12 bytes for a 4-byte character) and for the other fields.
    """
    return 4 * max_payload_bytes + 16 * 1024


def decode(raw: bytes, max_payload_bytes: int) -> tuple[WireEvent, bytes]:
    """Parse and check one queue element; returns the event and its payload as stored JSON.

    Raises BadEvent with the reason the worker records in the dead-letter list.
    """
    limit = max_element_bytes(max_payload_bytes)
    if len(raw) > limit:
        raise BadEvent("too_large", f"{len(raw)} bytes, more than the {limit} an event may have; not read")
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise BadEvent("not_json", f"not valid JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise BadEvent("not_object", f"an event is a JSON object, not a JSON {type(obj).__name__}")
    try:
        event = WireEvent.model_validate(obj)
    except ValidationError as exc:
        raise BadEvent("invalid", describe(exc)) from None
    return event, encode_payload(event.payload, max_payload_bytes)
