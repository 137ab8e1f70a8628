// The lifecycle rules the store applies (shared/event.py), so that live events change the page exactly
// as they change the store. test/lifecycle.test.ts checks them against the same table as the Python.
import type { Json, Payload, SpanState, Status } from "../types";

export const SPAN_OPENERS = new Set(["runner_spawn", "phase_enter", "work_item_start"]);
export const SPAN_CLOSERS: Record<string, SpanState> = {
  runner_exit: "closed",
  phase_exit: "closed",
  work_item_complete: "closed",
  work_item_failed: "failed",
};
export const CHECKPOINT_TYPES = new Set(["checkpoint_commit", "checkpoint_verified", "checkpoint_invalid"]);
export const FAILURE_TYPES = new Set(["work_item_failed", "checkpoint_invalid", "recovery_initiated"]);
export const PHASES = ["planning", "executing", "verifying", "recovery"] as const;
export const EVENT_TYPES = [
  "runner_spawn",
  "runner_exit",
  "runner_heartbeat",
  "phase_enter",
  "phase_exit",
  "work_item_start",
  "work_item_progress",
  "work_item_complete",
  "work_item_failed",
  "checkpoint_commit",
  "checkpoint_verified",
  "checkpoint_invalid",
  "evidence_collected",
  "evidence_linked",
  "recovery_initiated",
  "recovery_checkpoint_loaded",
  "recovery_complete",
];

const SUCCESS_OUTCOMES = new Set(["succeeded", "success", "successful", "ok", "completed", "passed", "done"]);
const FAILURE_OUTCOMES = new Set([
  "failed",
  "failure",
  "error",
  "errored",
  "cancelled",
  "canceled",
  "aborted",
  "killed",
  "crashed",
  "timeout",
  "timed_out",
  "terminated",
  "rejected",
  "invalid",
]);

function integer(value: Json | undefined): number | null {
  if (typeof value === "number") return Number.isInteger(value) ? value : null;
  // ASCII digits and spaces only, as the store's rule (other Unicode spaces and digits count as text).
  if (typeof value === "string" && /^[ \t\n\r]*[+-]?[0-9]{1,20}[ \t\n\r]*$/.test(value)) return Number.parseInt(value, 10);
  return null;
}

/** The status a runner_exit gives its task (taskevents.event.exit_status). */
export function exitStatus(payload: Payload): Exclude<Status, "running"> {
  const outcome = payload["outcome"];
  const word = typeof outcome === "string" ? outcome.trim().toLowerCase() : null;
  if (word !== null && SUCCESS_OUTCOMES.has(word)) return "succeeded";
  if (word !== null && FAILURE_OUTCOMES.has(word)) return "failed";
  const code = integer(payload["exit_code"]);
  if (code !== null) return code === 0 ? "succeeded" : "failed";
  if (!("exit_code" in payload) && (outcome === undefined || outcome === null)) return "succeeded";
  return "failed";
}

/** Why a run ended, in a few words (taskevents.event.exit_reason). */
export function exitReason(payload: Payload): string | null {
  for (const key of ["explanation", "error_code", "outcome"]) {
    const value = payload[key];
    // 500 characters as Python counts them (code points, at most 1,000 UTF-16 units): never half of one.
    if (typeof value === "string" && value.trim()) return Array.from(value.trim().slice(0, 1000)).slice(0, 500).join("");
  }
  const code = integer(payload["exit_code"]);
  return code ? `exit code ${code}` : null;
}

export function text(value: Json | undefined): string | null {
  return typeof value === "string" && value !== "" ? value : null;
}

export function strings(value: Json | undefined): string[] {
  if (Array.isArray(value)) return value.filter((v): v is string => typeof v === "string");
  return typeof value === "string" ? [value] : [];
}
