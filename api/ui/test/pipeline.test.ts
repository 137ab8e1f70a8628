// The pipeline's layout (a column per phase, a row per attempt, edges between consecutive stages) and
// which work item cards a collapsed stage shows.
import assert from "node:assert/strict";
import { test } from "node:test";
import { type Layout, cardsToShow, layoutPipeline, supersededStages, wideColumns } from "../src/model/pipeline";
import type { Span, SpanState } from "../src/types";
import { itemSpan, stageSpan } from "./helpers";

/** Stages in the order they ran, from phase names: ids "planning-1", "executing-2" (phase, attempt). */
function run(...phases: (string | null)[]): Span[] {
  const attempts = new Map<string | null, number>();
  return phases.map((phase, i) => {
    const attempt = (attempts.get(phase) ?? 0) + 1;
    attempts.set(phase, attempt);
    return stageSpan(`${phase ?? "none"}-${attempt}`, phase, 10 * (i + 1));
  });
}

/** Work item spans, one per letter of `states`: f failed, o open, c closed; ids wi-0, wi-1, ... */
function items(states: string): Span[] {
  const state: Record<string, SpanState> = { f: "failed", o: "open", c: "closed" };
  return [...states].map((s, i) => itemSpan(`wi-${i}`, "executing-1", 100 + i, { state: state[s] as SpanState }));
}

const ids = (spans: Span[]) => spans.map((s) => s.span_id);
const edges = (layout: Layout) => layout.edges.map((e) => `${e.from}${e.back ? " <- " : " -> "}${e.to}`);

// A run with one rejected checkpoint: verifying sends it to a recovery, which re-enters executing.
const RECOVERED = run("planning", "executing", "verifying", "recovery", "executing", "verifying");

// --- layoutPipeline ------------------------------------------------------------------------------------

test("an empty run has no columns, rows, boxes or edges", () => {
  assert.deepEqual(layoutPipeline([]), { columns: [], rows: 0, boxes: [], edges: [] });
});

test("columns are the phases in their usual order, whatever order they first ran in", () => {
  // A run that starts by recovering (resumed from a checkpoint) still draws planning.. left to right.
  const layout = layoutPipeline(run("recovery", "verifying", "executing", "planning"));
  assert.deepEqual(layout.columns, ["planning", "executing", "verifying", "recovery"]);
  assert.deepEqual(
    layout.boxes.map((b) => [b.id, b.column]),
    [["recovery-1", 3], ["verifying-1", 2], ["executing-1", 1], ["planning-1", 0]],
  );
});

test("phases outside the usual four come after them, in the order they first ran", () => {
  const layout = layoutPipeline(run("deploying", "planning", null, "review", "executing", "deploying"));
  assert.deepEqual(layout.columns, ["planning", "executing", "deploying", "(none)", "review"]);
  const column = new Map(layout.boxes.map((b) => [b.id, b.column]));
  assert.equal(column.get("deploying-1"), 2);
  assert.equal(column.get("deploying-2"), 2, "a phase's second run stays in its column");
  assert.equal(column.get("none-1"), 3, "a stage without a phase has a column of its own");
  assert.equal(column.get("review-1"), 4);
});

test("each run of a phase is one row further down: row is attempt - 1", () => {
  const layout = layoutPipeline(RECOVERED);
  assert.equal(layout.rows, 2);
  assert.deepEqual(
    layout.boxes.map((b) => [b.id, b.phase, b.attempt, b.column, b.row]),
    [
      ["planning-1", "planning", 1, 0, 0],
      ["executing-1", "executing", 1, 1, 0],
      ["verifying-1", "verifying", 1, 2, 0],
      ["recovery-1", "recovery", 1, 3, 0],
      ["executing-2", "executing", 2, 1, 1],
      ["verifying-2", "verifying", 2, 2, 1],
    ],
  );
  assert.deepEqual(ids(layout.boxes.map((b) => b.span)), ids(RECOVERED), "each box carries its stage's span");
});

test("an edge joins each stage to the next; the one back into executing after a recovery is a back edge", () => {
  assert.deepEqual(edges(layoutPipeline(RECOVERED)), [
    "planning-1 -> executing-1",
    "executing-1 -> verifying-1",
    "verifying-1 -> recovery-1",
    "recovery-1 <- executing-2",
    "executing-2 -> verifying-2",
  ]);
});

test("a phase that runs again straight after itself gets a back edge to its own column", () => {
  assert.deepEqual(edges(layoutPipeline(run("executing", "executing"))), ["executing-1 <- executing-2"]);
});

test("a single stage has a box and no edge", () => {
  const layout = layoutPipeline(run("planning"));
  assert.equal(layout.boxes.length, 1);
  assert.equal(layout.rows, 1);
  assert.deepEqual(layout.edges, []);
});

// --- supersededStages, wideColumns ----------------------------------------------------------------------

test("a stage is superseded when its phase ran again later; the latest run of each phase is not", () => {
  assert.deepEqual([...supersededStages(layoutPipeline(RECOVERED))].sort(), ["executing-1", "verifying-1"]);
  assert.equal(supersededStages(layoutPipeline(run("planning", "executing"))).size, 0);
  assert.equal(supersededStages(layoutPipeline([])).size, 0);
});

