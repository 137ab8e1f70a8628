// The timeline's window: live events, older and newer pages and jumps never leave a hole or a repeat,
// and the window never holds more than MAX_WINDOW events, following or not.
import assert from "node:assert/strict";
import { test } from "node:test";
import { EMPTY, MAX_WINDOW, type Win, high, low, replaced, withLive, withNewer, withOlder } from "../src/model/window";
import type { TaskEvent } from "../src/types";
import { event } from "./helpers";

const events = (from: number, to: number): TaskEvent[] => {
  const out: TaskEvent[] = [];
  for (let seq = from; seq <= to; seq += 1) out.push(event(seq, "runner_heartbeat"));
  return out;
};
const seqs = (w: Win) => w.events.map((e) => e.seq);
const contiguous = (w: Win) => w.events.every((e, i) => i === 0 || e.seq === (w.events[i - 1] as TaskEvent).seq + 1);

test("live events extend a window at the live edge, once each", () => {
  let w = replaced(EMPTY, events(1, 10));
  w = withLive(w, events(11, 12), true);
  w = withLive(w, events(11, 13), true); // 11 and 12 again (a resumed stream): only 13 is new
  assert.deepEqual(seqs(w), events(1, 13).map((e) => e.seq));
});

test("a store read ahead of the stream does not stop live events (the timeline never freezes)", () => {
  // The window was read from the store up to 20 while the stream had delivered 15.
  let w = replaced(EMPTY, events(1, 20));
  w = withLive(w, events(16, 18), true); // held already
  assert.equal(high(w), 20);
  w = withLive(w, events(19, 25), true); // overlaps the window's end: 21..25 are new
  assert.deepEqual(seqs(w).slice(-6), [20, 21, 22, 23, 24, 25]);
  assert.ok(contiguous(w));
});

test("a window behind the live edge is not extended across a hole", () => {
  const w = replaced(EMPTY, events(1, 10)); // a jump back to the start of a long run
  assert.equal(withLive(w, events(500, 510), false), w);
});

test("following, the oldest events leave so the window keeps MAX_WINDOW", () => {
  let w = replaced(EMPTY, events(1, MAX_WINDOW));
  w = withLive(w, events(MAX_WINDOW + 1, MAX_WINDOW + 300), true);
  assert.equal(w.events.length, MAX_WINDOW);
  assert.equal(low(w), 301);
  assert.equal(high(w), MAX_WINDOW + 300);
});

test("not following, the window stops at MAX_WINDOW instead of growing (it falls behind the live edge)", () => {
  let w = replaced(EMPTY, events(1, MAX_WINDOW - 100));
  w = withLive(w, events(MAX_WINDOW - 99, MAX_WINDOW + 2_000), false);
  assert.equal(w.events.length, MAX_WINDOW);
  assert.equal(low(w), 1); // what the reader looks at stays
  const later = withLive(w, events(MAX_WINDOW + 2_001, MAX_WINDOW + 2_100), false);
  assert.equal(later, w);
  assert.ok(contiguous(w));
});

test("an older page goes in front only if it ends where the window starts; the newest leave past the cap", () => {
  let w = replaced(EMPTY, events(401, 600));
  w = withOlder(w, events(201, 400), w.epoch);
  assert.deepEqual([low(w), high(w)], [201, 600]);
  assert.equal(withOlder(w, events(1, 150), w.epoch), w); // a hole: dropped
  const full = replaced(EMPTY, events(1_001, 1_000 + MAX_WINDOW));
  const grown = withOlder(full, events(801, 1_000), full.epoch);
  assert.deepEqual([low(grown), high(grown), grown.events.length], [801, 800 + MAX_WINDOW, MAX_WINDOW]);
});

test("a page read for a window since replaced is dropped (a jump while a page was loading)", () => {
  const before = replaced(EMPTY, events(401, 600));
  const jumped = replaced(before, events(9_801, 10_000)); // the reader pressed g meanwhile
  assert.equal(withOlder(jumped, events(201, 400), before.epoch), jumped);
  assert.equal(withNewer(jumped, events(601, 800), before.epoch), jumped);
});

test("a newer page is appended if it starts where the window ends, overlap skipped", () => {
  let w = replaced(EMPTY, events(1, 200));
  w = withNewer(w, events(150, 400), w.epoch);
  assert.deepEqual([low(w), high(w)], [1, 400]);
  assert.ok(contiguous(w));
  assert.equal(withNewer(w, events(402, 500), w.epoch), w); // a hole: dropped
});

test("a replaced window is cut to MAX_WINDOW and starts a new epoch", () => {
  const w = replaced(EMPTY, events(1, MAX_WINDOW + 10));
  assert.equal(w.events.length, MAX_WINDOW);
  assert.equal(high(w), MAX_WINDOW + 10);
  assert.equal(w.epoch, EMPTY.epoch + 1);
});
