"""The runner UI end to end, in Debian's headless Chromium, against the real stack (a private
redis-server, the worker and the API each in its own process), with events emitted while the page is
open. Each test also checks that the page logged no error and asked nothing of anyone but the API
(127.0.0.1). Screenshots of each step are kept in build/test-artifacts/ui/<test>/.

The pages are driven through the hooks docs/ui.md documents for automation: data-task-id and
data-status on task rows, data-span-id and data-state on span nodes, data-seq on timeline entries,
data-live on the live indicator, data-checkpoint-id and data-verdict on checkpoints.
"""

import re
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import httpx
import pytest

from taskevents import lifecycle as lc
from taskevents.emitter import Emitter
from taskevents.settings import Settings
from tests.browser import (
    CHROMIUM_ARGS,
    UiStack,
    Watched,
    find_chromium,
    refusing_server,
    settle,
    ui_stack,
    watched_page,
)
from tests.helpers import wait_for
from tests.pgserver import STORES
from tests.stream_helpers import free_port

if TYPE_CHECKING:
    from playwright.sync_api import Browser

pytestmark = [pytest.mark.browser, pytest.mark.redis_server, pytest.mark.slow]


@pytest.fixture(scope="module")
def browser() -> Iterator["Browser"]:
    from playwright.sync_api import sync_playwright

    executable = find_chromium()
    if executable is None:  # the marker's check has already failed the test in CI
        pytest.skip("no chromium")
    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def stack(settings: Settings) -> Iterator[UiStack]:
    with ui_stack(settings, free_port()) as s:
        yield s


@pytest.fixture
def page(browser: "Browser", stack: UiStack, request: pytest.FixtureRequest) -> Iterator[Watched]:
    with watched_page(browser, request.node.name) as w:
        yield w
        w.check_clean(stack.url)


class Run:
    """One simulated run, emitted step by step by the test through the producer's lifecycle calls."""

    def __init__(self, emitter: Emitter, task_id: str) -> None:
        self.em = emitter
        self.task = task_id
        self.runner = f"{task_id}/runner"
        self.count = 0

    def _sent(self, n: int = 1) -> int:
        self.count += n
        return self.count

    def spawn(self) -> int:
        lc.emit_runner_spawn(self.task, self.runner, 4242, "1.0", emitter=self.em)
        return self._sent()

    def enter(self, phase: str, attempt: int = 1) -> str:
        span = f"{self.task}/{phase}-{attempt}"
        lc.emit_phase_enter(self.task, span, phase, self.runner, emitter=self.em)
        self._sent()
        return span

    def leave(self, span: str, phase: str) -> int:
        lc.emit_phase_exit(self.task, span, phase, emitter=self.em)
        return self._sent()

    def item(self, stage: str, item: str, kind: str = "lint") -> str:
        span = f"{stage}/{item}"
        lc.emit_work_item_start(self.task, span, stage, item, kind, phase="executing", emitter=self.em)
        self._sent()
        return span

    def progress(self, stage: str, item: str, current: int, total: int) -> int:
        lc.emit_work_item_progress(
            self.task, f"{stage}/{item}", stage, item, current=current, total=total, emitter=self.em
        )
        return self._sent()

    def done(self, stage: str, item: str, kind: str = "lint") -> int:
        lc.emit_work_item_complete(self.task, f"{stage}/{item}", stage, item, kind, emitter=self.em)
        return self._sent()

    def failed(self, stage: str, item: str, code: str, why: str = "") -> int:
        lc.emit_work_item_failed(
            self.task, f"{stage}/{item}", stage, item, code, explanation=why or None, emitter=self.em
        )
        return self._sent()

    def evidence(self, phase: str, n: int) -> int:
        for k in range(n):
            lc.emit_evidence_collected(
                self.task, self.runner, phase, "diff", f"ev-{self.count + k}", emitter=self.em
            )
        return self._sent(n)

    def exit(self, code: int, outcome: str | None = None, why: str | None = None) -> int:
        lc.emit_runner_exit(self.task, self.runner, code, outcome, explanation=why, emitter=self.em)
        return self._sent()


def state_of(w: Watched, selector: str) -> str | None:
    return w.page.get_attribute(selector, "data-state")


