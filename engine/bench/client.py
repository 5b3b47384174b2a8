"""The asyncio load generator: raw HTTP/1.1 over keep-alive connections, closed loop.

Written on asyncio.Protocol rather than an HTTP client library so that it costs a few µs per read:
the load generator must not be what limits a run (the runner prints its ceiling, measured straight
at the fake upstream, to show it is not).

Per request it records the time to the response head, the time to first token (until the
``T0K3N`` marker the fake upstream puts in its first delta arrives in the body, whatever the
framing), and the time to the end of the body. A stream counts as complete when it ends with
``[DONE]`` (OpenAI Chat), ``message_stop`` (Anthropic) or ``response.completed`` (OpenAI
Responses) and no error payload; a non-stream request
when its status is 200.

Modes (``python -m engine.bench.client --help``):
  duration  N connections send requests back to back for D seconds (throughput, latency)
  once      N connections each send one request, opened in batches, all held open at once
            (the 1,000-open-streams test); prints how many were open at the same time
"""
from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import sys
import time
from urllib.parse import urlsplit

from .upstream import MARKER, raise_nofile

_MARK = MARKER.encode()
_ML = len(_MARK)
_now = time.perf_counter


class Result:
    __slots__ = ("status", "sent", "head", "first", "end", "ok", "error", "nbytes")

    def __init__(self, sent: float):
        self.sent = sent
        self.status = 0
        self.head = self.first = self.end = None
        self.ok = False
        self.error = None
        self.nbytes = 0


class Conn(asyncio.Protocol):
    """One keep-alive connection; one request at a time."""

    def __init__(self):
        self.transport = None
        self.lost = asyncio.get_running_loop().create_future()
        self.waiter: asyncio.Future | None = None
        self.res: Result | None = None
        self.closing = False
        self.state = 0
        self.length = -1
        self.chunked = False

    # -- asyncio.Protocol
    def connection_made(self, transport):
        self.transport = transport

    def connection_lost(self, exc):
        self.closing = True
        if not self.lost.done():
            self.lost.set_result(None)
        w = self.waiter
        if w is not None and not w.done():
            if self.res is not None and self.state == 2 and self.length < 0 and not self.chunked:
                self._finish()  # body delimited by the close
            else:
                self.res.error = "connection closed mid-response" if self.state else "connection closed"
                w.set_result(self.res)

    def send(self, request: bytes) -> asyncio.Future:
        self.res = Result(_now())
        self.state = 0          # 0 head, 1 chunked body, 2 length body
        self.buf = b""
        self.need = 0           # bytes left in the current chunk (+2 for its CRLF)
        self.length = -1
        self.chunked = False
        self.found = False
        self.win = b""
        self.tail = b""
        self.completed = False
        self.waiter = asyncio.get_running_loop().create_future()
        self.transport.write(request)
        return self.waiter

    def data_received(self, data: bytes):
        res = self.res
        if res is None or self.waiter is None or self.waiter.done():
            return
        res.nbytes += len(data)
        if self.state == 0:
            buf = self.buf + data if self.buf else data
            he = buf.find(b"\r\n\r\n")
            if he < 0:
                self.buf = buf
                return
            self.buf = b""
            res.head = _now()
            head = buf[:he]
            try:
                res.status = int(head[9:12])
            except ValueError:
                res.status = -1
            low = head.lower()
            if b"\r\nconnection: close" in low:
                self.closing = True
            i = low.find(b"\r\ncontent-length:")
            if i >= 0:
                j = low.find(b"\r\n", i + 2)
                self.length = int(low[i + 17: j if j >= 0 else len(low)])
                self.state = 2
            elif b"\r\ntransfer-encoding: chunked" in low:
                self.chunked = True
                self.state = 1
            else:
                self.state = 2  # until the connection closes
            data = buf[he + 4:]
            if self.length == 0:
                self._finish()
                return
            if not data:
                return
        if self.state == 2:
            self._payload(data)
            if self.length >= 0:
                self.length -= len(data)
                if self.length <= 0:
                    self._finish()
            return
        # chunked
        buf = self.buf + data if self.buf else data
        self.buf = b""
        pos, size = 0, len(buf)
        while pos < size:
            if self.need:
                take = min(self.need, size - pos)
                if self.need > 2:
                    self._payload(buf[pos:pos + min(take, self.need - 2)])
                pos += take
                self.need -= take
                continue
            nl = buf.find(b"\r\n", pos)
            if nl < 0:
                self.buf = buf[pos:]
                return
            n = int(buf[pos:nl].split(b";", 1)[0], 16)
            pos = nl + 2
            if n == 0:
                self._finish()
                return
            self.need = n + 2

    def _payload(self, piece: bytes):
        if not self.found:
            w = self.win + piece
            if _MARK in w:
                self.found = True
                self.res.first = _now()
            else:
                self.win = w[-(_ML - 1):]
        t = self.tail + piece
        if not self.completed and b"response.completed" in t:
            # the Responses stream's last event starts with its name and then carries the whole
            # response (tools included): the name may be far from the tail
            self.completed = True
        self.tail = t[-256:] if len(t) > 512 else t

    def _finish(self):
        res = self.res
        res.end = _now()
        tail = self.tail
        if res.status == 200:
            if self.chunked or self.length < 0:
                res.ok = (b"[DONE]" in tail or b"message_stop" in tail or self.completed) \
                    and b'"error":' not in tail
                if not res.ok:
                    res.error = "stream did not complete: ..." + tail[-120:].decode("utf-8", "replace")
            else:
                res.ok = True
        else:
            res.error = f"HTTP {res.status}"
        if res.first is None:
            res.first = res.end
        self.waiter.set_result(res)


