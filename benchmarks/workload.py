"""Realistic agent-run events for the ingest benchmarks, deterministic for a given seed.

Each task runs the way the spec describes a run: a runner span, the phases, waves of parallel work
items with progress, evidence and a checkpoint, the odd heartbeat and failure; a task that finishes
starts again with a recovery. Tasks run concurrently, so their events interleave in the queue while
each task's own events stay in order. Payloads are ~100-300 bytes of JSON, like the spec's examples.
"""

import random
import time
from collections.abc import Iterator
from typing import Any, NamedTuple

import orjson

from taskevents.emitter import _frame  # the emitter's own framing: event_uid (ULID) and emitted_at

PHASES = ("planning", "executing", "verifying")
WORK_TYPES = ("code_edit", "test_run", "lint", "doc_update", "dependency_check", "build")
EVIDENCE_TYPES = ("test_report", "diff", "log_excerpt", "coverage", "screenshot")
SENTENCES = (
    "Split the change into independent work items so they can run in parallel.",
    "Re-ran the failing test in isolation; it passes, so the earlier failure was an ordering issue.",
    "Checkpoint taken after all work items of this wave reported their evidence.",
    "Waiting for the lease on the shared build cache before starting the next step.",
    "Verified the generated files against the plan; two files were regenerated.",
    "Progress estimate is based on the number of files processed so far.",
)


class Event(NamedTuple):
    """The arguments of one `Emitter.emit()` call."""

    task_id: str
    event_type: str
    span_id: str
    actor: str
    phase: str | None
    parent_span_id: str | None
    payload: dict[str, Any]


def _uid(rng: random.Random, prefix: str) -> str:
    return f"{prefix}-{rng.getrandbits(96):024x}"


def _explain(rng: random.Random) -> str:
    # A random length, sometimes two sentences, so payload sizes spread over ~100-300 bytes.
    text = rng.choice(SENTENCES)
    if rng.random() < 0.3:
        text += " " + rng.choice(SENTENCES)
    return text[: rng.randint(40, len(text))]


def _wave(rng: random.Random, task_id: str, phase: str, phase_span: str) -> Iterator[Event]:
    """A few work items run in parallel, then the phase span takes a checkpoint of their evidence."""
    items = [(_uid(rng, "span"), _uid(rng, "wi"), rng.choice(WORK_TYPES)) for _ in range(rng.randint(2, 4))]
    for span, wi, kind in items:
        payload: dict[str, Any] = {"work_item_id": wi, "work_type": kind, "explanation": _explain(rng)}
        yield Event(task_id, "work_item_start", span, "worker", phase, phase_span, payload)
    for step in range(1, 4):
        for span, wi, _ in items:
            payload = {"work_item_id": wi, "progress": round(step / 4 + rng.random() / 10, 3),
                       "files_done": rng.randint(1, 40), "explanation": _explain(rng)}  # fmt: skip
            yield Event(task_id, "work_item_progress", span, "worker", phase, phase_span, payload)
    evidence = []
    for span, wi, _ in items:
        ev_id = _uid(rng, "ev")
        evidence.append(ev_id)
        payload = {"work_item_id": wi, "evidence_type": rng.choice(EVIDENCE_TYPES), "evidence_id": ev_id,
                   "explanation": _explain(rng)}  # fmt: skip
        yield Event(task_id, "evidence_collected", span, "worker", phase, phase_span, payload)
    for span, wi, kind in items:
        if rng.random() < 0.05:
            payload = {
                "work_item_id": wi,
                "work_type": kind,
                "error_code": "E_TIMEOUT",
                "explanation": _explain(rng),
            }
            yield Event(task_id, "work_item_failed", span, "worker", phase, phase_span, payload)
        else:
            payload = {"work_item_id": wi, "work_type": kind, "duration_ms": rng.randint(50, 90_000)}
            yield Event(task_id, "work_item_complete", span, "worker", phase, phase_span, payload)
    payload = {"checkpoint_id": _uid(rng, "cp"), "checkpoint_type": "wave", "evidence_refs": evidence}
    yield Event(task_id, "checkpoint_commit", phase_span, "supervisor", phase, None, payload)


def _run(rng: random.Random, task_id: str, attempt: int) -> Iterator[Event]:
    """One attempt of a task, from runner_spawn to runner_exit."""
    root = _uid(rng, "span")
    spawn = {"runner_pid": rng.randint(1000, 65000), "runner_version": "0.32.0", "attempt": attempt}
    yield Event(task_id, "runner_spawn", root, "runner", None, None, spawn)
    if attempt > 1:
        recovery = {"reason": "previous attempt exited", "explanation": _explain(rng)}
        yield Event(task_id, "recovery_initiated", root, "recovery", "recovery", None, recovery)
        loaded = {"checkpoint_id": _uid(rng, "cp"), "explanation": _explain(rng)}
        yield Event(task_id, "recovery_checkpoint_loaded", root, "recovery", "recovery", None, loaded)
    for phase in PHASES:
        span = _uid(rng, "span")
        yield Event(task_id, "phase_enter", span, "runner", phase, root, {"explanation": _explain(rng)})
        for _ in range(rng.randint(20, 60) if phase == "executing" else rng.randint(1, 3)):
            yield from _wave(rng, task_id, phase, span)
            if rng.random() < 0.3:
                beat = {
                    "runner_pid": spawn["runner_pid"],
                    "rss_mb": rng.randint(80, 400),
                    "uptime_s": rng.randint(1, 9999),
                }
                yield Event(task_id, "runner_heartbeat", root, "runner", None, None, beat)
        yield Event(task_id, "phase_exit", span, "runner", phase, root, {"explanation": _explain(rng)})
    outcome = {"exit_code": 0, "outcome": "succeeded", "duration_s": rng.randint(60, 7200)}
    yield Event(task_id, "runner_exit", root, "runner", None, None, outcome)


def _task(rng: random.Random, task_id: str) -> Iterator[Event]:
    attempt = 1
    while True:
        yield from _run(rng, task_id, attempt)
        attempt += 1


def events(n: int, tasks: int, seed: int) -> Iterator[Event]:
    """`n` events of `tasks` concurrent runs, interleaved at random; each task's in its own order."""
    rng = random.Random(seed)
    runs = [_task(random.Random(rng.getrandbits(64)), _uid(rng, "task")) for _ in range(tasks)]
    for _ in range(n):
        yield next(runs[rng.randrange(tasks)])


def body(e: Event) -> bytes:
    """The JSON `Emitter.emit()` builds (same keys, same order)."""
    return orjson.dumps(
        {"task_id": e.task_id, "event_type": e.event_type, "phase": e.phase, "actor": e.actor,
         "span_id": e.span_id, "parent_span_id": e.parent_span_id, "payload": e.payload}
    )  # fmt: skip


def frames(n: int, tasks: int, seed: int) -> Iterator[bytes]:
    """Wire elements as the emitter's sender pushes them, ~10 µs of producer time apart."""
    start = time.time_ns()
    for i, e in enumerate(events(n, tasks, seed)):
        yield _frame(start + i * 10_000, None, body(e))
