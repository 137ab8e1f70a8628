"""Retention end to end, against a real redis-server, the real worker and the API on a real socket:
archive passes, reads of archived tasks, restore, late events, damaged archives."""

import random
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import httpx
import orjson
import pytest
import redis
import zstandard
from click.testing import CliRunner

from taskevents.archive import TaskArchive, TaskRows, key
from taskevents.cli import main
from taskevents.db import open_writer
from taskevents.event import decode as decode_event
from taskevents.ingest.retention import PassLock, PassReport, archive_pass
from taskevents.ingest.storereads import StoreReads
from taskevents.ingest.writer import Decoded, StoreWriter
from taskevents.keys import QueueKeys
from taskevents.settings import Settings
from taskevents.simulate import simulate
from tests.helpers import store_made, store_rows, wait_for, worker_env
from tests.pgserver import STORES
from tests.stream_helpers import Live, event_seqs, live, read_frames

pytestmark = pytest.mark.redis_server


@pytest.fixture
def stack(settings: Settings) -> Iterator[Live]:
    with live(settings) as lv:
        yield lv


def _store_rows(settings: Settings, task_id: str) -> TaskRows | None:
    reader = StoreReads(settings)
    try:
        return reader.task_rows(task_id)
    finally:
        reader.close()


def _tasks(settings: Settings) -> dict[str, tuple[int, str, int]]:
    """task id -> (latest_seq, status, archived); none while the worker has not made the store."""
    if not store_made(settings):
        return {}
    found = store_rows(settings, "SELECT task_id, latest_seq, status, archived FROM tasks")
    return {t: (s, st, a) for t, s, st, a in found}


def _emptied(settings: Settings, task_ids: list[str]) -> bool:
    """Every given task archived and its rows gone from the store."""
    marks = dict(store_rows(settings, "SELECT task_id, archived FROM tasks"))
    left = sum(
        store_rows(settings, "SELECT count(*) FROM task_events WHERE task_id = ?", t)[0][0] for t in task_ids
    )
    pending = store_rows(settings, "SELECT count(*) FROM archive_pending")
    return all(marks.get(t) == 1 for t in task_ids) and left == 0 and pending == [(0,)]


def _answers(api: str, task_id: str) -> dict[str, bytes]:
    """What every task endpoint answers for the task (bytes), plus the task list's entry."""
    t = quote(task_id, safe="")
    paths = [
        f"/api/tasks/{t}/events?limit=1000",
        f"/api/tasks/{t}/events?since_seq=5&limit=7",
        f"/api/tasks/{t}/events/latest?limit=9",
        f"/api/tasks/{t}/events/snapshot",
        f"/api/tasks/{t}/events/phase/executing",
        f"/api/tasks/{t}/checkpoints",
        f"/api/tasks/{t}/graph",
        f"/api/tasks/{t}/overview",
        f"/api/tasks/{t}/spans",
        f"/api/tasks/{t}/events/find?failed=true",
        f"/api/tasks/{t}/events/find?q=lint",
    ]
    out = {}
    with httpx.Client(base_url=api) as http:
        for path in paths:
            answer = http.get(path)
            assert answer.status_code == 200, (path, answer.text)
            out[path] = answer.content
        listed = [x for x in http.get("/api/tasks?limit=500").json()["tasks"] if x["task_id"] == task_id]
    out["list"] = orjson.dumps(listed)
    return out


def _as_if_archived(answers: dict[str, bytes]) -> dict[str, bytes]:
    """The answers an archived task should give: the same, with `archived: true` where a task says it."""
    out = {}
    for path, body in answers.items():
        obj: Any = orjson.loads(body)
        if path.endswith("/snapshot"):
            obj["archived"] = True
        elif path.endswith("/overview"):
            obj["task"]["archived"] = True
        elif path == "list":
            for task in obj:
                task["archived"] = True
        out[path] = (
            orjson.dumps(obj) if path in ("list",) or path.endswith(("/snapshot", "/overview")) else body
        )
    return out


