"""The `jobs` process: rq's worker, rq's CronScheduler and rq's scheduler of retries, so that archive
passes run on schedule, are retried when they fail and are stopped when they run too long.

- The CronScheduler enqueues `schedule_pass` every TASKEVENTS_ARCHIVE_EVERY seconds (the first at
  start) on `<queue>:jobs`; that small job enqueues the pass, `run_pass`, with rq's `Retry` (3 more
  tries, 30 s, 2 min and 10 min later) and a timeout of JOB_TIMEOUT: rq's CronScheduler takes a
  timeout but no retry policy for the jobs it enqueues itself. Both get the process's settings (the
  command line's --redis-url, --db and --queue included) as arguments.
- A pass that stopped at its bounds with work left enqueues the next one at once.
- However many `jobs` processes run, one pass runs at a time: the pass takes a lock in Redis
  (ingest/retention.py); a pass that finds it held returns at once. Each process's scheduler enqueues
  its own ticks, so N processes run up to N passes per interval, one after the other, the later ones
  finding little to do.
- Passes run at Linux's idle CPU priority (SCHED_IDLE), the schedulers at nice 10: on a saturated
  machine the worker and the API, and so ingest and the live stream, come first.
- Nothing forks: rq's `SimpleWorker` runs jobs in this process, and the schedulers (the CronScheduler
  and rq's `RQScheduler`, which re-enqueues retries when they are due) run on a thread of it, not in
  the child process rq's `work(with_scheduler=True)` would fork, which a SIGKILL of this process would
  leave running. A SIGKILL ends the pass with it; the next pass finishes its work (a pass is idempotent).
- SIGTERM (or SIGINT) is a warm stop: the pass in hand ends after its current task (the pass is
  idempotent, the next one goes on from there) and the process exits 0; the thread that runs passes
  leaves idle priority first, so a busy machine cannot starve its stop. A second signal is rq's cold
  stop. SIGUSR1 writes every thread's stack to stderr (faulthandler), for a process that looks stuck.
"""

import datetime as dt
import faulthandler
import inspect
import logging
import os
import signal
import sys
import threading
import time
from dataclasses import asdict
from types import FrameType
from typing import Any

import redis
from rq import Queue, Retry, SimpleWorker
from rq.cron import CronScheduler
from rq.scheduler import RQScheduler

from taskevents.ingest.retention import archive_pass
from taskevents.keys import QueueKeys
from taskevents.settings import Settings

log = logging.getLogger("taskevents.jobs")

JOB_TIMEOUT = 30 * 60  # seconds: a bounded pass takes well under a minute here
RETRY = Retry(max=3, interval=[30, 120, 600])
TICK = 5.0  # seconds between the schedulers' looks at what is due (retries wait 30 s and more)
NICE = 10  # the schedulers' CPU priority, below the worker's and the API's
HEARTBEAT_AGE = 60.0  # `jobs --check`: the scheduler thread's heartbeat is at most this old

# Set by a warm stop: the pass in hand ends after its current task (run_pass gives it to the pass).
_stopping = threading.Event()


def _settings(given: dict[str, str]) -> Settings:
    return Settings.model_validate(given)  # the rest from the environment, as the jobs process had them


def _queue(settings: Settings, client: redis.Redis | None = None) -> Queue:
    client = client or redis.Redis.from_url(settings.redis_url)
    return Queue(QueueKeys(settings.queue).jobs, connection=client)


def _enqueue_pass(settings: Settings, given: dict[str, str]) -> str:
    job = _queue(settings).enqueue(
        run_pass, kwargs={"given": given}, retry=RETRY, job_timeout=JOB_TIMEOUT, result_ttl=86400
    )
    return str(job.id)


def schedule_pass(given: dict[str, str]) -> str:
    """The CronScheduler's job: enqueue a pass with its retry policy and timeout. Returns its job id."""
    return _enqueue_pass(_settings(given), given)


def run_pass(given: dict[str, str]) -> dict[str, Any]:
    """One archive pass (rq job); its report is the job's result."""
    settings = _settings(given)
    report = archive_pass(settings, stop=_stopping)
    if report.more and not _stopping.is_set():
        _enqueue_pass(settings, given)
    return asdict(report)


class _Schedulers(threading.Thread):
    """rq's CronScheduler and RQScheduler, driven from a thread of this process: their own `start()`
    installs signal handlers (only the main thread may, and it runs the rq worker) or forks."""

    def __init__(self, client: redis.Redis, settings: Settings, given: dict[str, str]) -> None:
        super().__init__(name="taskevents-schedulers", daemon=True)
        self.stopping = threading.Event()
        jobs = QueueKeys(settings.queue).jobs
        self.cron = CronScheduler(connection=client)
        self.cron.register(
            schedule_pass,
            queue_name=jobs,
            kwargs={"given": given},
            interval=max(1, int(settings.archive_every)),
        )
        self.retries = RQScheduler([jobs], connection=client)

    def run(self) -> None:
        self.cron.register_birth()
        try:
            while not self.stopping.is_set():
                try:
                    if self.cron.enqueue_jobs():
                        self.cron.save()
                    self.cron.heartbeat()
                    if self.retries.should_reacquire_locks:
                        self.retries.acquire_locks()
                    if self.retries.acquired_locks:
                        self.retries.heartbeat()
                        self.retries.enqueue_scheduled_jobs()
                except redis.RedisError as exc:
                    log.warning("scheduler: Redis unavailable (%s); trying again", exc)
                self.stopping.wait(max(0.5, min(self.cron.calculate_sleep_interval(), TICK)))
        finally:
            try:
                self.retries.release_locks()
                self.cron.register_death()
            except redis.RedisError:
                pass


