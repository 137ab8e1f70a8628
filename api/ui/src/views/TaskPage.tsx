// The task page at /tasks/{id}: a header with the run's state, the pipeline, the span tree, the
// timeline with the current activity and the next step, and the evidence drawer. First paint is one
// read (the overview); then one live stream, applied in batches; everything else on demand.
import { useEffect, useMemo, useRef, useState } from "preact/hooks";
import { HttpError, allSpans, api } from "../api";
import { count, duration, parseTime } from "../format";
import { EMPTY, type Win, high, low, replaced, withLive, withNewer, withOlder } from "../model/window";
import { EventStream, type LiveState } from "../live";
import { EVENT_TYPES } from "../model/lifecycle";
import { activity } from "../model/nextstep";
import { TaskModel } from "../model/task";
import { type Row, timelineRows } from "../model/timeline";
import { describe } from "../model/narrative";
import type { Span, TaskEvent } from "../types";
import { Keys, RawEvent } from "./Dialogs";
import { EvidenceDrawer } from "./Evidence";
import { Pipeline } from "./Pipeline";
import { SpanTree } from "./SpanTree";
import { Timeline } from "./Timeline";
import type { VirtualListHandle } from "./VirtualList";
import { LiveBadge, StatusBadge, useNow } from "./common";

const PAGE = 200; // events per page, scrolling back
const LIMIT_RESULTS = 200;
const MAX_QUERY = 200; // the API's limit on a search text

interface Search {
  q: string;
  type: string;
  failed: boolean;
}

interface Results {
  events: TaskEvent[];
  scannedTo: number;
  hasMore: boolean;
  loading: boolean;
  error: string | null;
}

function readParams() {
  const p = new URLSearchParams(location.search);
  const seq = Number.parseInt(p.get("seq") ?? "", 10);
  return { seq: Number.isFinite(seq) && seq > 0 ? seq : null, span: p.get("span") };
}

function setParam(name: string, value: string | null): void {
  const p = new URLSearchParams(location.search);
  if (value === null) p.delete(name);
  else p.set(name, value);
  const query = p.toString(); // not p.size: Safari 16 and Chrome 112 lack it
  history.replaceState(null, "", query ? `${location.pathname}?${query}` : location.pathname);
}

/** The run's duration, ticking while it runs (its own component: the page does not re-render each second). */
function Duration({ from, to }: { from: number; to: number | null }) {
  const now = useNow(1000);
  return <span>{duration((to ?? now) - from)}</span>;
}

/** Keys act on the page, not on a control that has focus (Enter on a button is that button's). */
function typing(target: EventTarget | null): boolean {
  const el = target as HTMLElement | null;
  return el !== null && (el.isContentEditable || ["INPUT", "SELECT", "TEXTAREA"].includes(el.tagName));
}
function onControl(target: EventTarget | null): boolean {
  const el = target as HTMLElement | null;
  return el !== null && el !== document.body && el.closest("button, a, [role='button'], summary") !== null;
}

