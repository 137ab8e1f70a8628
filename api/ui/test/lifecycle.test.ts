// lifecycle.ts is the store's rules in TypeScript (shared/event.py), so that a live event changes the
// page as it changes the store. These tests hold it to the Python: the exit status table both test
// suites read (tests/fixtures/exit_status.json), and the vocabulary read from the Python source itself.
import assert from "node:assert/strict";
import { test } from "node:test";
import {
  CHECKPOINT_TYPES,
  EVENT_TYPES,
  FAILURE_TYPES,
  PHASES,
  SPAN_CLOSERS,
  SPAN_OPENERS,
  exitReason,
  exitStatus,
  strings,
  text,
} from "../src/model/lifecycle";
import type { Payload } from "../src/types";
import { readRepoFile } from "./helpers";

interface ExitCase {
  payload: Payload;
  status: "succeeded" | "failed";
  why?: string;
}

const EXIT_CASES = JSON.parse(readRepoFile("tests/fixtures/exit_status.json")) as ExitCase[];
const EVENT_PY = readRepoFile("shared/event.py");
const QUERIES_PY = readRepoFile("api/queries.py");

/** The text of a module-level constant `NAME: Final = (...)` of a Python source: from its first
 * bracket to the one that closes it (brackets inside string literals skipped). */
