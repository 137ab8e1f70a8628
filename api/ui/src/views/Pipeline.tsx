// The pipeline: each phase attempt a stage (a column per phase, a row per attempt), the recovery drawn
// as an edge back to the phase it re-enters, and under each stage its work items as cards, side by
// side. A stage shows its counts ("1,180 done · 3 failed · 17 running") and a few cards (failed and
// running first); expanded, all its cards scroll in a virtualized grid, read from the store page by
// page. A stage whose phase ran again later is folded to its counts, so the attempt running now and
// the timeline stay on screen however many attempts a run has had.
import { useLayoutEffect, useMemo, useRef, useState } from "preact/hooks";
import { api } from "../api";
import { count } from "../format";
import { progressText } from "../model/narrative";
import { type Layout, type StageBox, cardsToShow, layoutPipeline, supersededStages, wideColumns } from "../model/pipeline";
import type { TaskModel } from "../model/task";
import type { Span } from "../types";
import { StateBadge } from "./common";
import { VirtualList } from "./VirtualList";

const CARDS_SHOWN = 8; // cards a collapsed stage shows: two rows
const CARD_ROW = 66; // px, a row of the expanded grid
const PER_ROW = 4;
const ROWS_SHOWN = 6; // attempt rows drawn before "show earlier attempts"

interface Props {
  model: TaskModel;
  version: number;
  highlighted: ReadonlySet<string>;
  selected: string | null;
  onSelect: (spanId: string) => void;
}

export function itemName(span: Span): string {
  return span.work_item_id ?? span.span_id;
}

function Card({ span, highlighted, selected, onSelect }: { span: Span; highlighted: boolean; selected: boolean; onSelect: (id: string) => void }) {
  const progress = progressText(span.progress);
  return (
    <button
      type="button"
      class={`card state-${span.state}${highlighted ? " hl" : ""}${selected ? " selected" : ""}`}
      data-span-id={span.span_id}
      data-state={span.state}
      onClick={() => onSelect(span.span_id)}
      title={span.span_id}
    >
      <span class="card-name">{itemName(span)}</span>
      <span class="card-line card-type">{span.work_type ?? ""}</span>
      {span.state === "failed" && span.error_code ? (
        <span class="card-line card-error">{span.error_code}</span>
      ) : (
        <span class="card-line card-progress">{progress ?? ""}</span>
      )}
    </button>
  );
}

function countsLine(counts: { open: number; closed: number; failed: number }): string {
  const parts = [`${count(counts.closed)} done`];
  if (counts.failed) parts.push(`${count(counts.failed)} failed`);
  if (counts.open) parts.push(`${count(counts.open)} running`);
  return parts.join(" · ");
}

type View = "folded" | "cards" | "all";

function Stage({ box, model, props, chosen, onView }: { box: StageBox; model: TaskModel; props: Props; chosen: View; onView: (v: View) => void }) {
  const span = model.spans.get(box.id) ?? box.span; // the stage as of now (the layout is kept across batches)
  const counts = model.countsOf(box.id);
  const total = counts.open + counts.closed + counts.failed;
  const items = model.childrenOf(box.id);
  // A selected or highlighted item (a deep link, a checkpoint's work items) shows even if folded.
  const pinned = new Set(items.filter((s) => props.highlighted.has(s.span_id) || props.selected === s.span_id).map((s) => s.span_id));
  const view = chosen === "folded" && pinned.size > 0 ? "cards" : chosen;
  const shown = view === "all" ? items : view === "cards" ? cardsToShow(items, CARDS_SHOWN, pinned) : [];
  const rows = Math.ceil(shown.length / PER_ROW);
  const card = (s: Span) => <Card span={s} highlighted={props.highlighted.has(s.span_id)} selected={props.selected === s.span_id} onSelect={props.onSelect} key={s.span_id} />;
  return (
    <section
      class={`stage stage-${span.state}${props.selected === box.id ? " selected" : ""}`}
      data-span-id={box.id}
      data-state={span.state}
      style={{ gridColumn: String(box.column + 1), gridRow: String(box.row + 1) }}
      aria-label={`${box.phase}, attempt ${box.attempt}`}
    >
      <header class="stage-head" onClick={() => props.onSelect(box.id)}>
        <span class="stage-name">
          {box.phase}
          {box.attempt > 1 && <span class="attempt"> · attempt {box.attempt}</span>}
        </span>
        {view === "folded" && total > 0 && (
          <>
            <span class="stage-counts inline">{countsLine(counts)}</span>
            <button
              type="button"
              class="link"
              aria-expanded="false"
              onClick={(e) => {
                e.stopPropagation();
                onView("cards");
              }}
            >
              show items
            </button>
          </>
        )}
        <StateBadge state={span.state} />
      </header>
      {view !== "folded" && total > 0 && <p class="stage-counts">{countsLine(counts)}</p>}
      {view === "all" && shown.length > CARDS_SHOWN ? (
        <VirtualList
          count={rows}
          rowHeight={CARD_ROW}
          height={Math.min(rows * CARD_ROW, 420)}
          label={`work items of ${box.phase}`}
          className="cards-grid"
          render={(r) => <div class="cards">{shown.slice(r * PER_ROW, r * PER_ROW + PER_ROW).map(card)}</div>}
        />
      ) : (
        shown.length > 0 && <div class="cards">{shown.map(card)}</div>
      )}
      {view !== "folded" && total > 0 && (
        <div class="stage-actions">
          {view === "cards" && total > shown.length && (
            <button type="button" class="link" aria-expanded="false" onClick={() => onView("all")}>
              show all {count(total)}
            </button>
          )}
          {view === "all" && total > CARDS_SHOWN && (
            <button type="button" class="link" aria-expanded="true" onClick={() => onView("cards")}>
              show fewer
            </button>
          )}
        </div>
      )}
    </section>
  );
}