def _normalized(answers: dict[str, bytes]) -> dict[str, bytes]:
    return {p: orjson.dumps(orjson.loads(b)) if p == "list" or p.endswith(("/snapshot", "/overview")) else b
            for p, b in answers.items()}  # fmt: skip


@pytest.mark.parametrize("settings", STORES, indirect=True)
def test_archived_tasks_read_the_same_restore_exactly_and_a_late_event_continues_the_seq(
    stack: Live, settings: Settings
) -> None:
    total = simulate(stack.emitter, tasks=6, concurrency=6, rate=0, seed=11, prefix="ret", leave_running=1)
    stack.emitter.flush()
    wait_for(lambda: sum(s for s, _, _ in _tasks(settings).values()) == total, timeout=60)
    tasks = _tasks(settings)
    ended = sorted(t for t, (_, status, _) in tasks.items() if status != "running")
    running = [t for t, (_, status, _) in tasks.items() if status == "running"]
    assert len(ended) == 5 and len(running) == 1
    before = {t: _answers(stack.api.url, t) for t in tasks}
    rows_before = {t: _store_rows(settings, t) for t in tasks}

    report = archive_pass(settings, older_than=0)
    assert sorted(report.archived) == ended and report.events == sum(tasks[t][0] for t in ended)
    wait_for(lambda: _emptied(settings, ended), timeout=30)
    assert _tasks(settings)[running[0]][2] == 0  # a running task is never archived
    for t in ended:
        assert store_rows(settings, "SELECT count(*) FROM spans WHERE task_id = ?", t) == [(0,)]

    # Every endpoint answers as before, from the archive; only `archived` says where from.
    for t in ended:
        assert _normalized(_answers(stack.api.url, t)) == _normalized(_as_if_archived(before[t])), t
    assert _answers(stack.api.url, running[0]) == before[running[0]]
    with httpx.Client(base_url=stack.api.url) as http:
        assert {x["task_id"] for x in http.get("/api/tasks?archived=true").json()["tasks"]} == set(ended)
        assert {x["task_id"] for x in http.get("/api/tasks?archived=false").json()["tasks"]} == set(running)
        # The live stream of an archived task replays it and ends.
        frames = read_frames(http, f"/sse/tasks/{quote(ended[0], safe='')}/events")
        assert event_seqs(frames) == list(range(1, tasks[ended[0]][0] + 1))
        assert frames[-1].event == "end"

    # Restored: the same rows as before, to the byte.
    done = CliRunner().invoke(
        main, ["restore", *ended[:2], "--redis-url", settings.redis_url, "--db", str(settings.db),
               "--queue", settings.queue], env={"TASKEVENTS_ARCHIVE_DIR": str(settings.archive_dir)},
    )  # fmt: skip
    assert done.exit_code == 0, done.output
    for t in ended[:2]:
        assert _store_rows(settings, t) == rows_before[t]
        assert _answers(stack.api.url, t) == before[t]

    # A late event for an archived task: the task comes back, its seq goes on after the archived ones.
    late = ended[2]
    latest = tasks[late][0]
    stack.emitter.emit(late, "runner_heartbeat", span_id=f"{late}/runner", actor="runner")
    stack.emitter.flush()
    wait_for(lambda: _tasks(settings)[late] == (latest + 1, tasks[late][1], 0), timeout=30)
    got = _store_rows(settings, late)
    assert got is not None and [e["seq"] for e in got.events] == list(range(1, latest + 2))
    old = rows_before[late]
    assert old is not None and got.events[:-1] == old.events  # the archived events, as they were


