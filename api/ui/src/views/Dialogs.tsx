// The dialogs of the task page: an event's raw JSON (with a copy button), and the keys.
import { useEffect, useRef, useState } from "preact/hooks";
import type { ComponentChildren } from "preact";
import type { TaskEvent } from "../types";

/** A modal dialog: the browser's own <dialog>, shown with showModal(), so the page behind is inert,
 * Tab stays inside, Esc closes it, and focus goes back where it was when it closes. */
function Dialog({ title, onClose, children }: { title: string; onClose: () => void; children: ComponentChildren }) {
  const ref = useRef<HTMLDialogElement>(null);
  useEffect(() => {
    const opener = document.activeElement as HTMLElement | null;
    ref.current?.showModal();
    return () => opener?.focus?.();
  }, []);
  return (
    <dialog
      class="dialog"
      role="dialog"
      aria-label={title}
      ref={ref}
      onCancel={(e) => {
        e.preventDefault(); // Esc: closed by the page's state, not behind its back
        onClose();
      }}
      onClick={(e) => {
        if (e.target === ref.current) onClose(); // a click on the backdrop
      }}
    >
      <header class="drawer-head">
        <h2>{title}</h2>
        <button type="button" class="link" onClick={onClose}>
          close (Esc)
        </button>
      </header>
      {children}
    </dialog>
  );
}

export function RawEvent({ event, onClose }: { event: TaskEvent; onClose: () => void }) {
  const json = JSON.stringify(event, null, 2);
  const [copied, setCopied] = useState(false);
  const copy = async () => {
    try {
      await navigator.clipboard.writeText(json);
    } catch {
      // no clipboard permission (an http page not on localhost): select the text instead
      const range = document.createRange();
      const pre = document.querySelector(".raw-json");
      if (pre) {
        range.selectNodeContents(pre);
        getSelection()?.removeAllRanges();
        getSelection()?.addRange(range);
      }
    }
    setCopied(true);
  };
  return (
    <Dialog title={`Event ${event.seq} · ${event.event_type}`} onClose={onClose}>
      <button type="button" class="copy" onClick={() => void copy()}>
        {copied ? "copied" : "copy JSON"}
      </button>
      <pre class="raw-json">{json}</pre>
    </Dialog>
  );
}

const KEYS: [string, string][] = [
  ["j / k", "next / previous event in the timeline"],
  ["Enter", "open the selected event's raw JSON (or unfold a folded line)"],
  ["Esc", "close a dialog or the evidence drawer"],
  ["e", "open or close the evidence drawer"],
  ["/", "search within the run"],
  ["g", "follow the newest event"],
  ["?", "this list"],
];

export function Keys({ onClose }: { onClose: () => void }) {
  return (
    <Dialog title="Keys" onClose={onClose}>
      <dl class="keys">
        {KEYS.map(([key, what]) => (
          <div key={key}>
            <dt>
              <kbd>{key}</kbd>
            </dt>
            <dd>{what}</dd>
          </div>
        ))}
      </dl>
    </Dialog>
  );
}
