"""Runner UI benchmark: how fast a task page opens in headless Chromium, how many DOM nodes it holds,
whether older events load page by page as the timeline scrolls back, and the tab's memory, for runs
of several sizes side by side (default 1,000 events / 50 spans, 20,000 / 1,000 and 100,000 / 5,000).

A private stack (benchmarks/ui_stack.py: redis-server on a free port, `python -m taskevents.ingest`,
ONE `python -m taskevents.api` serving the API and the UI from api/ui/dist/) stores one run per size,
emitted by `simulate_big_run` (planning, four executing attempts of parallel work items, rejected
checkpoints and recoveries between them, a verified end) and committed before anything is measured.
Then, for --reps repetitions (sizes interleaved; after --warmup unmeasured visits of each), a fresh
browser context (no cache, no cookies) opens /tasks/{id} at a --viewport window and this script takes:

  load      from navigation start (performance.timeOrigin): the document, the script, first
            contentful paint, the overview request (the page's one read before first paint: start,
            first byte, end, size), the page's `taskevents:ready` mark (set in the frame after first
            paint), the newest event's row (data-seq == the run's latest seq) in the DOM and then
            wholly inside the timeline's scroll box, and painted (a frame later), the span tree
            complete (every span read after first paint through /spans: the "loading all" note
            gone); main-thread long tasks (> 50 ms) before ready and until then. Recorded inside the
            page by a script the DevTools protocol adds to every document (the page's CSP does not
            apply to it): a MutationObserver and a frame loop, so polling from here adds nothing.
  DOM       elements in the document at the ready mark and once the span tree is complete; the
            renderer's node count (CDP Performance.getMetrics `Nodes`: text nodes and detached nodes
            not yet collected included).
  scroll    the mouse wheel over the timeline (the virtualized list `.vlist.timeline`) to its top,
            --pages times: each time the page must read the 200 events before those it holds (a new
            /api/tasks/…/events request) and show them (a row of a lower seq in the DOM) while it
            keeps the reader's place; the time from the wheel to those rows, and the requests' own
            time. Stops early at seq 1.
  clicks    after memory: the time from a click to the frame painted after its render (two
            animation frames, in the page): the span tree's "expand all" (every span of the run
            open: the Jaeger anchor, seconds per click at 2,000-5,000 spans) and "collapse all", one
            span's toggle, the biggest stage's "show all" of its work items and "show fewer", and a
            search within the run answered by the server (failures only; the text "lint") until its
            results are drawn.
  memory    the JS heap in use (CDP `JSHeapUsedSize`) and the renderer process's private memory
            (USS, from /proc: the tab's footprint, what "the tab stays under 200 MB" is about) and RSS,
            after load and after scrolling; both again after a forced GC. The page's renderer is
            the one whose CPU time grows while the page spins for 300 ms (CDP
            SystemInfo.getProcessInfo: a context has several renderers). Its CPU over 3 s idle after
            load, nothing arriving (the runs have ended).

The API side of first paint is measured apart too, before the browser runs: the overview request
(the same query the page sends) and every /spans page, over keep-alive HTTP from this process.

Prints the medians across repetitions as one markdown table, sizes side by side, with the issue's
targets (a 100,000-event task ready with its newest events showing in under 1 s, well under 5,000
DOM nodes whatever the size, older events loading as the reader scrolls back, the tab under 200 MB)
and writes every repetition to benchmarks/results/ui.json. The browser, the API, the worker and Redis
share this machine's cores with whatever else runs on it: the load average is recorded at start and
end, and the CPU the machine spent while the browser ran, this benchmark's own processes and the rest.
"""

import argparse
import os
import platform
import sqlite3
import statistics
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

import httpx
import orjson
import psutil
from playwright.sync_api import Browser, CDPSession, Page, sync_playwright
from report import publish, say
from ui_stack import CHROMIUM, CHROMIUM_ARGS, ROOT, Stack, private_stack

from taskevents.simulate import simulate_big_run

HERE = Path(__file__).resolve().parent
DEFAULT_SIZES = "1000:50,20000:1000,100000:5000"
QUICK_SIZES = "1000:50,5000:300"
TARGETS = {
    "ready_ms": 1000.0,  # the largest run: ready, and its newest event's row showing
    "dom_elements": 5000,  # whatever the size ("well under")
    "renderer_mb": 200.0,
}
OVERVIEW_PARAMS = {"events": 200, "items": 24, "checkpoints": 500}  # what api/ui/src/api.ts asks for
MB = 2**20

