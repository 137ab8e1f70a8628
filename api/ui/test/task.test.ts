// TaskModel: one task as the page knows it, built from /api/tasks/{id}/overview and kept up to date by
// live events with the store's rules (ingest/writer.py: seqs, span states, work item fields, counts).
import assert from "node:assert/strict";
import { test } from "node:test";
import { TaskModel } from "../src/model/task";
import type { Overview, Payload, Span, TaskEvent } from "../src/types";
import { TASK, at, event, itemEvent, itemSpan, span, stage, stageSpan, summary } from "./helpers";

// --- the run ---------------------------------------------------------------------------------------------
// A run 22 events in: planned (checkpoint cp-1 verified), executing five work items of which item-1 is
// done, item-2 failed and item-3..5 run. Events as the simulator emits them (shared/simulate.py).

const onRoot = (seq: number, type: string, payload: Payload = {}) => event(seq, type, { payload });
const onStage = (seq: number, type: string, id: string, phase: string, payload: Payload = {}) =>
  event(seq, type, { span_id: id, parent_span_id: type === "phase_enter" ? "root" : null, phase, payload });
const start = (seq: number, n: number, type: string) =>
  itemEvent(seq, "work_item_start", `wi-${n}`, "exec", { work_item_id: `item-${n}`, work_type: type });
const progress = (seq: number, n: number, value: number) =>
  itemEvent(seq, "work_item_progress", `wi-${n}`, "exec", { work_item_id: `item-${n}`, progress: value });
const complete = (seq: number, n: number, type: string) =>
  itemEvent(seq, "work_item_complete", `wi-${n}`, "exec", { work_item_id: `item-${n}`, work_type: type });
const failed = (seq: number, n: number, code: string) =>
  itemEvent(seq, "work_item_failed", `wi-${n}`, "exec", { work_item_id: `item-${n}`, error_code: code });
// A work item's evidence: on its span, with its phase, but no parent (emit_evidence_collected has none).
const evidence = (seq: number, n: number, id: string) =>
  event(seq, "evidence_collected", { span_id: `wi-${n}`, phase: "executing", payload: { evidence_type: "lint_report", evidence_id: id } });

const HASH_1 = "9f2c4e1a7b3d5f60817263544536271809fa1b2c";
const HASH_2 = "0b1c2d3e4f5a6b7c8d9e0f1a2b3c4d5e6f7a8b9c";

const RUN: TaskEvent[] = [
  onRoot(1, "runner_spawn", { runner_pid: 4242, runner_version: "1.4.2" }),
  onStage(2, "phase_enter", "plan", "planning"),
  onStage(3, "evidence_collected", "plan", "planning", { evidence_type: "plan", evidence_id: "ev-1" }),
  onStage(4, "checkpoint_commit", "plan", "planning", {
    checkpoint_id: "cp-1",
    checkpoint_type: "plan",
    evidence_refs: { artifacts: ["ev-1"], commit_hash: HASH_1, work_items: ["item-1", "item-2", "item-3", "item-4", "item-5"] },
  }),
  onStage(5, "checkpoint_verified", "plan", "planning", { checkpoint_id: "cp-1" }),
  onStage(6, "phase_exit", "plan", "planning"),
  onStage(7, "phase_enter", "exec", "executing"),
  start(8, 1, "lint"),
  start(9, 2, "test"),
  start(10, 3, "build"),
  start(11, 4, "lint"),
  start(12, 5, "docs"),
  progress(13, 1, 0.5),
  onRoot(14, "runner_heartbeat"),
  progress(15, 2, 0.3),
  failed(16, 2, "E1"),
  progress(17, 1, 1.0),
  evidence(18, 1, "ev-2"),
  complete(19, 1, "lint"),
  progress(20, 3, 0.4),
  progress(21, 4, 0.2),
  progress(22, 5, 0.6),
];

