"""engine/server/translate.py's reading and writing helpers: the request body reader (load_json:
the same answers as json.loads on bytes, in every encoding json.loads detects, with the
gateway's own refusals on top) and where a stream's first read is split (early_cut)."""
from __future__ import annotations

import json

import pytest

from engine.server.api_errors import ApiError
from engine.server.translate import _encoding, load_json

ENCODINGS = ["utf-8", "utf-8-sig", "utf-16", "utf-16-le", "utf-16-be", "utf-32", "utf-32-le", "utf-32-be"]
TEXTS = ['{"a": "\u00e9\u4e2d"}', "{}", '{"k": 1.5, "n": [1, {"x": null}]}', ' {"a":1}', '{"b":"\U0001f600"}']


@pytest.mark.parametrize("encoding", ENCODINGS)
@pytest.mark.parametrize("text", TEXTS)
def test_every_encoding_json_detects_reads_the_same(encoding, text):
    raw = text.encode(encoding)
    assert _encoding(raw) == json.detect_encoding(raw)
    assert load_json(raw) == json.loads(raw)


@pytest.mark.parametrize("raw", [b"", b"{", b"\xff\xfe{", b"{\x00}", b"[1]", b'"x"', b'{"a": NaN}',
                                 b'{"a": 1e400}', b"\xc3\x28", b'{"a": "\\ud800"}', b'{"a": Infinity}',
                                 b'{"a": 1} x', b"[" * 2000 + b"]" * 2000])
def test_what_json_refuses_or_is_not_an_object_is_a_400(raw):
    with pytest.raises(ApiError) as e:
        load_json(raw)
    assert e.value.status == 400


def test_early_cut_splits_after_the_first_events_only_when_more_follow():
    from engine.server.translate import early_cut
    events = [f"event: e{i}\ndata: {{\"i\":{i}}}\n\n".encode() for i in range(12)]
    burst = b"".join(events)
    cut, seen = early_cut(burst, 8)
    assert (burst[:cut], burst[cut:], seen) == (b"".join(events[:8]), b"".join(events[8:]), 8)
    assert early_cut(b"".join(events[:8]), 8) == (0, 8)  # nothing after the eighth: one write is enough
    assert early_cut(b"".join(events[:5]) + b"event: partial", 8) == (0, 5)
    assert early_cut(burst, 2) == (len(events[0]) + len(events[1]), 2)
    assert early_cut(burst.replace(b"\n", b"\r\n"), 8) == (0, 0)  # CRLF streams are not split (no harm)
