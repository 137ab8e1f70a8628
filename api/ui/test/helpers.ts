// Builders shared by the tests: events, spans, stages and overviews shaped as the read API answers
// (types.ts; api/reads.py `overview`), with defaults so that a test spells out only what it is about.
// Also the way to a file of the repository (a fixture the Python tests read too, a Python module).
import { existsSync, readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import type { Overview, Payload, Span, Stage, TaskEvent, TaskSummary } from "../src/types";

export const TASK = "t-7f3a2c";

/** The store's created_at of event `seq`: one second apart from a fixed instant (ISO 8601 UTC). */
export function at(seq: number): string {
  return new Date(Date.UTC(2025, 0, 2, 9, 0, 0) + seq * 1000).toISOString();
}

export function event(seq: number, event_type: string, fields: Partial<TaskEvent> = {}): TaskEvent {
  return {
    event_id: 1000 + seq,
    task_id: TASK,
    seq,
    event_type,
    phase: null,
    actor: "runner",
    span_id: "root",
    parent_span_id: null,
    payload: {},
    created_at: at(seq),
    event_uid: null,
    emitted_at: null,
    ...fields,
  };
}

/** A work item event on span `span` under stage `parent`, as emit_work_item_* sends it. */
export function itemEvent(seq: number, event_type: string, span: string, parent: string, payload: Payload): TaskEvent {
  return event(seq, event_type, { span_id: span, parent_span_id: parent, phase: "executing", actor: "worker", payload });
}

export function span(span_id: string, fields: Partial<Span> = {}): Span {
  const start = fields.start_seq ?? 1;
  const ended = fields.state !== undefined && fields.state !== "open";
  const end = fields.end_seq ?? (ended ? (fields.last_seq ?? start + 1) : null);
  return {
    span_id,
    parent_span_id: null,
    event_type: "phase_enter",
    phase: null,
    state: "open",
    start_seq: start,
    end_seq: end,
    last_seq: end ?? start,
    event_count: 1,
    started_at: at(start),
    ended_at: end === null ? null : at(end),
    work_item_id: null,
    work_type: null,
    progress: null,
    error_code: null,
    ...fields,
  };
}

/** A phase span (a pipeline stage) under the runner's root span. */
export function stageSpan(span_id: string, phase: string | null, start_seq: number, fields: Partial<Span> = {}): Span {
  return span(span_id, { parent_span_id: "root", phase, start_seq, ...fields });
}

/** A work item span under `parent`. */
export function itemSpan(span_id: string, parent: string, start_seq: number, fields: Partial<Span> = {}): Span {
  const item = span_id.replace(/^wi-/, "item-");
  return span(span_id, {
    parent_span_id: parent,
    event_type: "work_item_start",
    phase: "executing",
    start_seq,
    work_item_id: item,
    work_type: "lint",
    ...fields,
  });
}

export function stage(span: Span, items: Span[] = [], counts?: Stage["counts"]): Stage {
  const tally = counts ?? { open: 0, closed: 0, failed: 0 };
  if (counts === undefined) for (const item of items) tally[item.state] += 1;
  return { span, counts: tally, items, more: tally.open + tally.closed + tally.failed > items.length };
}

export function summary(fields: Partial<TaskSummary> = {}): TaskSummary {
  return {
    task_id: TASK,
    latest_seq: 1,
    event_count: 1,
    current_phase: null,
    status: "running",
    first_at: at(1),
    last_at: at(fields.latest_seq ?? 1),
    exit_reason: null,
    failed_items: 0,
    ...fields,
  };
}

export function overview(fields: Partial<Overview> = {}): Overview {
  return {
    task: summary(),
    roots: [span("root", { event_type: "runner_spawn" })],
    stages: [],
    events: [],
    checkpoints: [],
    links: [],
    ...fields,
  };
}

/** A file of the repository by its path from the repository's root, found upwards from this test
 * (it runs bundled from api/ui/.test-build/, and could run from api/ui/test/ too). */
export function repoFile(path: string): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  for (;;) {
    if (existsSync(join(dir, path))) return join(dir, path);
    const up = dirname(dir);
    if (up === dir) throw new Error(`${path}: not found above ${fileURLToPath(import.meta.url)}`);
    dir = up;
  }
}

export function readRepoFile(path: string): string {
  return readFileSync(repoFile(path), "utf8");
}
