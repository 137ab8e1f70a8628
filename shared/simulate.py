"""`taskevents simulate`: realistic agent runs, so that a new installation shows data at once.

A run is a generator of steps, each step emitting one event; the scheduler keeps `concurrency` runs in
flight and picks among them at random, so the stream interleaves like many runners at once. Every run
has a random source of its own (seeded from the one given), so its story does not depend on how it
was interleaved, and a seed repeats the whole stream, task ids included: simulate into the same store
again with another `--prefix`.

Like real fleets, about FAILED_SHARE of the runs end `failed` (the runner killed mid-run, or giving up
after MAX_RECOVERIES rejected checkpoints), checkpoints are sometimes rejected, and `leave_running`
runs stop part way, without a `runner_exit`, as runs still in progress do. `simulate_big_run` emits
one long run of a given number of events and spans, for the UI's big-run tests and benchmark.
"""

import itertools
import random
import time
from collections.abc import Callable, Generator, Iterator
from functools import partial
from typing import Any

from taskevents import lifecycle as lc
from taskevents.emitter import Emitter

Step = Callable[[], None]  # emits exactly one event
Steps = Iterator[Step]

MAX_RECOVERIES = 2  # then the run gives up and exits failed
FAILED_SHARE = 0.2  # runs that end failed
KILLED_SHARE = 0.4  # of those, the runner killed mid-run (the others give up after their recoveries)
FAIL_CHANCE = 0.07  # a work item failing on its first try
RETRY_FAIL_CHANCE = 0.03
INVALID_CHANCE = 0.12  # a checkpoint rejected although every work item completed
HEARTBEAT_CHANCE = 0.06  # after each step of the executing phase
EXPLAIN_CHANCE = 0.35

VERSIONS = ("1.4.2", "1.5.0", "1.5.1")
WORK_TYPES = {  # work type: the evidence it leaves
    "code_edit": "diff",
    "test_run": "test_report",
    "lint": "lint_report",
    "refactor": "diff",
    "doc_update": "diff",
    "dependency_upgrade": "lockfile",
}
ERRORS = {
    "timeout": "the step ran past its 600 s budget",
    "tests_failed": "3 tests failed after the change",
    "merge_conflict": "the branch moved underneath; rebase needed",
    "oom_killed": "the process was killed for using too much memory",
    "tool_error": "the formatter exited with status 2",
}
INVALID = {
    "hash_mismatch": "the committed tree does not match the recorded hash",
    "missing_artifact": "an artifact named in the checkpoint is missing",
    "tests_failed": "the verification suite found a regression",
}
KILLED = {  # how a runner dies mid-run: its exit code and explanation
    137: "the runner was killed: out of memory",
    143: "the runner was stopped by its supervisor: lease lost",
    70: "the runner crashed: unhandled exception in the planner",
}


def simulate(
    emitter: Emitter,
    *,
    tasks: int,
    concurrency: int,
    rate: float,
    seed: int | None,
    prefix: str,
    leave_running: int = 0,
) -> int:
    """Emit `tasks` runs, `concurrency` at a time, at about `rate` events/s (<= 0: as fast as Redis
    takes them); the first `leave_running` runs stop part way, still running. Returns the events emitted.
    """
    rng = random.Random(seed)
    numbers = iter(range(1, max(0, tasks) + 1))
    active: list[Steps] = []
    emitted = 0
    start = time.monotonic()
    while True:
        # Start new runs as others finish, so that `concurrency` are always in flight.
        while len(active) < max(1, concurrency) and (n := next(numbers, None)) is not None:
            tag = f"{rng.getrandbits(24):06x}"
            run = _Run(emitter, random.Random(rng.getrandbits(64)), f"{prefix}-{n:04d}-{tag}", tag)
            steps = run.steps()
            if n <= leave_running:
                steps = itertools.islice(steps, run.rng.randint(6, 30))  # stops before its runner_exit
            active.append(steps)
        if not active:
            return emitted
        run_steps = rng.choice(active)
        step = next(run_steps, None)
        if step is None:
            active.remove(run_steps)
            continue
        if rate > 0:
            # Event k is due at start + k/rate: sleeping to a deadline, not for 1/rate, does not drift.
            delay = start + emitted / rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)
        else:
            _keep_up(emitter)
        step()
        emitted += 1