def shown_seqs(w: Watched) -> list[int]:
    return [
        int(s)
        for s in w.page.eval_on_selector_all(".timeline [data-seq]", "rows => rows.map(r => r.dataset.seq)")
    ]


# --- the task list -------------------------------------------------------------------------------


@pytest.mark.parametrize("settings", STORES, indirect=True)
def test_the_task_list_shows_new_tasks_and_status_changes_live(stack: UiStack, page: Watched) -> None:
    first = Run(stack.emitter, "list-first")
    first.spawn()
    stack.stored(first.task, 1)
    page.open(stack.url + "/")
    page.page.wait_for_selector("[data-live='live']")
    page.page.wait_for_selector("tr[data-task-id='list-first'][data-status='running']")
    page.shot("one-running")

    # New tasks appear, at the top (newest activity first), without a reload.
    second = Run(stack.emitter, "list-second")
    second.spawn()
    stack.flush()
    page.page.wait_for_selector("tr[data-task-id='list-second'][data-status='running']")
    ids = page.page.eval_on_selector_all("tr[data-task-id]", "rows => rows.map(r => r.dataset.taskId)")
    assert ids[:2] == ["list-second", "list-first"]

    # A status changes in place: one ends failed (with its reason), one succeeds.
    first.exit(1, "failed", "the runner was killed: out of memory")
    second.exit(0)
    stack.flush()
    page.page.wait_for_selector("tr[data-task-id='list-first'][data-status='failed']")
    page.page.wait_for_selector("tr[data-task-id='list-second'][data-status='succeeded']")
    assert "out of memory" in page.page.inner_text("tr[data-task-id='list-first']")
    page.shot("statuses-changed")

    # The status filter, then the id search; a task that stops matching leaves the filtered list live.
    page.page.click("button:text-is('failed')")
    page.page.wait_for_selector("tr[data-task-id='list-second']", state="detached")
    assert page.page.eval_on_selector_all("tr[data-task-id]", "rows => rows.map(r => r.dataset.status)") == [
        "failed"
    ]
    page.page.click("button:text-is('all')")
    page.page.fill("input[aria-label='Search by task id']", "SECOND")
    page.page.wait_for_selector("tr[data-task-id='list-first']", state="detached")
    assert page.page.eval_on_selector_all("tr[data-task-id]", "rows => rows.map(r => r.dataset.taskId)") == [
        "list-second"
    ]
    assert "q=SECOND" in page.page.url  # the filters are in the URL: a link shows the same list
    page.shot("filtered")


def test_the_task_list_pages_with_the_api_cursor(stack: UiStack, page: Watched) -> None:
    for k in range(60):
        Run(stack.emitter, f"many-{k:02d}").spawn()
    stack.stored("many-59", 1)
    wait_for(lambda: all(stack.latest_seq(f"many-{k:02d}") for k in range(60)))
    page.open(stack.url + "/")
    assert page.page.locator("tr[data-task-id]").count() == 50
    page.page.click("button:text-is('older tasks')")
    wait_for(lambda: page.page.locator("tr[data-task-id]").count() == 60)
    ids = page.page.eval_on_selector_all("tr[data-task-id]", "rows => rows.map(r => r.dataset.taskId)")
    assert len(set(ids)) == 60


# --- the task page, live -------------------------------------------------------------------------


