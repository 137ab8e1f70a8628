// Each event in plain language, as the timeline and the drawers show it. The line is text: the views
// render it as text, so whatever a runner put in its payload comes back as written, never escaped or
// cut here.
import assert from "node:assert/strict";
import { test } from "node:test";
import { EVENT_TYPES } from "../src/model/lifecycle";
import { type Line, type SpanLookup, describe, itemLabel, progressText } from "../src/model/narrative";
import type { Payload, Span, TaskEvent } from "../src/types";
import { event, itemEvent, itemSpan, stageSpan } from "./helpers";

// The spans the page knows: a work item whose events need not repeat its type (progress events don't).
const SPANS = new Map<string, Span>([
  ["wi-3", itemSpan("wi-3", "exec", 20, { work_item_id: "item-3", work_type: "lint" })],
  ["exec", stageSpan("exec", "executing", 10)],
]);
const lookup: SpanLookup = (id) => SPANS.get(id);
const nobody: SpanLookup = () => undefined;

const line = (e: TaskEvent, spans: SpanLookup = lookup): Line => describe(e, spans);
const say = (type: string, payload: Payload = {}, fields: Partial<TaskEvent> = {}) => line(event(5, type, { payload, ...fields }));
const item = (type: string, payload: Payload) => line(itemEvent(30, type, "wi-3", "exec", payload));

const HOSTILE = [
  `<img src=x onerror=alert(1)>`,
  `"><script>alert('x')</script>`,
  "&lt;b&gt; &amp; &#x3C;",
  "ファイルが見つかりません 🚨 — ünïcödé, עברית\u202e, e\u0301, 👩‍👩‍👧",
  "line one\nline two\ttabbed",
  "x".repeat(100_000),
];

// --- each event type ---------------------------------------------------------------------------------

test("runner_spawn: started, with its version and pid when it gives them", () => {
  assert.deepEqual(say("runner_spawn", { runner_pid: 4242, runner_version: "1.4.2" }), {
    text: "runner started (v1.4.2, pid 4242)",
    tone: "info",
  });
  assert.equal(say("runner_spawn", { runner_version: "1.4.2" }).text, "runner started (v1.4.2)");
  assert.equal(say("runner_spawn").text, "runner started");
  assert.equal(say("runner_spawn", { explanation: "resumed from cp-1" }).text, "runner started — resumed from cp-1");
});

test("runner_exit: ended, with the status the store gives and why", () => {
  assert.deepEqual(say("runner_exit", { exit_code: 0, outcome: "succeeded" }), { text: "ended: succeeded", tone: "ok" });
  assert.deepEqual(say("runner_exit", { exit_code: 1, outcome: "failed", explanation: "gave up after 3 recoveries: missing_artifact" }), {
    text: "ended: failed: gave up after 3 recoveries: missing_artifact",
    tone: "fail",
  });
  assert.equal(say("runner_exit", { exit_code: 137 }).text, "ended: failed: exit code 137");
  assert.equal(say("runner_exit", { outcome: "finished" }).text, "ended: failed: finished"); // an unknown word
  assert.equal(say("runner_exit", {}).text, "ended: succeeded"); // said nothing: a clean exit
  assert.equal(say("runner_exit", { exit_code: "zero" }).tone, "fail");
});

test("runner_heartbeat: a quiet heartbeat", () => {
  assert.deepEqual(say("runner_heartbeat"), { text: "heartbeat", tone: "quiet" });
});

test("phase_enter and phase_exit: entered and left the phase", () => {
  assert.deepEqual(say("phase_enter", {}, { phase: "executing" }), { text: "entered executing", tone: "info" });
  assert.equal(say("phase_enter", { explanation: "running 5 work items in parallel" }, { phase: "executing" }).text,
    "entered executing — running 5 work items in parallel");
  assert.deepEqual(say("phase_exit", {}, { phase: "verifying" }), { text: "left verifying", tone: "info" });
  assert.equal(say("phase_enter").text, "entered a phase");
  assert.equal(say("phase_exit").text, "left the phase");
});

