// The timeline's window: the contiguous run of events it holds (at most MAX_WINDOW, whatever the run's
// length), changed only through these functions, so that live events, older and newer pages read from
// the store, and jumps never leave a hole, a repeat or an unbounded array. Each is a pure function of
// the window before (the page applies them as functional state updates, so none works on a stale copy).
import type { TaskEvent } from "../types";

export const MAX_WINDOW = 5_000;

export interface Win {
  events: TaskEvent[]; // ascending, contiguous seqs
  epoch: number; // bumped when the window is replaced: a page read for an older window is dropped
}

export const EMPTY: Win = { events: [], epoch: 0 };

export function low(w: Win): number {
  return w.events[0]?.seq ?? 0;
}

export function high(w: Win): number {
  return w.events[w.events.length - 1]?.seq ?? 0;
}

/** A new window (a jump to an event, back to the newest): reads started for the old one are dropped. */
export function replaced(w: Win, events: TaskEvent[]): Win {
  return { events: events.slice(-MAX_WINDOW), epoch: w.epoch + 1 };
}

/**
 * Live events (ascending, contiguous, as the model applied them): appended when the window reaches
 * them, skipping any it holds already (a store read can be ahead of the stream). While following,
 * the oldest events leave to keep MAX_WINDOW; otherwise the window stops growing at MAX_WINDOW and
 * falls behind the live edge (scrolling down or "newest" reads the rest).
 */
export function withLive(w: Win, fresh: TaskEvent[], following: boolean): Win {
  const first = fresh[0];
  if (first === undefined) return w;
  const tail = high(w);
  if (w.events.length > 0 && tail < first.seq - 1) return w; // behind the live edge: a hole otherwise
  const add = fresh.filter((e) => e.seq > tail);
  if (add.length === 0) return w;
  if (following) return { events: [...w.events, ...add].slice(-MAX_WINDOW), epoch: w.epoch };
  const room = MAX_WINDOW - w.events.length;
  if (room <= 0) return w;
  return { events: [...w.events, ...add.slice(0, room)], epoch: w.epoch };
}

/** An older page (ascending) read for window `epoch`: put in front if it ends where the window starts;
 * the newest events leave past MAX_WINDOW. */
export function withOlder(w: Win, older: TaskEvent[], epoch: number): Win {
  if (epoch !== w.epoch || w.events.length === 0) return w;
  const start = low(w);
  const add = older.filter((e) => e.seq < start);
  if (add.length === 0 || (add[add.length - 1] as TaskEvent).seq !== start - 1) return w;
  return { events: [...add, ...w.events].slice(0, MAX_WINDOW), epoch: w.epoch };
}

/** A newer page (ascending) read for window `epoch`: appended if it starts where the window ends; the
 * oldest events leave past MAX_WINDOW. */
export function withNewer(w: Win, newer: TaskEvent[], epoch: number): Win {
  if (epoch !== w.epoch) return w;
  const end = high(w);
  const add = newer.filter((e) => e.seq > end);
  if (add.length === 0 || (w.events.length > 0 && (add[0] as TaskEvent).seq !== end + 1)) return w;
  return { events: [...w.events, ...add].slice(-MAX_WINDOW), epoch: w.epoch };
}