@pytest.mark.parametrize("settings", STORES, indirect=True)
def test_the_pipeline_timeline_and_tree_change_as_events_arrive(stack: UiStack, page: Watched) -> None:
    run = Run(stack.emitter, "live-run")
    run.spawn()
    planning = run.enter("planning")
    run.leave(planning, "planning")
    stage = run.enter("executing")
    for item in ("item-1", "item-2", "item-3"):
        run.item(stage, item)
    stack.stored(run.task, run.count)

    page.open(f"{stack.url}/tasks/{run.task}")
    page.page.wait_for_selector("[data-live='live']")
    card = f".pipeline [data-span-id='{stage}/item-1']"
    assert state_of(page, card) == "open"
    assert page.page.locator(".pipeline [data-state='open'].card").count() == 3
    assert "3 running" in page.page.inner_text(f".pipeline [data-span-id='{stage}']")
    page.shot("three-running")

    # Open the executing stage in the span tree: it must stay open while events change the tree.
    tree_stage = page.page.locator(f".tree [data-span-id='{stage}']")
    tree_stage.locator("button.toggle").click()
    page.page.wait_for_selector(f".tree [data-span-id='{stage}/item-2']")

    # Progress, a failure with its error code, a new item: the pipeline and the timeline follow.
    run.progress(stage, "item-1", 4, 10)
    run.failed(stage, "item-2", "E1", "lint found 3 errors")
    run.item(stage, "item-4")
    last = run.done(stage, "item-3")
    stack.flush()
    page.page.wait_for_selector(f"{card} >> text=4/10")
    page.page.wait_for_selector(f".pipeline [data-span-id='{stage}/item-2'][data-state='failed'] >> text=E1")
    page.page.wait_for_selector(f".pipeline [data-span-id='{stage}/item-3'][data-state='closed']")
    page.page.wait_for_selector(f".timeline [data-seq='{last}']")
    assert "item-2 (lint) failed: E1" in page.page.inner_text(".timeline")
    assert page.page.get_attribute(f".tree [data-span-id='{stage}'] button.toggle", "aria-expanded") == "true"
    page.page.wait_for_selector(
        f".tree [data-span-id='{stage}/item-4']"
    )  # the new child, under the open node
    assert state_of(page, f".tree [data-span-id='{stage}/item-2']") == "failed"
    # The timeline follows the newest event (it is in view, not just in the DOM).
    assert page.page.locator(f".timeline [data-seq='{last}']").is_visible()
    # The next step: items still running.
    assert "running" in page.page.inner_text(".activity")
    page.shot("progress-failure-new-item")

    # A recovery and a second attempt of executing: a new stage, with an edge back to it.
    run.leave(stage, "executing")
    recovery = run.enter("recovery")
    run.leave(recovery, "recovery")
    again = run.enter("executing", 2)
    stack.flush()
    page.page.wait_for_selector(f".pipeline [data-span-id='{again}']")
    assert "attempt 2" in page.page.inner_text(f".pipeline [data-span-id='{again}']")
    page.page.wait_for_selector(".pipeline path.edge.back")
    page.shot("second-attempt")

    # The run ends: the header says so, the live indicator too.
    run.exit(1, "failed", "gave up")
    stack.flush()
    page.page.wait_for_selector("main[data-status='failed']")
    page.page.wait_for_selector("[data-live='ended']")
    assert "ended: failed" in page.page.inner_text(".activity")
    page.shot("ended")


@pytest.mark.parametrize("settings", STORES, indirect=True)
def test_the_evidence_drawer_shows_checkpoints_and_their_verdicts_live(stack: UiStack, page: Watched) -> None:
    run = Run(stack.emitter, "cp-run")
    run.spawn()
    stage = run.enter("executing")
    run.item(stage, "item-1")
    run.done(stage, "item-1")
    refs = {"artifacts": ["ev-a", "ev-b"], "commit_hash": "c4a3f01a48deadbeef", "work_items": ["item-1"]}
    lc.emit_checkpoint_commit(run.task, stage, "cp-1", "execution", "executing", refs, emitter=stack.emitter)
    seq = run._sent()
    stack.stored(run.task, seq)

    page.open(f"{stack.url}/tasks/{run.task}")
    page.page.wait_for_selector("[data-live='live']")
    page.page.click("button:has-text('evidence (1)')")
    checkpoint = "[data-checkpoint-id='cp-1']"
    page.page.wait_for_selector(f"{checkpoint}[data-verdict='pending']")
    text = page.page.inner_text(checkpoint)
    assert "ev-a" in text and "ev-b" in text and "c4a3f01a48" in text
    assert "verifying checkpoint cp-1" in page.page.inner_text(".activity")  # the next step
    page.shot("pending")

    # The checkpoint's work items highlight their cards.
    page.page.click(f"{checkpoint} button:text-is('item-1')")
    page.page.wait_for_selector(f".pipeline [data-span-id='{stage}/item-1'].hl")

    # Its verdict changes while the drawer is open; a second checkpoint is rejected.
    lc.emit_checkpoint_verified(run.task, stage, "cp-1", "executing", emitter=stack.emitter)
    lc.emit_checkpoint_commit(
        run.task, stage, "cp-2", "execution", "executing", {"artifacts": []}, emitter=stack.emitter
    )
    lc.emit_checkpoint_invalid(run.task, stage, "cp-2", "executing", "hash_mismatch", emitter=stack.emitter)
    stack.flush()
    page.page.wait_for_selector(f"{checkpoint}[data-verdict='verified']")
    page.page.wait_for_selector("[data-checkpoint-id='cp-2'][data-verdict='invalid'] >> text=hash_mismatch")
    page.shot("verified-and-invalid")

    # Esc closes the drawer.
    page.page.keyboard.press("Escape")
    page.page.wait_for_selector(".drawer", state="detached")