// What /overview?events=10&items=3 answers after event 22 (api/reads.py `overview`): the task, its root
// span, its stages with their first 3 work items and the counts of all of them, the newest 10 events
// and the checkpoint events.
function overviewAt22(): Overview {
  return {
    task: summary({ latest_seq: 22, event_count: 22, current_phase: "executing", failed_items: 1 }),
    roots: [span("root", { event_type: "runner_spawn", start_seq: 1, last_seq: 14, event_count: 2 })],
    stages: [
      stage(stageSpan("plan", "planning", 2, { state: "closed", end_seq: 6, last_seq: 6, event_count: 5 })),
      stage(
        stageSpan("exec", "executing", 7, { last_seq: 7, event_count: 1 }),
        [
          itemSpan("wi-1", "exec", 8, { state: "closed", end_seq: 19, last_seq: 19, event_count: 5, work_item_id: "item-1", work_type: "lint", progress: 1.0 }),
          itemSpan("wi-2", "exec", 9, { state: "failed", end_seq: 16, last_seq: 16, event_count: 3, work_item_id: "item-2", work_type: "test", progress: 0.3, error_code: "E1" }),
          itemSpan("wi-3", "exec", 10, { last_seq: 20, event_count: 2, work_item_id: "item-3", work_type: "build", progress: 0.4 }),
        ],
        { open: 3, closed: 1, failed: 1 }, // wi-4 and wi-5 are counted, not listed
      ),
    ],
    events: RUN.slice(-10),
    checkpoints: RUN.filter((e) => e.event_type.startsWith("checkpoint_")),
    links: [],
  };
}

// The store's spans of wi-4 and wi-5 after event 22, as /spans?parent=exec answers past the first cards.
const WI_4 = itemSpan("wi-4", "exec", 11, { last_seq: 21, event_count: 2, work_item_id: "item-4", work_type: "lint", progress: 0.2 });
const WI_5 = itemSpan("wi-5", "exec", 12, { last_seq: 22, event_count: 2, work_item_id: "item-5", work_type: "docs", progress: 0.6 });

// What comes live after it.
const LIVE: TaskEvent[] = [
  progress(23, 4, 0.7), // wi-4: past the first cards, unknown to the page
  evidence(24, 5, "ev-3"), // wi-5, first seen by an event without its parent
  complete(25, 5, "docs"),
  complete(26, 3, "build"),
  failed(27, 4, "E2"),
  onStage(28, "checkpoint_commit", "exec", "executing", {
    checkpoint_id: "cp-2",
    checkpoint_type: "execution",
    evidence_refs: { artifacts: ["ev-2", "ev-3"], commit_hash: HASH_2, work_items: ["item-1", "item-3", "item-5"], report: "r-1", size: 3 },
  }),
  onStage(29, "phase_exit", "exec", "executing"),
  onStage(30, "phase_enter", "verify", "verifying"),
  onStage(31, "evidence_linked", "verify", "verifying", { evidence_id: "ev-2", checkpoint_id: "cp-2" }),
  onStage(32, "evidence_linked", "verify", "verifying", { evidence_id: "ev-2", checkpoint_id: "cp-2" }), // again
  onStage(33, "checkpoint_invalid", "verify", "verifying", { checkpoint_id: "cp-2", error_code: "work_items_failed" }),
  onStage(34, "phase_exit", "verify", "verifying"),
  onRoot(35, "runner_exit", { exit_code: 1, outcome: "failed", explanation: "gave up after 3 recoveries" }),
  onRoot(36, "runner_spawn", { runner_pid: 4243, runner_version: "1.4.2" }), // restarted
];

const live = (seq: number) => LIVE.find((e) => e.seq === seq) as TaskEvent;
const upTo = (seq: number) => LIVE.filter((e) => e.seq <= seq);
const ids = (spans: Span[]) => spans.map((s) => s.span_id);

function modelAt(seq = 22): TaskModel {
  const model = new TaskModel(overviewAt22());
  if (seq > 22) assert.equal(model.apply(upTo(seq)), seq - 22);
  return model;
}

