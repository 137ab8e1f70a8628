// The timeline's rows: events in seq order, grouped by the phase attempt they happened in, each in
// plain language, with runs of heartbeats and of progress events folded into one line. Rows have one
// height, so the list is virtualized: whatever the run's length, a few dozen are in the page.
import type { Span, TaskEvent } from "../types";
import { type Line, type SpanLookup, describe, itemLabel, progressText } from "./narrative";

export type Row =
  | { kind: "group"; key: string; label: string; stageId: string | null }
  | { kind: "event"; key: string; event: TaskEvent; line: Line }
  | { kind: "fold"; key: string; events: TaskEvent[]; line: Line };

const FOLDABLE = new Set(["runner_heartbeat", "work_item_progress"]);

/** The stage (phase span) an event happened in: the last one that started at or before it. */
export function stageAt(stages: Span[], seq: number): Span | null {
  let lo = 0;
  let hi = stages.length - 1;
  let found: Span | null = null;
  while (lo <= hi) {
    const mid = (lo + hi) >> 1;
    const stage = stages[mid] as Span;
    if (stage.start_seq <= seq) {
      found = stage;
      lo = mid + 1;
    } else {
      hi = mid - 1;
    }
  }
  return found;
}

export function stageLabel(stage: Span | null, attemptOf: (id: string) => number): string {
  if (stage === null) return "start";
  const attempt = attemptOf(stage.span_id);
  return `${stage.phase ?? "phase"}${attempt > 1 ? ` · attempt ${attempt}` : ""}`;
}

function foldLine(events: TaskEvent[], lookup: SpanLookup): Line {
  const type = (events[0] as TaskEvent).event_type;
  if (type === "runner_heartbeat") return { text: `${events.length} heartbeats`, tone: "quiet" };
  const latest = new Map<string, string>(); // item -> its latest progress, in the order items appear
  for (const e of events) latest.set(itemLabel(e, lookup), progressText(e.payload["progress"]) ?? "?");
  const items = [...latest.entries()];
  const shown = items.slice(0, 3).map(([item, at]) => `${item} ${at}`);
  const more = items.length > 3 ? `, and ${items.length - 3} more` : "";
  return { text: `${events.length} progress updates: ${shown.join(", ")}${more}`, tone: "quiet" };
}

/**
 * The rows of `events` (ascending, contiguous). `unfolded`: seqs whose run is shown event by event. A
 * run is named by the events in it, not by where it starts, so it stays unfolded when it grows (live
 * events at its end, older pages at its start). Linear in the number of events.
 */
export function timelineRows(
  events: TaskEvent[],
  stages: Span[],
  attemptOf: (id: string) => number,
  lookup: SpanLookup,
  unfolded: ReadonlySet<number>,
): Row[] {
  const rows: Row[] = [];
  let group: string | undefined;
  let run: TaskEvent[] = [];
  const flush = () => {
    if (run.length === 0) return;
    const key = `f:${(run[0] as TaskEvent).seq}`;
    if (run.length === 1 || (unfolded.size > 0 && run.some((e) => unfolded.has(e.seq)))) {
      for (const e of run) rows.push({ kind: "event", key: `e:${e.seq}`, event: e, line: describe(e, lookup) });
    } else {
      rows.push({ kind: "fold", key, events: run, line: foldLine(run, lookup) });
    }
    run = [];
  };
  for (const event of events) {
    const stage = stageAt(stages, event.seq);
    const id = stage?.span_id ?? "";
    if (id !== group) {
      flush();
      group = id;
      rows.push({ kind: "group", key: `g:${id}:${event.seq}`, label: stageLabel(stage, attemptOf), stageId: stage?.span_id ?? null });
    }
    if (FOLDABLE.has(event.event_type)) {
      if (run.length > 0 && (run[0] as TaskEvent).event_type !== event.event_type) flush();
      run.push(event);
      continue;
    }
    flush();
    rows.push({ kind: "event", key: `e:${event.seq}`, event, line: describe(event, lookup) });
  }
  flush();
  return rows;
}
