// activity(): what the run is doing now and what it normally does next, read off the model as live
// events move it through the lifecycle (planning, executing, verifying, recovery, the runner's exit).
import assert from "node:assert/strict";
import { test } from "node:test";
import { activity } from "../src/model/nextstep";
import { TaskModel } from "../src/model/task";
import type { Payload, TaskEvent } from "../src/types";
import { event, overview, span, summary } from "./helpers";

/** A run driven event by event from its runner_spawn (seq 1), as the live stream moves the page. */
class Run {
  model = new TaskModel(
    overview({
      task: summary({ latest_seq: 1, event_count: 1 }),
      roots: [span("root", { event_type: "runner_spawn", start_seq: 1 })],
      events: [event(1, "runner_spawn")],
    }),
  );
  private seq = 1;
  private stage = "";
  private attempts = new Map<string, number>();

  emit(type: string, fields: Partial<TaskEvent> = {}): this {
    this.seq += 1;
    assert.equal(this.model.apply([event(this.seq, type, fields)]), 1);
    return this;
  }
  /** phase_enter of a new stage "<phase>-<attempt>" under the root span. */
  enter(phase: string): this {
    const attempt = (this.attempts.get(phase) ?? 0) + 1;
    this.attempts.set(phase, attempt);
    this.stage = `${phase}-${attempt}`;
    return this.emit("phase_enter", { span_id: this.stage, parent_span_id: "root", phase });
  }
  exit(): this {
    return this.emit("phase_exit", { span_id: this.stage, phase: this.phase });
  }
  /** Work items of the current stage: start `wi-<n>`, then complete (c), fail (f) or leave running (o). */
  items(states: string): this {
    for (let n = 0; n < states.length; n += 1) this.item("work_item_start", n, {});
    [...states].forEach((state, n) => {
      if (state === "c") this.item("work_item_complete", n, {});
      if (state === "f") this.item("work_item_failed", n, { error_code: "E1" });
    });
    return this;
  }
  commit(id: string): this {
    return this.onStage("checkpoint_commit", { checkpoint_id: id, checkpoint_type: "execution", evidence_refs: { artifacts: ["ev-1"] } });
  }
  verified(id: string): this {
    return this.onStage("checkpoint_verified", { checkpoint_id: id });
  }
  rejected(id: string): this {
    return this.onStage("checkpoint_invalid", { checkpoint_id: id, error_code: "missing_artifact" });
  }
  /** A recovery after a rejection: enter, initiated, checkpoint loaded, complete, exit. */
  recover(to: string): this {
    return this.enter("recovery")
      .onStage("recovery_initiated", { reason: "missing_artifact" })
      .onStage("recovery_checkpoint_loaded", { checkpoint_id: to })
      .onStage("recovery_complete")
      .exit();
  }
  end(payload: Payload): this {
    return this.emit("runner_exit", { payload });
  }
  get now() {
    return activity(this.model);
  }

  private get phase() {
    return this.stage.replace(/-\d+$/, "");
  }
  private onStage(type: string, payload: Payload = {}): this {
    return this.emit(type, { span_id: this.stage, phase: this.phase, payload });
  }
  private item(type: string, n: number, payload: Payload): this {
    const fields = { span_id: `${this.stage}-wi-${n}`, parent_span_id: this.stage, phase: this.phase, actor: "worker" };
    return this.emit(type, { ...fields, payload: { work_item_id: `item-${n}`, work_type: "lint", ...payload } });
  }
}

/** A run planned (cp-1 committed and verified) and left planning. */
const planned = () => new Run().enter("planning").commit("cp-1").verified("cp-1").exit();
/** Executing done: 3 work items completed, one failed, checkpoint cp-2 committed, left executing. */
const executed = () => planned().enter("executing").items("ccfc").commit("cp-2").exit();

// --- before and between phases ---------------------------------------------------------------------------

test("a run with nothing yet has started, and plans next", () => {
  assert.deepEqual(new Run().now, { now: "started", next: "planning" });
});

test("while planning, executing follows", () => {
  assert.deepEqual(new Run().enter("planning").now, { now: "planning", next: "executing" });
});

test("between phases, the phase that normally follows the last one is next", () => {
  assert.deepEqual(planned().now, { now: "between phases (after planning)", next: "executing" });
  assert.deepEqual(executed().now, { now: "between phases (after executing)", next: "verifying" });
  assert.deepEqual(executed().enter("verifying").rejected("cp-2").exit().recover("cp-1").now, {
    now: "between phases (after recovery)",
    next: "executing",
  });
});

// --- executing -----------------------------------------------------------------------------------------------

test("while work items run: how many run, are done and failed, and that they finish next", () => {
  assert.deepEqual(planned().enter("executing").items("ocfoc").now, {
    now: "executing: 2 work items running, 2 done, 1 failed",
    next: "2 open work items to finish, then a checkpoint commit",
  });
  assert.deepEqual(planned().enter("executing").items("o").now, {
    now: "executing: 1 work item running, 0 done",
    next: "1 open work item to finish, then a checkpoint commit",
  });
});

test("every work item ended and no checkpoint yet: a checkpoint commit is next", () => {
  // cp-1 (planning's) was committed before this stage began: it is not this stage's checkpoint.
  assert.deepEqual(planned().enter("executing").items("ccfc").now, {
    now: "executing: 3 work items done, 1 failed",
    next: "a checkpoint commit, then verifying",
  });
});

