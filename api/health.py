"""Liveness (`/api/events/health`, the original's) and readiness (`/api/ready`) of the API process."""

import redis
from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse

from taskevents.api import reads
from taskevents.api.deps import AppSettings, RedisClient, Store
from taskevents.api.models import (
    Health,
    PartitionStatus,
    QueueStatus,
    Readiness,
    RedisStatus,
    StoreStatus,
    WorkerStatus,
)
from taskevents.api.store import StoreUnavailable
from taskevents.api.worker_report import WorkerReport, combined, read_partition_reports

router = APIRouter(tags=["operations"])


@router.get("/api/events/health", response_model=Health)
async def health(request: Request) -> Response:
    """The process answers. It reads nothing: use `/api/ready` to know whether it can serve."""
    return JSONResponse({"status": "ok", "service": "task_events_api", "version": request.app.version})


@router.get(
    "/api/ready",
    response_model=Readiness,
    responses={503: {"model": Readiness, "description": "The store is not readable."}},
)
def ready(store: Store, client: RedisClient, settings: AppSettings) -> Response:
    """Can this process serve? 200 while the store is readable (with the schema this API reads), else
    503. Also reports, without failing on them: Redis reachable, the queue's depth, in-flight events and
    dead letters, the worker's heartbeat age, counters and store error, and the standby workers: for a
    partitioned queue, added up over the partitions (a heartbeat only if every partition has one), and
    each partition's own under `partitions`."""
    try:
        version = store.check()
        last = store.run(reads.last_commit_at)
        store_status = StoreStatus(ok=True, schema_version=version, last_commit_at=last)
    except StoreUnavailable as exc:
        store_status = StoreStatus(ok=False, detail=str(exc))
    partitions: list[PartitionStatus] | None = None
    try:
        reports = read_partition_reports(client, settings)
        report = combined(reports)
        redis_status = RedisStatus(ok=True)
        queue = QueueStatus(depth=report.depth, in_flight=report.in_flight, dead_letters=report.dead_letters)
        worker = _worker_status(report)
        if len(reports) > 1:
            partitions = [
                PartitionStatus(
                    partition=n,
                    queue=QueueStatus(depth=r.depth, in_flight=r.in_flight, dead_letters=r.dead_letters),
                    worker=_worker_status(r),
                )
                for n, r in enumerate(reports)
            ]
    except redis.RedisError as exc:
        redis_status = RedisStatus(
            ok=False, detail=f"Redis unreachable at {_safe_url(settings.redis_url)}: {exc}"
        )
        queue, worker = None, None

    problems = []
    if not store_status.ok:
        problems.append(f"store: {store_status.detail}")
    if not redis_status.ok:
        problems.append(f"redis: {redis_status.detail}")
    elif partitions is not None and any(not p.worker.alive for p in partitions):
        idle = ", ".join(str(p.partition) for p in partitions if not p.worker.alive)
        problems.append(f"worker: no heartbeat in partition {idle} (no worker is running, or it is stuck)")
    elif worker is not None and not worker.alive:
        problems.append("worker: no heartbeat (no worker is running, or it is stuck)")
    elif worker is not None and worker.store_error:
        problems.append(f"worker: cannot write the store, consuming nothing: {worker.store_error}")
    if not store_status.ok:
        status, code = "unavailable", "store_unavailable"
    else:
        status, code = ("degraded" if problems else "ready"), None
    body = Readiness(
        status=status,
        detail="; ".join(problems) or "store readable, Redis reachable, worker alive",
        code=code,
        store=store_status,
        redis=redis_status,
        queue=queue,
        worker=worker,
        partitions=partitions,
    )
    return Response(
        body.model_dump_json().encode(),
        status_code=200 if store_status.ok else 503,
        media_type="application/json",
    )


def _worker_status(report: WorkerReport) -> WorkerStatus:
    age = report.heartbeat_age
    return WorkerStatus(
        alive=report.heartbeat is not None,
        heartbeat_age_seconds=round(age, 3) if age is not None else None,
        heartbeat=report.heartbeat,
        store_error=report.store_error,
        standbys=report.standbys,
        counters=report.counters,
    )


def _safe_url(url: str) -> str:
    """The Redis URL without its password."""
    if "@" in url and "://" in url:
        scheme, rest = url.split("://", 1)
        return f"{scheme}://***@{rest.rsplit('@', 1)[1]}"
    return url
