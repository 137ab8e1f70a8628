// What the run is doing now and what it normally does next, derived from its lifecycle: the open phase
// attempt, its open work items, a checkpoint committed and awaiting its verdict, the phase that
// follows, or how it ended.
import type { Span } from "../types";
import { plural } from "../format";
import type { Checkpoint, TaskModel } from "./task";

export interface Activity {
  now: string;
  next: string | null;
}

const FOLLOWS: Record<string, string> = { planning: "executing", recovery: "executing", executing: "verifying" };

function attemptOf(model: TaskModel, stage: Span): number {
  let n = 0;
  for (const id of model.stages) {
    const s = model.spans.get(id);
    if (s?.phase === stage.phase) n += 1;
    if (id === stage.span_id) return n;
  }
  return n;
}

function named(stage: Span, attempt: number): string {
  return `${stage.phase ?? "a phase"}${attempt > 1 ? ` (attempt ${attempt})` : ""}`;
}

/** The latest checkpoint committed at or after `since` (a stage's start), if any. */
function checkpointSince(model: TaskModel, since: number): Checkpoint | null {
  for (let i = model.checkpointOrder.length - 1; i >= 0; i -= 1) {
    const cp = model.checkpoints.get(model.checkpointOrder[i] as string);
    if (cp?.commit && cp.commit.seq >= since) return cp;
  }
  return null;
}

/** The latest checkpoint judged (verified or rejected) at or after `since`, if any: a verifying stage
 * judges a checkpoint that executing committed, before the stage began. */
function verdictSince(model: TaskModel, since: number): Checkpoint | null {
  for (let i = model.checkpointOrder.length - 1; i >= 0; i -= 1) {
    const cp = model.checkpoints.get(model.checkpointOrder[i] as string);
    if (cp?.verdictEvent && cp.verdictEvent.seq >= since) return cp;
  }
  return null;
}

function pending(model: TaskModel): Checkpoint | null {
  for (let i = model.checkpointOrder.length - 1; i >= 0; i -= 1) {
    const cp = model.checkpoints.get(model.checkpointOrder[i] as string);
    if (cp?.commit && cp.verdict === "pending") return cp;
  }
  return null;
}

export function activity(model: TaskModel): Activity {
  const task = model.summary;
  if (task.status !== "running") {
    const reason = task.exit_reason && task.exit_reason !== task.status ? ` — ${task.exit_reason}` : "";
    return { now: `ended: ${task.status}${reason}`, next: null };
  }
  const stages = model.stages.map((id) => model.spans.get(id)).filter((s): s is Span => s !== undefined);
  const open = [...stages].reverse().find((s) => s.state === "open");
  const waiting = pending(model);
  if (open === undefined) {
    const last = stages.at(-1);
    if (last === undefined) return { now: "started", next: "planning" };
    const cp = verdictSince(model, last.start_seq) ?? checkpointSince(model, last.start_seq);
    if (last.phase === "verifying") {
      if (cp?.verdict === "invalid") return { now: `left ${named(last, attemptOf(model, last))}: checkpoint ${cp.id} rejected`, next: "a recovery, then executing again" };
      if (cp?.verdict === "verified") return { now: `checkpoint ${cp.id} verified`, next: "the runner's exit" };
    }
    const follows = FOLLOWS[last.phase ?? ""];
    return { now: `between phases (after ${named(last, attemptOf(model, last))})`, next: follows ? `${follows}` : "the next phase" };
  }
  const attempt = attemptOf(model, open);
  const counts = model.countsOf(open.span_id);
  const here = named(open, attempt);
  switch (open.phase) {
    case "executing": {
      const failed = counts.failed ? `, ${plural(counts.failed, "failed")}` : "";
      if (counts.open > 0) {
        return {
          now: `${here}: ${plural(counts.open, "work item")} running, ${plural(counts.closed, "done", "done")}${failed}`,
          next: `${plural(counts.open, "open work item")} to finish, then a checkpoint commit`,
        };
      }
      const cp = checkpointSince(model, open.start_seq);
      return cp
        ? { now: `${here}: checkpoint ${cp.id} committed`, next: `verifying checkpoint ${cp.id}` }
        : { now: `${here}: ${plural(counts.closed, "work item")} done${failed}`, next: "a checkpoint commit, then verifying" };
    }
    case "verifying": {
      const cp = verdictSince(model, open.start_seq) ?? checkpointSince(model, open.start_seq) ?? waiting;
      if (cp?.verdict === "invalid") return { now: `${here}: checkpoint ${cp.id} rejected`, next: "a recovery, then executing again" };
      if (cp?.verdict === "verified") return { now: `${here}: checkpoint ${cp.id} verified`, next: "the runner's exit" };
      return { now: `${here}: checking the work`, next: waiting ? `a verdict on checkpoint ${waiting.id}` : "a verdict" };
    }
    case "recovery":
      return { now: `${here}: rolling back`, next: `executing again (attempt ${attemptOfPhase(model, "executing") + 1})` };
    case "planning":
      return { now: here, next: "executing" };
    default:
      return { now: here, next: waiting ? `a verdict on checkpoint ${waiting.id}` : null };
  }
}

function attemptOfPhase(model: TaskModel, phase: string): number {
  let n = 0;
  for (const id of model.stages) if (model.spans.get(id)?.phase === phase) n += 1;
  return n;
}