// --- built from the overview ----------------------------------------------------------------------------

test("a model built from an overview has the task, its spans, stages and children in start order", () => {
  const model = modelAt();
  assert.deepEqual(model.summary, overviewAt22().task);
  assert.equal(model.applied, 22);
  assert.deepEqual([...model.spans.keys()].sort(), ["exec", "plan", "root", "wi-1", "wi-2", "wi-3"]);
  assert.deepEqual(model.stages, ["plan", "exec"]);
  assert.deepEqual(ids(model.childrenOf(null)), ["root"]);
  assert.deepEqual(ids(model.childrenOf("root")), ["plan", "exec"]);
  assert.deepEqual(ids(model.childrenOf("exec")), ["wi-1", "wi-2", "wi-3"]);
  assert.deepEqual(model.childrenOf("wi-1"), []);
  assert.equal(model.allSpans, false);
});

test("a stage's counts are the store's, which count the work items past the first cards too", () => {
  const model = modelAt();
  assert.deepEqual(model.countsOf("exec"), { open: 3, closed: 1, failed: 1 });
  assert.deepEqual(model.countsOf("plan"), { open: 0, closed: 0, failed: 0 });
  assert.deepEqual(model.countsOf("nowhere"), { open: 0, closed: 0, failed: 0 });
});

test("the overview's checkpoint events are folded: cp-1 committed with its evidence, then verified", () => {
  const cp = modelAt().checkpoints.get("cp-1");
  assert.ok(cp);
  assert.equal(cp.verdict, "verified");
  assert.equal(cp.commit?.seq, 4);
  assert.equal(cp.verdictEvent?.seq, 5);
  assert.deepEqual([cp.type, cp.phase, cp.commitHash], ["plan", "planning", HASH_1]);
  assert.deepEqual(cp.artifacts, ["ev-1"]);
  assert.deepEqual(cp.workItems, ["item-1", "item-2", "item-3", "item-4", "item-5"]);
  assert.deepEqual(cp.otherRefs, []);
});

test("the model keeps its own copies: changing it leaves the overview as it was", () => {
  const overview = overviewAt22();
  const model = new TaskModel(overview);
  model.apply(upTo(27));
  assert.equal(overview.task.latest_seq, 22);
  assert.equal(overview.stages[1]?.items[2]?.state, "open", "wi-3 of the overview is not the model's");
  assert.deepEqual(overview.stages[1]?.counts, { open: 3, closed: 1, failed: 1 });
});

// --- apply ----------------------------------------------------------------------------------------------------

test("apply takes the events that continue the task, in seq order, and moves the summary on", () => {
  const model = modelAt();
  const version = model.version;
  assert.equal(model.apply(upTo(24)), 2);
  assert.equal(model.applied, 24);
  assert.equal(model.version, version + 1, "one re-render per batch");
  assert.deepEqual(
    [model.summary.latest_seq, model.summary.event_count, model.summary.last_at, model.summary.current_phase],
    [24, 24, at(24), "executing"],
  );
});

test("apply ignores events it already has and repeats of the same seq", () => {
  const model = modelAt();
  // A reconnect replays from before what the page has; a frame may come twice.
  assert.equal(model.apply([RUN[20] as TaskEvent, RUN[21] as TaskEvent, live(23), live(23), live(24), live(24)]), 2);
  assert.equal(model.applied, 24);
  assert.equal(model.summary.event_count, 24, "each event counted once");
  assert.equal(model.spans.get("wi-4")?.event_count, 1, "wi-4 saw its progress once");
});

test("a batch of nothing new changes nothing, not even the version", () => {
  const model = modelAt();
  const version = model.version;
  assert.equal(model.apply([]), 0);
  assert.equal(model.apply(RUN), 0);
  assert.equal(model.version, version);
  assert.deepEqual(model.summary, overviewAt22().task);
});

