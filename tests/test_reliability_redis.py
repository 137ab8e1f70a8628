"""Redis faults: stopped and restarted under load, killed with and without persistence, out of memory.

Each runs a private redis-server (never the machine's), the real worker process and real emitters.
"""

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
import yaml

from taskevents import Emitter
from taskevents.ingest.localredis import SAFE_ARGS, RedisServer, free_port
from taskevents.settings import Settings
from tests.helpers import rows, start_worker, stored_count, wait_for
from tests.reliability_write_helpers import heartbeat, raw_event, wait_until_stored

pytestmark = [pytest.mark.redis_server, pytest.mark.slow]

ROOT = Path(__file__).resolve().parent.parent
OUTAGE = 10.0  # seconds Redis is down
PRODUCERS, RATE = 2, 1000  # emitting threads, events a second each


@pytest.fixture
def private_server(tmp_path: Path) -> Iterator[Callable[..., RedisServer]]:
    """`private_server(*extra_args)`: a redis-server of the test's own, killed after it whatever happens."""
    made: list[RedisServer] = []

    def make(*extra: str) -> RedisServer:
        made.append(RedisServer(tmp_path / f"redis{len(made)}", None, *extra).start())
        return made[-1]

    yield make
    for server in made:
        server.kill()


def own_settings(server: RedisServer, tmp_path: Path, **changes: Any) -> Settings:
    return Settings(redis_url=server.url, db=tmp_path / "events.db", queue="rel:events", **changes)


def stored_among(settings: Settings, uids: set[str]) -> int:
    if not settings.sqlite_path.exists():
        return 0
    sql = "SELECT count(*) FROM task_events WHERE event_uid IN (SELECT value FROM json_each(?))"
    return int(rows(settings.sqlite_path, sql, json.dumps(sorted(uids)))[0][0])


def stored_uids(settings: Settings) -> list[str]:
    return [uid for (uid,) in rows(settings.sqlite_path, "SELECT event_uid FROM task_events")]


def gap_free(settings: Settings) -> bool:
    return rows(settings.sqlite_path, "SELECT count(*) FROM tasks t WHERE t.latest_seq != t.event_count") == [
        (0,)
    ] and rows(
        settings.sqlite_path,
        "SELECT count(*) FROM task_events e WHERE e.seq > 1 AND NOT EXISTS "
        "(SELECT 1 FROM task_events p WHERE p.task_id = e.task_id AND p.seq = e.seq - 1)",
    ) == [(0,)]


class Producer(threading.Thread):
    """Emits at a steady rate until stopped, timing every emit() and noting when each was made."""

    def __init__(self, n: int, settings: Settings) -> None:
        super().__init__()
        self.n = n
        self.emitter = Emitter.from_settings(settings)
        self.stop = threading.Event()
        self.emitted: list[tuple[float, str]] = []  # (monotonic time, event_uid)
        self.latencies: list[float] = []  # of each emit() call

    def run(self) -> None:
        i = 0
        started = time.monotonic()
        while not self.stop.is_set():
            uid = f"p{self.n}-{i}"
            before = time.perf_counter()
            self.emitter.emit(
                f"task-{self.n}-{i % 20}", "work_item_progress", span_id="w", actor="worker", event_uid=uid
            )
            self.latencies.append(time.perf_counter() - before)
            self.emitted.append((time.monotonic(), uid))
            i += 1
            time.sleep(max(0.0, started + i / RATE - time.monotonic()))


