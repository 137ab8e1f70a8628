// The timeline's rows: a group row per phase attempt, an event row per event, and runs of heartbeats
// or progress events folded into one row until the fold is expanded.
import assert from "node:assert/strict";
import { test } from "node:test";
import { describe } from "../src/model/narrative";
import { type Row, stageAt, stageLabel, timelineRows } from "../src/model/timeline";
import type { Payload, Span, TaskEvent } from "../src/types";
import { event, itemEvent, itemSpan, stageSpan } from "./helpers";

// A small run, seq by seq: planning, then executing with two work items, heartbeats and progress.
const PLAN = stageSpan("plan", "planning", 2, { state: "closed", end_seq: 6 });
const EXEC = stageSpan("exec", "executing", 7, { state: "closed", end_seq: 22 });
const VERIFY = stageSpan("verify", "verifying", 23);
const STAGES = [PLAN, EXEC, VERIFY];
const SPANS = new Map<string, Span>([
  ...STAGES.map((s): [string, Span] => [s.span_id, s]),
  ["wi-1", itemSpan("wi-1", "exec", 8, { work_type: "lint" })],
  ["wi-2", itemSpan("wi-2", "exec", 9, { work_type: "test" })],
]);
const lookup = (id: string) => SPANS.get(id);

const beat = (seq: number) => event(seq, "runner_heartbeat");
const progress = (seq: number, item: number, value: Payload[string]) =>
  itemEvent(seq, "work_item_progress", `wi-${item}`, "exec", { work_item_id: `item-${item}`, progress: value });
const onStage = (seq: number, type: string, stage: Span, payload: Payload = {}) =>
  event(seq, type, { span_id: stage.span_id, parent_span_id: "root", phase: stage.phase, payload });

const RUN: TaskEvent[] = [
  event(1, "runner_spawn", { payload: { runner_pid: 4242, runner_version: "1.4.2" } }),
  onStage(2, "phase_enter", PLAN),
  onStage(3, "evidence_collected", PLAN, { evidence_type: "plan", evidence_id: "ev-1" }),
  onStage(4, "checkpoint_commit", PLAN, { checkpoint_id: "cp-1", checkpoint_type: "plan" }),
  onStage(5, "checkpoint_verified", PLAN, { checkpoint_id: "cp-1" }),
  onStage(6, "phase_exit", PLAN),
  onStage(7, "phase_enter", EXEC),
  itemEvent(8, "work_item_start", "wi-1", "exec", { work_item_id: "item-1", work_type: "lint" }),
  itemEvent(9, "work_item_start", "wi-2", "exec", { work_item_id: "item-2", work_type: "test" }),
  beat(10),
  beat(11),
  beat(12),
  progress(13, 1, 0.2),
  progress(14, 2, 0.5),
  progress(15, 1, 0.6),
  beat(16), // alone: not folded
  progress(17, 2, 0.9), // alone, between other events
  itemEvent(18, "work_item_complete", "wi-1", "exec", { work_item_id: "item-1", work_type: "lint" }),
  itemEvent(19, "work_item_failed", "wi-2", "exec", { work_item_id: "item-2", error_code: "E1" }),
  beat(20),
  beat(21),
  onStage(22, "phase_exit", EXEC),
  onStage(23, "phase_enter", VERIFY),
];

const firstAttempt = (_id: string) => 1;
const rowsOf = (events: TaskEvent[], expanded: number[] = [], stages: Span[] = STAGES, attemptOf: (id: string) => number = firstAttempt) =>
  timelineRows(events, stages, attemptOf, lookup, new Set(expanded));

/** A row in short: "g start", "e 7", "f 10-12 x3: 3 heartbeats". */
function brief(row: Row): string {
  if (row.kind === "group") return `g ${row.label}`;
  if (row.kind === "event") return `e ${row.event.seq}`;
  const seqs = row.events.map((e) => e.seq);
  return `f ${seqs[0]}-${seqs.at(-1)} x${seqs.length}: ${row.line.text}`;
}

// --- grouping and folding ------------------------------------------------------------------------------

test("rows are grouped by the phase attempt each event happened in; heartbeat and progress runs fold", () => {
  assert.deepEqual(rowsOf(RUN).map(brief), [
    "g start", // the runner_spawn came before any phase
    "e 1",
    "g planning",
    "e 2", "e 3", "e 4", "e 5", "e 6",
    "g executing",
    "e 7", "e 8", "e 9",
    "f 10-12 x3: 3 heartbeats",
    "f 13-15 x3: 3 progress updates: item-1 (lint) 60%, item-2 (test) 50%",
    "e 16",
    "e 17",
    "e 18", "e 19",
    "f 20-21 x2: 2 heartbeats",
    "e 22",
    "g verifying",
    "e 23",
  ]);
});

