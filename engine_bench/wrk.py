"""Non-stream load through wrk (Debian package `wrk`: apt-get install -y wrk), output parsed."""
from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

MISSING = ("wrk is not installed: non-stream load falls back to the asyncio client of this package, "
           "which costs more CPU per request than wrk (its ceiling is printed; install wrk with "
           "`apt-get install -y wrk` for figures limited by the gateway alone)")

_LUA = """\
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local f = assert(io.open("{body}", "rb"))
wrk.body = f:read("*all")
f:close()
"""
_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3}


def available() -> str | None:
    return shutil.which("wrk")


def _ms(text: str) -> float:
    m = re.match(r"([\d.]+)(us|ms|s|m)$", text.strip())
    if not m:
        raise ValueError(f"unreadable wrk latency {text!r}")
    return float(m.group(1)) * _UNITS[m.group(2)]


def parse(out: str) -> dict:
    res = {"n": 0, "ok": 0, "failed": 0, "errors": {}, "rps": 0.0, "lat_p50": None, "lat_p99": None}
    m = re.search(r"(\d+) requests in ([\d.]+)(\w+),", out)
    if m:
        res["n"] = int(m.group(1))
    for pct, key in (("50", "lat_p50"), ("99", "lat_p99")):
        m = re.search(rf"^\s+{pct}%\s+(\S+)", out, re.M)
        if m:
            res[key] = _ms(m.group(1))
    m = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if m:
        res["rps"] = float(m.group(1))
    failed = 0
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if m:
        failed += int(m.group(1))
        res["errors"]["non-2xx"] = int(m.group(1))
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    if m:
        n = sum(int(x) for x in m.groups())
        if n:
            failed += n
            res["errors"]["socket"] = m.group(0)
    res["failed"] = failed
    res["ok"] = max(res["n"] - failed, 0)
    return res


def run(url: str, body_path: Path, connections: int, duration: float, prefix: list[str],
        workdir: Path, threads: int = 1) -> dict:
    script = workdir / "post.lua"
    script.write_text(_LUA.format(body=str(body_path)))
    secs = max(1, int(round(duration)))
    cmd = prefix + [available() or "wrk", f"-t{threads}", f"-c{connections}", f"-d{secs}s", "--latency",
                    "--timeout", "30s", "-s", str(script), url]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=secs + 60)
    if proc.returncode != 0:
        raise RuntimeError(f"wrk failed ({proc.returncode}): {proc.stderr.strip() or proc.stdout.strip()}")
    out = parse(proc.stdout)
    out["raw"] = proc.stdout
    return out