test("work_item_start, progress and complete: the item by its id and type", () => {
  assert.deepEqual(item("work_item_start", { work_item_id: "item-3", work_type: "lint" }), { text: "item-3 (lint) started", tone: "info" });
  assert.deepEqual(item("work_item_progress", { work_item_id: "item-3", progress: 0.4 }), { text: "item-3 (lint) at 40%", tone: "quiet" });
  assert.equal(item("work_item_progress", { work_item_id: "item-3", progress: { current: 4, total: 10 } }).text, "item-3 (lint) at 4/10");
  assert.equal(item("work_item_progress", { work_item_id: "item-3" }).text, "item-3 (lint) at ?");
  assert.deepEqual(item("work_item_complete", { work_item_id: "item-3", work_type: "lint", explanation: "done" }), {
    text: "item-3 (lint) done", // its explanation, "done", only repeats the line
    tone: "ok",
  });
});

test("work_item_failed: the item, its error code and why", () => {
  const failed = item("work_item_failed", { work_item_id: "item-3", error_code: "E1", explanation: "the step ran past its budget" });
  assert.deepEqual(failed, { text: "item-3 (lint) failed: E1 — the step ran past its budget", tone: "fail" });
  assert.equal(item("work_item_failed", { work_item_id: "item-3" }).text, "item-3 (lint) failed");
});

test("a work item is named from its event, else its span, else its span id", () => {
  const e = (payload: Payload) => itemEvent(31, "work_item_start", "wi-3", "exec", payload);
  assert.equal(itemLabel(e({ work_item_id: "item-9", work_type: "test" }), lookup), "item-9 (test)", "the event's own words win");
  assert.equal(itemLabel(e({}), lookup), "item-3 (lint)", "from the span the page knows");
  assert.equal(itemLabel(e({}), nobody), "wi-3", "nothing known: the span id");
  assert.equal(itemLabel(e({ work_item_id: "item-9" }), nobody), "item-9");
  assert.equal(itemLabel(e({ work_item_id: 9, work_type: ["x"] }), lookup), "item-3 (lint)", "not strings: not used");
});

test("checkpoint_commit: the checkpoint, its type and a count of its evidence", () => {
  const refs = { artifacts: ["ev-1", "ev-2"], work_items: ["item-1"], commit_hash: "0123456789abcdef0123456789abcdef01234567" };
  assert.deepEqual(say("checkpoint_commit", { checkpoint_id: "cp-7", checkpoint_type: "execution", evidence_refs: refs }), {
    text: "checkpoint cp-7 (execution) committed: 2 artifacts, 1 work item, commit 0123456789",
    tone: "info",
  });
  assert.equal(say("checkpoint_commit", { checkpoint_id: "cp-7", evidence_refs: { artifacts: "ev-1" } }).text, "checkpoint cp-7 committed: 1 artifact");
  assert.equal(say("checkpoint_commit", { checkpoint_id: "cp-7", evidence_refs: ["ev-1"] }).text, "checkpoint cp-7 committed");
  assert.equal(say("checkpoint_commit", { checkpoint_type: "plan" }).text, "checkpoint ? (plan) committed");
  assert.equal(
    say("checkpoint_commit", { checkpoint_id: "cp-7", evidence_refs: { work_items: ["a", "b", "c"] }, explanation: "3 of 4 committed" }).text,
    "checkpoint cp-7 committed: 3 work items — 3 of 4 committed",
  );
});

test("checkpoint_verified and checkpoint_invalid: the verdict, with the error code of a rejection", () => {
  assert.deepEqual(say("checkpoint_verified", { checkpoint_id: "cp-7" }), { text: "checkpoint cp-7 verified", tone: "ok" });
  assert.deepEqual(
    say("checkpoint_invalid", { checkpoint_id: "cp-7", error_code: "missing_artifact", explanation: "an artifact named in the checkpoint is missing" }),
    { text: "checkpoint cp-7 rejected: missing_artifact — an artifact named in the checkpoint is missing", tone: "fail" },
  );
  assert.equal(say("checkpoint_invalid", { checkpoint_id: "cp-7" }).text, "checkpoint cp-7 rejected");
});

test("evidence_collected and evidence_linked: the evidence, its type, its checkpoint", () => {
  assert.deepEqual(say("evidence_collected", { evidence_type: "test_report", evidence_id: "ev-3" }), {
    text: "evidence ev-3 (test_report) collected",
    tone: "quiet",
  });
  assert.equal(say("evidence_collected", {}).text, "evidence ? collected");
  assert.deepEqual(say("evidence_linked", { evidence_id: "ev-3", checkpoint_id: "cp-7" }), {
    text: "evidence ev-3 linked to checkpoint cp-7",
    tone: "quiet",
  });
});