test("apply stops at a gap: applied stays at the last contiguous seq, and goes on once the gap is filled", () => {
  const model = modelAt();
  assert.equal(model.apply([live(23), live(25), live(26)]), 1); // 24 is missing
  assert.equal(model.applied, 23);
  assert.equal(model.summary.latest_seq, 23);
  assert.equal(model.spans.get("wi-3")?.state, "open", "26 (wi-3 complete) is not applied past the gap");
  assert.equal(model.spans.has("wi-5"), false);
  assert.equal(model.apply([live(24), live(25), live(26)]), 3);
  assert.equal(model.applied, 26);
  assert.equal(model.spans.get("wi-3")?.state, "closed");
});

test("events out of order in a batch: the first that does not continue the task ends it", () => {
  const model = modelAt();
  assert.equal(model.apply([live(24), live(23)]), 0, "24 first is a gap; the caller reads the store");
  assert.equal(model.applied, 22);
});

// --- spans and counts -----------------------------------------------------------------------------------------

test("a work item's span closes, fails and counts under its stage as the events say", () => {
  const model = modelAt(27);
  const wi3 = model.spans.get("wi-3");
  assert.deepEqual([wi3?.state, wi3?.end_seq, wi3?.ended_at, wi3?.last_seq, wi3?.event_count], ["closed", 26, at(26), 26, 3]);
  const wi4 = model.spans.get("wi-4");
  assert.deepEqual([wi4?.state, wi4?.error_code, wi4?.progress, wi4?.end_seq], ["failed", "E2", 0.7, 27]);
  // open 3 -> 0: wi-5 and wi-3 done, wi-4 failed; nothing counted twice, nothing lost.
  assert.deepEqual(model.countsOf("exec"), { open: 0, closed: 3, failed: 2 });
});

test("a work item past the first cards, first seen by a live event, was open: its stage's counts stay exact", () => {
  const model = modelAt(23);
  const wi4 = model.spans.get("wi-4");
  assert.ok(wi4);
  assert.deepEqual([wi4.state, wi4.parent_span_id, wi4.work_item_id, wi4.progress], ["open", "exec", "item-4", 0.7]);
  assert.deepEqual(model.countsOf("exec"), { open: 3, closed: 1, failed: 1 }, "the store counted it open already");
  assert.ok(ids(model.childrenOf("exec")).includes("wi-4"));
});

test("a span first seen without its parent goes under the parent a later event names", () => {
  // wi-5's evidence (24) has no parent_span_id; its completion (25) names exec, as the store records.
  const model = modelAt(25);
  assert.equal(model.spans.get("wi-5")?.parent_span_id, "exec");
  assert.deepEqual(ids(model.childrenOf(null)), ["root"], "not a root span");
  assert.ok(ids(model.childrenOf("exec")).includes("wi-5"));
  assert.deepEqual(model.countsOf("exec"), { open: 2, closed: 2, failed: 1 });
});

test("a work item event's progress, id, type and error code land on its span", () => {
  const model = modelAt();
  model.apply([
    itemEvent(23, "work_item_progress", "wi-3", "exec", { work_item_id: "item-3", progress: { current: 4, total: 10 } }),
    itemEvent(24, "work_item_progress", "wi-3", "exec", { work_item_id: "item-3" }), // no progress: kept
    itemEvent(25, "work_item_progress", "wi-3", "exec", { work_item_id: "item-3", progress: null }), // null: kept too
    itemEvent(26, "work_item_failed", "wi-3", "exec", { error_code: "E9", work_type: "build-2" }),
  ]);
  const wi3 = model.spans.get("wi-3");
  // ingest/writer.py `_fold_work_item` keeps the latest progress that is not null.
  assert.deepEqual([wi3?.progress, wi3?.error_code, wi3?.work_type, wi3?.work_item_id], [{ current: 4, total: 10 }, "E9", "build-2", "item-3"]);
});

