// The task list at `/`: newest activity first, filtered by status, phase and task id, paged with the
// API's cursor, and live: the task list's feed pushes the summaries of tasks as they change.
import { useEffect, useMemo, useRef, useState } from "preact/hooks";
import { api, segment } from "../api";
import { ago, count, duration, parseTime } from "../format";
import { type LiveState, TaskListStream } from "../live";
import { PHASES } from "../model/lifecycle";
import { type Filters, MAX_ROWS, latestOf, mergeTasks } from "../model/tasklist";
import type { Status, TaskSummary } from "../types";
import { LiveBadge, StatusBadge, useNow } from "./common";

const STATUSES: (Status | "")[] = ["", "running", "failed", "succeeded"];
const PAGE = 50;

function readFilters(): Filters {
  const p = new URLSearchParams(location.search);
  return { status: p.get("status") ?? "", phase: p.get("phase") ?? "", q: p.get("q") ?? "" };
}

export function TaskList() {
  const [filters, setFilters] = useState<Filters>(readFilters);
  const [tasks, setTasks] = useState<TaskSummary[]>([]);
  const [cursor, setCursor] = useState<string | null>(null);
  const [error, setError] = useState<string | null>(null);
  const [live, setLive] = useState<LiveState>("connecting");
  const [loading, setLoading] = useState(true);
  const filtersRef = useRef(filters);
  filtersRef.current = filters;
  const generation = useRef(0); // each (re)load of the list; a page read for an older one is dropped
  const pushed = useRef(new Map<string, TaskSummary>()); // what the feed pushed since the load began
  const now = useNow(1000);

  const load = async (f: Filters) => {
    const gen = ++generation.current;
    pushed.current = new Map();
    setLoading(true);
    try {
      const page = await api.tasks({ limit: PAGE, status: f.status || null, phase: f.phase || null, q: f.q || null });
      if (gen !== generation.current) return; // a newer filter or resync asked meanwhile
      setTasks(mergeTasks(page.tasks, pushed.current.values(), f));
      setCursor(page.next_cursor);
      setError(null);
    } catch (e) {
      if (gen === generation.current) setError(String((e as Error).message));
    } finally {
      if (gen === generation.current) setLoading(false);
      document.body.dataset["ready"] = "1"; // the first page is in (tests and automation wait for it)
    }
  };

  useEffect(() => {
    const q = new URLSearchParams();
    if (filters.status) q.set("status", filters.status);
    if (filters.phase) q.set("phase", filters.phase);
    if (filters.q) q.set("q", filters.q);
    const query = q.toString();
    history.replaceState(null, "", query ? `/?${query}` : "/");
    const timer = window.setTimeout(() => void load(filters), filters.q ? 250 : 0);
    return () => window.clearTimeout(timer);
  }, [filters]);

  useEffect(() => {
    const stream = new TaskListStream({
      onState: setLive,
      onResync: () => void load(filtersRef.current),
      onTasks: (changed) => {
        const summaries = changed as TaskSummary[];
        for (const t of summaries) pushed.current.set(t.task_id, latestOf(pushed.current.get(t.task_id), t));
        setTasks((current) => mergeTasks(current, summaries, filtersRef.current));
      },
    });
    stream.start();
    return () => stream.close();
  }, []);

  // Rows beyond MAX_ROWS were dropped: the cursor no longer follows on from the last row shown.
  const capped = tasks.length >= MAX_ROWS;

  const more = async () => {
    if (cursor === null) return;
    const f = filters;
    const gen = generation.current;
    const page = await api.tasks({ limit: PAGE, cursor, status: f.status || null, phase: f.phase || null, q: f.q || null });
    if (gen !== generation.current) return; // the list was reloaded meanwhile: this page is not its
    setTasks((current) => {
      const seen = new Set(current.map((t) => t.task_id));
      return mergeTasks(current, page.tasks.filter((t) => !seen.has(t.task_id)), f);
    });
    setCursor(page.next_cursor);
  };

  const counts = useMemo(() => {
    const c = { running: 0, failed: 0, succeeded: 0 };
    for (const t of tasks) c[t.status] += 1;
    return c;
  }, [tasks]);

  return (
    <main class="page tasks-page">
      <header class="bar">
        <h1>
          <a href="/">taskevents</a> <span class="muted">tasks</span>
        </h1>
        <LiveBadge state={live} />
      </header>
      <section class="filters" aria-label="Filters">
        <div class="segmented" role="group" aria-label="Status">
          {STATUSES.map((s) => (
            <button type="button" aria-pressed={filters.status === s} onClick={() => setFilters({ ...filters, status: s })} key={s || "all"}>
              {s || "all"}
            </button>
          ))}
        </div>
        <label>
          phase{" "}
          <select value={filters.phase} onChange={(e) => setFilters({ ...filters, phase: (e.currentTarget as HTMLSelectElement).value })}>
            <option value="">any</option>
            {PHASES.map((p) => (
              <option value={p} key={p}>
                {p}
              </option>
            ))}
          </select>
        </label>
        <input
          type="search"
          placeholder="search task id"
          aria-label="Search by task id"
          value={filters.q}
          onInput={(e) => setFilters({ ...filters, q: (e.currentTarget as HTMLInputElement).value })}
        />
        <span class="muted">
          {count(tasks.length)} shown · {counts.running} running · {counts.failed} failed · {counts.succeeded} succeeded
        </span>
      </section>
      {error && <p class="error" role="alert">{error}</p>}
      <table class="task-table">
        <thead>
          <tr>
            <th>status</th>
            <th>task</th>
            <th>phase</th>
            <th>started</th>
            <th>last activity</th>
            <th>duration</th>
            <th class="num">events</th>
            <th class="num">failed items</th>
          </tr>
        </thead>
        <tbody>
          {tasks.map((t) => {
            const end = t.status === "running" ? now : parseTime(t.last_at);
            return (
              <tr data-task-id={t.task_id} data-status={t.status} key={t.task_id}>
                <td>
                  <StatusBadge status={t.status} />
                </td>
                <td class="task-id">
                  <a href={`/tasks/${segment(t.task_id)}`}>{t.task_id}</a>
                  {t.status === "failed" && t.exit_reason && <div class="reason">{t.exit_reason}</div>}
                </td>
                <td>{t.current_phase ?? "–"}</td>
                <td title={t.first_at}>{ago(t.first_at, now)}</td>
                <td title={t.last_at}>{ago(t.last_at, now)}</td>
                <td>{duration(end - parseTime(t.first_at))}</td>
                <td class="num">{count(t.event_count)}</td>
                <td class={`num ${t.failed_items ? "fail" : ""}`}>{t.failed_items ? count(t.failed_items) : "–"}</td>
              </tr>
            );
          })}
        </tbody>
      </table>
      {!loading && tasks.length === 0 && <p class="empty">No tasks{filters.status || filters.phase || filters.q ? " match these filters" : " yet: run `taskevents simulate`"}.</p>}
      {cursor !== null && !capped && (
        <button type="button" class="more" onClick={() => void more()}>
          older tasks
        </button>
      )}
      {capped && <p class="muted">The {count(MAX_ROWS)} most recently active are shown: filter to find others.</p>}
    </main>
  );
}
