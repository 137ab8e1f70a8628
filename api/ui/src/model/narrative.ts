// Each event in plain language: "item-3 (lint) failed: E1 — the step ran past its budget". Only text:
// the views render it as text (never as HTML), whatever a runner put in its payload.
import type { Json, Span, TaskEvent } from "../types";
import { exitReason, exitStatus, strings, text } from "./lifecycle";

export type Tone = "ok" | "fail" | "warn" | "info" | "quiet";

export interface Line {
  text: string;
  tone: Tone;
}

export type SpanLookup = (spanId: string) => Span | undefined;

export function progressText(progress: Json | undefined): string | null {
  if (typeof progress === "number" && Number.isFinite(progress)) return `${Math.round(progress * 100)}%`;
  if (progress !== null && typeof progress === "object" && !Array.isArray(progress)) {
    const current = progress["current"];
    const total = progress["total"];
    if (typeof current === "number" && typeof total === "number") return `${current}/${total}`;
  }
  return null;
}

/** A work item as a person names it: "item-3 (lint)", from its events or its span. */
export function itemLabel(event: TaskEvent, lookup: SpanLookup): string {
  const span = lookup(event.span_id);
  const item = text(event.payload["work_item_id"]) ?? span?.work_item_id ?? event.span_id;
  const type = text(event.payload["work_type"]) ?? span?.work_type ?? null;
  return type ? `${item} (${type})` : item;
}

function withWhy(line: string, event: TaskEvent): string {
  const why = text(event.payload["explanation"]);
  // An explanation that only repeats the line's last word ("done — done") adds nothing.
  if (!why) return line;
  if (why.trim().toLowerCase() === (line.split(" ").at(-1) ?? "").toLowerCase()) return line;
  return `${line} — ${why}`;
}

function count(value: Json | undefined, noun: string): string | null {
  const n = strings(value).length;
  return n ? `${n} ${noun}${n === 1 ? "" : "s"}` : null;
}

export function describe(event: TaskEvent, lookup: SpanLookup): Line {
  const p = event.payload;
  const cp = text(p["checkpoint_id"]) ?? "?";
  switch (event.event_type) {
    case "runner_spawn": {
      const parts = [text(p["runner_version"]) ? `v${p["runner_version"]}` : null, p["runner_pid"] ? `pid ${p["runner_pid"]}` : null];
      const detail = parts.filter(Boolean).join(", ");
      return { text: withWhy(`runner started${detail ? ` (${detail})` : ""}`, event), tone: "info" };
    }
    case "runner_exit": {
      const status = exitStatus(p);
      const reason = exitReason(p);
      const why = reason && reason !== status ? `: ${reason}` : "";
      return { text: `ended: ${status}${why}`, tone: status === "succeeded" ? "ok" : "fail" };
    }
    case "runner_heartbeat":
      return { text: withWhy("heartbeat", event), tone: "quiet" };
    case "phase_enter":
      return { text: withWhy(`entered ${event.phase ?? "a phase"}`, event), tone: "info" };
    case "phase_exit":
      return { text: withWhy(`left ${event.phase ?? "the phase"}`, event), tone: "info" };
    case "work_item_start":
      return { text: withWhy(`${itemLabel(event, lookup)} started`, event), tone: "info" };
    case "work_item_progress": {
      const at = progressText(p["progress"]);
      return { text: withWhy(`${itemLabel(event, lookup)} at ${at ?? "?"}`, event), tone: "quiet" };
    }
    case "work_item_complete":
      return { text: withWhy(`${itemLabel(event, lookup)} done`, event), tone: "ok" };
    case "work_item_failed": {
      const code = text(p["error_code"]);
      return { text: withWhy(`${itemLabel(event, lookup)} failed${code ? `: ${code}` : ""}`, event), tone: "fail" };
    }
    case "checkpoint_commit": {
      const refs = p["evidence_refs"];
      const bits: string[] = [];
      if (refs !== null && typeof refs === "object" && !Array.isArray(refs)) {
        const artifacts = count(refs["artifacts"], "artifact");
        if (artifacts) bits.push(artifacts);
        const items = count(refs["work_items"], "work item");
        if (items) bits.push(items);
        const hash = text(refs["commit_hash"]);
        if (hash) bits.push(`commit ${hash.slice(0, 10)}`);
      }
      const type = text(p["checkpoint_type"]);
      const head = `checkpoint ${cp}${type ? ` (${type})` : ""} committed`;
      return { text: withWhy(bits.length ? `${head}: ${bits.join(", ")}` : head, event), tone: "info" };
    }
    case "checkpoint_verified":
      return { text: withWhy(`checkpoint ${cp} verified`, event), tone: "ok" };
    case "checkpoint_invalid": {
      const code = text(p["error_code"]);
      return { text: withWhy(`checkpoint ${cp} rejected${code ? `: ${code}` : ""}`, event), tone: "fail" };
    }
    case "evidence_collected": {
      const kind = text(p["evidence_type"]);
      const id = text(p["evidence_id"]) ?? "?";
      return { text: withWhy(`evidence ${id}${kind ? ` (${kind})` : ""} collected`, event), tone: "quiet" };
    }
    case "evidence_linked":
      return { text: withWhy(`evidence ${text(p["evidence_id"]) ?? "?"} linked to checkpoint ${cp}`, event), tone: "quiet" };
    case "recovery_initiated": {
      const reason = text(p["reason"]);
      return { text: withWhy(`recovery started${reason ? `: ${reason}` : ""}`, event), tone: "warn" };
    }
    case "recovery_checkpoint_loaded":
      return { text: withWhy(`rolled back to checkpoint ${cp}`, event), tone: "warn" };
    case "recovery_complete":
      return { text: withWhy("recovery complete", event), tone: "warn" };
    default:
      return { text: withWhy(`${event.event_type.replaceAll("_", " ")} on ${event.span_id}`, event), tone: "info" };
  }
}
