"""The queue partitioned by task (TASKEVENTS_PARTITIONS): the routing every producer must follow, the
emitter's, the settings that refuse a partitioned SQLite store; then, on a PostgreSQL server and a
redis-server the suite starts itself, one worker per partition, SIGKILLed again and again while all
partitions drain, a second worker for a held partition, and a changed partition count refused."""

import random
import subprocess
import sys
import time
import zlib
from collections import defaultdict
from functools import partial
from pathlib import Path
from typing import Any

import fakeredis
import httpx
import orjson
import pytest
import redis

from taskevents import Emitter
from taskevents.ingest.worker import Worker
from taskevents.keys import QueueKeys, partition_of, partition_queue
from taskevents.settings import Settings, build
from tests.helpers import start_worker, wait_for, worker_env
from tests.pgserver import ExternalPostgres, PostgresServer, rows, stored
from tests.reliability_write_helpers import raw_event


def test_a_task_goes_to_crc32_of_its_id_modulo_the_count() -> None:
    # What a runner in another language computes: CRC-32 (IEEE) of the UTF-8 task id, modulo N.
    assert zlib.crc32(b"task-1") == 3386884591
    assert partition_of("task-1", 4) == 3386884591 % 4 == 3
    assert partition_of("\u00e9", 4) == zlib.crc32("\u00e9".encode()) % 4
    assert {partition_of(f"t{i}", 1) for i in range(100)} == {0}
    counts: dict[int, int] = defaultdict(int)
    for i in range(10_000):
        counts[partition_of(f"run-{i}", 4)] += 1
    assert all(2_200 < n < 2_800 for n in counts.values()), counts  # spread evenly


def test_partition_lists_share_a_hash_tag_and_one_partition_keeps_todays_names() -> None:
    assert partition_queue("taskevents:events", 0, 1) == "taskevents:events"
    name = partition_queue("taskevents:events", 2, 4)
    assert name == "{taskevents:events:2}"
    keys = QueueKeys(name)
    for key in (
        keys.queue,
        keys.processing(0),
        keys.processing_batch(1),
        keys.lease,
        keys.dead,
        keys.heartbeat,
    ):
        assert key.startswith("{taskevents:events:2}")  # Redis Cluster hashes only the braces' content
    with pytest.raises(ValueError, match="0 to 3"):
        partition_queue("q", 4, 4)


def test_the_emitter_routes_each_task_to_its_partition_in_order() -> None:
    client = fakeredis.FakeRedis()
    emitter = Emitter(queue="q", partitions=3, client=client)
    tasks = [f"task{i}" for i in range(12)]
    for i in range(300):
        emitter.emit(tasks[i % 12], "work_item_progress", span_id="s", actor="a", payload={"i": i})
    assert emitter.close(5)
    seen: dict[str, list[int]] = defaultdict(list)
    for p in range(3):
        for raw in client.lrange(partition_queue("q", p, 3), 0, -1):
            event = orjson.loads(raw)
            assert partition_of(event["task_id"], 3) == p
            seen[event["task_id"]].append(event["payload"]["i"])
    assert client.llen("q") == 0
    assert {t: seen[t] for t in tasks} == {t: list(range(n, 300, 12)) for n, t in enumerate(tasks)}


def test_more_than_one_partition_needs_postgresql() -> None:
    with pytest.raises(ValueError, match="a SQLite file has one writer"):
        Settings(db="events.db", partitions=2).check_partitions()
    Settings(db="events.db", partitions=2)  # a producer's settings: it needs N, not the store
    with pytest.raises(ValueError, match="partition 2 of 2"):
        Settings(db="postgresql://u@h/events", partitions=2, partition=2)
    settings = Settings(db="postgresql://u@h/events", queue="q", partitions=2, partition=1)
    assert settings.partition_queue == "{q:1}"


# --- on real servers --------------------------------------------------------------------------------


@pytest.fixture
def pg(postgres: PostgresServer | ExternalPostgres) -> PostgresServer | ExternalPostgres:
    return postgres


def _partitioned(
    pg: PostgresServer | ExternalPostgres, settings: Settings, name: str, partitions: int
) -> Settings:
    return settings.model_copy(update={"db": pg.database(name), "partitions": partitions, "batch_size": 500})


def _of(settings: Settings, partition: int) -> Settings:
    return settings.model_copy(update={"partition": partition})