def test_redis_stopped_for_ten_seconds_loses_nothing_and_never_blocks_emit(
    own_redis_server: RedisServer, tmp_path: Path
) -> None:
    settings = own_settings(own_redis_server, tmp_path)
    worker = start_worker(settings)
    producers = [Producer(n, settings) for n in range(PRODUCERS)]
    try:
        for p in producers:
            p.start()
        time.sleep(3)
        own_redis_server.stop()  # SIGTERM: Redis writes its append-only file and exits
        down_at = time.monotonic()
        time.sleep(OUTAGE)
        own_redis_server.start()  # same port, same data directory
        up_at = time.monotonic()
        during = {uid for p in producers for t, uid in list(p.emitted) if down_at <= t < up_at}
        wait_for(lambda: stored_among(settings, during) == len(during), timeout=60)
        recovery = time.monotonic() - up_at  # until every event emitted during the outage is stored
        time.sleep(max(0.0, up_at + 3 - time.monotonic()))  # keep emitting a while after
        for p in producers:
            p.stop.set()
            p.join()
        for p in producers:
            assert p.emitter.flush(60), "emitter could not deliver its buffer after Redis came back"
        total = sum(len(p.emitted) for p in producers)
        client = redis.Redis.from_url(settings.redis_url)
        alive = lambda: worker.poll() is None  # noqa: E731
        recovered = wait_until_stored(client, settings, total, timeout=60, alive=alive)
    finally:
        for p in producers:
            p.stop.set()
            p.emitter.close(1)
        worker.terminate()
        worker.wait(15)

    assert len(during) >= PRODUCERS * RATE * OUTAGE * 0.8  # the producers kept emitting throughout
    uids = stored_uids(settings)
    assert len(uids) == len(set(uids)) == total  # every event once, none twice
    assert during <= set(uids)
    assert gap_free(settings)
    assert all(p.emitter.dropped == 0 for p in producers)
    latencies = sorted(x for p in producers for x in p.latencies)
    p99, slowest = latencies[int(len(latencies) * 0.99)], latencies[-1]
    # emit() does no I/O: waiting on Redis would take its connect timeout (2 s). The slowest calls are
    # the runner's own garbage collection or a GIL hand-over (tens of ms at most on this machine).
    assert p99 < 0.001 and slowest < 0.1, f"emit(): p99 {p99 * 1e6:.0f} µs, slowest {slowest * 1000:.1f} ms"
    print(
        f"\noutage {OUTAGE:.0f}s: {total} events sent, {len(during)} while Redis was down, "
        f"{len(uids)} stored, emit() p99 {p99 * 1e6:.0f} µs, slowest {slowest * 1000:.2f} ms, "
        f"those all stored {recovery:.1f}s after Redis restarted; the rest {recovered:.1f}s after the end"
    )


def backlog_after_a_kill(server: RedisServer, events: int) -> int:
    """Push a backlog, SIGKILL Redis at once (no shutdown, no fsync), restart it: what is left."""
    client = redis.Redis.from_url(server.url)
    for start in range(0, events, 1000):
        client.rpush("backlog", *[raw_event("t", i) for i in range(start, min(events, start + 1000))])
    client.close()
    server.kill()
    server.start()
    client = redis.Redis.from_url(server.url)
    try:
        return int(client.llen("backlog"))
    finally:
        client.close()


def test_a_killed_redis_keeps_its_backlog_only_with_the_shipped_persistence(
    private_server: Callable[..., RedisServer],
) -> None:
    events = 20_000
    kept = backlog_after_a_kill(private_server(), events)  # SAFE_ARGS: the Procfile's and compose's
    # Without persistence (Redis' defaults minus RDB snapshots): the whole backlog dies with it.
    kept_bare = backlog_after_a_kill(private_server("--appendonly", "no", "--save", ""), events)
    # everysec: each write reaches the kernel before Redis answers, so a crash of the Redis process
    # loses nothing acknowledged; only a crash of the machine can lose up to ~1 s of writes.
    assert kept == events
    assert kept_bare == 0
    print(f"\nRedis SIGKILLed with {events} queued: appendonly everysec kept {kept}, none kept {kept_bare}")


