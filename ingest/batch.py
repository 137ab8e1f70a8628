"""A claimed batch, decoded: the events to store, and the elements to set aside with their reasons."""

from collections.abc import Sequence

from taskevents.event import BadEvent, decode
from taskevents.ingest import deadletters
from taskevents.ingest.writer import CommitResult, DeadMark, Decoded


def decode_batch(items: Sequence[bytes], max_payload_bytes: int) -> tuple[list[Decoded], list[DeadMark]]:
    """Split raw elements into storable events and the marks of those that are not (with why)."""
    good: list[Decoded] = []
    dead: list[DeadMark] = []
    for index, raw in enumerate(items):
        try:
            event, payload_json = decode(raw, max_payload_bytes)
        except BadEvent as exc:
            dead.append(DeadMark(index, exc.code, exc.reason))
            continue
        good.append(Decoded(event, payload_json))
    return good, dead


def dead_letters(items: Sequence[bytes], result: CommitResult) -> list[bytes]:
    """The dead-letter entries of a batch, as its commit recorded them (the same bytes however late)."""
    return [
        deadletters.entry(
            items[mark.index],
            mark.code,
            mark.reason,
            result.batch_id,
            keep=result.keep,
            dead_at=result.dead_at,
        )
        for mark in result.dead
    ]
