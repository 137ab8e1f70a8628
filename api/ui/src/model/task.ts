// One task as the page knows it: its summary, its spans, its stages and checkpoints, kept up to date
// by the events that arrive live, with the store's own rules (lifecycle.ts). Mutable, with a version
// the views re-render on; every change is linear in what changed.
import type { Json, Overview, Span, SpanState, TaskEvent, TaskSummary } from "../types";
import { SPAN_CLOSERS, SPAN_OPENERS, exitReason, exitStatus, strings, text } from "./lifecycle";

export type Verdict = "verified" | "invalid" | "pending";
export type Counts = { open: number; closed: number; failed: number };

export interface Checkpoint {
  id: string;
  type: string | null;
  phase: string | null;
  commit: TaskEvent | null;
  verdict: Verdict;
  verdictEvent: TaskEvent | null;
  artifacts: string[];
  commitHash: string | null;
  workItems: string[];
  otherRefs: [string, string][]; // further evidence_refs, as key and text
  linked: string[]; // evidence ids linked to it (evidence_linked)
}

const ROOT = ""; // the parent key of root spans

function emptyCounts(): Counts {
  return { open: 0, closed: 0, failed: 0 };
}

export class TaskModel {
  summary: TaskSummary;
  spans = new Map<string, Span>();
  /** parent span id (ROOT for none) -> child span ids, in the order they started */
  children = new Map<string, string[]>();
  /** phase spans, in the order they started: the pipeline's stages */
  stages: string[] = [];
  /** per span, its children by state (exact once every span is known, else from the store's counts) */
  counts = new Map<string, Counts>();
  checkpoints = new Map<string, Checkpoint>();
  checkpointOrder: string[] = [];
  /** true once every span of the task is loaded (the tree needs them all) */
  allSpans = false;
  /** the seq up to which events have been applied */
  applied: number;
  version = 0;

  constructor(overview: Overview) {
    this.summary = { ...overview.task };
    this.applied = overview.task.latest_seq;
    for (const root of overview.roots) this.addSpan(root);
    for (const stage of overview.stages) {
      this.addSpan(stage.span);
      for (const item of stage.items) this.addSpan(item);
      this.counts.set(stage.span.span_id, { ...stage.counts });
    }
    for (const event of overview.checkpoints) this.foldCheckpoint(event);
    for (const event of overview.links) this.foldCheckpoint(event);
  }

  // --- spans ---------------------------------------------------------------------------------------

  private addSpan(span: Span): void {
    const known = this.spans.get(span.span_id);
    if (known !== undefined) {
      const { start_seq: start, parent_span_id: parent } = known;
      if (known.last_seq < span.last_seq) {
        Object.assign(known, span); // the store's is newer
      } else {
        // Ours is as new, but a span first seen by a later event has a guessed start (and no parent if
        // that event named none): take the store's.
        known.start_seq = span.start_seq;
        known.started_at = span.started_at;
        known.event_type = span.event_type;
        known.phase = span.phase;
        known.parent_span_id ??= span.parent_span_id;
      }
      if (known.start_seq !== start || known.parent_span_id !== parent) this.relink(known, parent);
      return;
    }
    this.spans.set(span.span_id, { ...span });
    const parent = span.parent_span_id ?? ROOT;
    const siblings = this.children.get(parent);
    if (siblings === undefined) this.children.set(parent, [span.span_id]);
    else insertByStart(siblings, span, this.spans);
    if (span.event_type === "phase_enter") insertByStart(this.stages, span, this.spans);
  }

  /** Move a span from its parent's children (`from`) to where its parent and start now put it. */
  private relink(span: Span, from: string | null): void {
    const old = this.children.get(from ?? ROOT);
    const at = old?.indexOf(span.span_id) ?? -1;
    if (old !== undefined && at >= 0) old.splice(at, 1);
    const parent = span.parent_span_id ?? ROOT;
    const siblings = this.children.get(parent);
    if (siblings === undefined) this.children.set(parent, [span.span_id]);
    else insertByStart(siblings, span, this.spans);
  }

