"""The runner UI's screenshots for the README and docs/ui.md: docs/images/task-list.png and
docs/images/task-page.png, remade from simulated runs (run it through scripts/screenshots).

A private stack (benchmarks/ui_stack.py: redis-server on a free port, the worker, the API serving the
UI) stores --tasks simulated runs (`taskevents.simulate.simulate`, --seed for the same task ids and
stories every time: about a fifth fail, --leave-running stop part way and stay running, each sending
a heartbeat at the end as a live runner does), then
Debian's headless Chromium takes the task list at `/` and one task page at a --viewport window.
The task page is of the run with the most executing attempts (so its pipeline shows the recoveries'
back edges), preferring one that succeeded in the end and has a failed work item card, unless --task
names another; its first attempt's cards are opened ("show items": a superseded attempt is folded).
Only the times differ from one run of the script to the next.
"""

import argparse
import sqlite3
import tempfile
import time
from pathlib import Path
from urllib.parse import quote

from playwright.sync_api import Page, sync_playwright
from report import say
from ui_stack import CHROMIUM, CHROMIUM_ARGS, ROOT, Stack, private_stack

from taskevents.lifecycle import emit_runner_heartbeat
from taskevents.simulate import simulate

# The run the task page shows: most executing attempts, then succeeded, then with a failed work item.
PICK = """
SELECT t.task_id
FROM tasks t
JOIN spans s ON s.task_id = t.task_id
GROUP BY t.task_id
ORDER BY sum(s.phase = 'executing' AND s.event_type = 'phase_enter') DESC,
         t.status = 'succeeded' DESC,
         sum(s.event_type = 'work_item_start' AND s.state = 'failed') > 0 DESC,
         t.task_id
LIMIT 1
"""


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="scripts/screenshots", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seed", type=int, default=42, help="simulator seed (default %(default)s)")
    parser.add_argument("--tasks", type=int, default=30, help="simulated runs (default %(default)s)")
    parser.add_argument(
        "--leave-running", type=int, default=4, help="runs left running part way (default %(default)s)"
    )
    parser.add_argument(
        "--rate", type=float, default=400.0, help="events/s while simulating (default %(default)s)"
    )
    parser.add_argument("--task", help="the task page's task id (default: picked as above)")
    parser.add_argument("--viewport", default="1400x900", help="window size WxH (default %(default)s)")
    parser.add_argument(
        "--out", type=Path, default=ROOT / "docs" / "images", help="where the PNGs go (default %(default)s)"
    )
    return parser.parse_args()


RUNNING = "SELECT task_id FROM tasks WHERE status = 'running' ORDER BY task_id"


def store_runs(stack: Stack, args: argparse.Namespace) -> None:
    """The simulated runs; then the runs left running, still alive, send a heartbeat each (so they are
    the most recently active, at the top of the list, as live runs are)."""
    emitter = stack.emitter()
    emitted = simulate(
        emitter,
        tasks=args.tasks,
        concurrency=6,
        rate=args.rate,
        seed=args.seed,
        prefix="run",
        leave_running=args.leave_running,
    )
    stack.wait_stored(emitted)
    for task_id in read(stack, RUNNING):
        emit_runner_heartbeat(task_id, f"{task_id.rsplit('-', 1)[1]}-runner", emitter=emitter)  # its root
        emitted += 1
    if not emitter.close(60):
        raise RuntimeError("the emitter could not deliver every event to Redis")
    stack.wait_stored(emitted)
    say(f"stored {args.tasks} runs, {emitted} events")


def read(stack: Stack, sql: str) -> list[str]:
    conn = sqlite3.connect(f"file:{stack.db}?mode=ro", uri=True)
    try:
        return [str(row[0]) for row in conn.execute(sql)]
    finally:
        conn.close()


def settle(page: Page) -> None:
    """The page's first paint done and its live indicator settled (live, or ended: not connecting)."""
    page.wait_for_selector("body[data-ready='1']", state="attached", timeout=30_000)
    page.wait_for_selector("[data-live='live'], [data-live='ended']", timeout=30_000)
    page.wait_for_timeout(600)  # the span tree's full read and the last batched renders


def main() -> None:
    args = parse_args()
    width, _, height = args.viewport.partition("x")
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="ui-screenshots-") as tmp, private_stack(Path(tmp)) as stack:
        store_runs(stack, args)
        task = args.task or read(stack, PICK)[0]
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            try:
                context = browser.new_context(viewport={"width": int(width), "height": int(height)})
                page = context.new_page()
                page.goto(stack.base_url + "/")
                settle(page)
                page.screenshot(path=str(args.out / "task-list.png"))
                page.goto(f"{stack.base_url}/tasks/{quote(task, safe='')}")
                settle(page)
                deadline = time.monotonic() + 30
                while "loading all" in (page.text_content(".tree-bar") or ""):
                    if time.monotonic() > deadline:
                        raise TimeoutError("the span tree did not finish loading")
                    page.wait_for_timeout(100)
                # The first attempt's cards too (a superseded stage is folded to its counts).
                first = page.locator(".pipeline .stage[aria-label='executing, attempt 1']")
                if first.locator("button", has_text="show items").count():
                    first.locator("button", has_text="show items").click()
                    page.wait_for_selector(".pipeline .stage[aria-label='executing, attempt 1'] .card")
                    page.wait_for_timeout(300)  # the edges are measured again after the stages move
                page.screenshot(path=str(args.out / "task-page.png"))
            finally:
                browser.close()
    for name in ("task-list.png", "task-page.png"):
        print(args.out / name)
    say(f"task page: {task}")


if __name__ == "__main__":
    main()
