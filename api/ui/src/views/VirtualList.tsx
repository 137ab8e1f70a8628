// A list of fixed-height rows of which only those in view (and a few around) are in the page: a run of
// 100,000 events holds a few dozen rows of DOM. The browser's own find cannot search what is not in
// the page, so the timeline's search asks the server instead (api.find).
import type { ComponentChildren, RefObject } from "preact";
import { useEffect, useLayoutEffect, useRef, useState } from "preact/hooks";

export interface VirtualListHandle {
  scrollToIndex(index: number, align?: "start" | "center" | "end"): void;
  atBottom(): boolean;
  canScroll(): boolean; // more rows than fit: a scroll event can happen
}

interface Props {
  count: number;
  rowHeight: number;
  height: number | string; // CSS height of the scrolling box
  render: (index: number) => ComponentChildren;
  overscan?: number;
  handle?: RefObject<VirtualListHandle | null>;
  onScroll?: (state: { atTop: boolean; atBottom: boolean; first: number }) => void;
  label: string; // for assistive technology: what the list is
  className?: string;
}

export function VirtualList({ count, rowHeight, height, render, overscan = 8, handle, onScroll, label, className }: Props) {
  const box = useRef<HTMLDivElement>(null);
  const [top, setTop] = useState(0);
  const [viewport, setViewport] = useState(600);

  useLayoutEffect(() => {
    const el = box.current;
    if (el === null) return;
    setViewport(el.clientHeight || 600);
    const observer = new ResizeObserver(() => setViewport(el.clientHeight || 600));
    observer.observe(el);
    return () => observer.disconnect();
  }, []);

  useEffect(() => {
    if (handle === undefined) return;
    handle.current = {
      scrollToIndex(index, align = "center") {
        const el = box.current;
        if (el === null) return;
        const y = index * rowHeight;
        if (align === "start") el.scrollTop = y;
        else if (align === "end") el.scrollTop = y - el.clientHeight + rowHeight;
        else el.scrollTop = y - el.clientHeight / 2 + rowHeight / 2;
      },
      atBottom() {
        const el = box.current;
        return el === null || el.scrollHeight - el.scrollTop - el.clientHeight < rowHeight * 2;
      },
      canScroll() {
        const el = box.current;
        return el !== null && count * rowHeight > el.clientHeight + 1;
      },
    };
  });

  const first = Math.max(0, Math.floor(top / rowHeight) - overscan);
  const last = Math.min(count, Math.ceil((top + viewport) / rowHeight) + overscan);
  const rows: ComponentChildren[] = [];
  for (let i = first; i < last; i += 1) {
    rows.push(
      <div class="vrow" style={{ top: `${i * rowHeight}px`, height: `${rowHeight}px` }} key={i}>
        {render(i)}
      </div>,
    );
  }
  return (
    <div
      ref={box}
      class={`vlist ${className ?? ""}`}
      style={{ height: typeof height === "number" ? `${height}px` : height }}
      role="list"
      aria-label={label}
      onScroll={(e) => {
        const el = e.currentTarget as HTMLDivElement;
        setTop(el.scrollTop);
        onScroll?.({
          atTop: el.scrollTop < rowHeight * 2,
          atBottom: el.scrollHeight - el.scrollTop - el.clientHeight < rowHeight * 2,
          first: Math.floor(el.scrollTop / rowHeight),
        });
      }}
    >
      <div class="vspace" style={{ height: `${count * rowHeight}px` }}>
        {rows}
      </div>
    </div>
  );
}
