"""The task list's cursor: opaque to clients, the (last_at, task_id) of the last task of a page."""

import base64
import binascii

import orjson


def encode_cursor(last_at: str, task_id: str) -> str:
    """URL-safe base64 of a JSON pair, without padding."""
    return base64.urlsafe_b64encode(orjson.dumps([last_at, task_id])).rstrip(b"=").decode()


def decode_cursor(cursor: str) -> tuple[str, str]:
    """The pair inside a cursor; ValueError if it is not one this API gave out."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        value = orjson.loads(raw)
    except (binascii.Error, ValueError, orjson.JSONDecodeError):
        raise ValueError("not a cursor this API gave out") from None
    if not (isinstance(value, list) and len(value) == 2 and all(isinstance(v, str) for v in value)):
        raise ValueError("not a cursor this API gave out")
    return value[0], value[1]
