// The task list's rows: a page read from the API merged with the summaries its live feed pushed, in
// either order, never going back to an older state of a task.
import assert from "node:assert/strict";
import { test } from "node:test";
import { type Filters, MAX_ROWS, latestOf, matches, mergeTasks, newer } from "../src/model/tasklist";
import type { TaskSummary } from "../src/types";
import { summary } from "./helpers";

const ALL: Filters = { status: "", phase: "", q: "" };
const at = (n: number) => `2026-12-01T10:00:${String(n).padStart(2, "0")}.000Z`;
const task = (id: string, seq: number, status: TaskSummary["status"] = "running", last = seq): TaskSummary =>
  summary({ task_id: id, latest_seq: seq, event_count: seq, status, last_at: at(last) });
const ids = (list: TaskSummary[]) => list.map((t) => `${t.task_id}@${t.latest_seq}`);

test("a page read that is older than a push keeps the push (a task that ended stays ended)", () => {
  const pushedDuringTheRead = [task("a", 9, "failed")];
  const page = [task("a", 5), task("b", 3)]; // the read's snapshot was taken before a ended
  const rows = mergeTasks(page, pushedDuringTheRead, ALL);
  assert.deepEqual(ids(rows), ["a@9", "b@3"]);
  assert.equal(rows[0]?.status, "failed");
});

test("under a status filter, a task that stops matching leaves, one that starts matching comes in", () => {
  const running: Filters = { ...ALL, status: "running" };
  const rows = mergeTasks([task("a", 5), task("b", 3)], [task("a", 9, "failed"), task("c", 1)], running);
  assert.deepEqual(new Set(ids(rows)), new Set(["b@3", "c@1"]));
  assert.ok(rows.every((t) => t.status === "running"));
});

test("an older summary never replaces a newer one, whichever arrives last", () => {
  const rows = mergeTasks([task("a", 9, "succeeded")], [task("a", 4)], ALL);
  assert.deepEqual(ids(rows), ["a@9"]);
  assert.equal(latestOf(task("a", 9), task("a", 4)).latest_seq, 9);
  assert.equal(latestOf(undefined, task("a", 4)).latest_seq, 4);
});

test("rows are newest activity first, then task id descending, as the API orders them", () => {
  const rows = mergeTasks([], [task("a", 1, "running", 3), task("c", 1, "running", 7), task("b", 1, "running", 7)], ALL);
  assert.deepEqual(rows.map((t) => t.task_id), ["c", "b", "a"]);
  assert.equal(newer(task("x", 1), task("x", 1)), 0);
});

test("the list keeps at most MAX_ROWS rows, the least recently active go", () => {
  const many = Array.from({ length: MAX_ROWS + 50 }, (_, i) => task(`t${String(i).padStart(5, "0")}`, 1, "running", i % 60));
  const rows = mergeTasks([], many, ALL);
  assert.equal(rows.length, MAX_ROWS);
  const dropped = many.filter((t) => !rows.includes(t));
  assert.ok(dropped.every((t) => rows.every((r) => newer(r, t) <= 0)), "only the least recent were dropped");
});

test("filters: status, phase and a task id substring in any case", () => {
  const t = summary({ task_id: "Run-ABC-7", status: "failed", current_phase: "verifying" });
  assert.ok(matches(t, { status: "failed", phase: "verifying", q: "abc" }));
  assert.ok(!matches(t, { ...ALL, status: "running" }));
  assert.ok(!matches(t, { ...ALL, phase: "executing" }));
  assert.ok(!matches(t, { ...ALL, q: "xyz" }));
});
