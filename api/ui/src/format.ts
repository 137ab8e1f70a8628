// Times, durations and numbers as the UI writes them. Every time the store writes is ISO 8601 UTC.

export function parseTime(iso: string): number {
  return Date.parse(iso);
}

export function duration(ms: number): string {
  if (!Number.isFinite(ms) || ms < 0) return "–";
  const s = Math.floor(ms / 1000);
  if (s < 60) return `${s}s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m}m ${String(s % 60).padStart(2, "0")}s`;
  const h = Math.floor(m / 60);
  if (h < 48) return `${h}h ${String(m % 60).padStart(2, "0")}m`;
  return `${Math.floor(h / 24)}d ${h % 24}h`;
}

export function ago(iso: string, now: number): string {
  const ms = now - parseTime(iso);
  return ms < 1500 ? "just now" : `${duration(ms)} ago`;
}

export function clock(iso: string): string {
  // HH:MM:SS.mmm of the instant, in UTC like the store: the same seconds whoever looks.
  return iso.length >= 23 ? iso.slice(11, 23) : iso;
}

export function count(n: number): string {
  return n.toLocaleString("en-US");
}

export function plural(n: number, one: string, many = `${one}s`): string {
  return `${count(n)} ${n === 1 ? one : many}`;
}

export function shortHash(value: string): string {
  return /^[0-9a-f]{12,}$/i.test(value) ? value.slice(0, 10) : value;
}