test("group rows carry their stage and a key of their own; event rows their event and its line", () => {
  const rows = rowsOf(RUN);
  const groups = rows.filter((r) => r.kind === "group");
  assert.deepEqual(
    groups.map((g) => [g.key, g.kind === "group" ? g.stageId : undefined]),
    [["g::1", null], ["g:plan:2", "plan"], ["g:exec:7", "exec"], ["g:verify:23", "verify"]],
  );
  const failed = rows.find((r) => r.kind === "event" && r.event.seq === 19);
  assert.ok(failed?.kind === "event");
  assert.equal(failed.key, "e:19");
  assert.deepEqual(failed.line, { text: "item-2 (test) failed: E1", tone: "fail" });
  assert.deepEqual(failed.line, describe(failed.event, lookup));
});

test("a fold holds the run's events in order, keyed by its first seq, with a quiet summary line", () => {
  const folds = rowsOf(RUN).filter((r): r is Extract<Row, { kind: "fold" }> => r.kind === "fold");
  assert.deepEqual(folds.map((f) => f.key), ["f:10", "f:13", "f:20"]);
  assert.deepEqual(folds[1]?.events.map((e) => e.seq), [13, 14, 15]);
  assert.ok(folds.every((f) => f.line.tone === "quiet"));
});

test("a fold holding an unfolded seq shows its events one by one; the others stay folded", () => {
  const rows = rowsOf(RUN, [14]);
  const brief13 = rows.map(brief).slice(12, 17);
  assert.deepEqual(brief13, ["f 10-12 x3: 3 heartbeats", "e 13", "e 14", "e 15", "e 16"]);
  const expanded = rows.filter((r) => r.kind === "event" && [13, 14, 15].includes(r.event.seq));
  assert.deepEqual(expanded.map((r) => r.key), ["e:13", "e:14", "e:15"]);
  assert.deepEqual(expanded.map((r) => (r.kind === "event" ? r.line.text : "")), [
    "item-1 (lint) at 20%",
    "item-2 (test) at 50%",
    "item-1 (lint) at 60%",
  ]);
  // Seqs in no foldable run (an event of its own, or none held) change nothing.
  assert.deepEqual(rowsOf(RUN, [9, 16, 99]).map(brief), rowsOf(RUN).map(brief));
});

test("an unfolded run stays unfolded when it grows at either end", () => {
  // Unfolded by its middle event; then older events join its start and new ones its end.
  const run = [beat(5), beat(6), beat(7)];
  const grown = [beat(3), beat(4), ...run, beat(8), beat(9)];
  const shown = (events: TaskEvent[]) => rowsOf(events, [6], []).filter((r) => r.kind === "event").length;
  assert.equal(shown(run), 3);
  assert.equal(shown(grown), 7);
});

test("a heartbeat run and a progress run next to each other are two folds", () => {
  const events = [onStage(7, "phase_enter", EXEC), beat(8), beat(9), progress(10, 1, 0.1), progress(11, 1, 0.2), beat(12), beat(13)];
  assert.deepEqual(rowsOf(events).map(brief), [
    "g executing",
    "e 7",
    "f 8-9 x2: 2 heartbeats",
    "f 10-11 x2: 2 progress updates: item-1 (lint) 20%",
    "f 12-13 x2: 2 heartbeats",
  ]);
});

test("a progress fold names three items with their latest progress, and counts the rest", () => {
  const events = [onStage(7, "phase_enter", EXEC)];
  for (let i = 1; i <= 5; i += 1) events.push(progress(7 + i, i, { current: i, total: 10 }));
  events.push(progress(13, 2, { current: 9, total: 10 }), progress(14, 6, "soon"));
  const fold = rowsOf(events).find((r) => r.kind === "fold");
  // item-1 and item-2 are spans the page knows (their type comes from there); item-6's progress is unreadable.
  assert.equal(fold?.line.text, "7 progress updates: item-1 (lint) 1/10, item-2 (test) 9/10, item-3 3/10, and 3 more");
});

test("a later attempt of a phase is labelled with its attempt", () => {
  const exec2 = stageSpan("exec-2", "executing", 30);
  const attemptOf = (id: string) => (id === "exec-2" ? 2 : 1);
  const rows = rowsOf([onStage(29, "phase_exit", EXEC), onStage(30, "phase_enter", exec2)], [], [...STAGES, exec2], attemptOf);
  assert.deepEqual(rows.map(brief), ["g verifying", "e 29", "g executing · attempt 2", "e 30"]);
  assert.equal(stageLabel(exec2, attemptOf), "executing · attempt 2");
  assert.equal(stageLabel(EXEC, attemptOf), "executing");
  assert.equal(stageLabel(null, attemptOf), "start");
  assert.equal(stageLabel(stageSpan("x", null, 40), attemptOf), "phase");
});