def _settled(client: redis.Redis, settings: Settings) -> bool:
    for p in range(settings.partitions):
        keys = QueueKeys(_of(settings, p).partition_queue)
        if client.llen(keys.queue) or client.exists(*keys.processing_keys, keys.suspects):
            return False
    return True


@pytest.mark.postgres
@pytest.mark.redis_server
def test_one_worker_per_partition_sigkilled_again_and_again_stores_every_event_once(
    pg: PostgresServer | ExternalPostgres, settings: Settings, client: redis.Redis, tmp_path: Path
) -> None:
    settings = _partitioned(pg, settings, "parts_kill", 3)
    total, tasks = 60_000, 30
    sent: dict[str, list[int]] = defaultdict(list)
    lists = [_of(settings, p).partition_queue for p in range(3)]
    elements: list[list[bytes]] = [[] for _ in range(3)]
    for i in range(total):
        task = f"task{i % tasks}"
        elements[partition_of(task, 3)].append(raw_event(task, i))  # no event_uid: batch ids alone
        sent[task].append(i)
    for p in range(3):
        for first in range(0, len(elements[p]), 5_000):
            client.rpush(lists[p], *elements[p][first : first + 5_000])
    log = tmp_path / "workers.log"
    workers = [start_worker(_of(settings, p), log=log) for p in range(3)]
    rng = random.Random(11)
    for _ in range(9):  # each partition's worker killed three times while all three drain
        time.sleep(rng.uniform(0.2, 0.6))
        p = rng.randrange(3)
        workers[p].kill()
        workers[p].wait(10)
        workers[p] = start_worker(_of(settings, p), log=log)
    wait_for(lambda: stored(settings.db) >= total and _settled(client, settings), timeout=180, interval=0.2)
    time.sleep(0.5)
    assert stored(settings.db) == total, log.read_text()[-3000:]
    by_task: dict[str, list[tuple[int, int]]] = defaultdict(list)
    for task_id, seq, payload in rows(settings.db, "SELECT task_id, seq, payload FROM task_events"):
        by_task[task_id].append((seq, orjson.loads(payload)["i"]))
    for task_id, events in by_task.items():
        events.sort()
        assert [seq for seq, _ in events] == list(range(1, len(events) + 1)), task_id
        assert [i for _, i in events] == sent[task_id], task_id  # the order it was sent
    parts = rows(settings.db, "SELECT part, last_batch_id > 0 FROM ingest_state ORDER BY part")
    assert parts == [(0, True), (1, True), (2, True)]  # each partition its own batch ids
    assert all(w.poll() is None for w in workers)


@pytest.mark.postgres
@pytest.mark.redis_server
def test_a_second_worker_for_a_held_partition_stands_by_and_a_changed_count_is_refused(
    pg: PostgresServer | ExternalPostgres, settings: Settings, client: redis.Redis, tmp_path: Path
) -> None:
    settings = _partitioned(pg, settings, "parts_held", 2)
    first = start_worker(_of(settings, 1))
    keys = QueueKeys(_of(settings, 1).partition_queue)
    wait_for(lambda: client.exists(keys.heartbeat), timeout=30)
    holder = orjson.loads(client.get(keys.heartbeat) or b"{}")["pid"]
    second = start_worker(_of(settings, 1))
    wait_for(lambda: client.zcard(keys.standbys) == 1, timeout=30)  # it waits, it does not write
    client.rpush(keys.queue, raw_event("b", 0))
    wait_for(lambda: stored(settings.db) == 1, timeout=30)
    assert orjson.loads(client.get(keys.heartbeat) or b"{}")["pid"] == holder == first.pid
    first.kill()  # the standby takes the partition over once the lease lapses
    wait_for(lambda: orjson.loads(client.get(keys.heartbeat) or b"{}").get("pid") == second.pid, timeout=60)
    # The store was made for 2 partitions: a worker given 3 refuses to run, saying why.
    done = subprocess.run(
        [sys.executable, "-m", "taskevents.ingest", "--partition", "0"],
        env=worker_env(settings, TASKEVENTS_PARTITIONS="3"), capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode != 0
    assert "has 2 partitions and this worker was given 3" in done.stderr, done.stderr[-2000:]


@pytest.mark.redis_server
def test_a_worker_refuses_partitions_on_sqlite(settings: Settings) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "taskevents.ingest"],
        env=worker_env(settings, TASKEVENTS_PARTITIONS="2"), capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 2
    assert "a SQLite file has one writer" in done.stderr