  /** Every span of the task, as /spans answered: from now on the counts are exact. */
  loadSpans(spans: Span[]): void {
    for (const span of spans) this.addSpan(span);
    this.allSpans = true;
    // Orders and counts from the whole set (a span first seen late may have been put out of order).
    const byStart = (a: string, b: string) =>
      (this.spans.get(a)?.start_seq ?? 0) - (this.spans.get(b)?.start_seq ?? 0);
    for (const ids of this.children.values()) ids.sort(byStart);
    this.stages.sort(byStart);
    this.counts.clear();
    for (const span of this.spans.values()) {
      if (span.parent_span_id === null) continue;
      const counts = this.counts.get(span.parent_span_id) ?? emptyCounts();
      counts[span.state] += 1;
      this.counts.set(span.parent_span_id, counts);
    }
    this.version += 1;
  }

  /** A stage's further children, as /spans?parent= answered. */
  loadChildren(spans: Span[]): void {
    for (const span of spans) this.addSpan(span);
    this.version += 1;
  }

  childrenOf(spanId: string | null): Span[] {
    const ids = this.children.get(spanId ?? ROOT) ?? [];
    return ids.map((id) => this.spans.get(id)).filter((s): s is Span => s !== undefined);
  }

  countsOf(spanId: string): Counts {
    return this.counts.get(spanId) ?? emptyCounts();
  }

  // --- live events ---------------------------------------------------------------------------------

  /** Apply the events that continue the task (seq applied + 1, …), in order; the first that does not
   * is where the caller must fetch the gap. Returns how many were applied. */
  apply(events: TaskEvent[]): number {
    let done = 0;
    for (const event of events) {
      if (event.seq <= this.applied) continue; // already known (a replay after a reconnect)
      if (event.seq !== this.applied + 1) break; // a gap: the caller reads the store first
      this.applyOne(event);
      this.applied = event.seq;
      done += 1;
    }
    if (done) this.version += 1;
    return done;
  }

  private applyOne(e: TaskEvent): void {
    const task = this.summary;
    task.latest_seq = e.seq;
    task.event_count += 1;
    task.last_at = e.created_at;
    if (e.phase !== null) task.current_phase = e.phase;
    if (e.event_type === "runner_spawn") {
      task.status = "running";
      task.exit_reason = null;
    } else if (e.event_type === "runner_exit") {
      task.status = exitStatus(e.payload);
      task.exit_reason = exitReason(e.payload);
    }
    this.foldSpan(e);
    this.foldCheckpoint(e);
  }

  private foldSpan(e: TaskEvent): void {
    let span = this.spans.get(e.span_id);
    if (span !== undefined && e.seq <= span.last_seq) return; // the span was read after this event
    const before: SpanState | null = span?.state ?? null;
    if (span === undefined) {
      span = {
        span_id: e.span_id,
        parent_span_id: e.parent_span_id,
        event_type: e.event_type,
        phase: e.phase,
        state: "open",
        start_seq: e.seq,
        end_seq: null,
        last_seq: e.seq,
        event_count: 0,
        started_at: e.created_at,
        ended_at: null,
        work_item_id: null,
        work_type: null,
        progress: null,
        error_code: null,
      };
      // A span opened before the page knew it (past a stage's first cards) and now closing was open.
      this.addSpan(span);
      span = this.spans.get(e.span_id) as Span;
    } else if (span.parent_span_id === null && e.parent_span_id !== null) {
      span.parent_span_id = e.parent_span_id; // as the store takes it (coalesce); the span moves under it
      this.relink(span, null);
    }
    span.last_seq = e.seq;
    span.event_count += 1;
    if (SPAN_OPENERS.has(e.event_type)) {
      span.state = "open";
      span.end_seq = null;
      span.ended_at = null;
    } else {
      const closed = SPAN_CLOSERS[e.event_type];
      if (closed !== undefined) {
        span.state = closed;
        span.end_seq = e.seq;
        span.ended_at = e.created_at;
      }
    }
    if (e.event_type.startsWith("work_item_")) {
      const p = e.payload;
      span.work_item_id = text(p["work_item_id"]) ?? span.work_item_id;
      span.work_type = text(p["work_type"]) ?? span.work_type;
      // A null progress keeps the last one, as the store does.
      if (e.event_type === "work_item_progress" && p["progress"] !== undefined && p["progress"] !== null) span.progress = p["progress"];
      if (e.event_type === "work_item_failed") span.error_code = text(p["error_code"]) ?? span.error_code;
    }
    // The parent's counts: a new child, or a child whose state changed.
    const parent = span.parent_span_id;
    if (parent !== null && (before === null || before !== span.state)) {
      const counts = this.counts.get(parent) ?? emptyCounts();
      if (before !== null) counts[before] = Math.max(0, counts[before] - 1);
      else if (!SPAN_OPENERS.has(e.event_type)) counts.open = Math.max(0, counts.open - 1); // was open, unseen
      counts[span.state] += 1;
      this.counts.set(parent, counts);
    }
  }

