"""Every input the live endpoints read, fuzzed beyond what the OpenAPI schema describes, over real HTTP.

SSE: the `Last-Event-ID` header and `since_seq` (thousands of digits, signs, spaces, unicode digits,
latin-1 bytes), alone and together. WebSocket: the `since_seq` query, and the first frame: binary,
oversized, empty, JSON that is not an object, `since_seq` as a float, a bool, a 23-digit or negative
number, a frame past the server's size limit, a close before any hello. Each answers what the README
documents (200 or 400 in the error shape; close 1000, 4400 or 1009), never a 500 or close 1011.
"""

import socket
from collections import Counter
from urllib.parse import quote

import httpx
import hypothesis
import orjson
import pytest
from hypothesis import strategies as st
from pydantic import TypeAdapter, ValidationError
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from taskevents.api.stream import HELLO_MAX_BYTES, WS_MAX_SIZE
from taskevents.settings import Settings
from tests.stream_helpers import Live, live

pytestmark = [pytest.mark.redis_server, pytest.mark.slow]

MAX_SEQ = 2**63 - 1
LATEST = 4  # the ended task "in" has seqs 1..4: a valid resume point replays what is left, then ends

# Text a header can carry (latin-1 without CR, LF and NUL) and the shapes of number people get wrong.
HEADER_TEXT = st.text(
    alphabet=st.characters(min_codepoint=0x20, max_codepoint=0xFF, blacklist_characters="\x7f"), max_size=60
)
NUMBERS = st.one_of(
    st.integers(min_value=-(10**30), max_value=10**30).map(str),
    st.integers(min_value=1, max_value=6000).map(lambda n: "9" * n),  # past int()'s 4,300 digits too
    st.integers(min_value=1, max_value=6000).map(lambda n: "0" * n + "3"),
    st.sampled_from(
        ["", " ", "+3", "-0", "3.0", "1e3", "٣", "²", "0x10", " 3 ", "3\t", str(MAX_SEQ), str(MAX_SEQ + 1)]
    ),
)
RESUME = st.one_of(NUMBERS, HEADER_TEXT)


def query_valid(text: str | None) -> bool:
    """A `since_seq` query parameter: an integer as FastAPI (pydantic, lax mode) reads one, in range."""
    if text is None:
        return True
    try:
        return 0 <= TypeAdapter(int).validate_python(text) <= MAX_SEQ
    except ValidationError:
        return False


def valid(text: str | None) -> bool:
    """What the README promises a resume point is: decimal ASCII digits (surrounding spaces allowed)."""
    if text is None:
        return True
    digits = text.strip()
    significant = digits.lstrip("0") or "0"
    return digits.isascii() and digits.isdigit() and len(significant) <= 19 and int(significant) <= MAX_SEQ


@pytest.fixture(scope="module")
def ended(redis_server: object, tmp_path_factory: pytest.TempPathFactory) -> object:
    from taskevents.ingest.localredis import RedisServer

    assert isinstance(redis_server, RedisServer)
    settings = Settings(
        redis_url=redis_server.url,
        db=tmp_path_factory.mktemp("fuzz") / "events.db",
        queue="streamfuzz:events",
    )
    with live(settings) as lv:
        lv.emit("in", LATEST - 1)
        lv.exit("in")
        lv.flush()
        lv.wait_stored("in", LATEST)
        yield lv


def raw_get(lv: Live, target: bytes, headers: dict[bytes, bytes]) -> tuple[int, bytes]:
    """One GET written byte by byte on a socket (no client library's rules on header values), read
    until the server closes: (status, body)."""
    lines = [b"GET " + target + b" HTTP/1.1", b"Host: 127.0.0.1", b"Connection: close"]
    lines += [name + b": " + value for name, value in headers.items()]
    with socket.create_connection(("127.0.0.1", lv.api.port), timeout=10) as sock:
        sock.sendall(b"\r\n".join(lines) + b"\r\n\r\n")
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), body


def test_sse_resume_points_beyond_the_schema_answer_200_or_a_400_never_a_500(ended: Live) -> None:
    statuses: Counter[int] = Counter()

    @hypothesis.given(header=st.none() | RESUME, query=st.none() | RESUME)
    @hypothesis.settings(max_examples=150, deadline=None, database=None, derandomize=True)
    def resume(header: str | None, query: str | None) -> None:
        # Bytes as a client might send them: latin-1 where it can, else UTF-8 (the server reads latin-1).
        value = None if header is None else header.encode("latin-1", errors="ignore") or header.encode()
        target = b"/sse/tasks/in/events" + (b"" if query is None else b"?since_seq=" + quote(query).encode())
        status, body = raw_get(ended, target, {} if value is None else {b"Last-Event-ID": value})
        assert status != 500
        # Each resume point sent must be valid (the query by FastAPI's integer rules, as on every
        # endpoint; the header as the README says); the header wins when it is not blank. The HTTP
        # server drops a header value's surrounding spaces, as the standard says.
        sent = None if value is None else value.decode("latin-1").strip(" \t")
        ok = query_valid(query) and (sent is None or not sent or valid(sent))
        if ok:
            assert status == 200, (header, query, body[:200])
            assert b"event: end" in body  # the ended task replays what follows and ends
        else:
            assert status == 400, (header, query, status, body[:200])
            error = orjson.loads(body)
            assert error["code"] == "bad_parameter" and set(error) == {"detail", "code"}
            assert len(body) < 600  # the detail quotes a bounded part of the input
        statuses[status] += 1

    resume()
    assert statuses[200] > 0 and statuses[400] > 0, statuses


