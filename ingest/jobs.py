"""The `jobs` process: rq's worker and rq's CronScheduler, so that archive passes run on schedule,
are retried when they fail and are stopped when they run too long.

- The scheduler enqueues `schedule_pass` every TASKEVENTS_ARCHIVE_EVERY seconds (the first at start)
  on `<queue>:jobs`; that small job enqueues the pass, `run_pass`, with rq's `Retry` (3 more tries,
  30 s, 2 min and 10 min later) and a timeout of JOB_TIMEOUT: rq's CronScheduler takes a timeout but
  no retry policy for the jobs it enqueues itself.
- A pass that stopped at its bounds with work left enqueues the next one at once.
- However many `jobs` processes run, one pass runs at a time: the pass takes a lock in Redis
  (ingest/retention.py); a pass that finds it held returns at once. Each process's scheduler enqueues
  its own ticks, so N processes run up to N passes per interval, one after the other, the later ones
  finding little to do.
- rq's `SimpleWorker` runs jobs in this process (no fork per job): a SIGKILL ends the pass with it,
  and the next pass finishes its work (a pass is idempotent).
"""

import datetime as dt
import logging
import threading
from dataclasses import asdict
from typing import Any

import redis
from rq import Queue, Retry, SimpleWorker
from rq.cron import CronScheduler

from taskevents.ingest.retention import archive_pass
from taskevents.keys import QueueKeys
from taskevents.settings import Settings

log = logging.getLogger("taskevents.jobs")

JOB_TIMEOUT = 30 * 60  # seconds: a bounded pass takes well under a minute here
RETRY = Retry(max=3, interval=[30, 120, 600])


def _queue(settings: Settings, client: redis.Redis | None = None) -> Queue:
    client = client or redis.Redis.from_url(settings.redis_url)
    return Queue(QueueKeys(settings.queue).jobs, connection=client)


def schedule_pass() -> str:
    """The scheduler's job: enqueue a pass with its retry policy and timeout. Returns its job id."""
    job = _queue(Settings()).enqueue(run_pass, retry=RETRY, job_timeout=JOB_TIMEOUT, result_ttl=86400)
    return str(job.id)


def run_pass() -> dict[str, Any]:
    """One archive pass (rq job); its report is the job's result."""
    settings = Settings()
    report = archive_pass(settings)
    if report.more:
        _queue(settings).enqueue(run_pass, retry=RETRY, job_timeout=JOB_TIMEOUT, result_ttl=86400)
    return asdict(report)


class _Cron(threading.Thread):
    """rq's CronScheduler, driven from a thread: its own `start()` installs signal handlers, which
    only the main thread may, and the main thread runs the rq worker."""

    def __init__(self, client: redis.Redis, settings: Settings) -> None:
        super().__init__(name="taskevents-cron", daemon=True)
        self.stopping = threading.Event()
        self.cron = CronScheduler(connection=client)
        self.cron.register(
            schedule_pass,
            queue_name=QueueKeys(settings.queue).jobs,
            interval=max(1, int(settings.archive_every)),
        )

    def run(self) -> None:
        self.cron.register_birth()
        try:
            while not self.stopping.is_set():
                try:
                    if self.cron.enqueue_jobs():
                        self.cron.save()
                    self.cron.heartbeat()
                except redis.RedisError as exc:
                    log.warning("scheduler: Redis unavailable (%s); trying again", exc)
                self.stopping.wait(max(1.0, min(self.cron.calculate_sleep_interval(), 15.0)))
        finally:
            try:
                self.cron.register_death()
            except redis.RedisError:
                pass


def run_jobs(settings: Settings) -> None:
    """The `jobs` process: the scheduler on a thread, rq's worker (with its own scheduler for retries)
    on this one, until SIGTERM (rq finishes the job in hand) or SIGINT."""
    client = redis.Redis.from_url(settings.redis_url)
    cron = _Cron(client, settings)
    cron.start()
    log.info("jobs for %s: an archive pass every %.0f s into %s", settings.queue, settings.archive_every,
             settings.archive_dir)  # fmt: skip
    try:
        worker = SimpleWorker([_queue(settings, client)], connection=client)
        worker.work(with_scheduler=True, logging_level=settings.log_level.upper())
    finally:
        cron.stopping.set()
        cron.join(5)


def check(settings: Settings, max_age: float = 60.0) -> bool:
    """A `jobs` process is alive: an rq worker of our queue with a recent heartbeat (health check)."""
    client = redis.Redis.from_url(settings.redis_url)
    now = dt.datetime.now(dt.UTC)
    for worker in SimpleWorker.all(connection=client, queue=_queue(settings, client)):
        beat = worker.last_heartbeat
        if beat is not None and (now - beat.replace(tzinfo=dt.UTC)).total_seconds() < max_age:
            return True
    return False
