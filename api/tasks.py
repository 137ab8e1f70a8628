"""The task endpoints: pages of events, the snapshot, the span graph, checkpoints, the task list.

Bounded reads (a page of events, a snapshot, the task list) usually take well under a millisecond,
so their endpoints are `async def` and read inline on the event loop. A hop to a worker thread costs
far more than such a read: sqlite3 releases the GIL around every row step, so with 16 requests in
flight the loop and the worker threads hand the GIL back and forth (~16 context switches and ~1.5 ms
of system CPU per 100-event page; 4x the CPU per request, 3x the p99 of inline reads). But a page can
be large (1,000 events of 64 KiB each): an inline read that runs past INLINE_BUDGET (10 ms) is
stopped by SQLite and run again on a worker thread (`ReadRunner`, api/deps.py), so no read stalls the
loop, and every stream of the process, for longer than that. The read is synchronous, so no
transaction is ever held across an `await`; inline, it uses the loop's own connection, so it never
waits for one that the threads hold. The graph (up to 50,000 spans, tens of ms) goes to a thread at
once. Every read is stopped at TASKEVENTS_QUERY_TIMEOUT (503 `query_timeout`). Each endpoint returns
the bytes api/reads.py built; `response_model` only documents them.
"""

from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Path, Query, Response
from pydantic import BeforeValidator

from taskevents.api import reads
from taskevents.api.cursor import decode_cursor
from taskevents.api.deps import Reads
from taskevents.api.errors import BadParameter
from taskevents.api.models import (
    ERRORS_400,
    ERRORS_TASK,
    Event,
    EventsPage,
    FoundPage,
    Graph,
    Overview,
    Snapshot,
    SpansPage,
    TasksPage,
    TaskStatus,
)
from taskevents.clock import format_ms
from taskevents.event import EventTypeName, Phase

MAX_SEQ = 2**63 - 1  # SQLite's largest integer: a bigger since_seq is a 400, not an overflow

TaskId = Annotated[str, Path(description="The task's id.")]
SinceSeq = Annotated[
    int,
    Query(ge=0, le=MAX_SEQ, description="Return events with a greater seq (exclusive); 0: from the start."),
]


def _iso_only(value: object) -> object:
    """Pydantic reads a number as seconds since the epoch; the schema (and the docs) promise ISO 8601
    text, so `since=0.0` is a 400, not the year 1970."""
    if isinstance(value, str):
        try:
            float(value)
        except ValueError:
            return value
        raise ValueError("expected an ISO 8601 instant (e.g. 2026-12-01T10:00:00Z), not a number")
    return value


Instant = Annotated[datetime, BeforeValidator(_iso_only)]

router = APIRouter(prefix="/api/tasks", tags=["tasks"])


def _json(body: bytes, headers: dict[str, str] | None = None) -> Response:
    return Response(body, media_type="application/json", headers=headers)


@router.get("", response_model=TasksPage, responses=ERRORS_400 | {503: ERRORS_TASK[503]})
async def list_tasks(
    read: Reads,
    limit: Annotated[int, Query(ge=1, le=500, description="Tasks per page.")] = 50,
    cursor: Annotated[
        str | None, Query(max_length=1024, description="`next_cursor` of the previous page.")
    ] = None,
    status: Annotated[TaskStatus | None, Query(description="Only tasks with this status.")] = None,
    phase: Annotated[Phase | None, Query(description="Only tasks whose current phase is this.")] = None,
    q: Annotated[
        str | None,
        Query(min_length=1, max_length=128, description="Only tasks whose id contains this (any case)."),
    ] = None,
    since: Annotated[
        Instant | None,
        Query(description="Only tasks active at or after this instant (ISO 8601; UTC if naive)."),
    ] = None,
    until: Annotated[
        Instant | None,
        Query(description="Only tasks last active before this instant (ISO 8601; UTC if naive)."),
    ] = None,
    archived: Annotated[
        bool | None,
        Query(description="Only archived tasks (true) or only those in the store (false); default both."),
    ] = None,
) -> Response:
    """The tasks, most recently active first (by the time of their last stored event), with a cursor.
    The filters combine; each page is a walk of the task index by recency (see api/queries.py)."""
    filters: dict[str, object] = {"status": status, "phase": phase, "q": q, "archived": archived}
    filters["since"] = _instant(since)
    filters["until"] = _instant(until)
    if cursor is not None:
        try:
            filters["after"] = decode_cursor(cursor)
        except ValueError as exc:
            raise BadParameter("cursor", str(exc)) from None
    return _json(await read(reads.tasks_page, limit, filters))


def _instant(when: datetime | None) -> str | None:
    """An instant as the store writes them (UTC, milliseconds), so that it compares as text."""
    if when is None:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return format_ms(int(when.timestamp() * 1000) * 1_000_000)


@router.get("/{task_id}/events", response_model=EventsPage, responses=ERRORS_TASK)
async def events(
    read: Reads,
    task_id: TaskId,
    since_seq: SinceSeq = 0,
    limit: Annotated[int, Query(ge=1, le=1000, description="Most events to return.")] = 100,
) -> Response:
    """Events after `since_seq`, ascending by seq. Walk a task by passing `next_seq` back as `since_seq`
    until `has_more` is false; `total` is the number of events of the task, in the same snapshot."""
    return _json(await read(reads.events_page, task_id, since_seq, limit))