def _ws_url(lv: Live, query: str | None = None) -> str:
    base = lv.url.replace("http://", "ws://") + "/ws/tasks/in/events"
    return base if query is None else f"{base}?since_seq={quote(query, safe='')}"


def _close_code(url: str, *frames: str | bytes) -> int | None:
    with connect(url, max_size=None, open_timeout=10) as ws:
        try:
            for frame in frames:
                ws.send(frame)
            while True:
                ws.recv(timeout=10)
        except ConnectionClosed:
            pass
    return ws.close_code


HELLOS = st.one_of(
    st.binary(max_size=64).map(lambda b: ("binary", b)),
    st.text(max_size=80).map(lambda t: ("text", t)),
    st.builds(
        lambda v: (
            "text",
            # Integers written out whole (orjson's are 64-bit at most); the rest as JSON.
            f'{{"since_seq": {v if type(v) is int else orjson.dumps(v).decode()}}}',
        ),
        st.one_of(
            st.integers(min_value=-(2**64), max_value=2**64 - 1),
            st.floats(allow_nan=False, allow_infinity=False),
            st.booleans(),
            st.none(),
            st.text(max_size=5),
            st.lists(st.integers(min_value=0, max_value=9), max_size=2),
        ),
    ),
    st.sampled_from(
        [
            ("text", '{"since_seq": 99999999999999999999999}'),  # orjson reads it as a float
            ("text", '{"since_seq": 3, "since_seq": -1}'),
            ("text", "[3]"),
            ("text", "3"),
            ("text", ""),
            ("text", '{"since_seq": 2}' + " " * HELLO_MAX_BYTES),
            ("binary", b'{"since_seq": 2}'),
        ]
    ),
)


def _hello_valid(kind: str, frame: str | bytes) -> bool:
    if kind != "text" or len(frame) > HELLO_MAX_BYTES:
        return False
    try:
        value = orjson.loads(frame)
    except orjson.JSONDecodeError:
        return False
    seq = value.get("since_seq") if isinstance(value, dict) else None
    return isinstance(seq, int) and not isinstance(seq, bool) and 0 <= seq <= MAX_SEQ


def test_websocket_first_frames_and_queries_close_with_the_documented_codes(ended: Live) -> None:
    codes: Counter[int] = Counter()

    @hypothesis.given(hello=HELLOS)
    @hypothesis.settings(max_examples=120, deadline=None, database=None, derandomize=True)
    def first_frame(hello: tuple[str, str | bytes]) -> None:
        kind, frame = hello
        code = _close_code(_ws_url(ended), frame)
        assert code == (1000 if _hello_valid(kind, frame) else 4400), (hello, code)
        codes[code or 0] += 1

    @hypothesis.given(query=RESUME)
    @hypothesis.settings(max_examples=100, deadline=None, database=None, derandomize=True)
    def query(query: str) -> None:
        code = _close_code(_ws_url(ended, query))
        assert code == (1000 if valid(query) else 4400), (query, code)
        codes[code or 0] += 1

    first_frame()
    query()
    assert codes[1000] > 0 and codes[4400] > 0 and set(codes) <= {1000, 4400}, codes


def test_websocket_frames_past_the_limit_and_early_closes_are_not_errors(ended: Live) -> None:
    assert _close_code(_ws_url(ended), "x" * (WS_MAX_SIZE + 1)) == 1009  # message too big
    assert _close_code(_ws_url(ended), b"\x00" * (WS_MAX_SIZE + 1)) == 1009
    with connect(_ws_url(ended)) as ws:
        ws.close()  # before any hello: the server just lets go
    # Extra frames after a valid hello, of either type, are read and ignored.
    assert _close_code(_ws_url(ended), '{"since_seq": 1}', b"\x01\x02", "more") == 1000
    # The API is still well: every stream above ended cleanly.
    assert httpx.get(f"{ended.url}/api/tasks/in/events", timeout=10).json()["total"] == LATEST


def test_a_header_of_a_few_thousand_digits_was_a_500(ended: Live) -> None:
    """The regression the issue reported, kept by name."""
    r = httpx.get(f"{ended.url}/sse/tasks/in/events", headers={"Last-Event-ID": "9" * 5000}, timeout=10)
    assert r.status_code == 400 and r.json()["code"] == "bad_parameter"
    assert len(r.content) < 600