  // --- checkpoints ---------------------------------------------------------------------------------

  private checkpoint(id: string): Checkpoint {
    let cp = this.checkpoints.get(id);
    if (cp === undefined) {
      cp = {
        id,
        type: null,
        phase: null,
        commit: null,
        verdict: "pending",
        verdictEvent: null,
        artifacts: [],
        commitHash: null,
        workItems: [],
        otherRefs: [],
        linked: [],
      };
      this.checkpoints.set(id, cp);
      this.checkpointOrder.push(id);
    }
    return cp;
  }

  foldCheckpoint(e: TaskEvent): void {
    const id = text(e.payload["checkpoint_id"]);
    if (id === null) return;
    if (e.event_type === "checkpoint_commit") {
      const cp = this.checkpoint(id);
      cp.commit = e;
      cp.type = text(e.payload["checkpoint_type"]);
      cp.phase = e.phase;
      readRefs(cp, e.payload["evidence_refs"]);
    } else if (e.event_type === "checkpoint_verified" || e.event_type === "checkpoint_invalid") {
      const cp = this.checkpoint(id);
      cp.verdict = e.event_type === "checkpoint_verified" ? "verified" : "invalid";
      cp.verdictEvent = e;
    } else if (e.event_type === "evidence_linked") {
      const evidence = text(e.payload["evidence_id"]);
      const cp = this.checkpoint(id);
      if (evidence !== null && !cp.linked.includes(evidence)) cp.linked.push(evidence);
    }
  }

  /** The work item spans a checkpoint names (by work_item_id), for highlighting their cards. */
  spansOfWorkItems(items: string[]): string[] {
    const wanted = new Set(items);
    const out: string[] = [];
    for (const span of this.spans.values()) {
      if (span.work_item_id !== null && wanted.has(span.work_item_id)) out.push(span.span_id);
    }
    return out;
  }
}

function readRefs(cp: Checkpoint, refs: Json | undefined): void {
  cp.artifacts = [];
  cp.workItems = [];
  cp.otherRefs = [];
  cp.commitHash = null;
  if (refs === null || refs === undefined) return;
  if (typeof refs !== "object" || Array.isArray(refs)) {
    cp.artifacts = strings(refs);
    return;
  }
  for (const [key, value] of Object.entries(refs)) {
    if (key === "artifacts") cp.artifacts = strings(value);
    else if (key === "work_items") cp.workItems = strings(value);
    else if (key === "commit_hash" && typeof value === "string") cp.commitHash = value;
    else cp.otherRefs.push([key, typeof value === "string" ? value : JSON.stringify(value)]);
  }
}

/** Insert `span`'s id into ids (sorted by start seq), from the end: new spans start last. */
function insertByStart(ids: string[], span: Span, spans: Map<string, Span>): void {
  let at = ids.length;
  while (at > 0) {
    const prev = spans.get(ids[at - 1] as string);
    if (prev === undefined || prev.start_seq <= span.start_seq) break;
    at -= 1;
  }
  if (ids[at - 1] !== span.span_id) ids.splice(at, 0, span.span_id);
}