@pytest.mark.postgres
@pytest.mark.redis_server
def test_events_a_producer_left_in_the_unpartitioned_list_are_reported(
    pg: PostgresServer | ExternalPostgres,
    settings: Settings,
    client: redis.Redis,
    caplog: pytest.LogCaptureFixture,
) -> None:
    settings = _partitioned(pg, settings, "parts_stray", 2)
    client.rpush(settings.queue, raw_event("lost", 0), raw_event("lost", 1))  # pushed as if N were 1
    with caplog.at_level("ERROR", logger="taskevents.worker"), Worker(_of(settings, 0)) as worker:
        worker.drain()
    assert "2 events wait in " + settings.queue + ", which no worker reads with 2 partitions" in caplog.text
    assert client.llen(settings.queue) == 2  # left where they are, for the operator


def test_logs_show_a_postgresql_url_without_its_password() -> None:
    assert Settings(db="postgresql://u:s3cret@h:5/db").store_name == "postgresql://u:***@h:5/db"
    assert Settings(db="postgresql://u@h/db").store_name == "postgresql://u@h/db"
    assert Settings(db="events.db").store_name == "events.db"
    with pytest.raises(ValueError, match="database name") as refused:
        build(Settings, None, db="postgresql://u:s3cret@h:5")  # as the commands build their settings
    assert "s3cret" not in str(refused.value) and "u:***@h:5" in str(refused.value)


class _FailingOnce(fakeredis.FakeRedis):
    """A client whose first pipeline pushes its first list, then loses the connection."""

    failed = False  # set on the instance when it has

    def pipeline(self, transaction: bool = True, shard_hint: Any = None) -> Any:
        pipe = super().pipeline(transaction=transaction, shard_hint=shard_hint)
        if self.failed:
            return pipe

        def execute(raise_on_error: bool = True) -> Any:
            self.failed = True
            target, *items = pipe.command_stack[0][0][1:]  # (args, options): RPUSH, the list, its items
            self.rpush(target, *items)  # the first RPUSH landed, then the connection went
            pipe.reset()
            raise redis.ConnectionError("lost mid-pipeline")

        pipe.execute = execute  # type: ignore[method-assign]
        return pipe


def test_a_push_lost_part_way_is_sent_again_whole_and_each_repeat_carries_its_event_uid() -> None:
    client = _FailingOnce()
    emitter = Emitter(queue="q", partitions=2, client=client)
    tasks = ["task-1", "task-2", "task-3", "task-4"]
    assert {partition_of(t, 2) for t in tasks} == {0, 1}  # both lists in one push
    for i in range(40):
        emitter.emit(tasks[i % 4], "work_item_progress", span_id="s", actor="a", payload={"i": i})
    assert emitter.close(10)
    assert client.failed
    by_list = {p: [orjson.loads(r) for r in client.lrange(partition_queue("q", p, 2), 0, -1)] for p in (0, 1)}
    sent = [e for events in by_list.values() for e in events]
    assert sorted({e["payload"]["i"] for e in sent}) == list(range(40))  # nothing lost
    uids: dict[int, set[str]] = defaultdict(set)
    for e in sent:
        uids[e["payload"]["i"]].add(e["event_uid"])
    assert all(len(u) == 1 for u in uids.values())  # a repeat is the same event: the worker stores it once
    assert len(sent) > 40  # the list pushed before the loss has its events twice
    for events in by_list.values():  # each list's distinct events in the order they were emitted
        first_seen = list(dict.fromkeys(e["payload"]["i"] for e in events))
        assert first_seen == sorted(first_seen)


def _answers(http: httpx.Client, url: str) -> bool:
    return http.get(url).status_code == 200