/** Arrows between consecutive stages, measured from the stages as laid out; back edges curve. */
function Edges({ layout, grid, version }: { layout: Layout; grid: { current: HTMLDivElement | null }; version: string }) {
  const [paths, setPaths] = useState<{ d: string; back: boolean; key: string }[]>([]);
  const [size, setSize] = useState("");
  // Stages move when the page's width changes (a window resize, the drawer opening): measure again.
  useLayoutEffect(() => {
    const el = grid.current;
    if (el === null) return;
    const observer = new ResizeObserver(() => setSize(`${el.clientWidth}x${el.clientHeight}`));
    observer.observe(el);
    return () => observer.disconnect();
  }, []);
  useLayoutEffect(() => {
    const el = grid.current;
    if (el === null) return;
    const origin = el.getBoundingClientRect();
    // A stage's box for where an edge leaves and enters, its header's middle for the height.
    const rect = (id: string) => {
      const stage = el.querySelector(`[data-span-id="${CSS.escape(id)}"]`);
      const head = stage?.querySelector(":scope > .stage-head");
      if (!stage || !head) return null;
      const box = stage.getBoundingClientRect();
      const h = head.getBoundingClientRect();
      return { left: box.left - origin.left, right: box.right - origin.left, top: box.top - origin.top, bottom: box.bottom - origin.top, mid: h.top + h.height / 2 - origin.top };
    };
    const out: { d: string; back: boolean; key: string }[] = [];
    for (const edge of layout.edges) {
      const a = rect(edge.from);
      const b = rect(edge.to);
      if (a === null || b === null) continue;
      const key = `${edge.from}>${edge.to}`;
      if (!edge.back) {
        out.push({ d: `M${a.right},${a.mid} C${a.right + 20},${a.mid} ${b.left - 20},${b.mid} ${b.left - 1},${b.mid}`, back: false, key });
      } else {
        // Back to an attempt in the next row: down from the stage, along the gap between the rows,
        // and down into the attempt, so the edge never crosses a stage.
        const sx = (a.left + a.right) / 2;
        const tx = (b.left + b.right) / 2;
        const mid = Math.max(a.bottom + 4, b.top - 14);
        const r = Math.min(5, Math.abs(sx - tx) / 2, Math.max(0, (mid - a.bottom) / 2));
        const dir = tx < sx ? -1 : 1;
        out.push({
          d: `M${sx},${a.bottom} V${mid - r} Q${sx},${mid} ${sx + dir * r},${mid} H${tx - dir * r} Q${tx},${mid} ${tx},${mid + r} V${b.top - 1}`,
          back: true,
          key,
        });
      }
    }
    setPaths(out);
  }, [layout, version, size]);
  return (
    <svg class="edges" aria-hidden="true">
      <defs>
        <marker id="arrow" viewBox="0 0 8 8" refX="7" refY="4" markerUnits="userSpaceOnUse" markerWidth="9" markerHeight="9" orient="auto-start-reverse">
          <path d="M0,0 L8,4 L0,8 z" class="arrow-head" />
        </marker>
        <marker id="arrow-back" viewBox="0 0 8 8" refX="7" refY="4" markerUnits="userSpaceOnUse" markerWidth="9" markerHeight="9" orient="auto-start-reverse">
          <path d="M0,0 L8,4 L0,8 z" class="arrow-head back" />
        </marker>
      </defs>
      {paths.map((p) => (
        <path d={p.d} class={p.back ? "edge back" : "edge"} marker-end={p.back ? "url(#arrow-back)" : "url(#arrow)"} key={p.key} />
      ))}
    </svg>
  );
}

