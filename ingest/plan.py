"""Planning a batch: seqs assigned in queue order, folded into per-task and per-span changes. Pure:
the same for every store (ingest/writer.py for SQLite, ingest/pgwriter.py for PostgreSQL)."""

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import orjson

from taskevents.event import SPAN_CLOSERS, SPAN_OPENERS, WireEvent, exit_reason, exit_status


@dataclass(frozen=True, slots=True)
class Decoded:
    event: WireEvent
    payload_json: bytes


@dataclass(slots=True)
class TaskChange:
    existing: bool
    first_seq: int
    last_seq: int
    count: int = 0
    phase: str | None = None
    status: str | None = None
    reason_changed: bool = False  # a runner_exit set exit_reason, or a runner_spawn cleared it
    exit_reason: str | None = None


@dataclass(slots=True)
class SpanChange:
    task_id: str
    span_id: str
    parent_span_id: str | None
    event_type: str
    phase: str | None
    first_seq: int
    last_seq: int
    count: int = 0
    state: str = "open"
    state_changed: bool = False
    end_seq: int | None = None
    # From the work item events' payloads (None: this batch did not say): what the UI shows.
    work_item_id: str | None = None
    work_type: str | None = None
    progress: str | None = None  # the latest progress, as JSON
    error_code: str | None = None


def fold_work_item(span: SpanChange, event_type: str, payload: dict[str, object]) -> None:
    """What a work item event tells about its span: its id and type, progress, error code (without
    NUL characters, which PostgreSQL's text cannot hold: both stores keep the same summary; the
    event's payload keeps them, escaped in its JSON)."""
    if isinstance(item := payload.get("work_item_id"), str):
        span.work_item_id = item.replace("\x00", "")
    if isinstance(kind := payload.get("work_type"), str):
        span.work_type = kind.replace("\x00", "")
    if event_type == "work_item_progress" and (progress := payload.get("progress")) is not None:
        span.progress = orjson.dumps(progress).decode()
    elif event_type == "work_item_failed" and isinstance(code := payload.get("error_code"), str):
        span.error_code = code.replace("\x00", "")


def plan(
    batch: Sequence[Decoded], latest: dict[str, int | None], created_at: str
) -> tuple[list[tuple[object, ...]], dict[str, TaskChange], dict[tuple[str, str], SpanChange]]:
    """Assign seqs in queue order and fold the batch into per-task and per-span changes."""
    rows: list[tuple[object, ...]] = []
    tasks: dict[str, TaskChange] = {}
    spans: dict[tuple[str, str], SpanChange] = {}
    for d in batch:
        e = d.event
        task = tasks.get(e.task_id)
        if task is None:
            prev = latest[e.task_id]
            task = tasks[e.task_id] = TaskChange(
                existing=prev is not None, first_seq=(prev or 0) + 1, last_seq=prev or 0
            )
        task.last_seq += 1
        task.count += 1
        seq = task.last_seq
        if e.phase is not None:
            task.phase = e.phase
        if e.event_type == "runner_spawn":
            task.status, task.reason_changed, task.exit_reason = "running", True, None
        elif e.event_type == "runner_exit":
            task.status = exit_status(e.payload)
            task.reason_changed, task.exit_reason = True, exit_reason(e.payload)

        key = (e.task_id, e.span_id)
        span = spans.get(key)
        if span is None:
            span = spans[key] = SpanChange(
                e.task_id, e.span_id, e.parent_span_id, e.event_type, e.phase, seq, seq
            )
        elif span.parent_span_id is None:
            span.parent_span_id = e.parent_span_id
        span.last_seq = seq
        span.count += 1
        if e.event_type in SPAN_OPENERS:
            span.state, span.end_seq, span.state_changed = "open", None, True
        elif (closed := SPAN_CLOSERS.get(e.event_type)) is not None:
            span.state, span.end_seq, span.state_changed = closed, seq, True
        if e.event_type.startswith("work_item_"):
            fold_work_item(span, e.event_type, e.payload)

        rows.append(
            (
                e.task_id,
                seq,
                e.event_type,
                e.phase,
                e.actor,
                e.span_id,
                e.parent_span_id,
                d.payload_json.decode(),
                created_at,
                e.event_uid,
                e.emitted_at,
            )
        )
    return rows, tasks, spans


# What an upsert of a span already stored keeps and takes (the same SQL in SQLite and PostgreSQL):
# spans whose state this batch changed take the new state; the others keep theirs.
def span_upsert_set(state_changed: bool) -> str:
    state = (
        "state = excluded.state, end_seq = excluded.end_seq, ended_at = excluded.ended_at"
        if state_changed
        else "state = spans.state"
    )
    return f"""ON CONFLICT (task_id, span_id) DO UPDATE SET
    parent_span_id = coalesce(spans.parent_span_id, excluded.parent_span_id),
    last_seq = excluded.last_seq,
    event_count = spans.event_count + excluded.event_count,
    work_item_id = coalesce(excluded.work_item_id, spans.work_item_id),
    work_type = coalesce(excluded.work_type, spans.work_type),
    progress = coalesce(excluded.progress, spans.progress),
    error_code = coalesce(excluded.error_code, spans.error_code),
    {state}"""


def span_rows(changes: Iterable[SpanChange], at: str) -> dict[bool, list[tuple[object, ...]]]:
    """The spans table's rows for `changes`, by whether the batch changed the span's state."""
    groups: dict[bool, list[tuple[object, ...]]] = {True: [], False: []}
    for s in changes:
        ended_at = at if s.end_seq is not None else None
        groups[s.state_changed].append(
            (s.task_id, s.span_id, s.parent_span_id, s.event_type, s.phase, s.first_seq, s.last_seq)
            + (s.count, s.state, at, s.end_seq, ended_at)
            + (s.work_item_id, s.work_type, s.progress, s.error_code)
        )
    return groups


def cached_latest(cache: dict[str, int], task_ids: Iterable[str]) -> tuple[dict[str, int | None], list[str]]:
    """The latest seqs `cache` knows, and the tasks it does not (to read from the store)."""
    latest: dict[str, int | None] = {}
    missing = []
    for task_id in task_ids:
        if task_id in cache:
            latest[task_id] = cache[task_id]
        else:
            missing.append(task_id)
    return latest, missing
