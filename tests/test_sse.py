"""engine.sse: incremental SSE decoding and encoding."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from engine.sse import COMMENT_KEEPALIVE, SSEDecodeError, SSEDecoder, encode

FIXTURES = Path(__file__).parent / "fixtures"

ANTHROPIC = (
    b'event: message_start\ndata: {"type":"message_start"}\n\n'
    b'event: content_block_delta\ndata: {"type":"content_block_delta","delta":{"text":"h\xc3\xa9llo \xf0\x9f\x98\x80"}}\n\n'
    b"event: ping\ndata: {\"type\": \"ping\"}\n\n"
    b'event: message_stop\ndata: {"type":"message_stop"}\n\n'
)
ANTHROPIC_EVENTS = [
    ("message_start", '{"type":"message_start"}'),
    ("content_block_delta", '{"type":"content_block_delta","delta":{"text":"héllo 😀"}}'),
    ("ping", '{"type": "ping"}'),
    ("message_stop", '{"type":"message_stop"}'),
]


def decode_all(chunks, decoder=None):
    d = decoder or SSEDecoder()
    out = []
    for c in chunks:
        out.extend(d.feed(c))
    out.extend(d.flush())
    return out


def reference_parse(data: bytes):
    """A deliberately naive, line-by-line reading of the WHATWG algorithm."""
    text = data.decode("utf-8", "replace")
    if text.startswith("\ufeff"):
        text = text[1:]
    lines, cur, i = [], [], 0
    while i < len(text):
        ch = text[i]
        if ch == "\r":
            lines.append("".join(cur))
            cur = []
            if i + 1 < len(text) and text[i + 1] == "\n":
                i += 1
        elif ch == "\n":
            lines.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
        i += 1
    if cur:
        lines.append("".join(cur))
    lines.append("")  # flush() delivers a trailing event
    events, event, buf = [], None, None
    for line in lines:
        if line == "":
            if buf is not None:
                events.append((event, "\n".join(buf)))
            event, buf = None, None
        elif line.startswith(":"):
            continue
        else:
            name, colon, value = line.partition(":")
            if colon and value.startswith(" "):
                value = value[1:]
            if name == "data":
                buf = (buf or []) + [value]
            elif name == "event":
                event = value or None
    return events


# ----------------------------------------------------------------- framing
def test_typical_anthropic_stream_in_one_chunk():
    assert SSEDecoder().feed(ANTHROPIC) == ANTHROPIC_EVENTS


def test_openai_data_only_stream():
    stream = b'data: {"a":1}\n\ndata: {"b":2}\n\ndata: [DONE]\n\n'
    assert decode_all([stream]) == [(None, '{"a":1}'), (None, '{"b":2}'), (None, "[DONE]")]


def test_feed_returns_events_as_they_complete():
    d = SSEDecoder()
    assert d.feed(b"event: a\ndata: 1\n\nevent: b\nda") == [("a", "1")]
    assert d.feed(b"ta: 2\n") == []
    assert d.feed(b"\n") == [("b", "2")]
    assert d.flush() == []


def test_crlf_line_ends():
    assert decode_all([ANTHROPIC.replace(b"\n", b"\r\n")]) == ANTHROPIC_EVENTS


def test_cr_line_ends():
    assert decode_all([ANTHROPIC.replace(b"\n", b"\r")]) == ANTHROPIC_EVENTS


def test_mixed_line_ends():
    stream = b"event: a\r\ndata: 1\r\rdata: 2\n\r\nevent: c\rdata: 3\n\n"
    assert decode_all([stream]) == [("a", "1"), (None, "2"), ("c", "3")]


@pytest.mark.parametrize("line_end", [b"\n", b"\r\n", b"\r"])
def test_split_every_byte(line_end):
    stream = ANTHROPIC.replace(b"\n", line_end)
    chunks = [stream[i : i + 1] for i in range(len(stream))]
    assert decode_all(chunks) == ANTHROPIC_EVENTS


def test_split_every_byte_returns_each_event_on_its_last_byte():
    d = SSEDecoder()
    stream = b"event: a\ndata: 1\n\ndata: 2\n\n"
    got = [d.feed(stream[i : i + 1]) for i in range(len(stream))]
    assert got[17] == [("a", "1")]
    assert got[-1] == [(None, "2")]
    assert sum(map(len, got)) == 2


def test_split_between_cr_and_lf():
    d = SSEDecoder()
    assert d.feed(b"data: 1\r") == []
    assert d.feed(b"\n\r") == [(None, "1")]  # the \n belongs to \r\n; \r ends the event
    assert d.feed(b"\ndata: 2\r\n\r") == [(None, "2")]
    assert d.feed(b"\n") == []  # completes the last \r\n, nothing more
    assert d.flush() == []


def test_cr_alone_at_chunk_end_is_a_line_end():
    d = SSEDecoder()
    assert d.feed(b"data: 1\r") == []
    assert d.feed(b"\r") == [(None, "1")]  # \r \r = line end + blank line
    assert d.feed(b"data: 2\r\r") == [(None, "2")]


@pytest.mark.parametrize("cut", [1, 2, 3])
def test_split_inside_utf8_multibyte_char(cut):
    emoji = "😀".encode()  # 4 bytes
    stream = b"data: x" + emoji + b"y\n\n"
    at = len(b"data: x") + cut
    d = SSEDecoder()
    assert d.feed(stream[:at]) == []
    assert d.feed(stream[at:]) == [(None, "x😀y")]


def test_split_inside_utf8_in_event_name():
    stream = "event: é\ndata: 1\n\n".encode()
    d = SSEDecoder()
    assert d.feed(stream[:8]) == []  # cuts "é" (0xC3 0xA9) in half
    assert d.feed(stream[8:]) == [("é", "1")]


def test_comments_are_skipped():
    stream = b": keep-alive\n\n:another\nevent: a\n: in the middle\ndata: 1\n\n" + COMMENT_KEEPALIVE
    assert decode_all([stream]) == [("a", "1")]


def test_multiple_data_lines_are_joined_with_newline():
    stream = b"event: m\ndata: line1\ndata:line2\ndata: \ndata\ndata:  two spaces\n\n"
    assert decode_all([stream]) == [("m", "line1\nline2\n\n\n two spaces")]


def test_no_space_after_colon():
    assert decode_all([b"event:x\ndata:{}\n\n"]) == [("x", "{}")]


def test_only_one_space_is_removed():
    assert decode_all([b"event:  x\ndata:  {}\n\n"]) == [(" x", " {}")]


def test_event_without_event_line_has_no_name():
    assert decode_all([b"data: 1\n\nevent:\ndata: 2\n\n"]) == [(None, "1"), (None, "2")]


def test_event_without_data_is_not_dispatched():
    assert decode_all([b"event: ping\n\nevent: a\ndata: 1\n\n"]) == [("a", "1")]


def test_empty_data_line_dispatches_empty_string():
    assert decode_all([b"data:\n\n", b"data: \n\n"]) == [(None, ""), (None, "")]


def test_colon_in_value_kept():
    assert decode_all([b"event: a:b\ndata: {\"k\": \"v:w\"}\n\n"]) == [("a:b", '{"k": "v:w"}')]


def test_extra_blank_lines_between_events():
    stream = b"\n\n\ndata: 1\n\n\n\n\ndata: 2\n\n\n"
    assert decode_all([stream]) == [(None, "1"), (None, "2")]


def test_id_and_retry_recorded_not_returned():
    d = SSEDecoder()
    assert d.feed(b"id: 42\nretry: 1500\nevent: a\ndata: 1\n\nretry: x\n\n") == [("a", "1")]
    assert d.last_event_id == "42"
    assert d.retry == 1500


def test_unknown_fields_ignored():
    assert decode_all([b"foo: bar\ndata: 1\nbaz\n\n"]) == [(None, "1")]


def test_trailing_event_without_blank_line_is_delivered_by_flush():
    d = SSEDecoder()
    assert d.feed(b"event: a\ndata: 1\n\nevent: b\ndata: 2") == [("a", "1")]
    assert d.flush() == [("b", "2")]
    assert d.flush() == []


def test_trailing_event_with_single_newline_is_delivered_by_flush():
    d = SSEDecoder()
    assert d.feed(b"event: b\ndata: 2\n") == []
    assert d.flush() == [("b", "2")]


def test_flush_of_trailing_cr():
    d = SSEDecoder()
    assert d.feed(b"data: 2\r") == []
    assert d.flush() == [(None, "2")]


def test_utf8_bom_at_stream_start_dropped_even_when_split():
    d = SSEDecoder()
    assert d.feed(b"\xef") == []
    assert d.feed(b"\xbb") == []
    assert d.feed(b"\xbfdata: 1\n\n") == [(None, "1")]


def test_bom_only_at_start():
    # A BOM later in the stream is part of a field name, so that block is ignored.
    assert decode_all([b"\xef\xbb\xbfdata: 1\n\n\xef\xbb\xbfdata: 2\n\ndata: 3\n\n"]) == [(None, "1"), (None, "3")]


def test_invalid_utf8_replaced():
    assert decode_all([b"data: a\xffb\n\n"]) == [(None, "a\ufffdb")]


def test_accepts_bytearray_and_memoryview():
    d = SSEDecoder()
    assert d.feed(bytearray(b"data: 1\n\n")) == [(None, "1")]
    assert d.feed(memoryview(b"data: 2\n\n")) == [(None, "2")]


def test_empty_chunks_are_harmless():
    d = SSEDecoder()
    assert d.feed(b"") == []
    assert d.feed(b"data: 1\r") == []
    assert d.feed(b"") == []
    assert d.feed(b"\n\n") == [(None, "1")]


def test_decoder_reusable_after_flush():
    d = SSEDecoder()
    assert d.feed(b"data: 1") == []
    assert d.flush() == [(None, "1")]
    assert d.feed(b"data: 2\n\n") == [(None, "2")]


def test_max_event_bytes():
    d = SSEDecoder(max_event_bytes=16)
    assert d.feed(b"data: 0123456789") == []
    with pytest.raises(SSEDecodeError, match="exceeds 16 bytes"):
        d.feed(b"abcdef")
    # a big stream of small events is fine
    d = SSEDecoder(max_event_bytes=16)
    assert len(d.feed(b"data: 1\n\n" * 1000)) == 1000


def test_large_event_in_many_chunks():
    payload = "x" * 200_000
    stream = encode(payload, "big")
    chunks = [stream[i : i + 1000] for i in range(0, len(stream), 1000)]
    assert decode_all(chunks) == [("big", payload)]


# ------------------------------------------------------ cross-check on data
def _fixture_streams():
    return sorted(FIXTURES.glob("*.sse")) if FIXTURES.is_dir() else []


@pytest.mark.parametrize("path", _fixture_streams(), ids=lambda p: p.name)
def test_fixture_streams_any_split_any_line_end(path):
    raw = path.read_bytes()
    expected = reference_parse(raw)
    assert expected  # every fixture holds events
    assert decode_all([raw]) == expected
    rng = random.Random(path.name)
    for line_end in (b"\n", b"\r\n", b"\r"):
        stream = raw.replace(b"\r\n", b"\n").replace(b"\n", line_end)
        assert decode_all([stream]) == expected
        for _ in range(5):
            cuts = sorted(rng.sample(range(1, len(stream)), min(40, len(stream) - 1)))
            chunks = [stream[a:b] for a, b in zip([0, *cuts], [*cuts, len(stream)])]
            assert decode_all(chunks) == expected


@pytest.mark.parametrize("path", _fixture_streams(), ids=lambda p: p.name)
def test_fixture_streams_one_event_per_read(path):
    # as an upstream writing its events apart sends them: each read one whole event
    raw = path.read_bytes().replace(b"\r\n", b"\n")
    events = [e + b"\n\n" for e in raw.split(b"\n\n") if e]
    assert decode_all(events) == reference_parse(raw)
    assert decode_all([b"event: \ndata: x\n\n", b"data: \n\n", b"event: e\ndata: a\ndata: b\n\n"]) == \
        [(None, "x"), (None, ""), ("e", "a\nb")]


def test_random_streams_match_reference():
    rng = random.Random(1234)
    pieces = [b"event: e\n", b"data: d\n", b"data:x\n", b": c\n", b"\n", b"\r\n", b"\r", b"id: 1\n",
              "data: é😀\n".encode(), b"event:\n", b"data", b"retry: 5\n", b"\n\n", b"data: a:b\r"]
    for _ in range(300):
        stream = b"".join(rng.choice(pieces) for _ in range(rng.randint(0, 30)))
        expected = reference_parse(stream)
        assert decode_all([stream]) == expected, stream
        cuts = sorted(set(rng.randint(0, len(stream)) for _ in range(rng.randint(0, 10))))
        chunks = [stream[a:b] for a, b in zip([0, *cuts], [*cuts, len(stream)])]
        assert decode_all(chunks) == expected, (stream, cuts)


# ------------------------------------------------------------------ encode
def test_encode_with_event():
    assert encode('{"type":"ping"}', "ping") == b'event: ping\ndata: {"type":"ping"}\n\n'


def test_encode_without_event():
    assert encode("[DONE]") == b"data: [DONE]\n\n"


def test_encode_multiline_data():
    assert encode("a\nb\r\nc\rd", "m") == b"event: m\ndata: a\ndata: b\ndata: c\ndata: d\n\n"


def test_encode_empty_and_trailing_newline():
    assert encode("") == b"data: \n\n"
    assert encode("a\n") == b"data: a\ndata: \n\n"


def test_encode_utf8():
    assert encode("é😀", "é") == "event: é\ndata: é😀\n\n".encode()


def test_encode_rejects_newline_in_event_name():
    with pytest.raises(ValueError):
        encode("x", "a\nb")


def test_keepalive_constant():
    assert COMMENT_KEEPALIVE == b": keep-alive\n\n"
    assert decode_all([COMMENT_KEEPALIVE]) == []


@pytest.mark.parametrize(
    "data,event",
    [("{}", None), ("{}", "message_start"), ("a\nb\n\nc", "x"), ("", None), ("\n", "e"), (" lead", None),
     ("é😀:\t", "ü"), ("data: nested", None)],
)
def test_encode_decode_round_trip(data, event):
    encoded = encode(data, event)
    assert decode_all([encoded]) == [(event, data)]
    assert decode_all([encoded[i : i + 1] for i in range(len(encoded))]) == [(event, data)]


def test_streams_of_whole_blocks_match_reference():
    """Chunks made only of `event: X\\ndata: Y\\n\\n` (or `data: Y\\n\\n`) blocks take one findall;
    one odd block anywhere (a comment, an id, two data lines, an empty name, no space after the
    colon) must send the chunk down the line-by-line path, with the same events either way."""
    rng = random.Random(99)
    named = [b"event: content_block_delta\ndata: {\"t\":\"x\"}\n\n", "event: e\ndata: é😀 a:b\n\n".encode(),
             b"event: e\ndata: \n\n", b"event: e\ndata:  two spaces\n\n"]
    plain = [b"data: {\"a\":1}\n\n", b"data: [DONE]\n\n", b"data: \n\n"]
    odd = [b": keep-alive\n\n", b"id: 7\ndata: x\n\n", b"event: e\ndata: a\ndata: b\n\n", b"event:\ndata: x\n\n",
           b"data:x\n\n", b"event: \ndata: x\n\n", b"event: e\nevent: f\ndata: x\n\n", b"retry: 10\n\n", b"event: e\n\n"]
    for _ in range(400):
        kind = rng.choice([named, plain])
        blocks = [rng.choice(kind) for _ in range(rng.randint(1, 12))]
        if rng.random() < 0.4:
            blocks.insert(rng.randint(0, len(blocks)), rng.choice(odd))
        stream = b"".join(blocks)
        assert SSEDecoder().feed(stream) == reference_parse(stream), stream