@router.get("/{task_id}/events/latest", response_model=EventsPage, responses=ERRORS_TASK)
async def latest_events(
    read: Reads,
    task_id: TaskId,
    limit: Annotated[int, Query(ge=1, le=500, description="Most events to return.")] = 50,
) -> Response:
    """The newest events, newest first. `has_more`: older events exist beyond this page. `next_seq`: the
    newest seq of the page (0 if empty), to pass as `since_seq` to `/events` for what follows."""
    return _json(await read(reads.latest_page, task_id, limit))


@router.get("/{task_id}/events/snapshot", response_model=Snapshot, responses=ERRORS_TASK)
async def snapshot(
    read: Reads,
    task_id: TaskId,
    limit: Annotated[int, Query(ge=1, le=500, description="Events in the window.")] = 100,
) -> Response:
    """The last `limit` events (ascending) and the state of the whole task: `current_phase` (the last
    phase any event had), `status`, and `active_spans` (every open span, opened inside the window or
    before it). Render it, then follow the task from `latest_seq`."""
    return _json(await read(reads.snapshot, task_id, limit))


@router.get("/{task_id}/events/phase/{phase}", response_model=EventsPage, responses=ERRORS_TASK)
async def phase_events(
    read: Reads,
    task_id: TaskId,
    phase: Annotated[Phase, Path(description="planning, executing, verifying or recovery.")],
    since_seq: SinceSeq = 0,
    limit: Annotated[int, Query(ge=1, le=1000, description="Most events to return.")] = 100,
) -> Response:
    """Like `/events`, for the events of one phase; `total` counts that phase's events."""
    return _json(await read(reads.phase_page, task_id, phase, since_seq, limit))


@router.get(
    "/{task_id}/checkpoints",
    response_model=list[Event],
    responses=ERRORS_TASK
    | {200: {"headers": {"X-Has-More": {"description": "`true` if more checkpoints follow this page."}}}},
)
async def checkpoints(
    read: Reads,
    task_id: TaskId,
    since_seq: SinceSeq = 0,
    limit: Annotated[int, Query(ge=1, le=1000, description="Most checkpoint events to return.")] = 100,
) -> Response:
    """`checkpoint_commit`, `checkpoint_verified` and `checkpoint_invalid` events in seq order, with their
    payload (checkpoint_id, checkpoint_type, evidence_refs, …). A JSON array; the header `X-Has-More`
    says whether more follow (pass the last seq as `since_seq`)."""
    body, has_more = await read(reads.checkpoints, task_id, since_seq, limit)
    return _json(body, {"X-Has-More": "true" if has_more else "false"})


@router.get("/{task_id}/graph", response_model=Graph, responses=ERRORS_TASK)
async def graph(
    read: Reads,
    task_id: TaskId,
    limit: Annotated[int, Query(ge=1, le=50_000, description="Most spans to return.")] = 10_000,
) -> Response:
    """The span tree: one node per span (its first event, its state and extent), in the order spans
    started, and an edge parent -> child wherever both are nodes. `truncated` if the task has more than
    `limit` spans (the earliest are returned, so every edge still joins two nodes)."""
    return _json(await read.on_thread(reads.graph, task_id, limit))


@router.get("/{task_id}/overview", response_model=Overview, responses=ERRORS_TASK)
async def overview(
    read: Reads,
    task_id: TaskId,
    events: Annotated[int, Query(ge=0, le=500, description="Latest events to include.")] = 100,
    items: Annotated[int, Query(ge=0, le=500, description="Work items to include per stage.")] = 48,
    checkpoints: Annotated[int, Query(ge=0, le=1000, description="Newest checkpoint events.")] = 200,
) -> Response:
    """What the UI's task page paints first, in one read: the task, its root spans, its stages (each
    phase attempt with its work items' counts by state and its first `items` work items), its latest
    events and its newest checkpoint events."""
    return _json(await read(reads.overview, task_id, events, items, checkpoints))


@router.get("/{task_id}/spans", response_model=SpansPage, responses=ERRORS_TASK)
async def spans(
    read: Reads,
    task_id: TaskId,
    parent: Annotated[
        str | None, Query(min_length=1, max_length=128, description="Only this span's children.")
    ] = None,
    after_seq: Annotated[
        int, Query(ge=0, le=MAX_SEQ, description="Spans that started after this seq (the cursor).")
    ] = 0,
    limit: Annotated[int, Query(ge=1, le=10_000, description="Most spans to return.")] = 5_000,
) -> Response:
    """The task's spans in the order they started (all of them, or one span's children), each with its
    state, extent and work item fields; page with `next_seq` as `after_seq` while `has_more`."""
    return _json(await read.on_thread(reads.spans, task_id, parent, after_seq, limit))


@router.get("/{task_id}/events/find", response_model=FoundPage, responses=ERRORS_TASK)
async def find_events(
    read: Reads,
    task_id: TaskId,
    q: Annotated[
        str | None,
        Query(min_length=1, max_length=200, description="Text in the event (type, spans, actor, payload)."),
    ] = None,
    event_type: Annotated[
        list[EventTypeName] | None,
        Query(max_length=30, description="Only these event types (repeat the parameter)."),
    ] = None,
    failed: Annotated[
        bool,
        Query(
            description="Only failures: failed work items, rejected checkpoints, recoveries, failed exits."
        ),
    ] = False,
    before_seq: Annotated[
        int | None, Query(ge=1, le=MAX_SEQ, description="Search events before this seq (default: all).")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=500, description="Most events to return.")] = 100,
) -> Response:
    """Events of the task that match, newest first: the search of the UI's timeline, answered by the
    server (a virtualized list cannot be searched with the browser's own find). Each request searches
    at most 20,000 events before `before_seq`; go on from `scanned_to` while `has_more`."""
    return _json(await read.on_thread(reads.find, task_id, q, event_type, failed, before_seq, limit))