test("phases close, a new stage joins the pipeline, the runner's exit decides the task's status", () => {
  const model = modelAt(35);
  assert.deepEqual([model.spans.get("exec")?.state, model.spans.get("exec")?.end_seq], ["closed", 29]);
  assert.deepEqual(model.stages, ["plan", "exec", "verify"]);
  assert.equal(model.spans.get("verify")?.state, "closed");
  assert.equal(model.spans.get("root")?.state, "closed");
  assert.deepEqual([model.summary.status, model.summary.exit_reason, model.summary.current_phase], ["failed", "gave up after 3 recoveries", "verifying"]);
  // The runner starts again: running, its span reopened, its last reason gone.
  model.apply([live(36)]);
  assert.deepEqual([model.summary.status, model.summary.exit_reason], ["running", null]);
  assert.deepEqual([model.spans.get("root")?.state, model.spans.get("root")?.end_seq, model.spans.get("root")?.ended_at], ["open", null, null]);
});

test("an event the page's span already includes (read from the store after it) is not counted again", () => {
  const model = modelAt();
  // /spans answered after event 23 had been stored, before it arrived live.
  model.loadChildren([{ ...WI_4, last_seq: 23, event_count: 3, progress: 0.7 }, WI_5]);
  assert.equal(model.apply([live(23)]), 1);
  assert.equal(model.spans.get("wi-4")?.event_count, 3);
  assert.deepEqual(model.countsOf("exec"), { open: 3, closed: 1, failed: 1 });
  assert.equal(model.summary.event_count, 23, "the task still counts it");
});

// --- checkpoints ----------------------------------------------------------------------------------------------

test("a checkpoint is pending once committed, and takes the verdict that comes: invalid here", () => {
  const model = modelAt(28);
  const cp = model.checkpoints.get("cp-2");
  assert.ok(cp);
  assert.deepEqual([cp.verdict, cp.verdictEvent, cp.type, cp.phase, cp.commit?.seq], ["pending", null, "execution", "executing", 28]);
  assert.deepEqual(cp.artifacts, ["ev-2", "ev-3"]);
  assert.deepEqual(cp.workItems, ["item-1", "item-3", "item-5"]);
  assert.equal(cp.commitHash, HASH_2);
  assert.deepEqual(cp.otherRefs, [["report", "r-1"], ["size", "3"]]);
  model.apply(upTo(33));
  assert.equal(cp.verdict, "invalid");
  assert.equal(cp.verdictEvent?.seq, 33);
  assert.deepEqual(cp.linked, ["ev-2"], "linked twice, listed once");
  assert.deepEqual(model.checkpointOrder, ["cp-1", "cp-2"]);
});

test("a pending checkpoint becomes verified on checkpoint_verified", () => {
  const model = modelAt(28);
  model.apply([onStage(29, "checkpoint_verified", "exec", "executing", { checkpoint_id: "cp-2" })]);
  assert.equal(model.checkpoints.get("cp-2")?.verdict, "verified");
});

test("a verdict on a checkpoint whose commit the page never saw is kept, with no commit", () => {
  const model = modelAt();
  model.apply([onStage(23, "checkpoint_invalid", "exec", "executing", { checkpoint_id: "cp-0", error_code: "stale" })]);
  const cp = model.checkpoints.get("cp-0");
  assert.deepEqual([cp?.verdict, cp?.commit], ["invalid", null]);
});

test("evidence refs that are not an object are read as artifacts", () => {
  const model = modelAt();
  model.apply([onStage(23, "checkpoint_commit", "exec", "executing", { checkpoint_id: "cp-3", evidence_refs: ["ev-7", 8, "ev-9"] })]);
  assert.deepEqual(model.checkpoints.get("cp-3")?.artifacts, ["ev-7", "ev-9"]);
});

test("events without a checkpoint id leave the checkpoints alone", () => {
  const model = modelAt();
  model.apply([onStage(23, "checkpoint_commit", "exec", "executing", { checkpoint_type: "execution" })]);
  assert.deepEqual(model.checkpointOrder, ["cp-1"]);
});