def run_jobs(settings: Settings, given: dict[str, str]) -> None:
    """The `jobs` process: the schedulers on a thread, rq's worker on this one, until SIGTERM (rq
    finishes the job in hand) or SIGINT. `given`: the settings the command line gave."""
    # Background work: on a busy machine the worker and the API (ingest, the live stream) come first.
    os.nice(NICE)
    client = redis.Redis.from_url(settings.redis_url)
    _wait_for_redis(client)
    schedulers = _Schedulers(client, settings, given)
    schedulers.start()
    _idle_priority()  # this thread runs the passes (and the threads they start)
    log.info("jobs for %s: an archive pass every %.0f s into %s", settings.queue, settings.archive_every,
             settings.archive_dir)  # fmt: skip
    faulthandler.register(signal.SIGUSR1, file=sys.stderr, all_threads=True)
    try:
        worker = _Worker([_queue(settings, client)], connection=client)
        worker.work(logging_level=settings.log_level.upper())
    finally:
        schedulers.stopping.set()
        schedulers.join(10)


class _Worker(SimpleWorker):
    """rq's SimpleWorker whose warm stop also stops the pass in hand (see the module docstring)."""

    def request_stop(self, signum: int, frame: FrameType | None) -> None:
        _stopping.set()
        _normal_priority()
        super().request_stop(signum, frame)

    def unsubscribe(self) -> None:
        """rq's, without its race. rq unsubscribes, then stops its pubsub thread; a thread that has
        already read the unsubscribe's reply goes round again and waits up to 60 s (rq's sleep_time)
        for a subscription before it looks at its running flag, and redis-py 8's `stop()` waits for
        it: a warm stop that took a minute now and then. So the flag first, then the unsubscribe
        (its reply wakes the thread, which then ends), then a bounded wait (the thread is a daemon)."""
        thread = self.pubsub_thread
        if thread is None:
            return
        if "timeout" in inspect.signature(thread.stop).parameters:
            thread.stop(timeout=0)  # redis-py 8: the flag only, no wait here
        else:
            thread.stop()  # before: the flag only
        self.pubsub.unsubscribe()
        thread.join(timeout=1)
        self.pubsub.close()


def _wait_for_redis(client: redis.Redis) -> None:
    """Started beside Redis (the Procfile's processes start at once, so do compose's), the process
    waits for it to answer rather than exit: rq's worker gives up at its first connection refused,
    and one process that exits stops a whole Procfile."""
    delay = 0.05
    while True:
        try:
            client.ping()
            return
        except redis.ConnectionError as exc:
            if delay == 0.05:
                log.warning("Redis does not answer yet (%s): waiting for it", exc)
            time.sleep(delay)
            delay = min(delay * 2, 2.0)


def _idle_priority() -> None:
    """The calling thread gets the CPU only when nothing else wants it (Linux's SCHED_IDLE): at nice
    10 a pass still took a tenth of a saturated core from the live stream, whose latency moved."""
    try:
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
    except (AttributeError, OSError) as exc:  # not Linux: nice alone
        log.info("no idle CPU priority for passes (%s); nice %d only", exc, NICE)


def _normal_priority() -> None:
    """Back to the ordinary policy (at the process's nice): a stopping process gets the CPU it needs
    to finish. An unprivileged thread may leave SCHED_IDLE within its nice limit (RLIMIT_NICE)."""
    try:
        os.sched_setscheduler(0, os.SCHED_OTHER, os.sched_param(0))
    except (AttributeError, OSError) as exc:
        log.info("could not leave idle CPU priority to stop (%s)", exc)


def check(settings: Settings) -> bool:
    """A `jobs` process of this queue is alive: its scheduler thread's heartbeat is recent (it beats
    every TICK seconds; the rq worker beats only between jobs, so its own heartbeat says less)."""
    client = redis.Redis.from_url(settings.redis_url)
    jobs = QueueKeys(settings.queue).jobs
    now = dt.datetime.now(dt.UTC)
    for scheduler in CronScheduler.all(connection=client):
        beat = scheduler.last_heartbeat
        if beat is None or (now - beat.replace(tzinfo=dt.UTC)).total_seconds() > HEARTBEAT_AGE:
            continue
        if any(job.queue_name == jobs for job in scheduler.get_jobs()):
            return True
    return False
