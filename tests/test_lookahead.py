"""Batches planned ahead of their commit (ingest/lookahead.py, StoreWriter.prepare): written as planned
while the plan holds, planned again in the commit when it does not, never a seq gap or a repeat."""

from pathlib import Path

import orjson
import pytest
import redis

from taskevents.db import open_writer
from taskevents.event import decode
from taskevents.ingest.lookahead import Lookahead
from taskevents.ingest.worker import Worker
from taskevents.ingest.writer import Decoded, StoreWriter
from taskevents.settings import Settings
from tests.helpers import rows, seqs_by_task


def decoded(task: str, n: int, *, uid: str | None = None, kind: str = "runner_heartbeat") -> Decoded:
    event = {"task_id": task, "event_type": kind, "actor": "runner", "span_id": "root", "payload": {"n": n}}
    if uid is not None:
        event["event_uid"] = uid
    return Decoded(*decode(orjson.dumps(event), 1 << 20))


@pytest.fixture
def writer(tmp_path: Path) -> StoreWriter:
    w = StoreWriter(open_writer(tmp_path / "s.db"))
    w.take_over()
    return w


def stored(writer_path: Path) -> list[tuple]:
    return rows(
        writer_path,
        "SELECT task_id, seq, event_uid, json_extract(payload, '$.n') FROM task_events ORDER BY event_id",
    )


def test_a_prepared_batch_stores_what_an_unprepared_one_does(tmp_path: Path) -> None:
    batches = [
        [decoded("a", 1, uid="u1"), decoded("b", 2), decoded("a", 3, kind="runner_exit", uid="u3")],
        [decoded("a", 4), decoded("c", 5, uid="u5"), decoded("b", 6)],
    ]
    stores = []
    for prepared in (False, True):
        w = StoreWriter(open_writer(tmp_path / f"{prepared}.db"))
        w.take_over()
        ahead = Lookahead(w)
        for batch_id, batch in enumerate(batches, 1):
            plan = ahead.plan(batch) if prepared else None
            ahead.sent(plan)
            assert ahead.landed(w.commit(batch_id, batch, prepared=plan)) == prepared
        w.close()
        tables = [
            rows(tmp_path / f"{prepared}.db", f"SELECT * FROM {t} ORDER BY 1, 2")
            for t in ("task_events", "spans")
        ] + [rows(tmp_path / f"{prepared}.db", "SELECT * FROM tasks ORDER BY task_id")]
        stores.append(tables)

    # created_at differs (taken at planning vs at the commit): compare everything else.
    def without_times(tables: list[list[tuple]]) -> list[list[tuple]]:
        return [
            [tuple(v for v in row if not (isinstance(v, str) and v.startswith("20"))) for row in t]
            for t in tables
        ]

    assert without_times(stores[0]) == without_times(stores[1])
    assert len(stores[1][0]) == 6


def test_a_wrong_base_is_planned_again_in_the_commit(writer: StoreWriter, tmp_path: Path) -> None:
    writer.commit(1, [decoded("a", 1), decoded("a", 2)])
    # Planned as if "a" were new: its base is None, the store has seq 2.
    plan = writer.prepare([decoded("a", 3), decoded("b", 4)], {"a": None, "b": None})
    result = writer.commit(2, [decoded("a", 3), decoded("b", 4)], prepared=plan)
    assert result.tasks == {"a": (3, 3), "b": (1, 1)} != plan.tasks
    assert seqs_by_task(tmp_path / "s.db") == {"a": [1, 2, 3], "b": [1]}


def test_a_repeat_of_a_stored_event_is_dropped_and_the_batch_planned_again(
    writer: StoreWriter, tmp_path: Path
) -> None:
    writer.commit(1, [decoded("a", 1, uid="u1")])
    batch = [decoded("a", 2), decoded("a", 1, uid="u1"), decoded("a", 3, uid="u3")]
    plan = writer.prepare(batch, {"a": 1})
    assert plan.tasks == {"a": (2, 4)}  # the repeat is invisible to a plan made without the store
    result = writer.commit(2, batch, prepared=plan)
    assert (result.stored, result.duplicates, result.tasks) == (2, 1, {"a": (2, 3)})
    assert stored(tmp_path / "s.db") == [("a", 1, "u1", 1), ("a", 2, None, 2), ("a", 3, "u3", 3)]
    (count,) = rows(tmp_path / "s.db", "SELECT event_count FROM tasks WHERE task_id = 'a'")[0]
    assert count == 3  # the rolled-back attempt left nothing behind


def test_repeats_inside_a_batch_are_dropped_by_the_plan(writer: StoreWriter, tmp_path: Path) -> None:
    batch = [decoded("a", 1, uid="u"), decoded("a", 2, uid="u"), decoded("a", 3)]
    plan = writer.prepare(batch, {"a": None})
    result = writer.commit(1, batch, prepared=plan)
    assert (result.stored, result.duplicates, result.tasks) == (
        2,
        1,
        {"a": (1, 2)},
    ) and plan.tasks == result.tasks
    assert stored(tmp_path / "s.db") == [("a", 1, "u", 1), ("a", 2, None, 3)]


def test_a_commit_unlike_its_plan_makes_the_next_plan_start_from_the_store(writer: StoreWriter) -> None:
    ahead = Lookahead(writer)
    assert not ahead.landed(writer.commit(1, [decoded("a", 1, uid="u1")]))  # unplanned: learnt all the same
    first = [decoded("a", 1, uid="u1"), decoded("a", 2)]  # a repeat: will commit seq 2 only
    plan1 = ahead.plan(first)
    ahead.sent(plan1)
    plan2 = ahead.plan([decoded("a", 3)])  # planned behind it, as if it stored seqs 2 and 3
    assert plan2 is not None and plan2.base == {"a": 3}
    assert not ahead.landed(writer.commit(2, first, prepared=plan1))
    again = ahead.plan([decoded("a", 3)])
    assert again is not None and again.base == {"a": 2} and again.tasks == {"a": (3, 3)}


@pytest.mark.redis_server
def test_the_worker_loop_never_gaps_or_repeats_through_repeated_events(
    settings: Settings, client: redis.Redis
) -> None:
    """Repeats of events stored one batch earlier (the batch in flight when the next was planned),
    of events of the same batch, and of older ones: every task's seqs stay 1..n."""
    small = settings.model_copy(update={"batch_size": 10})
    wire = []
    for i in range(300):
        task = f"t{i % 4}"
        wire.append({"task_id": task, "event_type": "runner_heartbeat", "actor": "runner", "span_id": "root",
                     "event_uid": f"u{i}", "payload": {"i": i}})  # fmt: skip
        if i % 7 == 3:
            wire.append(dict(wire[-1 - (i % 3) * 5]))  # a repeat of this batch's, the last one's or older
    client.rpush(settings.queue, *[orjson.dumps(e) for e in wire])
    worker = Worker(small)
    worker.drain()
    assert sorted(uid for _, _, uid, _ in stored(settings.sqlite_path)) == sorted(f"u{i}" for i in range(300))
    seqs = seqs_by_task(settings.sqlite_path)
    assert all(s == list(range(1, len(s) + 1)) for s in seqs.values()) and sum(map(len, seqs.values())) == 300
    assert worker.totals.duplicates == len(wire) - 300
    worker.close()