@pytest.mark.parametrize("settings", STORES, indirect=True)
def test_a_missing_or_damaged_archive_answers_410_or_503_never_a_500(stack: Live, settings: Settings) -> None:
    for task in ("gone", "bad"):
        stack.emitter.emit(task, "runner_spawn", span_id=f"{task}/r", actor="runner")
        stack.emitter.emit(task, "runner_exit", span_id=f"{task}/r", actor="runner", payload={"exit_code": 0})
    stack.emitter.flush()
    wait_for(lambda: len(_tasks(settings)) == 2, timeout=30)
    archive_pass(settings, older_than=0)
    wait_for(lambda: _emptied(settings, ["gone", "bad"]), timeout=30)
    (settings.archive_dir / key("gone")).unlink()
    path = settings.archive_dir / key("bad")
    path.write_bytes(path.read_bytes()[:-3] + b"xyz")
    with httpx.Client(base_url=stack.api.url) as http:
        for path_ in ("/api/tasks/gone/events", "/api/tasks/gone/events/snapshot", "/api/tasks/gone/graph"):
            answer = http.get(path_)
            assert answer.status_code == 410 and answer.json()["code"] == "archive_missing", answer.text
        answer = http.get("/sse/tasks/gone/events")  # before the stream starts, not a stream that breaks
        assert answer.status_code == 410 and answer.json()["code"] == "archive_missing", answer.text
        answer = http.get("/api/tasks/bad/overview")
        assert answer.status_code == 503 and answer.json()["code"] == "archive_unreadable", answer.text
        assert "SHA-256" in answer.json()["detail"]
        listed = {x["task_id"]: x for x in http.get("/api/tasks").json()["tasks"]}
        assert listed["gone"]["archived"] and listed["bad"]["archived"]  # the list still lists them
    report = archive_pass(settings)  # a pass reports them too
    assert set(report.damaged) == {"gone", "bad"} and "SHA-256" in report.damaged["bad"]
    done = CliRunner().invoke(
        main, ["restore", "bad", "--redis-url", settings.redis_url, "--db", str(settings.db),
               "--queue", settings.queue, "--timeout", "1"],
        env={"TASKEVENTS_ARCHIVE_DIR": str(settings.archive_dir)},
    )  # fmt: skip
    assert done.exit_code == 1 and "SHA-256" in done.output


@pytest.mark.parametrize("settings", STORES, indirect=True)
def test_archive_command_lists_dry_runs_and_refuses_running_tasks(stack: Live, settings: Settings) -> None:
    stack.emitter.emit("done", "runner_spawn", span_id="done/r", actor="runner")
    stack.emitter.emit("done", "runner_exit", span_id="done/r", actor="runner", payload={"exit_code": 1})
    stack.emitter.emit("busy", "runner_spawn", span_id="busy/r", actor="runner")
    stack.emitter.flush()
    wait_for(lambda: len(_tasks(settings)) == 2, timeout=30)
    base = ["--redis-url", settings.redis_url, "--db", str(settings.db), "--queue", settings.queue]
    env = {"TASKEVENTS_ARCHIVE_DIR": str(settings.archive_dir)}
    runner = CliRunner()
    done = runner.invoke(main, ["archive", "--dry-run", "--older-than", "0s", *base], env=env)
    assert done.exit_code == 0 and "would archive done" in done.output and "busy" not in done.output
    assert not settings.archive_dir.exists()
    done = runner.invoke(main, ["archive", "--task", "busy", "--task", "nope", *base], env=env)
    assert "busy: still running" in done.output and "nope: no such task" in done.output
    done = runner.invoke(main, ["archive", "--older-than", "1d", *base], env=env)
    assert done.exit_code == 0 and "archived 0 tasks" in done.output  # too recent
    done = runner.invoke(main, ["archive", "--task", "done", *base], env=env)
    assert done.exit_code == 0 and "archived done" in done.output
    done = runner.invoke(main, ["archive", "--list", *base], env=env)
    assert done.exit_code == 0 and done.output.startswith("done\tfailed\tseq 1..2")
    done = runner.invoke(main, ["archive", "--older-than", "soon", *base], env=env)
    assert done.exit_code == 2 and "not a duration" in done.output
    assert TaskArchive.at(settings.archive_dir).manifest("done").event_count == 2
    wait_for(lambda: _emptied(settings, ["done"]), timeout=30)
    if not settings.postgres:
        assert sqlite3.connect(settings.sqlite_path).execute("PRAGMA auto_vacuum").fetchone() == (
            2,
        )  # incremental