def _keep_up(emitter: Emitter) -> None:
    """As fast as Redis takes it, not faster: past half the emitter's buffer, wait for it to drain
    (emitting faster than Redis takes events would make the emitter drop the oldest)."""
    if emitter.pending() > emitter.buffer_size // 2:
        emitter.flush(timeout=60)


def simulate_big_run(emitter: Emitter, *, events: int, spans: int, seed: int | None, prefix: str) -> str:
    """One long run of exactly `events` events and `spans` spans: planning, then ATTEMPTS executing
    attempts (each with its share of the work items, 24 in flight at a time, progress as current/total
    steps), rejected checkpoints and recoveries between them, and a verified end. Returns its task id."""
    rng = random.Random(seed)
    tag = f"{rng.getrandbits(24):06x}"
    run = _BigRun(emitter, rng, f"{prefix}-big-{tag}", tag, events, spans)
    for step in run.steps():
        _keep_up(emitter)
        step()
    return run.task_id


class _Run:
    """One simulated task: its ids, its random source and the events of its life, in order."""

    def __init__(self, emitter: Emitter, rng: random.Random, task_id: str, tag: str) -> None:
        self.emitter = emitter
        self.rng = rng
        self.task_id = task_id
        self.tag = tag  # span ids start with it, so they are unique across tasks too
        self.root = self.span("runner")
        self.ids = itertools.count(1)  # checkpoint and evidence ids
        self.items = [f"item-{i}" for i in range(1, rng.randint(3, 6) + 1)]
        self.work_types = {item: rng.choice(list(WORK_TYPES)) for item in self.items}  # kept on a retry
        # How this run ends, decided up front so that a seed tells the whole story: fine, or failed
        # by the runner being killed in an executing attempt, or by every checkpoint being rejected.
        doomed = rng.random() < FAILED_SHARE
        self.killed_in = (
            1 if doomed and rng.random() < KILLED_SHARE else 0
        )  # the executing attempt it dies in
        self.rejected = doomed and not self.killed_in

    def step(self, emit: Callable[..., None], *args: Any, **kwargs: Any) -> Step:
        return partial(emit, self.task_id, *args, emitter=self.emitter, **kwargs)

    def span(self, name: str, attempt: int = 1) -> str:
        return f"{self.tag}-{name}" + (f"-{attempt}" if attempt > 1 else "")

    def new_id(self, kind: str) -> str:
        return f"{kind}-{self.tag}-{next(self.ids)}"

    def commit_hash(self) -> str:
        return f"{self.rng.getrandbits(160):040x}"

    def say(self, text: str) -> str | None:
        """An explanation now and then, as a real runner gives one."""
        return text if self.rng.random() < EXPLAIN_CHANCE else None

    def heartbeat(self) -> Step:
        return self.step(lc.emit_runner_heartbeat, self.root)

    # --- the story ---------------------------------------------------------------------------------

    def steps(self) -> Steps:
        rng = self.rng
        yield self.step(lc.emit_runner_spawn, self.root, rng.randint(1000, 65000), rng.choice(VERSIONS))
        items = self.items
        last_good = yield from self.planning(items)
        todo, attempt = items, 1
        while True:
            if attempt == self.killed_in:
                yield from self.killed(todo, attempt)
                return
            checkpoint, artifacts, failed = yield from self.executing(todo, attempt)
            if rng.random() < 0.5:
                yield self.heartbeat()
            error = yield from self.verifying(checkpoint, artifacts, failed, attempt)
            if error is None:
                why = self.say(f"all {len(items)} work items done and verified")
                yield self.step(lc.emit_runner_exit, self.root, 0, "succeeded", explanation=why)
                return
            if attempt > MAX_RECOVERIES:
                why = f"gave up after {MAX_RECOVERIES} recoveries: {error}"
                yield self.step(lc.emit_runner_exit, self.root, 1, "failed", explanation=why)
                return
            # Re-run what failed; if everything completed but the checkpoint was rejected, redo one item.
            todo = failed or [rng.choice(items)]
            yield from self.recovery(last_good, error, todo, attempt)
            attempt += 1

    def planning(self, items: list[str]) -> Generator[Step, None, str]:
        """Plan the work, and commit the plan as the first checkpoint (where a recovery restarts)."""
        span = self.span("planning")
        why = self.say(f"split the task into {len(items)} work items")
        yield self.step(lc.emit_phase_enter, span, "planning", self.root, explanation=why)
        plan = self.new_id("ev")
        yield self.step(lc.emit_evidence_collected, span, "planning", "plan", plan)
        checkpoint = self.new_id("cp")
        refs = {"artifacts": [plan], "commit_hash": self.commit_hash(), "work_items": items}
        yield self.step(lc.emit_checkpoint_commit, span, checkpoint, "plan", "planning", refs)
        yield self.step(lc.emit_checkpoint_verified, span, checkpoint, "planning")
        yield self.step(lc.emit_phase_exit, span, "planning")
        return checkpoint

    def executing(
        self, todo: list[str], attempt: int
    ) -> Generator[Step, None, tuple[str, list[str], list[str]]]:
        """Work items in parallel under the phase span, then a checkpoint of what they produced.

        Returns the checkpoint id, its artifacts (evidence ids) and the work items that failed.
        """
        span = self.span("executing", attempt)
        why = self.say(f"running {len(todo)} work items in parallel")
        yield self.step(lc.emit_phase_enter, span, "executing", self.root, explanation=why)
        evidence: dict[str, str | None] = {}  # work item -> its evidence id, None if it failed
        workers = [self.work_item(span, item, attempt, evidence) for item in todo]
        while workers:
            worker = self.rng.choice(workers)
            step = next(worker, None)
            if step is None:
                workers.remove(worker)
                continue
            yield step
            if self.rng.random() < HEARTBEAT_CHANCE:
                yield self.heartbeat()
        done = [item for item in todo if evidence[item]]
        artifacts = [ev for ev in evidence.values() if ev]
        checkpoint = self.new_id("cp")
        refs = {"artifacts": artifacts, "commit_hash": self.commit_hash(), "work_items": done}
        why = self.say(f"{len(done)} of {len(todo)} work items committed")
        yield self.step(
            lc.emit_checkpoint_commit, span, checkpoint, "execution", "executing", refs, explanation=why
        )
        yield self.step(lc.emit_phase_exit, span, "executing")
        return checkpoint, artifacts, [item for item in todo if not evidence[item]]

    def work_item(
        self, parent: str, item: str, attempt: int, evidence: dict[str, str | None]
    ) -> Iterator[Step]:
        rng = self.rng
        span = self.span(item.replace("item", "wi"), attempt)
        work_type = self.work_types[item]
        phase = "executing"  # work item events carry their phase, for the phase endpoint
        yield self.step(lc.emit_work_item_start, span, parent, item, work_type, phase=phase)
        fails = rng.random() < (FAIL_CHANCE if attempt == 1 else RETRY_FAIL_CHANCE)
        marks = sorted(round(rng.uniform(0.05, 0.95), 2) for _ in range(rng.randint(2, 5)))
        if fails:
            marks = marks[: rng.randint(0, len(marks) - 1)]  # it fails part way through
        for progress in marks:
            yield self.step(lc.emit_work_item_progress, span, parent, item, progress, phase=phase)
        if fails:
            code = rng.choice(list(ERRORS))
            evidence[item] = None
            yield self.step(
                lc.emit_work_item_failed, span, parent, item, code, explanation=ERRORS[code], phase=phase
            )
            return
        yield self.step(lc.emit_work_item_progress, span, parent, item, 1.0, phase=phase)
        ev = self.new_id("ev")
        evidence[item] = ev
        yield self.step(lc.emit_evidence_collected, span, phase, WORK_TYPES[work_type], ev)
        yield self.step(
            lc.emit_work_item_complete,
            span,
            parent,
            item,
            work_type,
            explanation=self.say("done"),
            phase=phase,
        )

    def verifying(
        self, checkpoint: str, artifacts: list[str], failed: list[str], attempt: int
    ) -> Generator[Step, None, str | None]:
        """Link the evidence to the checkpoint and judge it; returns an error code if it is rejected."""
        span = self.span("verifying", attempt)
        yield self.step(
            lc.emit_phase_enter, span, "verifying", self.root, explanation=self.say("checking the work")
        )
        report = self.new_id("ev")
        yield self.step(lc.emit_evidence_collected, span, "verifying", "test_report", report)
        for ev in [report, *artifacts[:2]]:
            yield self.step(lc.emit_evidence_linked, span, "verifying", ev, checkpoint)
        error: str | None
        why: str | None
        if failed:
            error, why = "work_items_failed", f"not done: {', '.join(failed)}"
        elif self.rejected or self.rng.random() < INVALID_CHANCE:
            error = self.rng.choice(list(INVALID))
            why = INVALID[error]
        else:
            error, why = None, self.say("evidence matches the commit")
        if error is None:
            yield self.step(lc.emit_checkpoint_verified, span, checkpoint, "verifying", explanation=why)
        else:
            yield self.step(lc.emit_checkpoint_invalid, span, checkpoint, "verifying", error, explanation=why)
        yield self.step(lc.emit_phase_exit, span, "verifying")
        return error

    def killed(self, todo: list[str], attempt: int) -> Iterator[Step]:
        """The runner dies part way through an executing attempt: work items are left open."""
        span = self.span("executing", attempt)
        yield self.step(lc.emit_phase_enter, span, "executing", self.root)
        for item in todo[: self.rng.randint(1, len(todo))]:
            wi = self.span(item.replace("item", "wi"), attempt)
            work_type = self.work_types[item]
            yield self.step(lc.emit_work_item_start, wi, span, item, work_type, phase="executing")
            yield self.step(lc.emit_work_item_progress, wi, span, item, 0.3, phase="executing")
        code = self.rng.choice(list(KILLED))
        yield self.step(lc.emit_runner_exit, self.root, code, "failed", explanation=KILLED[code])

    def recovery(self, last_good: str, error: str, todo: list[str], attempt: int) -> Iterator[Step]:
        """Roll back to the last verified checkpoint, then execute again (the caller re-enters executing)."""
        span = self.span("recovery", attempt)
        yield self.step(lc.emit_phase_enter, span, "recovery", self.root)
        yield self.step(
            lc.emit_recovery_initiated, span, error, explanation=self.say(f"checkpoint rejected: {error}")
        )
        yield self.step(lc.emit_recovery_checkpoint_loaded, span, last_good)
        yield self.step(
            lc.emit_recovery_complete, span, explanation=self.say(f"re-running {', '.join(todo)}")
        )
        yield self.step(lc.emit_phase_exit, span, "recovery")