// --- loadSpans, loadChildren -----------------------------------------------------------------------------------

/** Every span of the task after event 27, as /spans answers (start order). */
function allSpansAt27(): Span[] {
  return [
    span("root", { event_type: "runner_spawn", start_seq: 1, last_seq: 14, event_count: 2 }),
    stageSpan("plan", "planning", 2, { state: "closed", end_seq: 6, last_seq: 6, event_count: 5 }),
    stageSpan("exec", "executing", 7, { last_seq: 7, event_count: 1 }),
    itemSpan("wi-1", "exec", 8, { state: "closed", end_seq: 19, last_seq: 19, event_count: 5, progress: 1.0 }),
    itemSpan("wi-2", "exec", 9, { state: "failed", end_seq: 16, last_seq: 16, event_count: 3, error_code: "E1" }),
    itemSpan("wi-3", "exec", 10, { state: "closed", end_seq: 26, last_seq: 26, event_count: 3 }),
    itemSpan("wi-4", "exec", 11, { state: "failed", end_seq: 27, last_seq: 27, event_count: 4, error_code: "E2" }),
    itemSpan("wi-5", "exec", 12, { state: "closed", end_seq: 25, last_seq: 25, event_count: 4 }),
  ];
}

test("loadSpans: every span known, starts from the store, children in start order, counts exact", () => {
  const model = modelAt(27);
  const version = model.version;
  model.loadSpans(allSpansAt27());
  assert.equal(model.allSpans, true);
  assert.equal(model.version, version + 1);
  // wi-4 and wi-5 were first seen live (a guessed start: 23, 24); the store's starts put them in place.
  assert.deepEqual([model.spans.get("wi-4")?.start_seq, model.spans.get("wi-5")?.start_seq], [11, 12]);
  assert.deepEqual(ids(model.childrenOf("exec")), ["wi-1", "wi-2", "wi-3", "wi-4", "wi-5"]);
  assert.deepEqual(ids(model.childrenOf(null)), ["root"]);
  assert.deepEqual(model.countsOf("exec"), { open: 0, closed: 3, failed: 2 });
  assert.deepEqual(model.countsOf("root"), { open: 1, closed: 1, failed: 0 }, "now the root's too: plan closed, exec open");
  assert.deepEqual(model.countsOf("wi-1"), { open: 0, closed: 0, failed: 0 });
});

test("loadSpans puts a span the page saw only without its parent under the parent the store knows", () => {
  const model = modelAt(24); // wi-5 seen once, by its evidence (no parent_span_id)
  assert.deepEqual(ids(model.childrenOf(null)), ["root", "wi-5"], "until then, the page cannot know better");
  const spans = allSpansAt27().filter((s) => s.start_seq <= 12);
  const at24: Span[] = spans.map((s) =>
    s.span_id === "wi-3" ? { ...s, state: "open", end_seq: null, ended_at: null, last_seq: 20, event_count: 2 }
    : s.span_id === "wi-4" ? { ...s, state: "open", end_seq: null, ended_at: null, last_seq: 23, event_count: 3, error_code: null }
    : s.span_id === "wi-5" ? { ...s, state: "open", end_seq: null, ended_at: null, last_seq: 24, event_count: 3 }
    : s,
  );
  model.loadSpans(at24);
  assert.equal(model.spans.get("wi-5")?.parent_span_id, "exec");
  assert.deepEqual(ids(model.childrenOf(null)), ["root"]);
  assert.deepEqual(ids(model.childrenOf("exec")), ["wi-1", "wi-2", "wi-3", "wi-4", "wi-5"]);
  assert.deepEqual(model.countsOf("exec"), { open: 3, closed: 1, failed: 1 }, "counted under its stage");
});