def _archive_files(settings: Settings) -> int:
    return sum(1 for _ in TaskArchive.at(settings.archive_dir).blobs.list("tasks"))


def _archived_seqs(settings: Settings, task_ids: list[str]) -> dict[str, list[int]]:
    """Each task's seqs across the store and its archive (an archived task's, from its archive)."""
    archive = TaskArchive.at(settings.archive_dir)
    marks = dict(store_rows(settings, "SELECT task_id, archived FROM tasks"))
    out: dict[str, list[int]] = {}
    for t in task_ids:
        if marks.get(t) == 1:
            out[t] = [e["seq"] for e in archive.read(t).events]
        else:
            out[t] = [
                s
                for (s,) in store_rows(
                    settings, "SELECT seq FROM task_events WHERE task_id = ? ORDER BY seq", t
                )
            ]
    return out


def test_a_pass_asked_to_stop_ends_after_the_task_in_hand_and_says_there_is_more(
    settings: Settings, client: redis.Redis
) -> None:
    """A warm stop of the jobs process waits for one task, not a whole pass (its pacing sleep wakes too)."""
    writer = StoreWriter(open_writer(settings.sqlite_path))
    writer.take_over()
    ended = []
    for n in range(5):
        for kind in ("runner_spawn", "runner_exit"):
            event = {"task_id": f"t{n}", "event_type": kind, "actor": "runner", "span_id": "root"}
            ended.append(Decoded(*decode_event(orjson.dumps(event), 1 << 20)))
    writer.commit(1, ended)
    writer.close()
    control = QueueKeys(settings.queue).control
    stop = threading.Event()
    reports: list[PassReport] = []
    # A pace no pass would finish: only the stop can end its sleep after the first task.
    run = threading.Thread(
        target=lambda: reports.append(
            archive_pass(settings, older_than=0, client=client, pace=1e9, stop=stop)
        )
    )
    run.start()
    wait_for(lambda: client.llen(control) >= 1)
    stop.set()
    run.join(30)
    assert not run.is_alive(), "the pass slept on after it was asked to stop"
    (report,) = reports
    assert len(report.archived) == 1 and client.llen(control) == 1 and report.more
    assert not client.exists(QueueKeys(settings.queue).archive_lock)  # the lock is given back


def _warm_stop(jobs: subprocess.Popen[bytes], timeout: float = 30) -> None:
    """SIGTERM: the jobs process ends its pass after the task in hand and exits 0. One that does not
    is made to write its threads' stacks (SIGUSR1, into the test's captured output), then killed, so
    that nothing outlives the test."""
    jobs.terminate()
    try:
        code = jobs.wait(timeout)
    except subprocess.TimeoutExpired:
        jobs.send_signal(signal.SIGUSR1)
        time.sleep(1)
        jobs.kill()
        jobs.wait(10)
        pytest.fail(f"the jobs process still ran {timeout:.0f} s after SIGTERM (its stacks are above)")
    assert code == 0