def test_deep_links_land_on_the_event_and_the_span(stack: UiStack, page: Watched) -> None:
    run = Run(stack.emitter, "deep-run")
    run.spawn()
    stage = run.enter("executing")
    for k in range(40):
        run.item(stage, f"item-{k}")
        run.done(stage, f"item-{k}")
    run.evidence("executing", 400)
    stack.stored(run.task, run.count)

    page.open(f"{stack.url}/tasks/{run.task}?seq=30")
    page.page.wait_for_selector(".timeline [data-seq='30'].hl")
    assert page.page.locator(".timeline [data-seq='30']").is_visible()  # scrolled to, not only loaded
    page.shot("seq-30")

    span = f"{stage}/item-7"
    page.open(f"{stack.url}/tasks/{run.task}?span={span}")
    page.page.wait_for_selector(f".tree [data-span-id='{span}'].selected")
    page.page.wait_for_selector(f".pipeline [data-span-id='{span}'].selected")
    page.shot("span-item-7")


def test_the_keys_move_open_and_close(stack: UiStack, page: Watched) -> None:
    run = Run(stack.emitter, "keys-run")
    run.spawn()
    run.evidence("executing", 5)
    stack.stored(run.task, run.count)
    page.open(f"{stack.url}/tasks/{run.task}")
    page.page.wait_for_selector(f".timeline [data-seq='{run.count}']")

    def selected(seq: int) -> None:
        """The row the keys selected; a key's render lands after the press returns, so wait for it."""
        page.page.wait_for_selector(f".timeline .tl-row.selected[data-seq='{seq}']", timeout=5000)
        assert page.page.locator(".timeline .tl-row.selected").count() == 1

    page.page.keyboard.press("k")  # from nothing selected: the newest
    selected(run.count)
    page.page.keyboard.press("k")
    selected(run.count - 1)
    page.page.keyboard.press("k")
    selected(run.count - 2)
    page.page.keyboard.press("j")
    selected(run.count - 1)
    page.page.keyboard.press("Enter")
    dialog = page.page.locator("[role='dialog']")
    dialog.wait_for()
    assert f'"seq": {run.count - 1}' in dialog.inner_text()
    page.shot("raw-json")
    page.page.keyboard.press("Escape")
    dialog.wait_for(state="detached")
    page.page.keyboard.press("?")
    page.page.wait_for_selector("[role='dialog'] >> text=next / previous event")
    page.shot("keys")
    page.page.keyboard.press("Escape")
    page.page.wait_for_selector("[role='dialog']", state="detached")


def test_the_timeline_follows_the_newest_until_scrolled_up_and_resumes_at_the_bottom(
    stack: UiStack, page: Watched
) -> None:
    run = Run(stack.emitter, "follow-run")
    run.spawn()
    run.evidence("executing", 120)
    stack.stored(run.task, run.count)
    page.open(f"{stack.url}/tasks/{run.task}")
    page.page.wait_for_selector("[data-live='live']")
    assert page.page.locator(f".timeline [data-seq='{run.count}']").is_visible()

    # Scrolled up: new events do not pull the reader down; a button counts them.
    page.page.locator(".timeline").evaluate("el => { el.scrollTop = 0; }")
    page.page.wait_for_selector("button.follow")
    run.evidence("executing", 30)
    stack.stored(run.task, run.count)
    page.page.wait_for_selector("button.follow:has-text('30 new')")
    assert page.page.locator(".timeline [data-seq='1']").is_visible()
    page.shot("scrolled-up")

    # Back to the newest: the window shows it and follows again.
    page.page.click("button.follow")
    page.page.wait_for_selector(f".timeline [data-seq='{run.count}']")
    page.page.wait_for_selector("button.follow", state="detached")
    run.evidence("executing", 5)
    stack.stored(run.task, run.count)
    page.page.wait_for_selector(f".timeline [data-seq='{run.count}']")
    assert page.page.locator(f".timeline [data-seq='{run.count}']").is_visible()
    page.shot("following-again")