@pytest.mark.postgres
@pytest.mark.redis_server
def test_readiness_metrics_and_the_live_stream_cover_every_partition(
    pg: PostgresServer | ExternalPostgres, settings: Settings, client: redis.Redis
) -> None:
    import httpx

    from tests.api_helpers import api_client
    from tests.stream_helpers import ApiServer, FrameParser
    from tests.test_api_ops import sample

    settings = _partitioned(pg, settings, "parts_api", 2)
    tasks = {p: next(f"t{i}" for i in range(100) if partition_of(f"t{i}", 2) == p) for p in range(2)}
    workers = [start_worker(_of(settings, 0))]
    try:
        wait_for(lambda: client.exists(QueueKeys(_of(settings, 0).partition_queue).heartbeat), timeout=30)
        with api_client(settings) as http:
            body = http.get("/api/ready").json()
            assert body["status"] == "degraded" and "no heartbeat in partition 1" in body["detail"], body
            assert [p["worker"]["alive"] for p in body["partitions"]] == [True, False]
            workers.append(start_worker(_of(settings, 1)))
            wait_for(lambda: http.get("/api/ready").json()["status"] == "ready", timeout=30)
            text = http.get("/metrics").text
            assert sample(text, "taskevents_partition_worker_up", partition="1") == 1
            assert sample(text, "taskevents_worker_up") == 1

        # A stream of a task in each partition: every event within moments of its commit, so by the
        # commit notices of both partitions' channels, not by the streams' safety-net poll.
        server = ApiServer(settings.model_copy(update={"stream_poll": 1000.0}))
        server.start()
        em = Emitter.from_settings(settings)
        try:
            for task in tasks.values():
                em.emit(task, "runner_spawn", span_id="r", actor="runner")
            assert em.flush(5)
            with httpx.Client(base_url=server.url, timeout=10) as http:
                for task in tasks.values():
                    wait_for(partial(_answers, http, f"/api/tasks/{task}/events"), timeout=30)
                with (
                    http.stream("GET", f"/sse/tasks/{tasks[0]}/events?since_seq=1") as first,
                    http.stream("GET", f"/sse/tasks/{tasks[1]}/events?since_seq=1") as second,
                ):
                    wait_for(lambda: server.hub.subscription_count == 2, timeout=10)
                    before = server.hub.notifications
                    started = time.monotonic()
                    for task in tasks.values():
                        em.emit(task, "runner_heartbeat", span_id="r", actor="runner")
                    assert em.flush(5)
                    for response in (first, second):
                        parser = FrameParser()
                        events = []
                        for chunk in response.iter_raw():
                            events += [f for f in parser.feed(chunk) if f.event == "task_event"]
                            if events:
                                break
                        assert orjson.loads(events[0].data or "{}")["seq"] == 2
                    assert time.monotonic() - started < 10  # the safety-net poll is 1,000 s away
                    assert server.hub.notifications >= before + 2  # one from each partition's worker
        finally:
            em.close(5)
            server.stop()
    finally:
        for worker in workers:
            worker.terminate()
            worker.wait(20)


