// The task list's rows: the pages read from the API merged with the summaries its live feed pushes.
// A page read can be older than a push that arrives before it (the read's snapshot was taken first),
// so nothing replaces: per task the summary with the higher latest_seq wins, wherever it came from.
import type { TaskSummary } from "../types";

export const MAX_ROWS = 1_000; // a tab left open on a busy system keeps at most this many rows

export interface Filters {
  status: string;
  phase: string;
  q: string;
}

export function matches(task: TaskSummary, f: Filters): boolean {
  return (
    (!f.status || task.status === f.status) &&
    (!f.phase || task.current_phase === f.phase) &&
    (!f.q || task.task_id.toLowerCase().includes(f.q.toLowerCase()))
  );
}

/** Newest activity first, then task id descending: the API's order. */
export function newer(a: TaskSummary, b: TaskSummary): number {
  if (a.last_at !== b.last_at) return a.last_at < b.last_at ? 1 : -1;
  return a.task_id === b.task_id ? 0 : a.task_id < b.task_id ? 1 : -1;
}

/** `list` with `changed` merged in: a summary replaces a task's only if its latest_seq is higher (or
 * equal: the same state), a task that no longer matches the filters leaves, newest activity first, at
 * most MAX_ROWS (the least recently active go). */
export function mergeTasks(list: readonly TaskSummary[], changed: Iterable<TaskSummary>, f: Filters): TaskSummary[] {
  const byId = new Map(list.map((t) => [t.task_id, t]));
  for (const t of changed) {
    const known = byId.get(t.task_id);
    if (known !== undefined && known.latest_seq > t.latest_seq) continue; // ours is newer
    if (matches(t, f)) byId.set(t.task_id, t);
    else byId.delete(t.task_id);
  }
  return [...byId.values()].sort(newer).slice(0, MAX_ROWS);
}

/** The newest of two summaries of one task (by latest_seq). */
export function latestOf(a: TaskSummary | undefined, b: TaskSummary): TaskSummary {
  return a !== undefined && a.latest_seq > b.latest_seq ? a : b;
}
