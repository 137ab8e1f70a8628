// Small pieces every page uses.
import { useEffect, useState } from "preact/hooks";
import type { LiveState } from "../live";
import type { SpanState, Status } from "../types";

export function useNow(everyMs: number): number {
  const [now, setNow] = useState(Date.now());
  useEffect(() => {
    const timer = window.setInterval(() => setNow(Date.now()), everyMs);
    return () => window.clearInterval(timer);
  }, [everyMs]);
  return now;
}

export function StatusBadge({ status }: { status: Status }) {
  return <span class={`badge status-${status}`}>{status}</span>;
}

const STATE_WORDS: Record<SpanState, string> = { open: "running", closed: "done", failed: "failed" };

export function StateBadge({ state }: { state: SpanState }) {
  return <span class={`badge state-${state}`}>{STATE_WORDS[state]}</span>;
}

const LIVE_WORDS: Record<LiveState, string> = {
  connecting: "connecting…",
  live: "live",
  reconnecting: "reconnecting…",
  ended: "ended",
};

export function LiveBadge({ state }: { state: LiveState }) {
  return (
    <span class={`live live-${state}`} data-live={state} role="status" aria-live="polite">
      <span class="dot" aria-hidden="true" />
      {LIVE_WORDS[state]}
    </span>
  );
}