test("no events, no rows", () => {
  assert.deepEqual(rowsOf([]), []);
});

// --- windows and search results -----------------------------------------------------------------------

test("a window that starts mid-run is headed by the stage open at its first event, not 'start'", () => {
  // What a jump to seq 15 shows: events 13.. (the page reads a window around the seq).
  const rows = rowsOf(RUN.filter((e) => e.seq >= 13 && e.seq <= 19));
  assert.deepEqual(rows.map(brief), [
    "g executing",
    "f 13-15 x3: 3 progress updates: item-1 (lint) 60%, item-2 (test) 50%",
    "e 16",
    "e 17",
    "e 18",
    "e 19",
  ]);
});

test("search results (newest first, with gaps) are one row per event, in their order, under their stage", () => {
  // /events/find with failed=true: matches newest first, seqs far apart.
  const exec2 = stageSpan("exec-2", "executing", 40);
  const found = [
    itemEvent(45, "work_item_failed", "wi-5", "exec-2", { work_item_id: "item-5", error_code: "E2" }),
    onStage(19, "work_item_failed", EXEC, { work_item_id: "item-2", error_code: "E1" }),
    onStage(12, "recovery_initiated", EXEC, { reason: "missing_artifact" }),
  ];
  const rows = rowsOf(found, [], [...STAGES, exec2], (id) => (id === "exec-2" ? 2 : 1));
  assert.deepEqual(rows.map(brief), ["g executing · attempt 2", "e 45", "g executing", "e 19", "e 12"]);
  const keys = rows.map((r) => r.key);
  assert.equal(new Set(keys).size, keys.length, "row keys are unique");
});

// --- stageAt --------------------------------------------------------------------------------------------------

test("stageAt is the last stage that started at or before a seq", () => {
  assert.equal(stageAt(STAGES, 1), null, "before the first stage");
  assert.equal(stageAt(STAGES, 2), PLAN, "a stage's own first event");
  assert.equal(stageAt(STAGES, 6), PLAN);
  assert.equal(stageAt(STAGES, 7), EXEC);
  assert.equal(stageAt(STAGES, 22), EXEC, "its phase_exit is still in it");
  assert.equal(stageAt(STAGES, 23), VERIFY);
  assert.equal(stageAt(STAGES, 1_000_000), VERIFY, "after the last: the last");
  assert.equal(stageAt([], 5), null);
  assert.equal(stageAt([EXEC], 7), EXEC);
});

test("stageAt agrees with a linear scan over 2,000 stages", () => {
  const stages = Array.from({ length: 2000 }, (_, i) => stageSpan(`s-${i}`, "executing", 5 + i * 7));
  const linear = (seq: number) => stages.filter((s) => s.start_seq <= seq).at(-1) ?? null;
  for (let seq = 0; seq <= 5 + 2000 * 7 + 3; seq += 1) assert.equal(stageAt(stages, seq), linear(seq), `seq ${seq}`);
});

// --- at size --------------------------------------------------------------------------------------------------

test("100,000 events come out as rows that hold each event once, folds of one type and adjacent seqs", () => {
  const stages = [0, 1, 2, 3].map((i) => stageSpan(`st-${i}`, i % 2 ? "verifying" : "executing", 1 + i * 25_000));
  const events: TaskEvent[] = [];
  for (let seq = 1; seq <= 100_000; seq += 1) {
    const stage = stages[Math.floor((seq - 1) / 25_000)] as Span;
    if (seq === stage.start_seq) events.push(onStage(seq, "phase_enter", stage));
    else if (seq % 97 === 0) events.push(onStage(seq, "evidence_collected", stage, { evidence_id: `ev-${seq}` }));
    else if (seq % 13 < 6) events.push(beat(seq));
    else events.push(progress(seq, seq % 40, (seq % 100) / 100));
  }
  const rows = rowsOf(events, [], stages);
  assert.equal(rows.filter((r) => r.kind === "group").length, 4);
  const seen: number[] = [];
  for (const row of rows) {
    if (row.kind === "event") seen.push(row.event.seq);
    if (row.kind === "fold") {
      const seqs = row.events.map((e) => e.seq);
      assert.ok(seqs.length >= 2, row.key);
      assert.ok(row.events.every((e) => e.event_type === row.events[0]?.event_type), row.key);
      assert.ok(seqs.every((s, i) => i === 0 || s === (seqs[i - 1] as number) + 1), row.key);
      seen.push(...seqs);
    }
  }
  assert.deepEqual(seen, events.map((e) => e.seq), "every event once, in order");
  assert.equal(new Set(rows.map((r) => r.key)).size, rows.length, "row keys are unique");
});