export function Pipeline(props: Props) {
  const { model } = props;
  const stages = model.stages.map((id) => model.spans.get(id)).filter((s): s is Span => s !== undefined);
  // The layout changes only when stages come (or are corrected), not with each batch of events.
  const stageKey = stages.map((st) => `${st.span_id}:${st.phase ?? ""}`).join("|");
  const layout = useMemo(() => layoutPipeline(stages), [stageKey]);
  const superseded = useMemo(() => supersededStages(layout), [layout]);
  // What the user chose per stage; otherwise a stage shows a few cards, or is folded if superseded.
  const [chosen, setChosen] = useState<ReadonlyMap<string, View>>(new Map());
  const [earlier, setEarlier] = useState(false);
  const grid = useRef<HTMLDivElement>(null);
  const viewOf = (id: string): View => chosen.get(id) ?? (superseded.has(id) ? "folded" : "cards");

  const choose = async (id: string, view: View) => {
    if (view === "all" && !model.allSpans) {
      // Its cards beyond the first: the store has them (a big stage's are read page by page).
      let after = 0;
      for (;;) {
        const page = await api.spans(model.summary.task_id, after, id);
        model.loadChildren(page.spans);
        if (!page.has_more) break;
        after = page.next_seq;
      }
    }
    setChosen(new Map([...chosen, [id, view]]));
  };

  // A new stage (and the first paint): bring the newest into the pipeline's view, not the window's.
  const newest = layout.boxes[layout.boxes.length - 1]?.id ?? null;
  useLayoutEffect(() => {
    const panel = grid.current?.closest(".pipeline-panel");
    const last = newest === null ? null : grid.current?.querySelector(`[data-span-id="${CSS.escape(newest)}"]`);
    if (!panel || !last) return;
    const below = last.getBoundingClientRect().bottom - panel.getBoundingClientRect().bottom;
    if (below > 0) panel.scrollTop += below + 8;
  }, [newest]);

  if (layout.boxes.length === 0) return <p class="empty">No phase has started yet.</p>;
  // A run that recovered many times: its last attempts are drawn, the earlier ones behind a button.
  const hidden = earlier ? 0 : Math.max(0, layout.rows - ROWS_SHOWN);
  const boxes = hidden ? layout.boxes.filter((b) => b.row >= hidden) : layout.boxes;
  const wide = wideColumns(layout, (id) => model.childrenOf(id).length > 0);
  const template = wide.map((w) => (w ? "minmax(30rem, 2.5fr)" : "minmax(10rem, 1fr)")).join(" ");
  // What moves the stages: the layout, each stage's view and cards, what is highlighted; not each batch.
  const shape = `${hidden}:${boxes.map((b) => `${viewOf(b.id)}${Math.min(CARDS_SHOWN, model.childrenOf(b.id).length)}`).join()}:${props.highlighted.size}:${props.selected ?? ""}`;
  return (
    <>
      {hidden > 0 && (
        <button type="button" class="link" onClick={() => setEarlier(true)}>
          show {count(hidden)} earlier {hidden === 1 ? "attempt" : "attempts"}
        </button>
      )}
      <div class="pipeline" ref={grid} style={{ gridTemplateColumns: template }}>
        {boxes.map((box) => (
          <Stage box={{ ...box, row: box.row - hidden }} model={model} props={props} chosen={viewOf(box.id)} onView={(v) => void choose(box.id, v)} key={box.id} />
        ))}
        <Edges layout={layout} grid={grid} version={shape} />
      </div>
    </>
  );
}