@pytest.mark.postgres
@pytest.mark.redis_server
def test_the_health_check_and_the_dead_letter_count_cover_every_partition(
    pg: PostgresServer | ExternalPostgres, settings: Settings, client: redis.Redis
) -> None:
    settings = _partitioned(pg, settings, "parts_check", 2)
    env = worker_env(settings)
    env.pop("TASKEVENTS_PARTITION", None)  # as an operator types it: no partition named

    def command(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-c", "from taskevents.cli import main; main()", *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )

    worker = start_worker(_of(settings, 0))
    try:
        wait_for(lambda: client.exists(QueueKeys(_of(settings, 0).partition_queue).heartbeat), timeout=30)
        every = command("ingest", "--check")  # no partition named: all of them
        assert (
            every.returncode == 1
            and f"no worker heartbeat of {_of(settings, 1).partition_queue}" in every.stderr
        )
        assert command("ingest", "--check", "--partition", "0").returncode == 0
        assert command("ingest", "--check", "--partition", "1").returncode == 1
        bad = next(f"t{i}" for i in range(100) if partition_of(f"t{i}", 2) == 0)
        client.rpush(_of(settings, 0).partition_queue, orjson.dumps({"task_id": bad, "event_type": ""}))
        wait_for(lambda: client.llen(QueueKeys(_of(settings, 0).partition_queue).dead) == 1, timeout=30)
        counted = command("dead-letters", "count")
        assert counted.returncode == 0, counted.stderr
        assert f"1 dead letters in {QueueKeys(_of(settings, 0).partition_queue).dead}" in counted.stdout
        assert f"0 dead letters in {QueueKeys(_of(settings, 1).partition_queue).dead}" in counted.stdout
    finally:
        worker.terminate()
        worker.wait(20)


@pytest.mark.postgres
@pytest.mark.redis_server
def test_retention_on_a_partitioned_queue_each_task_by_its_partition_s_worker(
    pg: PostgresServer | ExternalPostgres, settings: Settings, client: redis.Redis
) -> None:
    from taskevents.ingest.retention import archive_pass
    from taskevents.ingest.writer import PartitionsChanged
    from taskevents.messages import ControlRequest
    from tests.api_helpers import api_client

    settings = _partitioned(pg, settings, "parts_retention", 2)
    tasks = [f"r{i}" for i in range(12)]
    assert {partition_of(t, 2) for t in tasks} == {0, 1}
    workers = [start_worker(_of(settings, p)) for p in range(2)]
    em = Emitter.from_settings(settings)
    try:
        for t in tasks:
            em.emit(t, "runner_spawn", span_id="r", actor="runner")
            em.emit(t, "runner_exit", span_id="r", actor="runner", payload={"exit_code": 0})
        assert em.flush(5)
        wait_for(lambda: stored(settings.db) == 2 * len(tasks), timeout=30)
        with api_client(settings) as http:
            before = {t: http.get(f"/api/tasks/{t}/events").content for t in tasks}
            report = archive_pass(settings, older_than=0, pace=0)
            assert sorted(report.archived) == sorted(tasks)
            # Each request went to the control list of the task's partition, and its worker applied it.
            wait_for(lambda: stored(settings.db) == 0, timeout=30)
            marks = rows(settings.db, "SELECT task_id, archived FROM tasks")
            assert sorted(marks) == sorted((t, 1) for t in tasks)
            assert rows(settings.db, "SELECT count(*) FROM archive_pending") == [(0,)]
            for t in tasks:  # read from their archives, as they were
                assert http.get(f"/api/tasks/{t}/events").content == before[t]
            # A late event: its partition's worker brings the task back, and the seq goes on.
            em.emit(tasks[0], "runner_heartbeat", span_id="r", actor="runner")
            assert em.flush(5)
            wait_for(lambda: stored(settings.db) == 3, timeout=30)
            got = http.get(f"/api/tasks/{tasks[0]}/events").json()["events"]
            assert [e["seq"] for e in got] == [1, 2, 3]

        # A request that reaches the other partition's worker changes nothing: one writer per task.
        one = next(t for t in tasks[1:] if partition_of(t, 2) == 0)
        wrong = QueueKeys(_of(settings, 1).partition_queue).control
        client.rpush(wrong, ControlRequest(op="restore", task_id=one).encode())
        wait_for(lambda: client.llen(wrong) == 0, timeout=30)
        time.sleep(0.5)
        assert rows(settings.db, f"SELECT archived FROM tasks WHERE task_id = '{one}'") == [(1,)]
        # Restored by the command, through its own partition's worker, for each partition.
        env = worker_env(settings)
        picks = [one, next(t for t in tasks[1:] if partition_of(t, 2) == 1)]
        done = subprocess.run(
            [sys.executable, "-c", "from taskevents.cli import main; main()", "restore", *picks],
            env=env, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr[-2000:]
        assert sorted(rows(settings.db, "SELECT task_id FROM tasks WHERE archived = 0")) == sorted(
            [(tasks[0],), *((t,) for t in picks)]
        )
        # A pass given another partition count than the store's refuses to run.
        with pytest.raises(PartitionsChanged, match="has 2 partitions and this pass was given 1"):
            archive_pass(settings.model_copy(update={"partitions": 1}), older_than=0, pace=0)
        # Old dead letters go to files from every partition's list.
        bad = next(f"x{i}" for i in range(100) if partition_of(f"x{i}", 2) == 1)
        client.rpush(_of(settings, 1).partition_queue, orjson.dumps({"task_id": bad, "event_type": ""}))
        dead = QueueKeys(_of(settings, 1).partition_queue).dead
        wait_for(lambda: client.llen(dead) == 1, timeout=30)
        report = archive_pass(settings.model_copy(update={"dead_retention": 0}), older_than=1e9, pace=0)
        assert report.dead_letters_moved == 1 and client.llen(dead) == 0
    finally:
        em.close(5)
        for worker in workers:
            worker.terminate()
            worker.wait(20)