test("after loadSpans, live events keep the counts exact", () => {
  const model = modelAt(27);
  model.loadSpans(allSpansAt27());
  model.apply(upTo(30));
  assert.deepEqual(model.countsOf("root"), { open: 1, closed: 2, failed: 0 }, "exec closed, verify opened");
  model.apply([itemEvent(31, "work_item_start", "wi-6", "verify", { work_item_id: "item-6", work_type: "test" })]);
  assert.deepEqual(model.countsOf("verify"), { open: 1, closed: 0, failed: 0 });
});

test("loadSpans takes the store's span when it is newer than the page's", () => {
  const model = modelAt();
  const spans = allSpansAt27();
  model.loadSpans(spans);
  assert.deepEqual(model.spans.get("wi-3"), spans[5], "the store had seen wi-3 complete");
  assert.notEqual(model.spans.get("wi-3"), spans[5], "as a copy");
});

test("loadChildren: a stage's further work items, after its first cards, in start order", () => {
  const model = modelAt();
  const version = model.version;
  model.loadChildren([WI_4, WI_5]);
  assert.deepEqual(ids(model.childrenOf("exec")), ["wi-1", "wi-2", "wi-3", "wi-4", "wi-5"]);
  assert.equal(model.version, version + 1);
  assert.deepEqual(model.countsOf("exec"), { open: 3, closed: 1, failed: 1 }, "the store's counts had them already");
  assert.equal(model.allSpans, false);
});

test("loadChildren puts work items first seen live, out of their start order, in start order", () => {
  const model = modelAt();
  // wi-5 is heard from before wi-4: the page first puts them in the order it heard of them.
  model.apply([progress(23, 5, 0.8), progress(24, 4, 0.3)]);
  model.loadChildren([
    { ...WI_4, last_seq: 24, event_count: 3, progress: 0.3 },
    { ...WI_5, last_seq: 23, event_count: 3, progress: 0.8 },
  ]);
  assert.deepEqual([model.spans.get("wi-4")?.start_seq, model.spans.get("wi-5")?.start_seq], [11, 12]);
  assert.deepEqual(ids(model.childrenOf("exec")), ["wi-1", "wi-2", "wi-3", "wi-4", "wi-5"]);
});

test("loadChildren twice, or of spans already known, lists each once", () => {
  const model = modelAt();
  model.loadChildren([WI_4, WI_5]);
  model.loadChildren([WI_4, WI_5]);
  model.loadChildren(overviewAt22().stages[1]?.items ?? []);
  assert.deepEqual(ids(model.childrenOf("exec")), ["wi-1", "wi-2", "wi-3", "wi-4", "wi-5"]);
});

// --- spansOfWorkItems -------------------------------------------------------------------------------------------

test("spansOfWorkItems finds the spans of the work items a checkpoint names", () => {
  const model = modelAt();
  assert.deepEqual(model.spansOfWorkItems(["item-1", "item-3"]).sort(), ["wi-1", "wi-3"]);
  assert.deepEqual(model.spansOfWorkItems(["item-4"]), [], "not known to the page yet");
  model.loadChildren([WI_4]);
  assert.deepEqual(model.spansOfWorkItems(["item-4", "item-99"]), ["wi-4"]);
  assert.deepEqual(model.spansOfWorkItems([]), []);
});

test("spansOfWorkItems finds every attempt of a work item that ran again", () => {
  const model = modelAt();
  model.apply([itemEvent(23, "work_item_start", "wi-2-2", "exec", { work_item_id: "item-2", work_type: "test" })]);
  assert.deepEqual(model.spansOfWorkItems(["item-2"]).sort(), ["wi-2", "wi-2-2"]);
});

test("the task id of the fixture is the one its events carry", () => {
  // A guard on the fixture itself: an overview whose events belong to another task would test nothing.
  assert.ok([...RUN, ...LIVE].every((e) => e.task_id === TASK));
  assert.deepEqual(RUN.map((e) => e.seq), Array.from({ length: 22 }, (_, i) => i + 1));
  assert.deepEqual(LIVE.map((e) => e.seq), Array.from({ length: 14 }, (_, i) => i + 23));
});
