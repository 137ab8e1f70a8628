// The read API, typed. Every request goes to this page's own origin (the CSP allows nothing else).
import type { EventsPage, FoundPage, Overview, SpansPage, TasksPage } from "./types";

export class HttpError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    detail: string,
  ) {
    super(detail);
  }
}

async function get<T>(path: string, params: Record<string, string | number | boolean | string[] | null | undefined> = {}): Promise<T> {
  const query = new URLSearchParams();
  for (const [key, value] of Object.entries(params)) {
    if (value === null || value === undefined || value === "") continue;
    if (Array.isArray(value)) for (const v of value) query.append(key, v);
    else query.set(key, String(value));
  }
  const qs = query.toString(); // not query.size: Safari 16 and Chrome 112 lack it
  const url = qs ? `${path}?${qs}` : path;
  const response = await fetch(url, { headers: { Accept: "application/json" } });
  if (!response.ok) {
    let code = `http_${response.status}`;
    let detail = response.statusText;
    try {
      const body = (await response.json()) as { code?: string; detail?: string };
      code = body.code ?? code;
      detail = body.detail ?? detail;
    } catch {
      // not the API's error shape (a proxy's page): keep the status
    }
    throw new HttpError(response.status, code, detail);
  }
  return (await response.json()) as T;
}

/** A task id as one path segment: encoded, dots too (a browser would resolve "." and ".." away). */
export const segment = (id: string) => encodeURIComponent(id).replace(/\./g, "%2E");
const task = (id: string) => `/api/tasks/${segment(id)}`;

export const api = {
  tasks: (params: { limit?: number; cursor?: string | null; status?: string | null; phase?: string | null; q?: string | null }) =>
    get<TasksPage>("/api/tasks", params),
  overview: (id: string) => get<Overview>(`${task(id)}/overview`, { events: 200, items: 24, checkpoints: 500 }),
  events: (id: string, sinceSeq: number, limit: number) => get<EventsPage>(`${task(id)}/events`, { since_seq: sinceSeq, limit }),
  /** The newest `limit` events, ascending. */
  latest: async (id: string, limit: number) => {
    const page = await get<EventsPage>(`${task(id)}/events/latest`, { limit });
    return { ...page, events: [...page.events].reverse() };
  },
  spans: (id: string, afterSeq: number, parent?: string) => get<SpansPage>(`${task(id)}/spans`, { after_seq: afterSeq, limit: 10000, parent }),
  find: (id: string, params: { q?: string; event_type?: string[]; failed?: boolean; before_seq?: number | null; limit?: number }) =>
    get<FoundPage>(`${task(id)}/events/find`, { ...params, failed: params.failed ? true : undefined }),
  taskEventsStream: (id: string, sinceSeq: number) => `/sse/tasks/${segment(id)}/events?since_seq=${sinceSeq}`,
  taskListStream: () => "/sse/tasks",
};

/** All spans of a task, page by page. */
export async function allSpans(id: string): Promise<SpansPage["spans"]> {
  const out: SpansPage["spans"] = [];
  let after = 0;
  for (;;) {
    const page = await api.spans(id, after);
    out.push(...page.spans);
    if (!page.has_more) return out;
    after = page.next_seq;
  }
}
