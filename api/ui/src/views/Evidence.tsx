// The evidence drawer: each checkpoint with its type, its evidence (artifacts, commit, the work items it
// covers, which highlight their cards, and the evidence linked to it), and its verdict.
import { Fragment } from "preact";
import { useState } from "preact/hooks";
import { shortHash } from "../format";
import type { Checkpoint, TaskModel } from "../model/task";

interface Props {
  model: TaskModel;
  version: number;
  onClose: () => void;
  onHighlight: (items: string[]) => void;
  onJump: (seq: number) => void;
}

function Refs({ cp, onHighlight }: { cp: Checkpoint; onHighlight: (items: string[]) => void }) {
  return (
    <dl class="refs">
      {cp.artifacts.length > 0 && (
        <>
          <dt>artifacts</dt>
          <dd>
            {cp.artifacts.map((a) => (
              <code class="chip" key={a}>
                {a}
              </code>
            ))}
          </dd>
        </>
      )}
      {cp.commitHash && (
        <>
          <dt>commit</dt>
          <dd>
            <code title={cp.commitHash}>{shortHash(cp.commitHash)}</code>
          </dd>
        </>
      )}
      {cp.workItems.length > 0 && (
        <>
          <dt>work items</dt>
          <dd>
            {cp.workItems.map((w) => (
              <button type="button" class="chip link" onClick={() => onHighlight([w])} key={w}>
                {w}
              </button>
            ))}
            {cp.workItems.length > 1 && (
              <button type="button" class="link" onClick={() => onHighlight(cp.workItems)}>
                highlight all
              </button>
            )}
          </dd>
        </>
      )}
      {cp.linked.length > 0 && (
        <>
          <dt>linked evidence</dt>
          <dd>
            {cp.linked.map((a) => (
              <code class="chip" key={a}>
                {a}
              </code>
            ))}
          </dd>
        </>
      )}
      {cp.otherRefs.map(([key, value]) => (
        <Fragment key={key}>
          <dt>{key}</dt>
          <dd>
            <code>{value}</code>
          </dd>
        </Fragment>
      ))}
    </dl>
  );
}

const SHOWN = 50; // checkpoints the drawer lists at first, newest first; more on demand

export function EvidenceDrawer({ model, onClose, onHighlight, onJump }: Props) {
  const [limit, setLimit] = useState(SHOWN);
  const total = model.checkpointOrder.length;
  const checkpoints = model.checkpointOrder
    .slice(Math.max(0, total - limit))
    .reverse()
    .map((id) => model.checkpoints.get(id) as Checkpoint);
  return (
    <aside class="drawer" aria-label="Evidence">
      <header class="drawer-head">
        <h2>Evidence · {total} checkpoints</h2>
        <button type="button" class="link" onClick={onClose} aria-label="close the evidence drawer">
          close (Esc)
        </button>
      </header>
      {checkpoints.length === 0 && <p class="empty">No checkpoint yet.</p>}
      <ol class="checkpoints">
        {checkpoints.map((cp) => {
          const verdictWhy = cp.verdictEvent ? (cp.verdictEvent.payload["error_code"] ?? cp.verdictEvent.payload["explanation"]) : null;
          return (
            <li class={`checkpoint verdict-${cp.verdict}`} data-checkpoint-id={cp.id} data-verdict={cp.verdict} key={cp.id}>
              <div class="cp-head">
                <code class="cp-id">{cp.id}</code>
                <span class={`badge verdict-${cp.verdict}`}>{cp.verdict}</span>
              </div>
              <p class="muted">
                {cp.type ?? "checkpoint"}
                {cp.phase ? ` · ${cp.phase}` : ""}
                {cp.commit && (
                  <>
                    {" · "}
                    <button type="button" class="link" onClick={() => onJump(cp.commit?.seq ?? 0)}>
                      seq {cp.commit.seq}
                    </button>
                  </>
                )}
              </p>
              {typeof verdictWhy === "string" && <p class={cp.verdict === "invalid" ? "fail" : ""}>{verdictWhy}</p>}
              <Refs cp={cp} onHighlight={onHighlight} />
            </li>
          );
        })}
      </ol>
      {total > checkpoints.length && (
        <button type="button" class="more" onClick={() => setLimit(limit + SHOWN)}>
          {Math.min(SHOWN, total - checkpoints.length)} older checkpoints
        </button>
      )}
    </aside>
  );
}