# Added to every document before the page's own script (CDP Page.addScriptToEvaluateOnNewDocument):
# records when the newest event's row appears, is inside the timeline's box and is painted, when the
# span tree is complete, the DOM at the ready mark, and long tasks. __LATEST__ is the run's latest seq.
PROBE = """
(() => {
  const LATEST = __LATEST__;
  const b = (window.__uibench = {
    inDom: null, inView: null, painted: null, onScreen: null, spansLoaded: null,
    readyMark: null, readyElements: null, longTasks: [],
  });
  const rowOf = () => {
    const exact = document.querySelector(`.timeline [data-seq="${LATEST}"]`);
    if (exact) return exact;
    for (const fold of document.querySelectorAll(".timeline .fold[data-seq]")) {
      const m = /(\\d+)\\D+(\\d+)/.exec(fold.querySelector(".tl-seq")?.textContent ?? "");
      if (m && Number(m[1]) <= LATEST && LATEST <= Number(m[2])) return fold;
    }
    return null;
  };
  let done = false;
  const check = () => {
    if (done) return;
    const now = performance.now();
    const row = rowOf();
    if (row) {
      if (b.inDom === null) b.inDom = now;
      const r = row.getBoundingClientRect();
      const box = row.closest(".vlist")?.getBoundingClientRect();
      if (b.inView === null && box && r.height > 0 && r.top >= box.top - 1 && r.bottom <= box.bottom + 1) {
        b.inView = now;
        requestAnimationFrame(() => setTimeout(() => (b.painted = performance.now()), 0));
      }
      if (b.inView !== null && b.onScreen === null && r.top >= 0 && r.bottom <= innerHeight) b.onScreen = now;
    }
    const bar = document.querySelector(".tree-bar");
    if (bar && b.spansLoaded === null && !bar.textContent.includes("loading all")) b.spansLoaded = now;
    // Load is over: stop (a later scroll of the window is the benchmark's, not the page's first view).
    done = b.painted !== null && b.spansLoaded !== null && now - b.inView > 1000;
  };
  new MutationObserver(check).observe(document, { childList: true, subtree: true, characterData: true });
  const frame = () => { check(); if (!done) requestAnimationFrame(frame); };
  requestAnimationFrame(frame);
  new PerformanceObserver((list) => {
    for (const e of list.getEntries()) {
      if (e.name === "taskevents:ready" && b.readyMark === null) {
        b.readyMark = e.startTime;
        b.readyElements = document.getElementsByTagName("*").length;
      }
    }
  }).observe({ type: "mark", buffered: true });
  new PerformanceObserver((list) => {
    for (const e of list.getEntries()) b.longTasks.push([e.startTime, e.duration]);
  }).observe({ type: "longtask", buffered: true });
})();
"""

# What the page shows now: the timeline's rows in view and on screen, the DOM, the resource timings.
STATE = """
() => {
  const seqs = (test) => [...document.querySelectorAll(".timeline [data-seq]")]
    .filter((el) => test(el.getBoundingClientRect(), el.closest(".vlist").getBoundingClientRect()))
    .map((el) => Number(el.dataset.seq));
  const inView = seqs((r, box) => r.bottom > box.top && r.top < box.bottom);
  const onScreen = seqs((r, box) => r.bottom > box.top && r.top < box.bottom && r.top >= 0
    && r.bottom <= innerHeight);
  const all = [...document.querySelectorAll(".timeline [data-seq]")].map((el) => Number(el.dataset.seq));
  const box = document.querySelector(".vlist.timeline")?.getBoundingClientRect();
  const nav = performance.getEntriesByType("navigation")[0];
  const res = performance.getEntriesByType("resource").map((e) => ({
    name: e.name, start: e.startTime, requestStart: e.requestStart, responseStart: e.responseStart,
    end: e.responseEnd, size: e.decodedBodySize, transfer: e.transferSize,
  }));
  const fcp = performance.getEntriesByName("first-contentful-paint")[0];
  return {
    probe: window.__uibench ?? null,
    elements: document.getElementsByTagName("*").length,
    rendered: all.length,
    lowestSeq: all.length ? Math.min(...all) : null,
    highestInView: inView.length ? Math.max(...inView) : null,
    highestOnScreen: onScreen.length ? Math.max(...onScreen) : null,
    lowestOnScreen: onScreen.length ? Math.min(...onScreen) : null,
    timelineTop: box ? box.top : null, timelineBottom: box ? box.bottom : null, innerHeight,
    nav: nav ? { responseEnd: nav.responseEnd, domContentLoaded: nav.domContentLoadedEventEnd } : null,
    fcp: fcp ? fcp.startTime : null,
    resources: res,
  };
}
"""
# While scrolling back: the page's reads of older events (not the live stream's /sse/…/events) and the
# lowest seq among the timeline's rows in the DOM.
SCROLL_STATE = """() => {
  const reads = performance.getEntriesByType("resource")
    .filter((e) => e.name.includes("/api/tasks/") && e.name.includes("/events?"))
    .map((e) => e.name);
  const all = [...document.querySelectorAll(".timeline [data-seq]")].map((el) => Number(el.dataset.seq));
  return { reads, lowest: all.length ? Math.min(...all) : null };
}"""


@dataclass
class Config:
    sizes: list[tuple[int, int]]
    reps: int = 5
    warmup: int = 1
    pages: int = 10
    viewport: tuple[int, int] = (1400, 900)
    api_calls: int = 30
    seed: int = 7
    output: Path = HERE / "results" / "ui.json"


