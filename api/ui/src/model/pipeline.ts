// The pipeline's layout, for the fixed shape of a run (phases, their attempts, their work items), in
// one pass over the stages: a column per phase in the order phases first ran, a row per attempt, and
// an edge from each stage to the next one that ran; an edge that goes back to an earlier column (a
// recovery re-entering executing) is drawn as a back edge. No general graph layout is needed, so
// thousands of work items cost nothing here: they are listed under their stage, not laid out.
import type { Span } from "../types";
import { PHASES } from "./lifecycle";

export interface StageBox {
  id: string;
  phase: string;
  attempt: number; // 1 for a phase's first run
  column: number;
  row: number; // attempt - 1
  span: Span;
}

export interface Edge {
  from: string;
  to: string;
  back: boolean; // to an earlier (or the same) column: a retry after a recovery
}

export interface Layout {
  columns: string[];
  rows: number;
  boxes: StageBox[];
  edges: Edge[];
}

export function layoutPipeline(stages: Span[]): Layout {
  const columns: string[] = [];
  const column = new Map<string, number>();
  const attempts = new Map<string, number>();
  const boxes: StageBox[] = [];
  // Known phases keep their usual order; others follow in the order they first ran.
  const order = (phase: string) => {
    const known = PHASES.indexOf(phase as (typeof PHASES)[number]);
    return known >= 0 ? known : PHASES.length;
  };
  const seen = [...new Set(stages.map((s) => s.phase ?? "(none)"))];
  seen.sort((a, b) => order(a) - order(b) || seen.indexOf(a) - seen.indexOf(b));
  for (const phase of seen) {
    column.set(phase, columns.length);
    columns.push(phase);
  }
  let rows = 0;
  for (const span of stages) {
    const phase = span.phase ?? "(none)";
    const attempt = (attempts.get(phase) ?? 0) + 1;
    attempts.set(phase, attempt);
    rows = Math.max(rows, attempt);
    boxes.push({ id: span.span_id, phase, attempt, column: column.get(phase) ?? 0, row: attempt - 1, span });
  }
  const edges: Edge[] = [];
  for (let i = 1; i < boxes.length; i += 1) {
    const a = boxes[i - 1] as StageBox;
    const b = boxes[i] as StageBox;
    edges.push({ from: a.id, to: b.id, back: b.column <= a.column });
  }
  return { columns, rows, boxes, edges };
}

/** The cards a collapsed stage shows, at most `cap`: the pinned ones (selected or highlighted), its
 * failed items, then the running ones, then the newest done; listed in the order they started (so a
 * card stays put while others change). Linear in the stage's items. */
export function cardsToShow(items: Span[], cap: number, pinned: ReadonlySet<string> = new Set()): Span[] {
  if (items.length <= cap) return items;
  const chosen = new Set<Span>();
  for (const s of items) if (pinned.has(s.span_id) && chosen.size < cap) chosen.add(s);
  for (const state of ["failed", "open"] as const) {
    for (const s of items) {
      if (chosen.size >= cap) break;
      if (s.state === state) chosen.add(s);
    }
  }
  for (let i = items.length - 1; i >= 0 && chosen.size < cap; i -= 1) chosen.add(items[i] as Span);
  return items.filter((s) => chosen.has(s));
}

/** Stages whose phase ran again later: the page shows them folded (counts, no cards) until asked. */
export function supersededStages(layout: Layout): Set<string> {
  const last = new Map<string, string>();
  for (const box of layout.boxes) last.set(box.phase, box.id);
  return new Set(layout.boxes.filter((b) => last.get(b.phase) !== b.id).map((b) => b.id));
}

/** Columns whose stages hold work items are drawn wider than the rest. */
export function wideColumns(layout: Layout, hasItems: (stageId: string) => boolean): boolean[] {
  const wide = layout.columns.map(() => false);
  for (const box of layout.boxes) if (hasItems(box.id)) wide[box.column] = true;
  return wide;
}