export function TaskPage({ taskId }: { taskId: string }) {
  const model = useRef<TaskModel | null>(null);
  const [version, setVersion] = useState(0);
  const [phase, setPhase] = useState<"loading" | "ready" | "missing" | "error">("loading");
  const [error, setError] = useState<string | null>(null);
  const [live, setLive] = useState<LiveState>("connecting");
  const [win, setWinState] = useState<Win>(EMPTY);
  const [following, setFollowing] = useState(true);
  const [unseen, setUnseen] = useState(0);
  const [selectedKey, setSelectedKey] = useState<string | null>(null);
  const [highlightSeq, setHighlightSeq] = useState<number | null>(null);
  const [selectedSpan, setSelectedSpan] = useState<string | null>(null);
  const [highlighted, setHighlighted] = useState<ReadonlySet<string>>(new Set());
  const [unfolded, setUnfolded] = useState<ReadonlySet<number>>(new Set());
  const [drawer, setDrawer] = useState(false);
  const [raw, setRaw] = useState<TaskEvent | null>(null);
  const [help, setHelp] = useState(false);
  const [search, setSearch] = useState<Search>({ q: "", type: "", failed: false });
  const [results, setResults] = useState<Results | null>(null);
  const list = useRef<VirtualListHandle | null>(null);
  const searchBox = useRef<HTMLInputElement>(null);
  const winRef = useRef(win);
  const followRef = useRef(following);
  followRef.current = following;
  const loadingOlder = useRef(false);
  const loadingNewer = useRef(false);
  const searchGen = useRef(0);
  const onKeyRef = useRef<(e: KeyboardEvent) => void>(() => undefined);
  const inbox = useRef<Promise<void>>(Promise.resolve()); // live batches, applied one after another
  const backlog = useRef<TaskEvent[]>([]); // live events not applied yet (a gap read failed)

  const bump = () => setVersion((v) => v + 1);
  /** Every change of the window goes through here: a function of the window as it is then. */
  const setWin = (change: (w: Win) => Win) => {
    setWinState((w) => {
      const next = change(w);
      winRef.current = next;
      return next;
    });
  };
  const unfold = (seq: number) => setUnfolded((u) => new Set([...u, seq]));

  // --- loading and the live stream -----------------------------------------------------------------

  useEffect(() => {
    let stream: EventStream | null = null;
    let cancelled = false;
    const start = async () => {
      if (taskId.includes("/")) {
        setPhase("missing"); // not addressable by the API (see the message)
        return;
      }
      let overview;
      try {
        overview = await api.overview(taskId);
      } catch (e) {
        if (e instanceof HttpError && e.status === 404) setPhase("missing");
        else {
          setPhase("error");
          setError(String((e as Error).message));
        }
        return;
      }
      if (cancelled) return;
      const m = new TaskModel(overview);
      model.current = m;
      const { seq, span } = readParams();
      setWin((w) => replaced(w, overview.events));
      setPhase("ready");
      document.title = `${taskId} · taskevents`;
      stream = new EventStream(() => api.taskEventsStream(taskId, m.applied), {
        onState: setLive,
        onEvents: (events) => {
          inbox.current = inbox.current.then(() => receive(m, events));
        },
      });
      stream.start();
      if (seq !== null) void jumpTo(seq);
      if (span !== null) selectSpan(span, true);
      // The whole span tree, after first paint: the tree and exact counts need every span.
      try {
        m.loadSpans(await allSpans(taskId));
        bump();
      } catch {
        // the tree stays partial; the pipeline's counts come from the overview
      }
    };
    void start();
    return () => {
      cancelled = true;
      stream?.close();
    };
  }, [taskId]);

  /** Live events, one batch at a time: applied to the model in seq order (a gap read from the store
   * first; if that read fails they wait for the next batch), then given to the timeline's window. */
  const receive = async (m: TaskModel, batch: TaskEvent[]) => {
    const fresh: TaskEvent[] = [];
    let pending = [...backlog.current, ...batch].filter((e) => e.seq > m.applied);
    backlog.current = [];
    pending.sort((a, b) => a.seq - b.seq);
    while (pending.length > 0) {
      const at = m.applied;
      m.apply(pending);
      fresh.push(...pending.filter((e) => e.seq > at && e.seq <= m.applied));
      pending = pending.filter((e) => e.seq > m.applied);
      if (pending.length === 0) break;
      // A gap (the stream resumed past what we had): read it from the store, then go on.
      try {
        const page = await api.events(taskId, m.applied, Math.min(1000, (pending[0] as TaskEvent).seq - m.applied - 1));
        if (page.events.length === 0) throw new Error("the gap is not in the store yet");
        pending = [...page.events, ...pending].filter((e) => e.seq > m.applied);
      } catch {
        backlog.current = pending;
        break;
      }
    }
    if (fresh.length === 0) return;
    setWin((w) => withLive(w, fresh, followRef.current));
    if (!followRef.current) setUnseen((n) => n + fresh.length);
    bump();
  };

  const loadOlder = async () => {
    const w = winRef.current;
    const lo = low(w);
    if (lo <= 1 || loadingOlder.current) return;
    loadingOlder.current = true;
    try {
      const since = Math.max(0, lo - 1 - PAGE);
      const page = await api.events(taskId, since, lo - 1 - since);
      anchor.current = lo; // keep the event that was first where it was
      setWin((now) => withOlder(now, page.events, w.epoch));
    } finally {
      loadingOlder.current = false;
    }
  };

  const loadNewer = async () => {
    const w = winRef.current;
    if (loadingNewer.current) return;
    loadingNewer.current = true;
    try {
      const page = await api.events(taskId, high(w), PAGE);
      setWin((now) => withNewer(now, page.events, w.epoch));
    } finally {
      loadingNewer.current = false;
    }
  };

  const jumpTo = async (seq: number) => {
    const since = Math.max(0, seq - 1 - PAGE / 2);
    const page = await api.events(taskId, since, PAGE);
    setResults(null);
    setFollowing(false);
    setWin((w) => replaced(w, page.events));
    unfold(seq); // an event inside a folded run is shown, not its fold
    setSelectedKey(`e:${seq}`);
    setHighlightSeq(seq);
    setParam("seq", String(seq));
    centre.current = seq;
  };

  const followLatest = async () => {
    const m = model.current;
    if (m === null) return;
    const page = await api.latest(taskId, PAGE);
    setWin((w) => replaced(w, page.events));
    setFollowing(true);
    setUnseen(0);
    setHighlightSeq(null);
    setParam("seq", null);
  };

  // First paint done (or nothing to paint): say so (tests and the UI benchmark wait for it).
  useEffect(() => {
    if (phase === "loading") return;
    requestAnimationFrame(() => {
      document.body.dataset["ready"] = "1";
      if (phase === "ready") performance.mark("taskevents:ready");
    });
  }, [phase]);

  // --- what the views show -------------------------------------------------------------------------

  const m = model.current;
  const stages = useMemo(
    () => (m ? m.stages.map((id) => m.spans.get(id)).filter((s): s is Span => s !== undefined) : []),
    [version, m],
  );
  const attemptOf = useMemo(() => {
    const attempts = new Map<string, number>();
    const seen = new Map<string, number>();
    for (const s of stages) {
      const n = (seen.get(s.phase ?? "") ?? 0) + 1;
      seen.set(s.phase ?? "", n);
      attempts.set(s.span_id, n);
    }
    return (id: string) => attempts.get(id) ?? 1;
  }, [stages]);
  const lookup = (id: string) => m?.spans.get(id);
  const rows: Row[] = useMemo(() => {
    if (!m) return [];
    if (results !== null) {
      return results.events.map((e) => ({ kind: "event" as const, key: `e:${e.seq}`, event: e, line: describe(e, lookup) }));
    }
    return timelineRows(win.events, stages, attemptOf, lookup, unfolded);
  }, [win, stages, unfolded, results, version]);
  const selectable = useMemo(() => rows.filter((r) => r.kind !== "group"), [rows]);

  const anchor = useRef<number | null>(null);
  const centre = useRef<number | null>(null);
  useEffect(() => {
    const index = (seq: number) => rows.findIndex((r) => (r.kind === "event" ? r.event.seq === seq : r.kind === "fold" && r.events.some((e) => e.seq === seq)));
    if (anchor.current !== null) {
      const i = index(anchor.current);
      anchor.current = null;
      if (i >= 0) list.current?.scrollToIndex(Math.max(0, i - 1), "start");
    } else if (centre.current !== null) {
      const i = index(centre.current);
      centre.current = null;
      if (i >= 0) list.current?.scrollToIndex(i, "center");
    } else if (following && results === null) {
      list.current?.scrollToIndex(rows.length - 1, "end");
    }
    // Rows that do not fill the list (folded runs) cannot be scrolled back: read older ones now.
    if (results === null && low(win) > 1 && list.current?.canScroll() === false) void loadOlder();
  }, [rows]);

  // --- selection and keys ---------------------------------------------------------------------------

  const selectSpan = (id: string, scroll = false) => {
    setSelectedSpan(id);
    setHighlighted(new Set([id]));
    setParam("span", id);
    if (scroll) {
      window.setTimeout(() => document.querySelector(`.pipeline [data-span-id="${CSS.escape(id)}"]`)?.scrollIntoView({ block: "nearest" }), 300);
    }
  };

  const highlightItems = (items: string[]) => {
    const mm = model.current;
    if (!mm) return;
    const spans = mm.spansOfWorkItems(items);
    setHighlighted(new Set(spans));
    const first = spans[0];
    if (first) window.setTimeout(() => document.querySelector(`.pipeline [data-span-id="${CSS.escape(first)}"]`)?.scrollIntoView({ block: "nearest" }), 50);
  };

  const move = (delta: number) => {
    if (selectable.length === 0) return;
    const at = selectable.findIndex((r) => r.key === selectedKey);
    const next = selectable[Math.min(selectable.length - 1, Math.max(0, at < 0 ? (delta > 0 ? 0 : selectable.length - 1) : at + delta))] as Row;
    setSelectedKey(next.key);
    setFollowing(false);
    const i = rows.indexOf(next);
    list.current?.scrollToIndex(i, "center");
  };

  // The handler is this render's (it reads this render's state), called through a ref by one listener
  // added once: a listener re-added by an effect would run a render late, and a key pressed just after
  // a dialog closed would still see it open.
  onKeyRef.current = (e: KeyboardEvent) => {
    if (typing(e.target)) {
      if (e.key === "Escape") (e.target as HTMLElement).blur();
      return;
    }
    if (e.metaKey || e.ctrlKey || e.altKey) return;
    if (raw || help) {
      // A dialog is open: the page behind it does not take keys (the dialog closes on Esc itself).
      return;
    }
    if (e.key === "j") move(1);
    else if (e.key === "k") move(-1);
    else if (e.key === "Enter") {
      if (onControl(e.target)) return; // the focused button's or link's own Enter
      const row = rows.find((r) => r.key === selectedKey);
      if (row?.kind === "event") setRaw(row.event);
      else if (row?.kind === "fold") unfold((row.events[0] as TaskEvent).seq);
      else return;
    } else if (e.key === "Escape") {
      if (drawer) setDrawer(false);
      else if (results) closeResults();
      else return;
    } else if (e.key === "?") setHelp(true);
    else if (e.key === "e") setDrawer((d) => !d);
    else if (e.key === "/") searchBox.current?.focus();
    else if (e.key === "g") void followLatest();
    else return;
    e.preventDefault();
  };
  useEffect(() => {
    const onKey = (e: KeyboardEvent) => onKeyRef.current(e);
    window.addEventListener("keydown", onKey);
    return () => window.removeEventListener("keydown", onKey);
  }, []);

  // --- search within the run (the server's: the timeline is virtualized) --------------------------

  const runSearch = async (more = false) => {
    const gen = ++searchGen.current; // a newer search, or leaving the results, wins over this one
    if (!search.q && !search.type && !search.failed) {
      setResults(null);
      return;
    }
    const before = more && results ? results.scannedTo : null;
    const kept = more && results ? results.events : [];
    setResults({ events: kept, scannedTo: results?.scannedTo ?? 0, hasMore: false, loading: true, error: null });
    let found: TaskEvent[] = [];
    let scannedTo = before ?? 0;
    let hasMore = true;
    let cursor = before;
    try {
      // Windows of the run until a page of matches is full or the run is searched to its start.
      while (hasMore && found.length < LIMIT_RESULTS) {
        const page = await api.find(taskId, {
          q: search.q || undefined,
          event_type: search.type ? [search.type] : undefined,
          failed: search.failed,
          before_seq: cursor,
          limit: LIMIT_RESULTS - found.length,
        });
        if (gen !== searchGen.current) return;
        found = [...found, ...page.events];
        scannedTo = page.scanned_to;
        hasMore = page.has_more;
        cursor = page.scanned_to;
      }
    } catch (e) {
      if (gen === searchGen.current) setResults({ events: kept, scannedTo, hasMore, loading: false, error: String((e as Error).message) });
      return;
    }
    if (gen === searchGen.current) setResults({ events: [...kept, ...found], scannedTo, hasMore, loading: false, error: null });
  };
  const closeResults = () => {
    searchGen.current += 1;
    setResults(null);
  };

  // --- the page ------------------------------------------------------------------------------------

  if (phase === "loading") return <main class="page"><p class="muted">loading {taskId}…</p></main>;
  if (phase === "missing") {
    return (
      <main class="page">
        {taskId.includes("/") ? (
          <p>
            The API cannot address a task id with a <code>/</code> in a path: <code>{taskId}</code>'s events are stored, but
            only <code>/api/tasks</code> lists it. <a href="/">All tasks</a>
          </p>
        ) : (
          <p>
            No events of <code>{taskId}</code> are stored yet. <a href="/">All tasks</a>
          </p>
        )}
      </main>
    );
  }
  if (phase === "error" || !m) return <main class="page"><p class="error" role="alert">{error}</p></main>;

  const task = m.summary;
  const act = activity(m);
  const started = parseTime(task.first_at);
  const ended = task.status === "running" ? null : parseTime(task.last_at);
  const totals = stages.reduce(
    (acc, s) => {
      const c = m.countsOf(s.span_id);
      return { open: acc.open + c.open, failed: acc.failed + c.failed };
    },
    { open: 0, failed: 0 },
  );
  return (
    <main class={`page task-page${drawer ? " with-drawer" : ""}`} data-task-id={task.task_id} data-status={task.status}>
      <header class="bar task-head">
        <div>
          <a href="/" class="muted">
            ← tasks
          </a>
          <h1 class="task-title">{task.task_id}</h1>
        </div>
        <div class="head-facts">
          <StatusBadge status={task.status} />
          <span>
            phase <strong>{task.current_phase ?? "–"}</strong>
          </span>
          <span title={`since ${task.first_at}`}>
            <Duration from={started} to={ended} />
          </span>
          <span>{count(task.event_count)} events</span>
          <span>{count(m.allSpans ? m.spans.size : stages.length + totals.open)} spans</span>
          <span>{count(totals.open)} running</span>
          <span class={totals.failed ? "fail" : ""}>{count(totals.failed)} failed</span>
          <LiveBadge state={live} />
          <button type="button" class="button" onClick={() => setDrawer(!drawer)} aria-pressed={drawer}>
            evidence ({m.checkpointOrder.length})
          </button>
          <button type="button" class="link" onClick={() => setHelp(true)} aria-label="keys">
            ?
          </button>
        </div>
      </header>
      <section class="activity" aria-label="Now and next">
        <p>
          <span class="label">now</span> {act.now}
        </p>
        {act.next && (
          <p>
            <span class="label">next</span> {act.next}
          </p>
        )}
      </section>
      <section aria-label="Pipeline" class="panel pipeline-panel">
        <h2>Pipeline</h2>
        <Pipeline model={m} version={version} highlighted={highlighted} selected={selectedSpan} onSelect={(id) => selectSpan(id)} />
      </section>
      <div class="columns">
        <section aria-label="Timeline" class="panel timeline-panel">
          <div class="panel-bar">
            <h2>Timeline</h2>
            <form
              class="search"
              onSubmit={(e) => {
                e.preventDefault();
                void runSearch();
              }}
            >
              <input
                ref={searchBox}
                type="search"
                placeholder="search in this run"
                maxLength={MAX_QUERY}
                aria-label="Search within the run"
                value={search.q}
                onInput={(e) => setSearch({ ...search, q: (e.currentTarget as HTMLInputElement).value })}
              />
              <select aria-label="Event type" value={search.type} onChange={(e) => setSearch({ ...search, type: (e.currentTarget as HTMLSelectElement).value })}>
                <option value="">all types</option>
                {EVENT_TYPES.map((t) => (
                  <option value={t} key={t}>
                    {t}
                  </option>
                ))}
              </select>
              <label>
                <input type="checkbox" checked={search.failed} onChange={(e) => setSearch({ ...search, failed: (e.currentTarget as HTMLInputElement).checked })} /> failures only
              </label>
              <button type="submit" class="button">
                find
              </button>
              {results && (
                <button type="button" class="link" onClick={closeResults}>
                  back to the timeline
                </button>
              )}
            </form>
          </div>
          {results && (
            <p class="muted" role="status">
              {results.loading ? "searching…" : `${count(results.events.length)} found, newest first${results.hasMore ? ` (searched down to seq ${results.scannedTo})` : " (the whole run)"}`}
              {results.error && (
                <span class="error" role="alert">
                  {" "}
                  {results.error}
                </span>
              )}
              {!results.loading && results.hasMore && (
                <button type="button" class="link" onClick={() => void runSearch(true)}>
                  search older
                </button>
              )}
            </p>
          )}
          <Timeline
            rows={rows}
            selectedKey={selectedKey}
            highlightSeq={highlightSeq}
            list={list}
            label={results ? "search results" : "timeline"}
            onSelect={(key) => {
              setSelectedKey(key);
              if (results && key.startsWith("e:")) void jumpTo(Number(key.slice(2)));
            }}
            onOpen={setRaw}
            onExpand={(seq) => unfold(seq)}
            onScroll={({ atTop, atBottom }) => {
              if (results) return;
              if (atTop) void loadOlder();
              const hi = high(win);
              if (atBottom && hi < m.applied) void loadNewer();
              const tail = hi >= m.applied;
              if (atBottom && tail !== following) setFollowing(tail);
              if (atBottom && tail) setUnseen(0);
              if (!atBottom && following) setFollowing(false);
            }}
          />
          {!following && results === null && (
            <button type="button" class="follow" onClick={() => void followLatest()}>
              ↓ newest{unseen ? ` (${count(unseen)} new)` : ""}
            </button>
          )}
        </section>
        <section aria-label="Span tree" class="panel tree-panel">
          <h2>Span tree</h2>
          <SpanTree model={m} version={version} attempt={attemptOf} selected={selectedSpan} highlighted={highlighted} onSelect={(id) => selectSpan(id)} reveal={selectedSpan} />
        </section>
      </div>
      {drawer && <EvidenceDrawer model={m} version={version} onClose={() => setDrawer(false)} onHighlight={highlightItems} onJump={(seq) => void jumpTo(seq)} />}
      {raw && <RawEvent event={raw} onClose={() => setRaw(null)} />}
      {help && <Keys onClose={() => setHelp(false)} />}
    </main>
  );
}