def test_folded_runs_scroll_back_and_a_deep_link_into_one_unfolds_it(stack: UiStack, page: Watched) -> None:
    run = Run(stack.emitter, "fold-run")
    run.spawn()
    for _ in range(900):  # heartbeats: the newest 200 fold into one line that does not fill the list
        lc.emit_runner_heartbeat(run.task, run.runner, emitter=stack.emitter)
    run.count += 900
    run.evidence("executing", 1)
    stack.stored(run.task, run.count)
    page.open(f"{stack.url}/tasks/{run.task}")
    # Older pages are read until the list can scroll or the run's start is in: seq 1 gets there.
    page.page.wait_for_selector(".timeline [data-seq='1']", timeout=20_000)
    page.shot("folded")

    page.open(f"{stack.url}/tasks/{run.task}?seq=450")
    page.page.wait_for_selector(".timeline [data-seq='450'].hl")
    assert page.page.locator(".timeline [data-seq='450']").is_visible()
    page.shot("unfolded-at-450")


def test_search_within_the_run_is_answered_by_the_server(stack: UiStack, page: Watched) -> None:
    run = Run(stack.emitter, "find-run")
    run.spawn()
    stage = run.enter("executing")
    for k in range(30):
        run.item(stage, f"item-{k}")
        if k % 10 == 3:
            run.failed(stage, f"item-{k}", "E7", "flaky")
        else:
            run.done(stage, f"item-{k}")
    run.evidence("executing", 300)
    stack.stored(run.task, run.count)
    page.open(f"{stack.url}/tasks/{run.task}")
    page.page.check("text=failures only")
    page.page.click("button:text-is('find')")
    page.page.wait_for_selector("text=3 found, newest first (the whole run)")
    found = page.page.inner_text(".timeline")
    assert all(f"item-{k} (lint) failed: E7" in found for k in (3, 13, 23))
    page.shot("failures")
    # A result opens the timeline at that event.
    page.page.click(".timeline [data-seq] .tl-text >> text=item-13")
    page.page.wait_for_selector("text=back to the timeline", state="detached")
    seq = page.page.get_attribute(".timeline .tl-row.hl", "data-seq")
    assert seq is not None and "item-13 (lint) failed" in page.page.inner_text(
        f".timeline [data-seq='{seq}']"
    )
    # A text found nowhere: none, over the whole run.
    page.page.uncheck("text=failures only")
    page.page.fill("input[aria-label='Search within the run']", "no-such-text-anywhere")
    page.page.keyboard.press("Enter")
    page.page.wait_for_selector("text=0 found, newest first (the whole run)")
    page.page.keyboard.press("Escape")  # leaves the box
    page.page.keyboard.press("Escape")  # leaves the results
    page.page.wait_for_selector("text=back to the timeline", state="detached")


def test_keys_leave_focused_controls_and_open_dialogs_alone(stack: UiStack, page: Watched) -> None:
    run = Run(stack.emitter, "focus-run")
    run.spawn()
    run.evidence("executing", 5)
    stack.stored(run.task, run.count)
    page.open(f"{stack.url}/tasks/{run.task}")
    page.page.wait_for_selector(f".timeline [data-seq='{run.count}']")
    page.page.keyboard.press("k")
    page.page.wait_for_selector(f".timeline .tl-row.selected[data-seq='{run.count}']")
    page.page.focus("button:has-text('evidence (0)')")
    page.page.keyboard.press("Enter")  # the button's own Enter: the drawer, not the raw JSON
    page.page.wait_for_selector(".drawer")
    assert page.page.locator("[role='dialog']").count() == 0
    page.page.keyboard.press("Escape")
    page.page.wait_for_selector(".drawer", state="detached")
    page.page.keyboard.press("?")
    page.page.wait_for_selector("[role='dialog']")
    page.page.keyboard.press("k")  # the page behind the dialog takes no keys
    page.page.wait_for_timeout(300)  # a render the key would cause lands well within this
    assert page.page.get_attribute(".timeline .tl-row.selected", "data-seq") == str(run.count)
    for _ in range(4):
        page.page.keyboard.press("Tab")  # focus stays in the dialog
    assert page.page.evaluate("document.activeElement.closest('dialog') !== null")
    page.page.keyboard.press("Escape")
    page.page.wait_for_selector("[role='dialog']", state="detached")