test("recovery events: started with its reason, rolled back to a checkpoint, complete", () => {
  assert.deepEqual(say("recovery_initiated", { reason: "missing_artifact", explanation: "checkpoint rejected: missing_artifact" }), {
    text: "recovery started: missing_artifact — checkpoint rejected: missing_artifact",
    tone: "warn",
  });
  assert.equal(say("recovery_initiated").text, "recovery started");
  assert.deepEqual(say("recovery_checkpoint_loaded", { checkpoint_id: "cp-1" }), { text: "rolled back to checkpoint cp-1", tone: "warn" });
  assert.deepEqual(say("recovery_complete", { explanation: "re-running item-2" }), { text: "recovery complete — re-running item-2", tone: "warn" });
});

test("an event type outside the vocabulary is told by its words and its span", () => {
  assert.deepEqual(say("deploy_window_opened", { explanation: "at 09:00" }, { span_id: "s-9" }), {
    text: "deploy window opened on s-9 — at 09:00",
    tone: "info",
  });
});

test("every event type of the vocabulary has its own line, none the catch-all", () => {
  for (const type of EVENT_TYPES) {
    const text = say(type).text;
    assert.ok(!text.endsWith(" on root"), `${type}: "${text}"`); // the catch-all names the span
    assert.ok(text.length > 0 && !text.includes("undefined") && !text.includes("null"), `${type}: "${text}"`);
  }
});

// --- progressText ----------------------------------------------------------------------------------------

test("progressText writes a fraction as a percentage and current/total as such", () => {
  assert.equal(progressText(0.4), "40%");
  assert.equal(progressText(0), "0%");
  assert.equal(progressText(1), "100%");
  assert.equal(progressText(0.666), "67%");
  assert.equal(progressText({ current: 4, total: 10 }), "4/10");
  assert.equal(progressText({ current: 0, total: 0 }), "0/0");
});

test("progressText gives nothing for what is not progress", () => {
  for (const value of [undefined, null, "40%", true, [0.4], { current: 4 }, { current: "4", total: "10" }, Infinity, NaN]) {
    assert.equal(progressText(value as never), null, String(value));
  }
});

// --- hostile text ------------------------------------------------------------------------------------------

test("markup, unicode and very long text in a payload come back as the same text", () => {
  for (const s of HOSTILE) {
    assert.equal(item("work_item_failed", { work_item_id: s, work_type: s, error_code: s, explanation: `why ${s}` }).text, `${s} (${s}) failed: ${s} — why ${s}`);
    assert.equal(say("checkpoint_commit", { checkpoint_id: s, checkpoint_type: s }).text, `checkpoint ${s} (${s}) committed`);
    assert.equal(say("evidence_linked", { evidence_id: s, checkpoint_id: s }).text, `evidence ${s} linked to checkpoint ${s}`);
    assert.equal(say("recovery_initiated", { reason: s }).text, `recovery started: ${s}`);
    assert.equal(say("phase_enter", { explanation: s }, { phase: "planning" }).text, `entered planning — ${s}`);
    assert.equal(say(`custom_event`, {}, { span_id: s }).text, `custom event on ${s}`);
  }
});

test("a runner_exit's reason is the store's exit_reason: the same text, at most 500 characters", () => {
  for (const s of HOSTILE) {
    const reason = [...s.trim()].slice(0, 500).join(""); // exit_reason trims and keeps 500 code points
    assert.equal(say("runner_exit", { exit_code: 1, explanation: s }).text, `ended: failed: ${reason}`);
  }
});

test("a work item's span with hostile names is named as written", () => {
  const s = HOSTILE[0] as string;
  const spans = new Map([["wi-x", itemSpan("wi-x", "exec", 20, { work_item_id: s, work_type: HOSTILE[3] as string })]]);
  assert.equal(line(itemEvent(40, "work_item_complete", "wi-x", "exec", {}), (id) => spans.get(id)).text, `${s} (${HOSTILE[3]}) done`);
});

test("an explanation that repeats the line's last word is not repeated", async () => {
  const { describe } = await import("../src/model/narrative");
  const { itemEvent } = await import("./helpers");
  const done = itemEvent(9, "work_item_complete", "w1", "s1", { work_item_id: "item-1", work_type: "lint", explanation: "done" });
  assert.equal(describe(done, () => undefined).text, "item-1 (lint) done");
  const more = itemEvent(9, "work_item_complete", "w1", "s1", { work_item_id: "item-1", work_type: "lint", explanation: "3 files" });
  assert.equal(describe(more, () => undefined).text, "item-1 (lint) done — 3 files");
});