class _BigRun(_Run):
    """One long run with exact numbers of events and spans (simulate_big_run)."""

    ATTEMPTS = 4  # executing attempts; the first ATTEMPTS - 1 checkpoints are rejected
    IN_FLIGHT = 24  # work items running at once
    # Events that are not a work item's: spawn, planning (5), exit; per attempt enter, commit and exit
    # of executing, verifying (enter, evidence, link, verdict, exit), and between attempts a recovery (5).
    FIXED_EVENTS = 1 + 5 + 1 + ATTEMPTS * (3 + 5) + (ATTEMPTS - 1) * 5
    FIXED_SPANS = 1 + 1 + 2 * ATTEMPTS + (ATTEMPTS - 1)  # root, planning, executing + verifying, recovery

    def __init__(
        self, emitter: Emitter, rng: random.Random, task_id: str, tag: str, events: int, spans: int
    ) -> None:
        super().__init__(emitter, rng, task_id, tag)
        self.killed_in, self.rejected = 0, False
        items = spans - self.FIXED_SPANS
        # A work item has at least start, one progress step, evidence and its end (4 events).
        if items < self.ATTEMPTS or events < self.FIXED_EVENTS + 4 * items:
            raise ValueError(
                f"a big run of {spans} spans needs at least {self.FIXED_SPANS + self.ATTEMPTS} spans and "
                f"{self.FIXED_EVENTS + 4 * max(items, self.ATTEMPTS)} events"
            )
        self.items = [f"item-{i}" for i in range(1, items + 1)]
        self.work_types = {item: rng.choice(list(WORK_TYPES)) for item in self.items}
        # The progress steps left over after every item's minimum, spread over the items.
        spare = events - self.FIXED_EVENTS - 4 * items
        self.steps_of = {
            item: 1 + spare // items + (1 if i < spare % items else 0) for i, item in enumerate(self.items)
        }

    def steps(self) -> Steps:
        rng = self.rng
        yield self.step(lc.emit_runner_spawn, self.root, rng.randint(1000, 65000), rng.choice(VERSIONS))
        last_good = yield from self.planning(self.items[:50])
        # Exactly ATTEMPTS batches, the first ones one item larger when they do not divide evenly.
        size, extra = divmod(len(self.items), self.ATTEMPTS)
        bounds = [k * size + min(k, extra) for k in range(self.ATTEMPTS + 1)]
        batches = [self.items[bounds[k] : bounds[k + 1]] for k in range(self.ATTEMPTS)]
        for attempt, todo in enumerate(batches, start=1):
            checkpoint, artifacts = yield from self.big_executing(todo, attempt)
            last = attempt == len(batches)
            yield from self.big_verifying(checkpoint, artifacts, attempt, rejected=not last)
            if not last:
                yield from self.recovery(last_good, "tests_failed", batches[attempt][:3], attempt)
        why = f"{len(self.items)} work items over {len(batches)} attempts, verified"
        yield self.step(lc.emit_runner_exit, self.root, 0, "succeeded", explanation=why)

    def big_executing(self, todo: list[str], attempt: int) -> Generator[Step, None, tuple[str, list[str]]]:
        span = self.span("executing", attempt)
        yield self.step(lc.emit_phase_enter, span, "executing", self.root)
        evidence: dict[str, str | None] = {}
        waiting = list(todo)
        running: list[Iterator[Step]] = []
        while waiting or running:
            while waiting and len(running) < self.IN_FLIGHT:
                running.append(self.big_item(span, waiting.pop(0), attempt, evidence))
            worker = self.rng.choice(running)
            step = next(worker, None)
            if step is None:
                running.remove(worker)
                continue
            yield step
        artifacts = [ev for ev in evidence.values() if ev]
        checkpoint = self.new_id("cp")
        done = [item for item in todo if evidence.get(item)]
        refs = {"artifacts": artifacts[:20], "commit_hash": self.commit_hash(), "work_items": done[:20]}
        yield self.step(lc.emit_checkpoint_commit, span, checkpoint, "execution", "executing", refs)
        yield self.step(lc.emit_phase_exit, span, "executing")
        return checkpoint, artifacts

    def big_item(
        self, parent: str, item: str, attempt: int, evidence: dict[str, str | None]
    ) -> Iterator[Step]:
        span = self.span(item.replace("item", "wi"), attempt)
        work_type = self.work_types[item]
        total = self.steps_of[item]
        yield self.step(lc.emit_work_item_start, span, parent, item, work_type, phase="executing")
        for done in range(1, total + 1):
            yield self.step(
                lc.emit_work_item_progress, span, parent, item, current=done, total=total, phase="executing"
            )
        ev = self.new_id("ev")
        yield self.step(lc.emit_evidence_collected, span, "executing", WORK_TYPES[work_type], ev)
        if self.rng.random() < FAIL_CHANCE / 2:
            code = self.rng.choice(list(ERRORS))
            evidence[item] = None
            yield self.step(
                lc.emit_work_item_failed,
                span,
                parent,
                item,
                code,
                explanation=ERRORS[code],
                phase="executing",
            )
        else:
            evidence[item] = ev
            yield self.step(lc.emit_work_item_complete, span, parent, item, work_type, phase="executing")

    def big_verifying(
        self, checkpoint: str, artifacts: list[str], attempt: int, *, rejected: bool
    ) -> Iterator[Step]:
        span = self.span("verifying", attempt)
        yield self.step(lc.emit_phase_enter, span, "verifying", self.root)
        report = self.new_id("ev")
        yield self.step(lc.emit_evidence_collected, span, "verifying", "test_report", report)
        yield self.step(lc.emit_evidence_linked, span, "verifying", report, checkpoint)
        if rejected:
            error = self.rng.choice(list(INVALID))
            yield self.step(
                lc.emit_checkpoint_invalid, span, checkpoint, "verifying", error, explanation=INVALID[error]
            )
        else:
            yield self.step(lc.emit_checkpoint_verified, span, checkpoint, "verifying")
        yield self.step(lc.emit_phase_exit, span, "verifying")
