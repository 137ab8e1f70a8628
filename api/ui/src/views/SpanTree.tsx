// The span tree: every span under its parent, collapsible, with expand and collapse all; flattened
// into the rows that are open and virtualized, so 5,000 spans (or 50,000) scroll as fast as 50.
import { useEffect, useMemo, useRef, useState } from "preact/hooks";
import { count } from "../format";
import type { TaskModel } from "../model/task";
import type { Span } from "../types";
import { StateBadge } from "./common";
import { VirtualList, type VirtualListHandle } from "./VirtualList";

const ROW = 28;

interface Row {
  span: Span;
  depth: number;
  children: number;
}

export function spanLabel(span: Span, attempt: (id: string) => number): string {
  if (span.work_item_id) return span.work_type ? `${span.work_item_id} (${span.work_type})` : span.work_item_id;
  if (span.event_type === "phase_enter") {
    const n = attempt(span.span_id);
    return `${span.phase ?? "phase"}${n > 1 ? ` · attempt ${n}` : ""}`;
  }
  if (span.event_type === "runner_spawn") return "runner";
  return span.span_id;
}

/** The rows that are showing: depth first, children in the order they started; linear. */
export function flatten(model: TaskModel, open: ReadonlySet<string>, all: boolean): Row[] {
  const rows: Row[] = [];
  const stack: { span: Span; depth: number }[] = model.childrenOf(null).reverse().map((span) => ({ span, depth: 0 }));
  while (stack.length > 0) {
    const { span, depth } = stack.pop() as { span: Span; depth: number };
    const kids = model.childrenOf(span.span_id);
    rows.push({ span, depth, children: kids.length });
    if (kids.length > 0 && (all || open.has(span.span_id))) {
      for (let i = kids.length - 1; i >= 0; i -= 1) stack.push({ span: kids[i] as Span, depth: depth + 1 });
    }
  }
  return rows;
}

interface Props {
  model: TaskModel;
  version: number;
  attempt: (id: string) => number;
  selected: string | null;
  highlighted: ReadonlySet<string>;
  onSelect: (id: string) => void;
  reveal: string | null; // a span to show (a deep link): its ancestors open
}

export function SpanTree({ model, version, attempt, selected, highlighted, onSelect, reveal }: Props) {
  // Open by default: the roots (their children, the stages, show); stages and work items closed.
  const [open, setOpen] = useState<ReadonlySet<string>>(() => new Set(model.childrenOf(null).map((s) => s.span_id)));
  const [all, setAll] = useState(false);
  // A span to show (a deep link, a selection): its ancestors are opened once, and can be closed again.
  useEffect(() => {
    if (reveal === null) return;
    const path: string[] = [];
    let span = model.spans.get(reveal);
    while (span?.parent_span_id) {
      path.push(span.parent_span_id);
      span = model.spans.get(span.parent_span_id);
    }
    if (path.length > 0) setOpen((o) => (path.every((id) => o.has(id)) ? o : new Set([...o, ...path])));
  }, [reveal, model.allSpans]);
  const rows = useMemo(() => flatten(model, open, all), [version, open, all]);
  const list = useRef<VirtualListHandle | null>(null);
  const shown = useRef<string | null>(null); // the revealed span scrolled to, once
  useEffect(() => {
    if (reveal === null || shown.current === reveal) return;
    const i = rows.findIndex((r) => r.span.span_id === reveal);
    if (i >= 0) {
      list.current?.scrollToIndex(i, "center");
      shown.current = reveal;
    }
  }, [rows, reveal]);

  const toggle = (id: string) => {
    // Under "expand all" every span with children is open: start from that, then close this one.
    const next = new Set(all ? [...model.spans.values()].filter((s) => model.childrenOf(s.span_id).length > 0).map((s) => s.span_id) : open);
    if (next.has(id)) next.delete(id);
    else next.add(id);
    setAll(false);
    setOpen(next);
  };

  return (
    <div class="tree">
      <div class="tree-bar">
        <span class="muted">{count(model.spans.size)} spans{model.allSpans ? "" : " (loading all…)"}</span>
        <button type="button" class="link" onClick={() => setAll(true)}>
          expand all
        </button>
        <button
          type="button"
          class="link"
          onClick={() => {
            setAll(false);
            setOpen(new Set());
          }}
        >
          collapse all
        </button>
      </div>
      <VirtualList
        count={rows.length}
        rowHeight={ROW}
        height="22rem"
        label="span tree"
        handle={list}
        render={(i) => {
          const row = rows[i] as Row;
          const id = row.span.span_id;
          const isOpen = all || open.has(id);
          return (
            <div
              class={`tree-row state-${row.span.state}${selected === id ? " selected" : ""}${highlighted.has(id) ? " hl" : ""}`}
              data-span-id={id}
              data-state={row.span.state}
              style={{ paddingLeft: `${0.5 + row.depth * 1.1}rem` }}
              role="listitem"
            >
              {row.children > 0 ? (
                <button type="button" class="toggle" aria-expanded={isOpen} aria-label={isOpen ? "collapse" : "expand"} onClick={() => toggle(id)}>
                  {isOpen ? "▾" : "▸"}
                </button>
              ) : (
                <span class="toggle" aria-hidden="true" />
              )}
              <button type="button" class="tree-label" onClick={() => onSelect(id)} title={id}>
                {spanLabel(row.span, attempt)}
              </button>
              <StateBadge state={row.span.state} />
              <span class="muted tree-count">
                {row.children > 0 ? `${count(row.children)} ${row.children === 1 ? "child" : "children"} · ` : ""}
                {count(row.span.event_count)} events
              </span>
            </div>
          );
        }}
      />
    </div>
  );
}
