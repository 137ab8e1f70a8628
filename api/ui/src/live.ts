// One live stream per tab, as the browser's own EventSource runs it: it reconnects by itself and
// resumes with Last-Event-ID, so across an API restart or a dropped network nothing is missed or
// repeated. What arrives is handed over in batches (every BATCH_MS), not event by event, and kept
// while the tab is hidden.
import type { TaskEvent } from "./types";

export type LiveState = "connecting" | "live" | "reconnecting" | "ended";

export const BATCH_MS = 100;

export interface EventStreamHandlers {
  onEvents(events: TaskEvent[]): void;
  onState(state: LiveState): void;
}

/** An EventSource that also comes back after the server refused it. The browser reconnects by itself
 * when a connection drops (sending Last-Event-ID), but not when the server answers with something else
 * than a stream (a 503 while the store is unreadable, or an API starting up behind a proxy): then this
 * opens a new one, from `urlFor()` (the resume point as of now), after a backoff of 0.5 s doubling to
 * 5 s. */
class Source {
  private source: EventSource | null = null;
  private retryTimer: number | null = null;
  private failures = 0;
  closed = false;

  constructor(
    private readonly urlFor: () => string,
    private readonly on: {
      open(): void;
      down(): void;
      beforeRetry(): void;
      listen(source: EventSource): void;
    },
  ) {}

  start(): void {
    const source = new EventSource(this.urlFor());
    this.source = source;
    source.onopen = () => {
      this.failures = 0;
      this.on.open();
    };
    source.onerror = () => {
      if (this.closed) return;
      this.on.down();
      if (source.readyState === EventSource.CLOSED) {
        const delay = Math.min(5_000, 500 * 2 ** this.failures);
        this.failures += 1;
        this.retryTimer = window.setTimeout(() => {
          this.retryTimer = null;
          this.on.beforeRetry();
          if (!this.closed) this.start();
        }, delay);
      }
    };
    this.on.listen(source);
  }

  close(): void {
    this.closed = true;
    this.source?.close();
    this.source = null;
    if (this.retryTimer !== null) window.clearTimeout(this.retryTimer);
  }
}

export class EventStream {
  private source: Source | null = null;
  private buffer: TaskEvent[] = [];
  private timer: number | null = null;
  state: LiveState = "connecting";

  /** `urlFor`: the stream's URL from the latest event the page has (asked again on each new connection). */
  constructor(
    private readonly urlFor: () => string,
    private readonly handlers: EventStreamHandlers,
  ) {}

  start(): void {
    this.setState("connecting");
    this.source = new Source(this.urlFor, {
      open: () => this.setState("live"),
      down: () => {
        if (this.state !== "ended") this.setState("reconnecting");
      },
      beforeRetry: () => this.flush(), // what arrived counts in the resume point
      listen: (source) => {
        source.addEventListener("task_event", (message) => {
          this.buffer.push(JSON.parse((message as MessageEvent<string>).data) as TaskEvent);
          this.schedule();
        });
        source.addEventListener("end", () => {
          this.flush();
          this.close();
          this.setState("ended");
        });
      },
    });
    this.source.start();
    document.addEventListener("visibilitychange", this.onVisible);
  }

  close(): void {
    this.source?.close();
    this.source = null;
    document.removeEventListener("visibilitychange", this.onVisible);
    if (this.timer !== null) window.clearTimeout(this.timer);
    this.timer = null;
  }

  private onVisible = () => {
    if (document.visibilityState === "visible") this.flush();
  };

  private schedule(): void {
    if (this.timer === null) this.timer = window.setTimeout(() => this.flush(), BATCH_MS);
  }

  private flush(): void {
    if (this.timer !== null) window.clearTimeout(this.timer);
    this.timer = null;
    if (this.buffer.length === 0) return;
    const events = this.buffer;
    this.buffer = [];
    this.handlers.onEvents(events);
  }

  private setState(state: LiveState): void {
    if (this.state === state) return;
    this.state = state;
    this.handlers.onState(state);
  }
}

/** The task list's feed: summaries of the tasks that changed, and `resync` when they are unknown. */
export class TaskListStream {
  private source: Source | null = null;

  constructor(
    private readonly handlers: {
      onTasks(tasks: unknown[]): void;
      onResync(): void;
      onState(state: LiveState): void;
    },
  ) {}

  start(): void {
    this.handlers.onState("connecting");
    this.source = new Source(() => "/sse/tasks", {
      open: () => {
        this.handlers.onState("live");
        this.handlers.onResync(); // connected first, then read the page: nothing falls in between
      },
      down: () => this.handlers.onState("reconnecting"),
      beforeRetry: () => undefined,
      listen: (source) => {
        source.addEventListener("tasks", (m) => this.handlers.onTasks(JSON.parse((m as MessageEvent<string>).data) as unknown[]));
        source.addEventListener("resync", () => this.handlers.onResync());
      },
    });
    this.source.start();
  }

  close(): void {
    this.source?.close();
    this.source = null;
  }
}