def test_the_raw_json_copy_button_copies_the_event(browser: "Browser", stack: UiStack) -> None:
    run = Run(stack.emitter, "copy-run")
    run.spawn()
    stack.stored(run.task, 1)
    with watched_page(browser, "copy", permissions=["clipboard-read", "clipboard-write"]) as w:
        w.open(f"{stack.url}/tasks/{run.task}")
        w.page.click(".timeline [data-seq='1'] .tl-json")
        w.page.click("button:text-is('copy JSON')")
        w.page.wait_for_selector("button:text-is('copied')")
        copied = w.page.evaluate("navigator.clipboard.readText()")
        assert '"event_type": "runner_spawn"' in copied and '"seq": 1' in copied
        w.check_clean(stack.url)


@pytest.mark.parametrize("settings", STORES, indirect=True)
def test_an_api_restart_under_an_open_page_loses_nothing_and_repeats_nothing(
    stack: UiStack, page: Watched
) -> None:
    run = Run(stack.emitter, "restart-run")
    run.spawn()
    run.evidence("executing", 9)
    stack.stored(run.task, run.count)
    page.open(f"{stack.url}/tasks/{run.task}")
    page.page.wait_for_selector("[data-live='live']")
    assert shown_seqs(page) == list(range(1, 11))

    page.allow_network_noise = True  # the refused reconnections are logged by Chromium itself
    stack.api.kill()
    page.page.wait_for_selector("[data-live='reconnecting']")
    page.shot("api-down")
    run.evidence("executing", 10)  # emitted and stored while the page cannot hear
    stack.stored(run.task, run.count)
    stack.api.start()
    page.page.wait_for_selector("[data-live='live']", timeout=30_000)
    run.evidence("executing", 5)  # and after
    stack.flush()
    page.page.wait_for_selector(f".timeline [data-seq='{run.count}']")
    settle(0.5)  # a repeat would arrive in the same batch or the next
    assert shown_seqs(page) == list(range(1, run.count + 1))
    assert f"{run.count} events" in page.page.inner_text("header")
    page.shot("caught-up")
    page.allow_network_noise = False


def test_a_refused_stream_is_reopened_from_the_latest_seq(stack: UiStack, page: Watched) -> None:
    """While the API restarts, something else answers on its port with 503 (a proxy, or the API with its
    store unreadable). A browser's EventSource gives up on an answer that is not a stream; the page
    opens a new one itself, from the latest seq it holds, and misses nothing emitted meanwhile."""
    run = Run(stack.emitter, "refused-run")
    run.spawn()
    run.evidence("executing", 9)
    stack.stored(run.task, run.count)
    page.open(f"{stack.url}/tasks/{run.task}")
    page.page.wait_for_selector("[data-live='live']")
    page.allow_network_noise = True  # Chromium logs the refused streams itself
    stack.api.kill()
    with refusing_server(stack.api.port) as refused:
        wait_for(lambda: refused.count >= 2, timeout=30)  # refused, and asked again: not given up
        page.page.wait_for_selector("[data-live='reconnecting']")
        run.evidence("executing", 10)
        stack.stored(run.task, run.count)
    stack.api.start()
    run.evidence("executing", 5)
    stack.flush()
    page.page.wait_for_selector(f".timeline [data-seq='{run.count}']", timeout=30_000)
    page.page.wait_for_selector("[data-live='live']")
    settle(0.5)
    assert shown_seqs(page) == list(range(1, run.count + 1))
    page.shot("reopened")
    page.allow_network_noise = False


