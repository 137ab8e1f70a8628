"""Prometheus metrics at /metrics: the API's requests, and the worker's state read at scrape time.

Requests are counted and timed by route template (`/api/tasks/{task_id}/events`, never the task id:
the label set stays small) and status. The worker runs in another process and keeps its counters in
Redis (`<queue>:worker:stats`, its heartbeat, the queue); a custom collector reads them when
Prometheus scrapes, so the API exports them without importing `ingest` and without polling.
"""

import datetime
import logging
import os
import time
from collections.abc import Iterable, Iterator

import redis
from fastapi import APIRouter, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from taskevents.api import reads
from taskevents.api.store import StoreReader, StoreUnavailable
from taskevents.api.worker_report import combined, read_partition_reports
from taskevents.settings import Settings

log = logging.getLogger("taskevents.api.metrics")

# Reads take well under a millisecond; the buckets resolve that range and still catch slow outliers.
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0)
UNMATCHED = "<unmatched>"  # the route label of requests for unknown paths
# prometheus_client's multiprocess mode: its metrics' values in files of this directory (read at import).
MULTIPROC_DIR = "PROMETHEUS_MULTIPROC_DIR"


class RequestMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        labels = ("method", "route", "status")
        self.requests = Counter(
            "taskevents_api_requests", "HTTP requests answered.", labels, registry=registry
        )
        self.latency = Histogram(
            "taskevents_api_request_duration_seconds",
            "Time to answer an HTTP request (to the end of the response body).",
            labels,
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        labels = (method, route, str(status))
        self.requests.labels(*labels).inc()
        self.latency.labels(*labels).observe(seconds)


class MetricsMiddleware:
    """Pure ASGI (no BaseHTTPMiddleware): it adds microseconds, not a task per request."""

    def __init__(self, app: ASGIApp, metrics: RequestMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500  # if the app raises before answering, the server answers 500

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            # The router put the matched route into the (shared) scope; its path is the template.
            route = getattr(scope.get("route"), "path", None) or UNMATCHED
            self.metrics.observe(scope["method"], route, status, time.perf_counter() - start)


class WorkerCollector:
    """The worker's counters, queue depth and heartbeat age from Redis; the store's last commit."""

    def __init__(self, client: redis.Redis, settings: Settings, store: StoreReader) -> None:
        self.client = client
        self.settings = settings
        self.store = store

    def collect(self) -> Iterator[Metric]:
        yield from self._redis_metrics()
        yield from self._store_metrics()

    def _redis_metrics(self) -> Iterable[Metric]:
        up = GaugeMetricFamily(
            "taskevents_redis_up", "1 if the API could read the worker's state from Redis."
        )
        try:
            reports = read_partition_reports(self.client, self.settings)
        except redis.RedisError as exc:
            log.debug("metrics: Redis unreachable: %s", exc)
            up.add_metric([], 0)
            return [up]
        up.add_metric([], 1)
        out: list[Metric] = [up]
        report = combined(reports)  # a partitioned queue's totals; each partition's below
        for name, value in sorted(report.counters.model_dump().items()):
            counter = CounterMetricFamily(
                f"taskevents_worker_{name}", f"The worker's `{name}` counter (<queue>:worker:stats)."
            )
            counter.add_metric([], value)
            out.append(counter)
        batches, ingested = report.counters.batches, report.counters.ingested
        if batches:
            out.append(
                _gauge(
                    "taskevents_worker_mean_batch_size",
                    "Events stored per batch, on average.",
                    ingested / batches,
                )
            )
        out += [
            _gauge(
                "taskevents_queue_depth", "Events waiting in the queue (its lag, in events).", report.depth
            ),
            _gauge(
                "taskevents_queue_in_flight",
                "Events taken by the worker, not yet acknowledged.",
                report.in_flight,
            ),
            _gauge("taskevents_dead_letters", "Events set aside in <queue>:dead.", report.dead_letters),
            _gauge(
                "taskevents_worker_up",
                "1 if the worker's heartbeat is present (every partition's, when partitioned).",
                report.heartbeat is not None,
            ),
            _gauge(
                "taskevents_worker_store_error",
                "1 if the worker cannot write the store (it consumes nothing until it can).",
                report.store_error is not None,
            ),
            _gauge(
                "taskevents_worker_standbys", "Workers waiting to take over the queue.", len(report.standbys)
            ),
        ]
        if len(reports) > 1:
            depth = GaugeMetricFamily(
                "taskevents_partition_queue_depth",
                "Events waiting in the partition's list.",
                labels=["partition"],
            )
            alive = GaugeMetricFamily(
                "taskevents_partition_worker_up",
                "1 if the partition's worker's heartbeat is present.",
                labels=["partition"],
            )
            for n, part in enumerate(reports):
                depth.add_metric([str(n)], part.depth)
                alive.add_metric([str(n)], part.heartbeat is not None)
            out += [depth, alive]
        age = report.heartbeat_age
        if age is not None:
            out.append(
                _gauge(
                    "taskevents_worker_heartbeat_age_seconds", "Seconds since the worker's heartbeat.", age
                )
            )
        return out

    def _store_metrics(self) -> Iterable[Metric]:
        try:
            last = self.store.run(reads.last_commit_at)
        except StoreUnavailable:
            return [_gauge("taskevents_store_up", "1 if the API can read the store.", 0)]
        out = [_gauge("taskevents_store_up", "1 if the API can read the store.", 1)]
        if last is not None:
            at = datetime.datetime.fromisoformat(last).timestamp()
            out.append(
                _gauge(
                    "taskevents_store_last_commit_age_seconds",
                    "Seconds since the worker last committed events (by task last_at).",
                    max(0.0, time.time() - at),
                )
            )
        return out


def multiprocess_metrics() -> bool:
    """prometheus_client's multiprocess mode is on (its directory is set: `taskevents api --workers`)."""
    return bool(os.environ.get(MULTIPROC_DIR))


def _gauge(name: str, documentation: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, documentation, value=float(value))


def metrics_router() -> APIRouter:
    router = APIRouter()

    @router.get(
        "/metrics",
        tags=["operations"],
        summary="Prometheus metrics",
        response_class=Response,
        responses={200: {"content": {CONTENT_TYPE_LATEST: {}}, "description": "Prometheus text format."}},
    )
    def metrics(request: Request) -> Response:
        # A sync endpoint: the collector does blocking Redis and SQLite reads, so it runs on a thread.
        return Response(generate_latest(request.app.state.registry), media_type=CONTENT_TYPE_LATEST)

    return router
