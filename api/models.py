"""Response models: what /docs and /openapi.json say each endpoint returns.

The bodies themselves are built as JSON bytes (api/reads.py) and not validated against these on the
way out; the schemathesis fuzz (tests/test_reliability_api_fuzz.py) checks that real responses
match them.
"""

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from taskevents.event import Phase
from taskevents.messages import Heartbeat, WorkerStats

SpanState = Literal["open", "closed", "failed"]
TaskStatus = Literal["running", "succeeded", "failed"]


class ErrorBody(BaseModel):
    """Every error: 400 `bad_parameter`, 404 `task_not_found`/`not_found`, 503 `store_unavailable`."""

    detail: str = Field(description="What is wrong, for a person.")
    code: str = Field(description="What is wrong, for a program.")


class Event(BaseModel):
    event_id: int = Field(description="Global id, assigned by the store.")
    task_id: str
    seq: int = Field(description="Per task: 1, 2, 3 … without gaps.")
    event_type: str
    phase: Phase | None
    actor: str
    span_id: str
    parent_span_id: str | None
    payload: dict[str, Any]
    created_at: str = Field(description="When the store accepted it: ISO 8601 UTC, milliseconds.")
    event_uid: str | None = Field(description="The producer's id of the event (idempotency key).")
    emitted_at: str | None = Field(description="The producer's clock, as it sent it.")


class EventsPage(BaseModel):
    events: list[Event]
    total: int = Field(description="All events of the task (of the phase, on the phase endpoint).")
    has_more: bool = Field(
        description="Exact: another event exists beyond this page (after it; on /latest, before it)."
    )
    next_seq: int = Field(
        description=(
            "Pass back as since_seq. /events and /phase: the last seq returned, or the since_seq asked "
            "when the page is empty. /latest: the newest seq of the page (0 if the page is empty)."
        )
    )


class Span(BaseModel):
    span_id: str
    parent_span_id: str | None
    event_type: str = Field(description="Type of the span's first event.")
    phase: Phase | None = Field(description="Phase of the span's first event.")
    seq: int = Field(description="Seq of the span's first event (the same as start_seq).")
    state: SpanState = Field(description="From the span's latest opening or closing event.")
    start_seq: int
    end_seq: int | None = Field(description="Seq of the closing event; null while open.")
    last_seq: int = Field(description="Seq of the span's latest event of any type.")
    event_count: int
    started_at: str
    ended_at: str | None
    work_item_id: str | None = Field(None, description="A work item span's `work_item_id` (its events').")
    work_type: str | None = Field(None, description="A work item span's `work_type`.")
    progress: Any = Field(
        None,
        description="The `progress` of the span's latest `work_item_progress`: a fraction from 0 to 1, or "
        "`{current, total}`.",
    )
    error_code: str | None = Field(
        None, description="The `error_code` of the span's latest `work_item_failed`."
    )


class GraphNode(Span):
    payload: dict[str, Any] = Field(description="Payload of the span's first event.")