test("a checkpoint committed and awaiting verification: verifying it is next", () => {
  assert.deepEqual(planned().enter("executing").items("cc").commit("cp-2").now, {
    now: "executing: checkpoint cp-2 committed",
    next: "verifying checkpoint cp-2",
  });
});

test("a later executing attempt is named with its attempt", () => {
  const run = executed().enter("verifying").rejected("cp-2").exit().recover("cp-1").enter("executing").items("oc");
  assert.deepEqual(run.now, {
    now: "executing (attempt 2): 1 work item running, 1 done",
    next: "1 open work item to finish, then a checkpoint commit",
  });
});

// --- verifying ---------------------------------------------------------------------------------------------

test("while verifying a committed checkpoint, its verdict is next", () => {
  assert.deepEqual(executed().enter("verifying").now, { now: "verifying: checking the work", next: "a verdict on checkpoint cp-2" });
});

test("a rejected checkpoint while still verifying: a recovery is next", () => {
  assert.deepEqual(executed().enter("verifying").rejected("cp-2").now, {
    now: "verifying: checkpoint cp-2 rejected",
    next: "a recovery, then executing again",
  });
});

test("a verified checkpoint while still verifying: the runner's exit is next", () => {
  assert.deepEqual(executed().enter("verifying").verified("cp-2").now, {
    now: "verifying: checkpoint cp-2 verified",
    next: "the runner's exit",
  });
});

test("after verifying, the verdict decides what is next", () => {
  assert.deepEqual(executed().enter("verifying").rejected("cp-2").exit().now, {
    now: "left verifying: checkpoint cp-2 rejected",
    next: "a recovery, then executing again",
  });
  assert.deepEqual(executed().enter("verifying").verified("cp-2").exit().now, {
    now: "checkpoint cp-2 verified",
    next: "the runner's exit",
  });
});

test("a second verifying attempt is judged by its own checkpoint, not the first one's verdict", () => {
  const run = executed().enter("verifying").rejected("cp-2").exit().recover("cp-1");
  run.enter("executing").items("c").commit("cp-3").exit().enter("verifying");
  assert.deepEqual(run.now, { now: "verifying (attempt 2): checking the work", next: "a verdict on checkpoint cp-3" });
  assert.deepEqual(run.verified("cp-3").now, { now: "verifying (attempt 2): checkpoint cp-3 verified", next: "the runner's exit" });
});

test("a verifying attempt with no new checkpoint does not take an earlier verdict for its own", () => {
  // executing-2 committed nothing: cp-2 was judged in verifying-1, so verifying-2 still waits.
  const run = executed().enter("verifying").rejected("cp-2").exit().recover("cp-1");
  run.enter("executing").items("c").exit().enter("verifying");
  assert.deepEqual(run.now, { now: "verifying (attempt 2): checking the work", next: "a verdict" });
});

// --- recovery -------------------------------------------------------------------------------------------------

test("while recovering, the next executing attempt is next", () => {
  const run = executed().enter("verifying").rejected("cp-2").exit().enter("recovery").emit("recovery_initiated", {
    span_id: "recovery-1",
    phase: "recovery",
    payload: { reason: "missing_artifact" },
  });
  assert.deepEqual(run.now, { now: "recovery: rolling back", next: "executing again (attempt 2)" });
});

// --- ended ---------------------------------------------------------------------------------------------------

test("a failed run says it ended, with its reason, and nothing is next", () => {
  const run = executed().enter("verifying").rejected("cp-2").exit();
  run.end({ exit_code: 1, outcome: "failed", explanation: "gave up after 3 recoveries: missing_artifact" });
  assert.deepEqual(run.now, { now: "ended: failed — gave up after 3 recoveries: missing_artifact", next: null });
});

test("a runner killed in the middle of a phase has ended: failed, not 'executing'", () => {
  const run = planned().enter("executing").items("oo").end({ exit_code: 137, outcome: "failed", explanation: "killed: out of memory" });
  assert.deepEqual(run.now, { now: "ended: failed — killed: out of memory", next: null });
  assert.deepEqual(planned().enter("executing").end({ exit_code: 137 }).now, { now: "ended: failed — exit code 137", next: null });
});

test("a succeeded run says so, with its explanation if it gave one", () => {
  const verified = () => executed().enter("verifying").verified("cp-2").exit();
  // outcome "succeeded" is the reason too: not said twice.
  assert.deepEqual(verified().end({ exit_code: 0, outcome: "succeeded" }).now, { now: "ended: succeeded", next: null });
  assert.deepEqual(verified().end({ exit_code: 0 }).now, { now: "ended: succeeded", next: null });
  assert.deepEqual(verified().end({ exit_code: 0, outcome: "succeeded", explanation: "all 4 work items done and verified" }).now, {
    now: "ended: succeeded — all 4 work items done and verified",
    next: null,
  });
});

test("a run that ended before the page opened is told from its summary", () => {
  const model = new TaskModel(overview({ task: summary({ latest_seq: 40, status: "failed", exit_reason: "killed_oom" }) }));
  assert.deepEqual(activity(model), { now: "ended: failed — killed_oom", next: null });
});