@pytest.mark.slow
@pytest.mark.parametrize("settings", STORES, indirect=True)
def test_jobs_sigkilled_mid_pass_again_and_again_lose_and_double_nothing(
    stack: Live, settings: Settings
) -> None:
    total = simulate(stack.emitter, tasks=400, concurrency=40, rate=0, seed=21, prefix="kill")
    stack.emitter.flush()
    wait_for(lambda: sum(s for s, _, _ in _tasks(settings).values()) == total, timeout=120)
    tasks = _tasks(settings)
    env = worker_env(
        settings, TASKEVENTS_RETENTION="0s", TASKEVENTS_ARCHIVE_EVERY="1s", TASKEVENTS_LOG_LEVEL="WARNING"
    )
    command = [sys.executable, "-m", "taskevents", "jobs"]
    rng = random.Random(5)
    for _ in range(3):  # started, killed mid-pass (as soon as it has archived more), again
        jobs = subprocess.Popen(command, env=env)
        try:
            had = _archive_files(settings)
            wait_for(lambda had=had: _archive_files(settings) > had, timeout=60)  # type: ignore[misc]
            time.sleep(rng.uniform(0, 0.3))
        finally:
            jobs.kill()
            jobs.wait(10)
    jobs = subprocess.Popen(command, env=env)  # the last one finishes the work
    try:
        wait_for(lambda: _emptied(settings, list(tasks)), timeout=120, interval=0.2)
    finally:
        _warm_stop(jobs)
    seqs = _archived_seqs(settings, list(tasks))
    assert all(seqs[t] == list(range(1, latest + 1)) for t, (latest, _, _) in tasks.items())
    assert store_rows(settings, "SELECT count(*) FROM task_events") == [(0,)]


@pytest.mark.slow
@pytest.mark.parametrize("settings", STORES, indirect=True)
def test_archiving_during_full_speed_ingest_loses_and_doubles_nothing(
    stack: Live, settings: Settings
) -> None:
    first = simulate(stack.emitter, tasks=100, concurrency=20, rate=0, seed=31, prefix="old")
    stack.emitter.flush()
    wait_for(lambda: sum(s for s, _, _ in _tasks(settings).values()) == first, timeout=60)
    old = list(_tasks(settings))
    done = threading.Event()

    def passes() -> None:
        while not done.is_set():
            archive_pass(settings, older_than=0)
            time.sleep(0.05)

    archiver = threading.Thread(target=passes)
    archiver.start()
    try:
        more = simulate(stack.emitter, tasks=300, concurrency=50, rate=0, seed=32, prefix="new")
        # Late events for tasks being archived meanwhile: each goes on after that task's last seq.
        for t in old[:20]:
            stack.emitter.emit(t, "runner_heartbeat", span_id=f"{t}/runner", actor="runner")
        stack.emitter.flush()
        wait_for(
            lambda: sum(s for s, _, _ in _tasks(settings).values()) == first + more + 20,
            timeout=120,
        )
    finally:
        done.set()
        archiver.join(60)
    while archive_pass(settings, older_than=0).more:  # each pass is bounded
        pass
    tasks = _tasks(settings)
    ended = [t for t, (_, status, _) in tasks.items() if status != "running"]
    assert set(old) <= set(ended)
    wait_for(lambda: _emptied(settings, ended), timeout=60)
    seqs = _archived_seqs(settings, list(tasks))
    assert all(seqs[t] == list(range(1, latest + 1)) for t, (latest, _, _) in tasks.items())


def test_one_pass_at_a_time(settings: Settings) -> None:
    client = redis.Redis.from_url(settings.redis_url)
    open_writer(settings.sqlite_path).close()
    held = PassLock(client, QueueKeys(settings.queue))
    assert held.acquire()
    try:
        assert archive_pass(settings, older_than=0).skipped == "another archive pass holds the lock"
    finally:
        held.release()
    assert archive_pass(settings, older_than=0).skipped is None


def test_old_dead_letters_move_to_a_file_before_they_leave_redis(settings: Settings) -> None:
    client = redis.Redis.from_url(settings.redis_url)
    open_writer(settings.sqlite_path).close()
    dead = QueueKeys(settings.queue).dead
    old = [
        orjson.dumps({"code": "not_json", "raw": f"x{i}", "dead_at": "2020-01-01T00:00:00.000Z"})
        for i in range(7)
    ]
    new = [orjson.dumps({"code": "not_json", "raw": "y", "dead_at": "2999-01-01T00:00:00.000Z"})]
    client.rpush(dead, *old, *new)
    report = archive_pass(settings)
    assert report.dead_letters_moved == 7 and len(report.dead_letter_files) == 1
    assert client.lrange(dead, 0, -1) == new
    data = (settings.archive_dir / report.dead_letter_files[0]).read_bytes()
    assert zstandard.ZstdDecompressor().decompress(data).splitlines() == old
    assert archive_pass(settings).dead_letters_moved == 0  # the new one stays: younger than 7 days