class Edge(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    from_: str = Field(alias="from", description="Parent span id.")
    to: str = Field(description="Child span id.")


class Graph(BaseModel):
    task_id: str
    spans: list[GraphNode] = Field(description="In the order the spans started: parents before children.")
    edges: list[Edge] = Field(description="Parent -> child; both ends are always nodes of `spans`.")
    truncated: bool = Field(description="True if the task has more spans than `limit`.")


class Snapshot(BaseModel):
    task_id: str
    events: list[Event] = Field(description="The last `limit` events, ascending.")
    total_events: int
    latest_seq: int = Field(description="Stream from here (since_seq) to follow the task.")
    current_phase: Phase | None = Field(
        description="Last phase any event of the task had: a heartbeat or runner_exit does not blank it."
    )
    status: TaskStatus
    archived: bool = Field(
        False, description="Its events are in its archive (retention); every read answers from there."
    )
    active_spans: list[str] = Field(
        description="Ids of the open spans of the whole task, whatever the window, in the order they opened "
        "(the original's shape)."
    )
    active_span_details: list[Span] = Field(description="The same open spans, as span objects.")


class TaskSummary(BaseModel):
    task_id: str
    latest_seq: int
    event_count: int
    current_phase: Phase | None
    status: TaskStatus
    first_at: str = Field(description="When the store accepted its first event.")
    last_at: str = Field(description="When the store accepted its latest event.")
    exit_reason: str | None = Field(
        None, description="Why its run ended (the runner_exit's explanation, error code or outcome)."
    )
    failed_items: int = Field(0, description="Its spans whose latest state is `failed` (work items, mostly).")
    archived: bool = Field(
        False, description="Its events are in its archive (retention); every read answers from there."
    )


class SpanCounts(BaseModel):
    open: int
    closed: int
    failed: int


class Stage(BaseModel):
    span: Span = Field(description="The phase span (one attempt of a phase).")
    counts: SpanCounts = Field(description="Its child spans (work items) by state.")
    items: list[Span] = Field(description="Its first child spans, in the order they started.")
    more: bool = Field(description="More children than `items`: read them with `/spans?parent=`.")


class Overview(BaseModel):
    task: TaskSummary
    roots: list[Span] = Field(description="Spans without a parent (the runner's).")
    stages: list[Stage] = Field(description="The phase spans in the order they started.")
    events: list[Event] = Field(description="The latest events, ascending.")
    checkpoints: list[Event] = Field(description="The newest checkpoint events, ascending.")
    links: list[Event] = Field(description="The newest `evidence_linked` events, ascending.")


class SpansPage(BaseModel):
    spans: list[Span]
    has_more: bool
    next_seq: int = Field(description="Pass back as `after_seq` for the next page.")


class FoundPage(BaseModel):
    events: list[Event] = Field(description="Matching events, newest first.")
    scanned_to: int = Field(description="The lowest seq searched; pass as `before_seq` to search on.")
    has_more: bool = Field(description="Older events remain to be searched.")


class TasksPage(BaseModel):
    tasks: list[TaskSummary]
    next_cursor: str | None = Field(description="Pass back as `cursor` for the next page; null at the end.")


class Health(BaseModel):
    status: Literal["ok"]
    service: Literal["task_events_api"]
    version: str


class StoreStatus(BaseModel):
    ok: bool
    schema_version: int | None = None
    last_commit_at: str | None = Field(
        None, description="When the worker last committed (max tasks.last_at)."
    )
    detail: str | None = None


class RedisStatus(BaseModel):
    ok: bool
    detail: str | None = None


class QueueStatus(BaseModel):
    depth: int = Field(description="Events waiting in the queue (LLEN).")
    in_flight: int = Field(description="Events the worker has taken but not yet acknowledged.")
    dead_letters: int


class WorkerStatus(BaseModel):
    alive: bool = Field(description="A heartbeat is present (it expires after TASKEVENTS_HEARTBEAT_TTL).")
    heartbeat_age_seconds: float | None = None
    heartbeat: Heartbeat | None = Field(None, description="The active worker's heartbeat, as it wrote it.")
    store_error: str | None = Field(
        None, description="Why the worker cannot write the store (it then consumes nothing), if it cannot."
    )
    standbys: list[str] = Field(
        default_factory=list, description="Workers waiting to take over (host:pid-namespace:pid)."
    )
    counters: WorkerStats = Field(
        default_factory=WorkerStats, description="The `<queue>:worker:stats` hash: every worker's, summed."
    )


class PartitionStatus(BaseModel):
    partition: int = Field(description="The partition (TASKEVENTS_PARTITIONS > 1).")
    queue: QueueStatus
    worker: WorkerStatus


class Readiness(BaseModel):
    status: Literal["ready", "degraded", "unavailable"] = Field(
        description="ready: all checks pass; degraded: the store is readable but Redis or the worker "
        "is not (no heartbeat, or it cannot write the store); unavailable (HTTP 503): the store is not "
        "readable."
    )
    detail: str
    code: str | None = Field(None, description="`store_unavailable` when the answer is 503.")
    store: StoreStatus
    redis: RedisStatus
    queue: QueueStatus | None = None
    worker: WorkerStatus | None = None
    partitions: list[PartitionStatus] | None = Field(
        None, description="Each partition's queue and worker, when the queue is partitioned."
    )


ERRORS_400: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorBody, "description": "A parameter is malformed or out of range."}
}
ERRORS_TASK: dict[int | str, dict[str, Any]] = {
    **ERRORS_400,
    404: {"model": ErrorBody, "description": "Unknown task (`task_not_found`)."},
    503: {"model": ErrorBody, "description": "The store is missing or unreadable (`store_unavailable`)."},
}