test("a column is wide when any of its stages has work items, in any attempt", () => {
  const layout = layoutPipeline(RECOVERED);
  // Only the second executing attempt has items: the whole executing column is wide.
  assert.deepEqual(wideColumns(layout, (id) => id === "executing-2"), [false, true, false, false]);
  assert.deepEqual(wideColumns(layout, () => false), [false, false, false, false]);
  assert.deepEqual(wideColumns(layoutPipeline([]), () => true), []);
});

// --- cardsToShow ---------------------------------------------------------------------------------------------

test("a stage with no more items than the cap shows them all, in order", () => {
  const all = items("cfoc");
  assert.deepEqual(ids(cardsToShow(all, 4)), ["wi-0", "wi-1", "wi-2", "wi-3"]);
  assert.deepEqual(ids(cardsToShow(all, 10)), ids(all));
  assert.deepEqual(cardsToShow([], 3), []);
});

test("over the cap: failed items first, then running ones, then the newest done", () => {
  //                 0123456789
  const all = items("ccfcoccfcc");
  // failed wi-2, wi-7; running wi-4; then the newest done: wi-9, wi-8.
  assert.deepEqual(ids(cardsToShow(all, 5)), ["wi-2", "wi-4", "wi-7", "wi-8", "wi-9"]);
  assert.deepEqual(ids(cardsToShow(all, 3)), ["wi-2", "wi-4", "wi-7"]);
  assert.deepEqual(ids(cardsToShow(all, 2)), ["wi-2", "wi-7"], "failures before running items");
});

test("pinned cards (selected, highlighted) are shown before failures, even if done and old", () => {
  const all = items("cffffo");
  assert.deepEqual(ids(cardsToShow(all, 3, new Set(["wi-0"]))), ["wi-0", "wi-1", "wi-2"]);
  // More pinned than the cap: the first pinned in start order, up to the cap.
  assert.deepEqual(ids(cardsToShow(all, 2, new Set(["wi-5", "wi-3", "wi-0"]))), ["wi-0", "wi-3"]);
  // A pinned id that is not among the items changes nothing.
  assert.deepEqual(ids(cardsToShow(all, 3, new Set(["elsewhere"]))), ids(cardsToShow(all, 3)));
});

test("the cards are listed in the order their items started, each once", () => {
  const all = items("occfcfoc");
  const shown = cardsToShow(all, 6, new Set(["wi-5", "wi-0"])); // pinned and also failed / open
  assert.deepEqual(ids(shown), ["wi-0", "wi-3", "wi-4", "wi-5", "wi-6", "wi-7"]);
  assert.equal(new Set(ids(shown)).size, shown.length);
  const order = new Map(all.map((s, i) => [s.span_id, i]));
  const positions = shown.map((s) => order.get(s.span_id) as number);
  assert.deepEqual(positions, [...positions].sort((a, b) => a - b));
});

test("the cap is never exceeded, and the cards are the items' own spans", () => {
  const all = items("ffffffoooooocccccc");
  for (const cap of [0, 1, 5, 12, 17]) {
    const shown = cardsToShow(all, cap, new Set(["wi-17", "wi-16"]));
    assert.equal(shown.length, cap, `cap ${cap}`);
    for (const s of shown) assert.ok(all.includes(s), "the same objects, not copies");
  }
});

// --- at size -------------------------------------------------------------------------------------------------

test("2,000 stages (a run that recovered 666 times) lay out as four columns and one row per attempt", () => {
  const phases: string[] = ["planning"];
  for (let i = 0; i < 666; i += 1) phases.push("executing", "verifying", "recovery");
  phases.push("executing"); // 2,000 stages
  const stages = run(...phases);
  assert.equal(stages.length, 2000);
  const layout = layoutPipeline(stages);
  assert.deepEqual(layout.columns, ["planning", "executing", "verifying", "recovery"]);
  assert.equal(layout.rows, 667);
  assert.equal(layout.boxes.length, 2000);
  assert.equal(layout.edges.length, 1999);
  assert.equal(layout.edges.filter((e) => e.back).length, 666, "one back edge per recovery");
  const last = layout.boxes.at(-1);
  assert.deepEqual([last?.id, last?.column, last?.row], ["executing-667", 1, 666]);
  // All but the latest run of each phase is superseded.
  const superseded = supersededStages(layout);
  assert.equal(superseded.size, 2000 - 4);
  for (const id of ["planning-1", "executing-667", "verifying-666", "recovery-666"]) assert.ok(!superseded.has(id), id);
});

test("a stage of 100,000 work items shows its few failures, running items and newest done", () => {
  const all: Span[] = [];
  for (let i = 0; i < 100_000; i += 1) {
    const state: SpanState = i % 25_000 === 7 ? "failed" : [99_990, 99_992, 99_994].includes(i) ? "open" : "closed";
    all.push(itemSpan(`wi-${i}`, "executing-1", 100 + i, { state }));
  }
  const shown = ids(cardsToShow(all, 12, new Set(["wi-50000"])));
  assert.deepEqual(shown, [
    "wi-7", // failed
    "wi-25007",
    "wi-50000", // pinned
    "wi-50007",
    "wi-75007",
    "wi-99990", // open
    "wi-99992",
    "wi-99994",
    "wi-99996", // the newest done
    "wi-99997",
    "wi-99998",
    "wi-99999",
  ]);
});