def _archive_now(settings: Settings, task_id: str) -> None:
    report = archive_pass(settings, task_ids=[task_id])
    assert report.archived == [task_id], report
    wait_for(lambda: _emptied(settings, [task_id]), timeout=30)


@pytest.mark.parametrize("settings", STORES, indirect=True)
def test_a_late_event_beside_an_unreadable_archive_is_kept_and_restore_merges_it(
    stack: Live, settings: Settings
) -> None:
    for event_type in ("runner_spawn", "runner_heartbeat", "runner_exit"):
        stack.emitter.emit("late", event_type, span_id="late/r", actor="runner", payload={"exit_code": 0})
    stack.emitter.flush()
    wait_for(lambda: _tasks(settings).get("late", (0,))[0] == 3, timeout=30)
    _archive_now(settings, "late")
    path = settings.archive_dir / key("late")
    good = path.read_bytes()
    path.write_bytes(good[:-1] + bytes([good[-1] ^ 1]))
    stack.emitter.emit("late", "runner_heartbeat", span_id="late/r", actor="runner")
    stack.emitter.flush()
    wait_for(lambda: _tasks(settings)["late"][0] == 4, timeout=30)  # stored, seq 4, all the same
    time.sleep(1.0)  # the worker's retention steps run meanwhile: they must not remove it
    assert store_rows(settings, "SELECT seq FROM task_events WHERE task_id = 'late'") == [(4,)]
    assert _tasks(settings)["late"][2] == 1  # still archived: reads say its archive is damaged
    path.write_bytes(good)  # repaired
    done = CliRunner().invoke(
        main, ["restore", "late", "--redis-url", settings.redis_url, "--db", str(settings.db),
               "--queue", settings.queue], env={"TASKEVENTS_ARCHIVE_DIR": str(settings.archive_dir)},
    )  # fmt: skip
    assert done.exit_code == 0, done.output
    assert store_rows(settings, "SELECT seq FROM task_events WHERE task_id = 'late' ORDER BY seq") == [
        (1,),
        (2,),
        (3,),
        (4,),
    ]


@pytest.mark.parametrize("settings", STORES, indirect=True)
def test_a_task_archived_again_is_read_from_its_new_archive(stack: Live, settings: Settings) -> None:
    stack.emitter.emit("again", "runner_spawn", span_id="again/r", actor="runner")
    stack.emitter.emit("again", "runner_exit", span_id="again/r", actor="runner", payload={"exit_code": 0})
    stack.emitter.flush()
    wait_for(lambda: _tasks(settings).get("again", (0,))[0] == 2, timeout=30)
    _archive_now(settings, "again")
    with httpx.Client(base_url=stack.api.url) as http:
        assert http.get("/api/tasks/again/events").json()["total"] == 2  # loaded and kept by the API
        stack.emitter.emit("again", "runner_heartbeat", span_id="again/r", actor="runner")
        stack.emitter.flush()
        wait_for(lambda: _tasks(settings)["again"] == (3, "succeeded", 0), timeout=30)  # brought back
        _archive_now(settings, "again")
        body = http.get("/api/tasks/again/events").json()
        assert body["total"] == 3 and [e["seq"] for e in body["events"]] == [1, 2, 3]
        assert http.get("/api/tasks/again/events/snapshot").json()["archived"] is True
    assert len(store_rows(settings, "SELECT restored_at FROM task_restores WHERE task_id = 'again'")) == 1