def test_the_task_list_comes_back_after_an_api_restart(stack: UiStack, page: Watched) -> None:
    Run(stack.emitter, "before").spawn()
    stack.stored("before", 1)
    page.open(stack.url + "/")
    page.page.wait_for_selector("[data-live='live']")
    page.allow_network_noise = True
    stack.api.kill()
    page.page.wait_for_selector("[data-live='reconnecting']")
    Run(stack.emitter, "during").spawn()
    stack.stored("during", 1)
    stack.api.start()
    page.page.wait_for_selector("tr[data-task-id='during']", timeout=30_000)
    page.page.wait_for_selector("[data-live='live']")
    page.allow_network_noise = False


# --- untrusted data ------------------------------------------------------------------------------

HOSTILE = '<img src=x onerror="window.__pwned=1"><script>window.__pwned=1</script>&amp;"\''
# A task id cannot hold a / (the API cannot address it in a path: docs/read-api.md), so no </script>.
HOSTILE_ID = '<img src=x onerror="window.__pwned=1"><svg onload="window.__pwned=1">&amp;"\''


@pytest.mark.parametrize("settings", STORES, indirect=True)
def test_hostile_strings_are_rendered_as_text(stack: UiStack, page: Watched) -> None:
    task = f"evil{HOSTILE_ID}"
    run = Run(stack.emitter, task)
    run.spawn()
    stage, item = f"s{HOSTILE}", f"i{HOSTILE}"  # span ids: any printable text up to 128 characters
    stack.emitter.emit(task, "phase_enter", span_id=stage, parent_span_id=run.runner, phase="executing",
                       actor="<b>runner</b>", payload={"explanation": HOSTILE})  # fmt: skip
    lc.emit_work_item_start(task, item, stage, f"item{HOSTILE}", f"type{HOSTILE}", emitter=stack.emitter)
    lc.emit_work_item_failed(
        task, item, stage, f"item{HOSTILE}", f"E{HOSTILE}", explanation=HOSTILE, emitter=stack.emitter
    )
    stack.emitter.emit(task, "custom_evil_type", span_id=run.runner, actor="runner",
                       payload={"html": HOSTILE, "n": [HOSTILE]})  # fmt: skip
    refs: dict[str, Any] = {
        "artifacts": [HOSTILE],
        "commit_hash": HOSTILE,
        "work_items": [f"item{HOSTILE}"],
        HOSTILE: HOSTILE,
    }
    lc.emit_checkpoint_commit(task, stage, f"cp{HOSTILE}", HOSTILE, "executing", refs, emitter=stack.emitter)
    lc.emit_runner_exit(task, run.runner, 1, "failed", explanation=HOSTILE, emitter=stack.emitter)
    stack.stored(task, 7)

    page.open(stack.url + "/")
    row = page.page.locator("tr[data-status='failed']").first
    assert row.get_attribute("data-task-id") == task
    assert task in row.inner_text()
    page.shot("list")
    row.locator("a").click()
    page.ready()
    page.page.click("button:has-text('evidence (1)')")
    page.page.wait_for_selector(".drawer")
    body = page.page.inner_text("body")
    assert HOSTILE in body  # shown as the characters it is
    assert f"item{HOSTILE} (type{HOSTILE}) failed: E{HOSTILE}" in body
    assert page.page.evaluate("window.__pwned") is None
    # Nothing the event said became an element: the only images and scripts are the page's own.
    assert page.page.locator("img").count() == 0
    assert page.page.locator("script").count() == 1
    page.page.click(".timeline [data-seq='7'] .tl-json")  # the exit, with its explanation
    assert HOSTILE.replace('"', '\\"') in page.page.inner_text("[role='dialog']")
    page.shot("task-page")


def test_pages_carry_a_strict_content_security_policy(stack: UiStack) -> None:
    for path in ("/", "/tasks/anything"):
        response = httpx.get(stack.url + path)
        assert response.status_code == 200 and response.headers["content-type"].startswith("text/html")
        csp = response.headers["content-security-policy"]
        assert "script-src 'self'" in csp and "connect-src 'self'" in csp and "unsafe" not in csp
        scripts = re.findall(r"<script\b[^>]*>", response.text)
        assert scripts and all(" src=" in tag for tag in scripts)  # no inline script: the bundle, by src
