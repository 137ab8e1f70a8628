// The shapes the read API answers with (api/models.py is their definition; /docs shows them).

export type Status = "running" | "succeeded" | "failed";
export type SpanState = "open" | "closed" | "failed";
export type Json = null | boolean | number | string | Json[] | { [key: string]: Json };
export type Payload = { [key: string]: Json };

export interface TaskEvent {
  event_id: number;
  task_id: string;
  seq: number;
  event_type: string;
  phase: string | null;
  actor: string;
  span_id: string;
  parent_span_id: string | null;
  payload: Payload;
  created_at: string;
  event_uid: string | null;
  emitted_at: string | null;
}

export interface TaskSummary {
  task_id: string;
  latest_seq: number;
  event_count: number;
  current_phase: string | null;
  status: Status;
  first_at: string;
  last_at: string;
  exit_reason: string | null;
  failed_items: number;
}

export interface Span {
  span_id: string;
  parent_span_id: string | null;
  event_type: string; // of its first event
  phase: string | null;
  state: SpanState;
  start_seq: number;
  end_seq: number | null;
  last_seq: number;
  event_count: number;
  started_at: string;
  ended_at: string | null;
  work_item_id: string | null;
  work_type: string | null;
  progress: Json;
  error_code: string | null;
}

export interface Stage {
  span: Span;
  counts: { open: number; closed: number; failed: number };
  items: Span[];
  more: boolean;
}

export interface Overview {
  task: TaskSummary;
  roots: Span[];
  stages: Stage[];
  events: TaskEvent[];
  checkpoints: TaskEvent[];
  links: TaskEvent[];
}

export interface EventsPage {
  events: TaskEvent[];
  total: number;
  has_more: boolean;
  next_seq: number;
}

export interface SpansPage {
  spans: Span[];
  has_more: boolean;
  next_seq: number;
}

export interface FoundPage {
  events: TaskEvent[];
  scanned_to: number;
  has_more: boolean;
}

export interface TasksPage {
  tasks: TaskSummary[];
  next_cursor: string | null;
}

export interface ApiError {
  detail: string;
  code: string;
}