def test_the_shipped_redis_configuration_is_the_safe_one(tmp_path: Path) -> None:
    """`taskevents redis` (the Procfile's) really runs with an append-only file and never evicts."""
    port = free_port()
    env = dict(
        os.environ,
        TASKEVENTS_REDIS_URL=f"redis://127.0.0.1:{port}/0",
        TASKEVENTS_REDIS_DIR=str(tmp_path / "redis"),
    )
    assert "redis: taskevents redis" in (ROOT / "Procfile").read_text()
    proc = subprocess.Popen(
        [sys.executable, "-c", "from taskevents.cli import main; main()", "redis"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    client = redis.Redis(port=port)
    try:
        wait_for(lambda: _answers(client), timeout=20)
        config = {k: client.config_get(k)[k] for k in ("appendonly", "appendfsync", "maxmemory-policy")}
    finally:
        client.close()
        proc.terminate()
        proc.wait(15)
    assert config == {"appendonly": "yes", "appendfsync": "everysec", "maxmemory-policy": "noeviction"}
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]["redis"]["command"]
    flags = dict(zip(compose[1::2], compose[2::2], strict=True))
    assert flags["--appendonly"] == "yes" and flags["--appendfsync"] == "everysec"
    assert flags["--maxmemory-policy"] == "noeviction"
    assert dict(zip(SAFE_ARGS[::2], SAFE_ARGS[1::2], strict=True)) == flags


def _answers(client: redis.Redis) -> bool:
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False


def test_redis_out_of_memory_emitters_keep_and_retry_the_worker_drains_nothing_is_evicted(
    tmp_path: Path, private_server: Callable[..., RedisServer]
) -> None:
    server = private_server("--maxmemory", "8mb")  # and noeviction, as shipped
    settings = own_settings(server, tmp_path, batch_size=2000)
    client = redis.Redis.from_url(server.url)
    events = 60_000  # about three times what fits in 8 MB
    emitter = Emitter.from_settings(settings)
    worker = None
    try:
        slowest = 0.0
        for i in range(events):
            before = time.perf_counter()
            emitter.emit(f"t{i % 50}", "work_item_progress", span_id="w", actor="w", payload={"i": i})
            slowest = max(slowest, time.perf_counter() - before)
        wait_for(lambda: stalled(emitter), timeout=30)  # Redis refuses its pushes: it keeps them
        queued_at_oom = client.llen(settings.queue)
        memory = client.info("memory")
        assert memory["used_memory"] > 0.9 * memory["maxmemory"]
        assert 0 < queued_at_oom < events and emitter.pending() == events - queued_at_oom

        # Full for certain when the worker starts (below what is used now): it must take the lease,
        # claim and acknowledge at OOM, since it is what frees memory.
        time.sleep(1.5)  # until Redis has shrunk the query buffers of the refused pushes
        client.config_set("maxmemory", client.info("memory")["used_memory"] - 1_000_000)
        with pytest.raises(redis.OutOfMemoryError):
            client.set("probe", b"x")
        worker = start_worker(settings)  # drains the full Redis
        took = wait_until_stored(client, settings, events, timeout=120, alive=lambda: worker.poll() is None)
        assert emitter.flush(10)
        stats = client.info("stats")
    finally:
        emitter.close(1)
        if worker is not None:
            worker.terminate()
            assert worker.wait(15) == 0
        client.close()
    assert stats["evicted_keys"] == 0
    assert emitter.dropped == 0
    assert stored_count(settings.sqlite_path) == events
    payloads = rows(
        settings.sqlite_path, "SELECT count(DISTINCT json_extract(payload, '$.i')) FROM task_events"
    )
    assert payloads == [(events,)]
    assert gap_free(settings)
    assert slowest < 0.1, f"slowest emit(): {slowest * 1000:.1f} ms"  # see the outage test
    print(
        f"\nOOM (8 MB): {events} emitted, {queued_at_oom} queued when Redis refused more; "
        f"all stored {took:.1f}s after the worker started; evicted 0; slowest emit() {slowest * 1000:.2f} ms"
    )


def stalled(emitter: Emitter, quiet: float = 1.5) -> bool:
    """The emitter has events to send but has sent none for `quiet` seconds."""
    sent = emitter.sent
    time.sleep(quiet)
    return emitter.pending() > 0 and emitter.sent == sent


def test_an_idle_worker_survives_a_full_redis_and_resumes_when_memory_returns(
    tmp_path: Path, private_server: Callable[..., RedisServer]
) -> None:
    server = private_server()
    settings = own_settings(server, tmp_path, heartbeat_ttl=3.0)
    client = redis.Redis.from_url(server.url)
    worker = start_worker(settings, TASKEVENTS_HEARTBEAT_TTL="3")
    try:
        wait_for(lambda: heartbeat(client, settings) is not None, timeout=20)
        # Something else fills Redis (the queue is empty): 4 MB, then a limit 1 MB under what is used.
        client.set("other:1", b"x" * 2_000_000)
        client.set("other:2", b"x" * 2_000_000)
        time.sleep(1.5)  # until Redis has shrunk the query buffer those writes used
        client.config_set("maxmemory", client.info("memory")["used_memory"] - 1_000_000)
        with pytest.raises(redis.OutOfMemoryError):
            client.blmove(
                settings.queue, settings.queue, 1, "LEFT", "LEFT"
            )  # what an idle worker's wait() does
        time.sleep(2 * settings.heartbeat_ttl)  # its wait is refused: it pauses, loops, stays alive
        assert worker.poll() is None
        assert client.info("commandstats")["cmdstat_blmove"]["rejected_calls"] > 0
        beat = heartbeat(client, settings)
        assert beat is not None and time.time() - beat["at"] < settings.heartbeat_ttl  # refreshed at OOM
        client.delete("other:1", "other:2")
        client.rpush(settings.queue, *[raw_event("t", i, uid=f"u{i}") for i in range(100)])
        wait_until_stored(client, settings, 100, timeout=30, alive=lambda: worker.poll() is None)
    finally:
        worker.terminate()
        assert worker.wait(15) == 0
        client.close()
    assert rows(settings.sqlite_path, "SELECT count(*), max(seq) FROM task_events") == [(100, 100)]