def build_request(url: str, body: bytes, headers: dict | None = None) -> tuple[str, int, bytes]:
    u = urlsplit(url)
    host, port = u.hostname or "127.0.0.1", u.port or 80
    path = (u.path or "/") + (f"?{u.query}" if u.query else "")
    lines = [f"POST {path} HTTP/1.1", f"Host: {host}:{port}", "Content-Type: application/json",
             f"Content-Length: {len(body)}"]
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    return host, port, ("\r\n".join(lines) + "\r\n\r\n").encode() + body


async def _connect(host, port) -> Conn:
    loop = asyncio.get_running_loop()
    _, proto = await loop.create_connection(Conn, host, port)
    return proto


async def _one(conn_box: list, host, port, request: bytes, timeout: float) -> Result:
    conn = conn_box[0]
    if conn is None or conn.closing:
        if conn is not None:
            conn.transport.close()
        conn = conn_box[0] = await _connect(host, port)
    try:
        return await asyncio.wait_for(conn.send(request), timeout)
    except asyncio.TimeoutError:
        conn.transport.abort()
        conn_box[0] = None
        r = conn.res
        r.error = "timeout"
        return r


async def run_duration(url: str, body: bytes | list[bytes], concurrency: int, duration: float,
                       headers: dict | None = None, timeout: float = 60.0,
                       warmup: float = 0.0) -> dict:
    """`concurrency` connections, requests back to back for `duration` seconds (after `warmup`);
    with several bodies, each request sends the next one in turn (clients of different tools)."""
    built = [build_request(url, b, headers) for b in (body if isinstance(body, list) else [body])]
    host, port, _ = built[0]
    requests = [request for _, _, request in built]
    turn = itertools.count()
    results: list[Result] = []
    errors: dict = {}
    start = _now()
    measure_from = start + warmup
    deadline = measure_from + duration

    async def worker():
        box = [None]
        while _now() < deadline:
            try:
                r = await _one(box, host, port, requests[next(turn) % len(requests)], timeout)
            except OSError as e:
                r = Result(_now())
                r.error = f"connect: {type(e).__name__}"
                r.end = _now()
                box[0] = None
                await asyncio.sleep(0.05)
            if r.sent >= measure_from:
                results.append(r)
            if r.error:
                errors[r.error[:80]] = errors.get(r.error[:80], 0) + 1
        if box[0] is not None:
            box[0].transport.close()

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    end = max((r.end or r.sent for r in results), default=_now())
    return summarize(results, max(end - measure_from, 1e-9), errors)