def parse_sizes(text: str) -> list[tuple[int, int]]:
    sizes = []
    for part in text.split(","):
        events, _, spans = part.strip().partition(":")
        sizes.append((int(events), int(spans)))
    return sorted(sizes)


def parse_args() -> Config:
    parser = argparse.ArgumentParser(
        prog="ui_bench.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--sizes", default=DEFAULT_SIZES, help="runs as events:spans, comma-separated (default %(default)s)"
    )
    parser.add_argument("--reps", type=int, default=5, help="measured visits per size (default %(default)s)")
    parser.add_argument(
        "--warmup", type=int, default=1, help="unmeasured visits per size first (default %(default)s)"
    )
    parser.add_argument(
        "--pages", type=int, default=10, help="older pages to scroll back through (default %(default)s)"
    )
    parser.add_argument("--viewport", default="1400x900", help="window size WxH (default %(default)s)")
    parser.add_argument(
        "--api-calls", type=int, default=30, help="overview requests timed apart (default %(default)s)"
    )
    parser.add_argument("--seed", type=int, default=7, help="simulator seed (default %(default)s)")
    parser.add_argument("--quick", action="store_true", help=f"sizes {QUICK_SIZES}, 1 rep: a smoke run")
    parser.add_argument(
        "--output", type=Path, default=Config.output, help="JSON results (default %(default)s)"
    )
    args = parser.parse_args()
    width, _, height = args.viewport.partition("x")
    cfg = Config(
        parse_sizes(QUICK_SIZES if args.quick else args.sizes),
        reps=1 if args.quick else args.reps,
        warmup=0 if args.quick else args.warmup,
        pages=3 if args.quick else args.pages,
        viewport=(int(width), int(height)),
        api_calls=5 if args.quick else args.api_calls,
        seed=args.seed,
        output=args.output,
    )
    return cfg


# --- the runs and the API side -------------------------------------------------------------------


@dataclass
class Run:
    events: int
    spans: int
    task_id: str
    latest_seq: int

    @property
    def label(self) -> str:
        return f"{self.events:,} / {self.spans:,}"

    @property
    def path(self) -> str:
        return f"/tasks/{quote(self.task_id, safe='')}"


def store_runs(stack: Stack, cfg: Config) -> list[Run]:
    emitter = stack.emitter()
    made = []
    started = time.monotonic()
    for events, spans in cfg.sizes:
        task = simulate_big_run(emitter, events=events, spans=spans, seed=cfg.seed, prefix=f"ui{events}")
        made.append((events, spans, task))
    if not emitter.close(120):
        raise RuntimeError("the emitter could not deliver every event to Redis")
    stored = stack.wait_stored(sum(events for events, _, _ in made))
    say(f"stored {len(made)} runs in {time.monotonic() - started:.1f} s")
    return [Run(events, spans, task, stored[task]) for events, spans, task in made]


def quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def api_side(stack: Stack, run: Run, calls: int) -> dict[str, Any]:
    """The reads behind the page, timed over keep-alive HTTP from here: the overview (first paint) and
    every /spans page (the tree, after first paint)."""
    task = quote(run.task_id, safe="")
    with httpx.Client(base_url=stack.base_url, timeout=30) as client:
        times, size = [], 0
        for i in range(calls + 3):  # 3 warm-up calls
            t0 = time.perf_counter()
            response = client.get(f"/api/tasks/{task}/overview", params=OVERVIEW_PARAMS)
            elapsed = (time.perf_counter() - t0) * 1000
            response.raise_for_status()
            size = len(response.content)
            if i >= 3:
                times.append(elapsed)
        span_times, span_bytes, span_pages = [], 0, 0
        for _ in range(max(3, calls // 10)):
            t0 = time.perf_counter()
            after, span_bytes, span_pages = 0, 0, 0
            while True:
                response = client.get(f"/api/tasks/{task}/spans", params={"after_seq": after, "limit": 10000})
                response.raise_for_status()
                body = response.json()
                span_bytes += len(response.content)
                span_pages += 1
                if not body["has_more"]:
                    break
                after = body["next_seq"]
            span_times.append((time.perf_counter() - t0) * 1000)
    return {
        "overview_ms": {"median": statistics.median(times), "p90": quantile(times, 0.9), "runs": times},
        "overview_bytes": size,
        "spans_ms": {"median": statistics.median(span_times), "runs": span_times},
        "spans_bytes": span_bytes,
        "spans_requests": span_pages,
    }


# --- one visit in the browser --------------------------------------------------------------------


def renderer_cpu(browser_cdp: CDPSession) -> dict[int, float]:
    info = browser_cdp.send("SystemInfo.getProcessInfo")
    return {p["id"]: p["cpuTime"] for p in info["processInfo"] if p["type"] == "renderer"}


def page_renderer(page: Page, browser_cdp: CDPSession) -> int | None:
    """The renderer process of `page`: the one whose CPU time grows by the 300 ms the page then spins
    for (a tab's renderer is not named by the protocol, and a context has several renderers)."""
    before = renderer_cpu(browser_cdp)
    page.evaluate("() => { const t = performance.now(); while (performance.now() - t < 300) {} }")
    grew = {pid: cpu - before.get(pid, 0.0) for pid, cpu in renderer_cpu(browser_cdp).items()}
    pid = max(grew, key=lambda p: grew[p], default=None)
    return pid if pid is not None and grew[pid] > 0.15 else None


def idle_cpu(browser_cdp: CDPSession, pid: int | None, seconds: float) -> float | None:
    """The renderer's CPU while nobody touches the page, in % of one core (the run has ended: nothing
    arrives; the page still has its clocks)."""
    if pid is None:
        return None
    before = renderer_cpu(browser_cdp).get(pid)
    time.sleep(seconds)
    after = renderer_cpu(browser_cdp).get(pid)
    return None if before is None or after is None else (after - before) / seconds * 100


def renderer_memory(pid: int | None) -> dict[str, float | None]:
    if pid is None:
        return {"uss_mb": None, "rss_mb": None}
    try:
        mem = psutil.Process(pid).memory_full_info()
    except psutil.Error:
        return {"uss_mb": None, "rss_mb": None}
    return {"uss_mb": mem.uss / MB, "rss_mb": mem.rss / MB}


def metrics(cdp: CDPSession) -> dict[str, float]:
    return {m["name"]: m["value"] for m in cdp.send("Performance.getMetrics")["metrics"]}


def poll(page: Page, ready: str, timeout: float) -> dict[str, Any]:
    """The probe's record once `ready` (a key of it) is set, polled every 20 ms."""
    deadline = time.monotonic() + timeout
    while True:
        probe = page.evaluate("() => window.__uibench")
        if probe and probe.get(ready) is not None:
            return dict(probe)
        if time.monotonic() > deadline:
            raise TimeoutError(f"the page did not reach {ready!r} in {timeout} s: {probe}")
        time.sleep(0.02)


def first_seq_read(url: str) -> int:
    """The lowest seq a /events?since_seq=S&limit=N read returns: S + 1."""
    return int(parse_qs(urlsplit(url).query)["since_seq"][0]) + 1


def scroll_back(page: Page, pages: int) -> dict[str, Any]:
    """Wheel to the timeline's top, `pages` times. Each time the page must read the 200 events before
    its window (a new /events request) and show them: a row below the window's old lowest seq in the
    DOM. Times each from the wheel to those rows; stops at seq 1."""
    page.evaluate("() => performance.setResourceTimingBufferSize(100000)")
    page.locator(".vlist.timeline").hover()  # scrolls it into the window if need be; the mouse over it
    state = page.evaluate(SCROLL_STATE)
    first_lowest = state["lowest"]
    window_low = first_lowest  # an upper bound until the first read says where the window starts
    steps: list[dict[str, Any]] = []
    for _ in range(pages):
        if window_low is None or window_low <= 1:
            break
        reads = len(state["reads"])
        t0 = wheeled = time.perf_counter()
        page.mouse.wheel(0, -100_000)
        while True:
            state = page.evaluate(SCROLL_STATE)
            if len(state["reads"]) > reads:
                below = first_seq_read(state["reads"][-1])
                if state["lowest"] is not None and state["lowest"] < min(window_low, below + 200):
                    break
            now = time.perf_counter()
            if now - t0 > 15:
                return {"pages": steps, "stalled_at": window_low, "first_lowest": first_lowest}
            if now - wheeled > 0.5 and len(state["reads"]) == reads:  # not at the top yet: wheel again
                page.mouse.wheel(0, -100_000)
                wheeled = now
            time.sleep(0.005)
        steps.append({"ms": (time.perf_counter() - t0) * 1000, "window_from": window_low, "window_to": below})
        window_low = below
        page.wait_for_timeout(200)  # the reader's place restored, as a reader would pause
        state = page.evaluate(SCROLL_STATE)
    return {"pages": steps, "stalled_at": None, "first_lowest": first_lowest, "lowest_dom": state["lowest"]}


CLICK = """async ({selector, text, waitSel, waitText}) => {
  const frame = () => new Promise((r) => requestAnimationFrame(() => r()));
  const button = [...document.querySelectorAll(selector)].find(
    (b) => !text || b.textContent.trim().startsWith(text));
  if (!button) return null;
  const t0 = performance.now();
  button.click();
  if (waitSel) {
    const done = () => (document.querySelector(waitSel)?.textContent ?? "").includes(waitText);
    while (!done()) {
      if (performance.now() - t0 > 30000) return null;
      await frame();
    }
  }
  await frame();  // the frame that lays out and paints the render
  await frame();  // it has been painted
  return performance.now() - t0;
}"""

SEARCH_DONE = {"waitSel": ".timeline-panel [role='status']", "waitText": " found"}


def clicks(page: Page) -> dict[str, float | None]:
    """Click to painted, for the interactions the anchors are slow at (see the module docstring)."""

    def click(selector: str, text: str = "", wait: dict[str, str] | None = None) -> float | None:
        args = {"selector": selector, "text": text, "waitSel": "", "waitText": "", **(wait or {})}
        took: float | None = page.evaluate(CLICK, args)
        page.wait_for_timeout(150)
        return took

    out: dict[str, float | None] = {}
    out["click_expand_all_ms"] = click(".tree-bar button", "expand all")
    out["tree_rows_in_dom"] = page.locator(".tree-row").count()
    out["click_collapse_all_ms"] = click(".tree-bar button", "collapse all")
    out["click_toggle_span_ms"] = click(".tree button.toggle")
    out["click_show_all_ms"] = click(".pipeline .stage-actions button", "show all")
    out["click_show_fewer_ms"] = click(".pipeline .stage-actions button", "show fewer")
    page.check("form.search input[type='checkbox']")
    out["search_failed_ms"] = click("form.search button[type='submit']", wait=SEARCH_DONE)
    click(".timeline-panel button.link", "back to the timeline")
    page.uncheck("form.search input[type='checkbox']")
    page.fill("form.search input[type='search']", "lint")
    out["search_text_ms"] = click("form.search button[type='submit']", wait=SEARCH_DONE)
    return out


def visit(browser: Browser, browser_cdp: CDPSession, stack: Stack, run: Run, cfg: Config) -> dict[str, Any]:
    width, height = cfg.viewport
    context = browser.new_context(viewport={"width": width, "height": height})
    try:
        context.add_init_script(PROBE.replace("__LATEST__", str(run.latest_seq)))
        page = context.new_page()
        errors: list[str] = []  # the page's console errors and uncaught exceptions
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: errors.append(str(e)))
        cdp = context.new_cdp_session(page)
        cdp.send("Performance.enable")
        page.goto(stack.base_url + run.path, wait_until="commit")
        page.wait_for_selector("body[data-ready='1']", state="attached", timeout=60_000)
        probe = poll(page, "painted", 30)
        probe = poll(page, "spansLoaded", 60)
        page.wait_for_timeout(500)  # let the last renders and the live stream's end settle
        loaded = page.evaluate(STATE)
        m_loaded = metrics(cdp)
        renderer = page_renderer(page, browser_cdp)  # after the metrics: it spins the page's thread
        mem_loaded = renderer_memory(renderer)
        idle = idle_cpu(browser_cdp, renderer, 3.0)
        scrolled = scroll_back(page, cfg.pages)
        page.wait_for_timeout(300)
        after = page.evaluate(STATE)
        m_after = metrics(cdp)
        mem_after = renderer_memory(renderer)
        cdp.send("HeapProfiler.collectGarbage")
        heap_gc = metrics(cdp)["JSHeapUsedSize"]
        uss_gc = renderer_memory(renderer)["uss_mb"]
        timed = clicks(page)
    finally:
        context.close()
    got = summarize(run, probe, loaded, after, scrolled, m_loaded, m_after, mem_loaded, mem_after, heap_gc)
    return {
        **got,
        "renderer_uss_scrolled_gc_mb": uss_gc,
        **timed,
        "renderer_idle_cpu_percent": idle,
        "page_errors": len(errors),
        "page_error_texts": errors,
    }


def summarize(
    run: Run,
    probe: dict[str, Any],
    loaded: dict[str, Any],
    after: dict[str, Any],
    scrolled: dict[str, Any],
    m_loaded: dict[str, float],
    m_after: dict[str, float],
    mem_loaded: dict[str, float | None],
    mem_after: dict[str, float | None],
    heap_gc: float,
) -> dict[str, Any]:
    """One visit's figures, flat (name -> number), times in ms from navigation start."""
    resources = loaded["resources"]
    overview = next(r for r in resources if "/overview" in r["name"])
    script = next((r for r in resources if r["name"].endswith(".js")), None)
    spans = [r for r in resources if "/spans" in r["name"]]
    older = [r for r in after["resources"] if "/api/tasks/" in r["name"] and "/events?" in r["name"]]
    ready = probe["readyMark"]
    long_tasks = probe["longTasks"]
    settled = probe["spansLoaded"]
    pages = scrolled["pages"]
    return {
        "document_ms": loaded["nav"]["responseEnd"],
        "script_ms": script["end"] if script else None,
        "dom_content_loaded_ms": loaded["nav"]["domContentLoaded"],
        "fcp_ms": loaded["fcp"],
        "overview_start_ms": overview["start"],
        "overview_first_byte_ms": overview["responseStart"],
        "overview_end_ms": overview["end"],
        "overview_in_browser_ms": overview["end"] - overview["start"],
        "overview_wait_ms": overview["responseStart"] - overview["requestStart"],
        "overview_bytes": overview["size"],
        "render_after_overview_ms": ready - overview["end"],
        "ready_ms": ready,
        "newest_in_dom_ms": probe["inDom"],
        "newest_in_view_ms": probe["inView"],
        "newest_painted_ms": probe["painted"],
        "newest_on_screen_ms": probe["onScreen"],
        "spans_requests": len(spans),
        "spans_request_ms": (max(r["end"] for r in spans) - min(r["start"] for r in spans))
        if spans
        else None,
        "spans_bytes": sum(r["size"] for r in spans),
        "spans_loaded_ms": settled,
        "long_tasks": len(long_tasks),
        "long_task_ms_before_ready": sum(d for s, d in long_tasks if s < ready),
        "long_task_ms_total": sum(d for _, d in long_tasks),
        "longest_task_ms": max((d for _, d in long_tasks), default=0.0),
        "script_cpu_ms": m_loaded["ScriptDuration"] * 1000,
        "layout_cpu_ms": m_loaded["LayoutDuration"] * 1000,
        "style_cpu_ms": m_loaded["RecalcStyleDuration"] * 1000,
        "task_cpu_ms": m_loaded["TaskDuration"] * 1000,
        "elements_at_ready": probe["readyElements"],
        "elements_loaded": loaded["elements"],
        "nodes_loaded": m_loaded["Nodes"],
        "timeline_rows_rendered": loaded["rendered"],
        "highest_seq_in_view": loaded["highestInView"],
        "highest_seq_on_screen": loaded["highestOnScreen"],
        "timeline_bottom_px": loaded["timelineBottom"],
        "window_height_px": loaded["innerHeight"],
        "heap_loaded_mb": m_loaded["JSHeapUsedSize"] / MB,
        "renderer_uss_loaded_mb": mem_loaded["uss_mb"],
        "renderer_rss_loaded_mb": mem_loaded["rss_mb"],
        "pages_loaded": len(pages),
        "page_load_ms": statistics.median(p["ms"] for p in pages) if pages else None,
        "page_request_ms": statistics.median(r["end"] - r["start"] for r in older) if older else None,
        # The oldest event the page holds: the overview's first, then the last page read's first.
        "lowest_seq_before_scroll": max(1, run.latest_seq - OVERVIEW_PARAMS["events"] + 1),
        "lowest_seq_after_scroll": pages[-1]["window_to"] if pages else None,
        "scroll_stalled_at": scrolled["stalled_at"],
        "elements_scrolled": after["elements"],
        "nodes_scrolled": m_after["Nodes"],
        "timeline_rows_rendered_scrolled": after["rendered"],
        "heap_scrolled_mb": m_after["JSHeapUsedSize"] / MB,
        "heap_scrolled_gc_mb": heap_gc / MB,
        "renderer_uss_scrolled_mb": mem_after["uss_mb"],
        "renderer_rss_scrolled_mb": mem_after["rss_mb"],
        "latest_seq": run.latest_seq,
        "page_steps": pages,
    }


# --- the whole run -------------------------------------------------------------------------------


def medians(visits: list[dict[str, Any]]) -> dict[str, float | None]:
    out: dict[str, float | None] = {}
    for name, value in visits[0].items():
        if isinstance(value, (int, float)) or value is None:
            values = [v[name] for v in visits if isinstance(v[name], (int, float))]
            out[name] = statistics.median(values) if len(values) == len(visits) else None
    return out


class CpuShare(threading.Thread):
    """The machine's CPU while the browser runs, and how much of it was this benchmark's own process
    tree (this process, the stack's processes, the browser's): the rest is other work on the machine.
    Samples the tree every 0.5 s, so a process that lives less than that may be missed (a slight
    over-count of the others)."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.stopping = threading.Event()
        self.seen: dict[int, float] = {}  # pid -> CPU seconds at its first sample
        self.last: dict[int, float] = {}  # pid -> CPU seconds at its latest sample

    def sample(self, baseline: bool = False) -> None:
        """CPU seconds of every process of the tree; at the baseline, where each starts from (a process
        first seen later started during the run, from 0)."""
        me = psutil.Process()
        for proc in [me, *me.children(recursive=True)]:
            try:
                times = proc.cpu_times()
            except psutil.Error:
                continue
            total = times.user + times.system
            self.seen.setdefault(proc.pid, total if baseline else 0.0)
            self.last[proc.pid] = total

    def start(self) -> None:
        self.machine0 = psutil.cpu_times()
        self.started = time.monotonic()
        self.sample(baseline=True)
        super().start()

    def run(self) -> None:
        while not self.stopping.wait(0.5):
            self.sample()

    def finish(self) -> dict[str, float]:
        self.sample()
        self.stopping.set()
        self.join()
        elapsed = time.monotonic() - self.started
        machine = psutil.cpu_times()
        busy = sum(
            getattr(machine, f) - getattr(self.machine0, f)
            for f in ("user", "nice", "system", "irq", "softirq")
        )
        ours = sum(self.last[pid] - self.seen[pid] for pid in self.last)
        return {
            "seconds": elapsed,
            "machine_busy_cores": busy / elapsed,
            "ours_cores": ours / elapsed,
            "others_cores": max(0.0, busy - ours) / elapsed,
        }


def environment(browser_version: str) -> dict[str, Any]:
    return {
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
        "chromium": browser_version,
        "ui_build": orjson.loads((ROOT / "api" / "ui" / "dist" / "manifest.json").read_bytes()),
        "load_average_1m": {"start": os.getloadavg()[0]},
        "memory_total_mb": psutil.virtual_memory().total / MB,
        "at": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def run(cfg: Config, workdir: Path) -> dict[str, Any]:
    with private_stack(workdir) as stack:
        runs = store_runs(stack, cfg)
        api = {}
        for r in runs:
            api[r.label] = api_side(stack, r, cfg.api_calls)
            say(f"API {r.label}: overview {api[r.label]['overview_ms']['median']:.1f} ms")
        visits: dict[str, list[dict[str, Any]]] = {r.label: [] for r in runs}
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            browser_cdp = browser.new_browser_cdp_session()
            env = environment(browser.version)
            cpu = CpuShare()
            cpu.start()
            try:
                for rep in range(-cfg.warmup, cfg.reps):
                    for r in runs:
                        got = visit(browser, browser_cdp, stack, r, cfg)
                        if rep >= 0:
                            visits[r.label].append(got)
                        say(
                            f"{'warm-up' if rep < 0 else f'rep {rep + 1}'} {r.label}: ready "
                            f"{got['ready_ms']:.0f} ms, newest painted {got['newest_painted_ms']:.0f} ms, "
                            f"{got['elements_loaded']} elements, {got['pages_loaded']} pages back, "
                            f"renderer {got['renderer_uss_scrolled_mb'] or 0:.0f} MB"
                        )
            finally:
                env["cpu_during_visits"] = cpu.finish()
                browser.close()
        env["load_average_1m"]["end"] = os.getloadavg()[0]
    config = {**asdict(cfg), "output": str(cfg.output)}
    return {
        "config": config,
        "targets": TARGETS,
        "environment": env,
        "runs": [asdict(r) for r in runs],
        "api": api,
        "medians": {label: medians(v) for label, v in visits.items()},
        "visits": visits,
    }


Cell = Callable[[dict[str, Any]], str]


def num(key: str, unit: str = "", fmt: str = "{:,.0f}", missing: str = "–") -> Cell:
    def cell(m: dict[str, Any]) -> str:
        value = m.get(key)
        return missing if value is None else fmt.format(value) + unit

    return cell


def pair(first: str, second: str, unit: str = "", fmt: str = "{:,.0f}", sep: str = " / ") -> Cell:
    def cell(m: dict[str, Any]) -> str:
        a, b = m.get(first), m.get(second)
        return "–" if a is None or b is None else f"{fmt.format(a)}{sep}{fmt.format(b)}{unit}"

    return cell


def table(results: dict[str, Any]) -> str:
    med: dict[str, dict[str, Any]] = results["medians"]
    labels = list(med)
    api = results["api"]
    largest = med[labels[-1]]
    visits = [v for rep in results["visits"].values() for v in rep]

    def worst(key: str) -> float:
        values = [m.get(key) for m in med.values()]
        return max(float("inf") if v is None else float(v) for v in values)

    def yes(ok: bool) -> str:
        return "yes" if ok else "**no**"

    def below(value: Any, limit: float) -> bool:
        return value is not None and value < limit

    ready_ok = below(largest.get("ready_ms"), TARGETS["ready_ms"])
    newest_ok = below(largest.get("newest_painted_ms"), TARGETS["ready_ms"])
    dom_ok = max(worst("elements_loaded"), worst("elements_scrolled")) < TARGETS["dom_elements"]
    pages_ok = all(v["pages_loaded"] > 0 and v["scroll_stalled_at"] is None for v in visits)
    mem_ok = max(worst("renderer_uss_loaded_mb"), worst("renderer_uss_scrolled_mb")) < TARGETS["renderer_mb"]

    def api_cell(key: str, fmt: str) -> Cell:
        return lambda m: fmt.format(api[m["label"]][key])

    def three(keys: tuple[str, str, str], unit: str, fmt: str = "{:,.0f}") -> Cell:
        return lambda m: " / ".join(num(k, fmt=fmt)(m) for k in keys) + unit

    ms = " ms"
    lt = "< 1,000 ms (largest)"
    spec: list[tuple[str, Cell, str, str]] = [
        ("API: overview request, timed from this process", api_cell("overview_ms", "{0[median]:.1f} ms"),
         "", ""),
        ("API: overview body", api_cell("overview_bytes", "{:,} B"), "", ""),
        ("API: every span (/spans pages), read after first paint", api_cell("spans_ms", "{0[median]:.0f} ms"),
         "", ""),
        ("API: every span, body", api_cell("spans_bytes", "{:,} B"), "", ""),
        ("document / script received", pair("document_ms", "script_ms", ms), "", ""),
        ("first contentful paint (the 'loading' line)", num("fcp_ms", ms), "", ""),
        ("overview request sent → received", pair("overview_start_ms", "overview_end_ms", ms, sep=" → "),
         "", ""),
        ("overview request, its own time in the browser", num("overview_in_browser_ms", ms, "{:,.1f}"),
         "", ""),
        ("rendering, overview received → ready", num("render_after_overview_ms", ms), "", ""),
        ("**ready** (`taskevents:ready`, from navigation start)", num("ready_ms", ms), lt, yes(ready_ok)),
        ("**newest event's row** in the timeline's view, painted", num("newest_painted_ms", ms), lt,
         yes(newest_ok)),
        ("newest event's row inside the window (page not scrolled)",
         num("newest_on_screen_ms", ms, missing="never"), "", ""),
        ("highest seq inside the window at load / the run's latest",
         pair("highest_seq_on_screen", "latest_seq"), "", ""),
        ("span tree complete (every span read and drawn)", num("spans_loaded_ms", ms), "", ""),
        ("main-thread long tasks: before ready / until complete",
         pair("long_task_ms_before_ready", "long_task_ms_total", ms), "", ""),
        ("longest task", num("longest_task_ms", ms), "", ""),
        ("renderer CPU until complete: script / layout / style",
         three(("script_cpu_ms", "layout_cpu_ms", "style_cpu_ms"), ms), "", ""),
        ("renderer CPU idle after load (nothing arriving)", num("renderer_idle_cpu_percent", " % of a core",
         "{:,.1f}"), "", ""),
        ("**DOM elements** after load", num("elements_loaded"), "< 5,000", yes(dom_ok)),
        ("renderer's DOM nodes after load (text, detached included)", num("nodes_loaded"), "", ""),
        ("older pages loaded scrolling back (200 events each)", num("pages_loaded"), "each", yes(pages_ok)),
        ("wheel → older rows in the DOM, per page", num("page_load_ms", ms), "", ""),
        ("the page's /events request, per page", num("page_request_ms", ms, "{:,.1f}"), "", ""),
        ("oldest event the page holds, before → after scrolling back",
         pair("lowest_seq_before_scroll", "lowest_seq_after_scroll", sep=" → "), "", ""),
        ("**DOM elements** after scrolling back", num("elements_scrolled"), "< 5,000", yes(dom_ok)),
        ("renderer's DOM nodes after scrolling back", num("nodes_scrolled"), "", ""),
        ("JS heap used: after load / scrolled back / then a GC",
         three(("heap_loaded_mb", "heap_scrolled_mb", "heap_scrolled_gc_mb"), " MB", "{:,.1f}"), "", ""),
        ("**renderer private memory (USS)** after load", num("renderer_uss_loaded_mb", " MB"), "< 200 MB",
         yes(mem_ok)),
        ("**renderer private memory (USS)** after scrolling back", num("renderer_uss_scrolled_mb", " MB"),
         "< 200 MB", yes(mem_ok)),
        ("renderer private memory after scrolling back, then a GC", num("renderer_uss_scrolled_gc_mb", " MB"),
         "", ""),
        ("renderer RSS (shared pages included) after scrolling back",
         num("renderer_rss_scrolled_mb", " MB"), "", ""),
        ("click → painted: span tree **expand all** / collapse all",
         pair("click_expand_all_ms", "click_collapse_all_ms", ms), "", ""),
        ("span tree rows in the DOM with every span open", num("tree_rows_in_dom"), "", ""),
        ("click → painted: one span's toggle", num("click_toggle_span_ms", ms), "", ""),
        ("click → painted: a stage's show all (its first with hidden items) / show fewer",
         pair("click_show_all_ms", "click_show_fewer_ms", ms), "", ""),
        ("search within the run → results painted: failures / text",
         pair("search_failed_ms", "search_text_ms", ms), "", ""),
        ("console errors and uncaught exceptions in the page", num("page_errors"), "0",
         yes(all(v["page_errors"] == 0 for v in visits))),
    ]  # fmt: skip
    sizes = " | ".join(f"{r['events']:,} events, {r['spans']:,} spans" for r in results["runs"])
    lines = [
        f"| measurement (medians) | {sizes} | target | met |",
        "|---|" + "---|" * len(labels) + "---|---|",
    ]
    for name, cell, target, met in spec:
        cells = " | ".join(cell({**med[label], "label": label}) for label in labels)
        lines.append(f"| {name} | {cells} | {target} | {met} |")
    env, c = results["environment"], results["config"]
    load, cpu = env["load_average_1m"], env["cpu_during_visits"]
    head = (
        f"Medians of {c['reps']} visits per size (a fresh browser context each, after {c['warmup']} "
        f"warm-up), {c['viewport'][0]}x{c['viewport'][1]} window, Chromium {env['chromium']}, UI "
        f"build {env['ui_build'].get('js')}; the "
        f"{env['cpus']} cores shared by the browser, the API, the worker and Redis (load average "
        f"{load['start']:.2f} at start, {load['end']:.2f} at end). While the browser ran, the machine was "
        f"busy {cpu['machine_busy_cores']:.2f} cores on average: {cpu['ours_cores']:.2f} this benchmark "
        f"(browser, API, worker, Redis, this script), {cpu['others_cores']:.2f} other work."
    )
    return head + "\n\n" + "\n".join(lines)


def main() -> None:
    cfg = parse_args()
    with tempfile.TemporaryDirectory(prefix="ui-bench-") as tmp:
        results = run(cfg, Path(tmp))
    publish(results, cfg.output, table(results))


if __name__ == "__main__":
    main()
