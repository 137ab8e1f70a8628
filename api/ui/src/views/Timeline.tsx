// The timeline: the run's events in plain language, grouped by phase attempt, runs of heartbeats and
// progress folded, virtualized. It follows the newest event until the reader scrolls up, loads older
// events page by page as they scroll back, and searches the whole run on the server.
import type { RefObject } from "preact";
import { clock } from "../format";
import type { Row } from "../model/timeline";
import type { TaskEvent } from "../types";
import { VirtualList, type VirtualListHandle } from "./VirtualList";

export const ROW = 30;

interface Props {
  rows: Row[];
  selectedKey: string | null;
  highlightSeq: number | null;
  list: RefObject<VirtualListHandle | null>;
  onSelect: (key: string) => void;
  onOpen: (event: TaskEvent) => void;
  onExpand: (seq: number) => void; // a folded run's first seq: show its events
  onScroll: (state: { atTop: boolean; atBottom: boolean; first: number }) => void;
  label: string;
  height?: string;
}

export function Timeline({ rows, selectedKey, highlightSeq, list, onSelect, onOpen, onExpand, onScroll, label, height }: Props) {
  return (
    <VirtualList
      count={rows.length}
      rowHeight={ROW}
      height={height ?? "min(60vh, 36rem)"}
      label={label}
      handle={list}
      onScroll={onScroll}
      className="timeline"
      render={(i) => {
        const row = rows[i] as Row;
        if (row.kind === "group") {
          return (
            <div class="tl-group" role="listitem">
              {row.label}
            </div>
          );
        }
        const selected = row.key === selectedKey;
        if (row.kind === "fold") {
          const first = row.events[0] as TaskEvent;
          const last = row.events[row.events.length - 1] as TaskEvent;
          return (
            <div class={`tl-row tone-quiet fold${selected ? " selected" : ""}`} data-seq={first.seq} role="listitem">
              <span class="tl-seq">
                {first.seq}–{last.seq}
              </span>
              <span class="tl-time">{clock(last.created_at)}</span>
              <button type="button" class="tl-text link" onClick={() => { onSelect(row.key); onExpand(first.seq); }}>
                {row.line.text}
              </button>
            </div>
          );
        }
        const e = row.event;
        return (
          <div
            class={`tl-row tone-${row.line.tone}${selected ? " selected" : ""}${highlightSeq === e.seq ? " hl" : ""}`}
            data-seq={e.seq}
            role="listitem"
            aria-selected={selected}
          >
            <span class="tl-seq">{e.seq}</span>
            <span class="tl-time" title={e.created_at}>
              {clock(e.created_at)}
            </span>
            <button type="button" class="tl-text" onClick={() => onSelect(row.key)} onDblClick={() => onOpen(e)} title={`${e.event_type} · ${e.span_id}`}>
              {row.line.text}
            </button>
            <button type="button" class="tl-json link" aria-label={`raw JSON of event ${e.seq}`} onClick={() => onOpen(e)}>
              {"{}"}
            </button>
          </div>
        );
      }}
    />
  );
}