async def run_once(url: str, body: bytes, count: int, headers: dict | None = None,
                   timeout: float = 120.0, batch: int = 100, batch_gap: float = 0.05) -> dict:
    """`count` streams at once, each on its own connection; connections opened `batch` at a time."""
    host, port, request = build_request(url, body, headers)
    results: list[Result] = []
    errors: dict = {}

    async def one():
        box = [None]
        try:
            r = await _one(box, host, port, request, timeout)
        except OSError as e:
            r = Result(_now())
            r.error = f"connect: {type(e).__name__}: {e}"
            r.end = _now()
        results.append(r)
        if r.error:
            errors[r.error[:80]] = errors.get(r.error[:80], 0) + 1
        if box[0] is not None:
            box[0].transport.close()

    start = _now()
    tasks = []
    for i in range(0, count, batch):
        tasks += [asyncio.ensure_future(one()) for _ in range(min(batch, count - i))]
        await asyncio.sleep(batch_gap)
    await asyncio.gather(*tasks)
    out = summarize(results, _now() - start, errors)
    # most streams open at the same moment (from response head to end)
    marks = []
    for r in results:
        if r.head is not None and r.end is not None:
            marks.append((r.head, 1))
            marks.append((r.end, -1))
    cur = peak = 0
    for _, d in sorted(marks):
        cur += d
        peak = max(peak, cur)
    out["max_open"] = peak
    return out


def _pct(values: list, p: float):
    if not values:
        return None
    values = sorted(values)
    k = min(len(values) - 1, max(0, int(round(p / 100.0 * (len(values) - 1)))))
    return values[k]


def summarize(results: list[Result], elapsed: float, errors: dict) -> dict:
    ok = [r for r in results if r.ok]
    lat = [(r.end - r.sent) * 1000 for r in ok]
    ttft = [(r.first - r.sent) * 1000 for r in ok if r.first is not None]
    return {
        "n": len(results), "ok": len(ok), "failed": len(results) - len(ok), "errors": errors,
        "elapsed": elapsed, "rps": len(ok) / elapsed if elapsed > 0 else 0.0,
        "lat_p50": _pct(lat, 50), "lat_p99": _pct(lat, 99),
        "ttft_p50": _pct(ttft, 50), "ttft_p99": _pct(ttft, 99),
        "bytes": sum(r.nbytes for r in results),
    }


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m engine.bench.client", description=__doc__.split("\n")[0])
    p.add_argument("--url", required=True)
    p.add_argument("--body", required=True, action="append",
                   help="file holding the JSON request body; several: sent in turn (duration mode)")
    p.add_argument("--mode", choices=("duration", "once"), default="duration")
    p.add_argument("--concurrency", type=int, default=1)
    p.add_argument("--duration", type=float, default=5.0)
    p.add_argument("--warmup", type=float, default=0.0)
    p.add_argument("--timeout", type=float, default=60.0)
    p.add_argument("--header", action="append", default=[], metavar="K:V")
    args = p.parse_args(argv)
    raise_nofile()
    bodies = [open(path, "rb").read() for path in args.body]
    headers = dict(h.split(":", 1) for h in args.header)
    headers = {k.strip(): v.strip() for k, v in headers.items()}
    if args.mode == "duration":
        out = asyncio.run(run_duration(args.url, bodies, args.concurrency, args.duration, headers,
                                       args.timeout, args.warmup))
    else:
        out = asyncio.run(run_once(args.url, bodies[0], args.concurrency, headers, args.timeout))
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