function pythonConstant(source: string, name: string): string {
  const start = source.indexOf(`\n${name}: Final = `);
  assert.ok(start >= 0, `${name} is not defined in the Python source`);
  const open = source.slice(start).search(/[([{]/) + start;
  let depth = 0;
  let quoted = false;
  for (let i = open; i < source.length; i += 1) {
    const c = source[i] as string;
    if (c === '"') quoted = !quoted;
    else if (!quoted && "([{".includes(c)) depth += 1;
    else if (!quoted && ")]}".includes(c) && --depth === 0) return source.slice(open, i + 1);
  }
  throw new Error(`${name}: no closing bracket`);
}

/** The string literals of a Python constant, in the order written. */
function pythonStrings(source: string, name: string): string[] {
  return [...pythonConstant(source, name).matchAll(/"([^"]*)"/g)].map((m) => m[1] as string);
}

const sorted = (values: Iterable<string>) => [...values].sort();

// --- exit_status -------------------------------------------------------------------------------------

test("the exit status table is the one the Python tests read, and not empty", () => {
  // A fixture that failed to load, or lost its rows, would make the agreement test below vacuous.
  assert.ok(Array.isArray(EXIT_CASES) && EXIT_CASES.length >= 20, "tests/fixtures/exit_status.json");
  for (const c of EXIT_CASES) {
    assert.equal(typeof c.payload, "object");
    assert.ok(c.status === "succeeded" || c.status === "failed", JSON.stringify(c));
  }
});

test("exitStatus gives every payload of the table the status taskevents.event.exit_status gives", () => {
  for (const c of EXIT_CASES) {
    assert.equal(exitStatus(c.payload), c.status, `${JSON.stringify(c.payload)}${c.why ? ` (${c.why})` : ""}`);
  }
});

test("every outcome word of the Python decides the status whatever the exit code, in any case and padding", () => {
  const success = pythonStrings(EVENT_PY, "SUCCESS_OUTCOMES");
  const failure = pythonStrings(EVENT_PY, "FAILURE_OUTCOMES");
  assert.ok(success.length >= 5 && failure.length >= 10, "the outcome sets were read from shared/event.py");
  for (const word of success) {
    assert.equal(exitStatus({ outcome: word, exit_code: 1 }), "succeeded", word);
    assert.equal(exitStatus({ outcome: ` ${word.toUpperCase()}\t` }), "succeeded", word);
  }
  for (const word of failure) {
    assert.equal(exitStatus({ outcome: word, exit_code: 0 }), "failed", word);
    assert.equal(exitStatus({ outcome: `  ${word.toUpperCase()} ` }), "failed", word);
  }
});

test("an outcome word the Python does not know is not taken as a success", () => {
  // The TypeScript sets are private: an extra success word there would pass the test above. These
  // are near misses of known words; with no exit code each must fail, as in the Python.
  for (const word of ["succeed", "finished", "complete", "okay", "pass", "green", "yes", "true"]) {
    assert.equal(exitStatus({ outcome: word }), "failed", word);
  }
});

// --- exit_reason ---------------------------------------------------------------------------------------

test("exitReason is the explanation, else the error code, else the outcome, trimmed, as exit_reason gives", () => {
  // Expected values are what taskevents.event.exit_reason returns for the same payloads.
  const cases: [Payload, string | null][] = [
    [{ explanation: "  gave up after 3 recoveries  ", error_code: "E1", outcome: "failed", exit_code: 1 }, "gave up after 3 recoveries"],
    [{ explanation: "   ", error_code: "killed_oom", outcome: "failed" }, "killed_oom"],
    [{ outcome: " Failed " }, "Failed"],
    [{ explanation: 5, exit_code: 2 }, "exit code 2"], // not a string: skipped
    [{ exit_code: 137 }, "exit code 137"],
    [{ exit_code: "137" }, "exit code 137"],
    [{ exit_code: 2.0 }, "exit code 2"],
    [{ exit_code: -1 }, "exit code -1"],
    [{ exit_code: 0 }, null], // a clean exit says nothing
    [{}, null],
  ];
  for (const [payload, reason] of cases) assert.equal(exitReason(payload), reason, JSON.stringify(payload));
});

test("exitReason keeps at most 500 characters of a long explanation, counted as Python counts them", () => {
  assert.equal(exitReason({ explanation: "x".repeat(600) }), "x".repeat(500));
  // Python slices by code point: 500 emoji stay 500 emoji, never half of one (a lone surrogate).
  const emoji = exitReason({ explanation: "😀".repeat(600) }) as string;
  assert.equal([...emoji].length, 500);
  assert.equal(emoji, "😀".repeat(500));
});

// --- the vocabulary --------------------------------------------------------------------------------------

test("PHASES are the Python's phases, in their order", () => {
  assert.deepEqual([...PHASES], pythonStrings(EVENT_PY, "PHASES"));
  assert.deepEqual([...PHASES], ["planning", "executing", "verifying", "recovery"]);
});

test("EVENT_TYPES are the Python's event types, each once", () => {
  assert.deepEqual(sorted(EVENT_TYPES), sorted(pythonStrings(EVENT_PY, "EVENT_TYPES")));
  assert.equal(new Set(EVENT_TYPES).size, EVENT_TYPES.length);
});

test("CHECKPOINT_TYPES are the Python's checkpoint types", () => {
  assert.deepEqual(sorted(CHECKPOINT_TYPES), sorted(pythonStrings(EVENT_PY, "CHECKPOINT_TYPES")));
});

test("spans open and close on the events the store opens and closes them on", () => {
  assert.deepEqual(sorted(SPAN_OPENERS), sorted(pythonStrings(EVENT_PY, "SPAN_OPENERS")));
  const closers = [...pythonConstant(EVENT_PY, "SPAN_CLOSERS").matchAll(/"([^"]+)":\s*"([^"]+)"/g)].map((m) => [m[1], m[2]]);
  assert.ok(closers.length >= 4, "SPAN_CLOSERS was read from shared/event.py");
  assert.deepEqual(Object.entries(SPAN_CLOSERS).sort(), closers.sort());
});

test("a work item failure closes its span as failed; every other closer as closed", () => {
  assert.deepEqual(SPAN_CLOSERS, {
    runner_exit: "closed",
    phase_exit: "closed",
    work_item_complete: "closed",
    work_item_failed: "failed",
  });
  assert.deepEqual(sorted(SPAN_OPENERS), ["phase_enter", "runner_spawn", "work_item_start"]);
});

test("no event both opens and closes a span, and every rule names an event of the vocabulary", () => {
  const known = new Set(EVENT_TYPES);
  for (const type of SPAN_OPENERS) {
    assert.ok(known.has(type), type);
    assert.equal(SPAN_CLOSERS[type], undefined, type);
  }
  for (const type of [...Object.keys(SPAN_CLOSERS), ...CHECKPOINT_TYPES, ...FAILURE_TYPES]) assert.ok(known.has(type), type);
});

test("FAILURE_TYPES are the event types the store's `failed` search filter matches", () => {
  // api/queries.py FIND: `? = 0 OR w.event_type IN ('work_item_failed', ...)` (plus a failed
  // runner_exit, which is decided by its payload, not its type).
  const list = /\? = 0 OR w\.event_type IN \(([^)]*)\)/.exec(QUERIES_PY);
  assert.ok(list, "the failed filter was found in api/queries.py");
  const types = [...(list[1] as string).matchAll(/'([a-z_]+)'/g)].map((m) => m[1] as string);
  assert.deepEqual(sorted(FAILURE_TYPES), sorted(types));
  assert.ok(!FAILURE_TYPES.has("runner_exit"), "a runner_exit is a failure only by its payload");
});

// --- payload readers ---------------------------------------------------------------------------------------

test("text reads a non-empty string and nothing else", () => {
  assert.equal(text("item-3"), "item-3");
  assert.equal(text(" "), " "); // kept as written: only the empty string is no text
  for (const value of ["", null, undefined, 3, true, ["a"], { a: "b" }]) assert.equal(text(value), null, JSON.stringify(value));
});

test("strings reads a list of strings, or one string, skipping anything else", () => {
  assert.deepEqual(strings(["ev-1", 2, null, "ev-2", ["ev-3"], { id: "ev-4" }]), ["ev-1", "ev-2"]);
  assert.deepEqual(strings("ev-1"), ["ev-1"]);
  for (const value of [undefined, null, 7, false, { artifacts: ["ev-1"] }]) assert.deepEqual(strings(value), [], JSON.stringify(value));
});
