"""One benchmark run: the byte proxy and the gateway under the same load, one table of ratios.

Phases, in order, all on loopback:
  1. the fake upstream starts (load CPU); the load generator's ceiling is measured straight at it;
  2. the byte proxy starts (server CPU): non-stream load at each concurrency, text streams,
     tool-call streams; it stops;
  3. `engine serve` starts (server CPU), the same load; it stops;
  4. 1,000 open streams (the upstream paces its events so they stay open) through a fresh byte
     proxy, then a fresh gateway: peak RSS and failures; then the same for each real-sized
     request, as sent and as a later request of its session (`later_turns` turns in);
  5. `engine serve --workers 2` (both CPUs): the same non-stream and stream load at the highest
     concurrency, against the 1-worker figures;
  6. the fault load test (engine.bench.faults): a fresh fake upstream and `engine serve` with a
     1 s idle timeout; 200 concurrent streams, 20 % of them faulted; every outcome checked exactly
     (also alone: ``main(faults_only=True)``);
  7. the micro-benchmark of the engine alone (engine.bench.micro).

Real-sized requests (phases 2 and 3, `real`): the recorded Codex 0.169 Responses request, the
Codex 0.94 Chat request and the Claude Code Messages request (tests/fixtures/clients), each
non-stream and streamed at concurrency `real_concurrency`, on the path the client used; and each
non-stream from `real_clients` clients in turn, each with tools of its own (a gateway shared by
many users; and from `real_clients_beyond`, more than the gateway keeps tools texts for: 128),
and non-stream as a later request of its session (`later_turns` turns in), from
one session and from `real_sessions` sessions of their own in turn (more than the gateway's
history memo keeps). The two
Codex requests name a Claude model (translated to Anthropic Messages), the
Claude Code request an OpenAI one (translated to Chat Completions): the fake upstream answers
either (engine.bench.upstream). The byte proxy forwards the same bodies untouched.
"""
from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

from . import faults as faults_mod
from . import micro as micro_mod
from . import wrk as wrk_mod
from .procs import Pinning, Proc, children_cpu_seconds, cpu_seconds, free_port, python, status_kb
from .upstream import model_name, stream_events

PATH = "/v1/chat/completions"
OPEN_STREAMS_MB = 80  # peak RSS of the gateway with `open_streams` streams open (issue 18)
CLIENTS = Path(__file__).resolve().parents[2] / "tests" / "fixtures" / "clients"


def bench_key(prefix: str, length: int) -> str:
    """A made-up upstream key of a real one's form and length. The gateway looks for its keys in
    all it sends a client (engine/server/upstream.py mask), and that search takes longer the
    shorter the key: a 12-character key costs about ten times what a real one does."""
    tail = base64.urlsafe_b64encode(hashlib.sha256(prefix.encode()).digest() * 8).decode()
    return (prefix + tail)[:length]


ANTHROPIC_KEY = bench_key("sk-ant-api03-", 108)
OPENAI_KEY = bench_key("sk-proj-", 164)

# (row name, capture, upstream provider the gateway translates to)
REAL = (("Codex 0.169 Responses", "codex-0.169-responses-req1.json", "anthropic"),
        ("Codex 0.94 chat", "codex-0.94-chat-req1.json", "anthropic"),
        ("Claude Code Messages", "claude-code-2.1.197-messages-req1.json", "openai"))


@dataclass
class Settings:
    duration: float = 5.0            # seconds per measured load run
    rounds: int = 3                  # proxy and engine runs of each load, alternated; the median counts
    warmup: float = 1.0              # seconds of load before each process's measurements
    ns_concurrency: tuple = (1, 16, 64)
    stream_concurrency: tuple = (1, 32)
    text_deltas: int = 200           # text deltas per stream
    tool_calls: int = 2              # tool calls per tool stream
    tool_fragments: int = 50         # argument fragments per tool call
    open_streams: int = 1000         # streams held open at once for the RSS test
    paced_ms: int = 2                # text streams with this many ms between events, as a real
    paced_concurrency: int = 64      # upstream sends them: the CPU each side spends per event
    open_deltas: int = 40            # text deltas of one such stream...
    open_pace_ms: int = 100          # ...paced this far apart (so each stays open ~4 s)
    workers: int = 2                 # 0: skip the --workers phase
    faults: bool = True              # the fault load test (faults.FaultSettings)
    fault_streams: int = 200         # streams open at once, ...
    fault_percent: int = 20          # ...this share of them faulted, ...
    fault_kinds: str = "mix"         # ...with these kinds (upstream.FAULT_KINDS, '.'-separated, or mix)
    fault_retries: int = 2           # the gateway's upstream_max_retries in that run
    real: bool = True                # the real-sized request rows (REAL)
    real_concurrency: int = 16
    real_clients: int = 64           # clients with tools of their own, in turn (the multi-client rows)
    real_clients_beyond: int = 256   # ...and more than the gateway keeps tools texts for (128)
    real_deltas: int = 40            # text deltas of their answers
    later_turns: int = 60            # earlier turns a later request of a session holds (add_turns)
    real_sessions: int = 256         # sessions that far in, in turn (the gateway keeps 64 conversations)
    micro: bool = True
    micro_budget: float | None = None  # seconds per timed figure (None: by --quick)
    loadgen: str = "auto"            # auto (wrk if installed) | wrk | python
    pin: bool = True
    workdir: Path | None = None
    log: object = field(default=sys.stderr, repr=False)


QUICK = dict(duration=1.5, warmup=0.5, open_deltas=20, open_pace_ms=100)


def quick(**over) -> Settings:
    return replace(Settings(**QUICK), **over)


# ---------------------------------------------------------------- bodies

def _body(model: str, stream: bool, tools: bool = False) -> bytes:
    body = {"model": model, "max_tokens": 1024, "messages": [
        {"role": "system", "content": "You are a helpful assistant. Answer briefly."},
        {"role": "user", "content": "What is the capital of France? Answer in one sentence."}]}
    if tools:
        body["tools"] = [{"type": "function", "function": {
            "name": "search", "description": "Search the web",
            "parameters": {"type": "object", "properties": {"query": {"type": "string"},
                                                            "limit": {"type": "integer"}},
                           "required": ["query"]}}}]
    if stream:
        body["stream"] = True
    return json.dumps(body).encode()


def real_body(capture: str, model: str, stream: bool, client: int | None = None,
              turns: int = 0, session: int | None = None) -> tuple[str, bytes]:
    """(path, body) of a recorded client request, with the bench model and the stream flag; with
    `client`, each tool's description ends with that client's number (tools of its own, as
    clients with their own MCP servers or versions send); with `turns`, that many earlier turns
    of conversation before its last message (add_turns), turns of its own when `session` is
    given."""
    doc = json.loads((CLIENTS / capture).read_text())
    body = dict(doc["body"], model=model)
    if client is not None:
        body["tools"] = [_own_tool(t, client) for t in body["tools"]]
    if turns:
        add_turns(body, turns, session)
    if stream:
        body["stream"] = True
    else:
        body.pop("stream", None)
        body.pop("stream_options", None)
    return doc["path"], json.dumps(body, ensure_ascii=False).encode()


_TURN = "An earlier turn of the session: code, its output, what was decided. " * 36  # 2.5 KB


def add_turns(body: dict, n: int, session: int | None = None) -> None:
    """n earlier turns of about 2.5 KB, user and assistant in turn, before the request's last
    message: what every later request of a session sends (Responses `input`, else `messages`),
    shaped as the client's own last message is (Claude Code sends content blocks, Codex's chat
    client a string). With `session`, the turns are that session's own throughout, as two real
    sessions' are (they begin alike: the client's instructions and environment)."""
    blocks = "messages" in body and type(body["messages"][-1].get("content")) is list
    for i in range(n):
        role = "user" if i % 2 == 0 else "assistant"
        text = f"{_TURN}{i}" if session is None else _session_turn(session, i)
        if "input" in body:
            body["input"].insert(-1, {"type": "message", "role": role, "content": [
                {"type": "input_text" if role == "user" else "output_text", "text": text}]})
        else:
            body["messages"].insert(-1, {"role": role, "content": [{"type": "text", "text": text}] if blocks else text})


def _session_turn(session: int, i: int) -> str:
    """2.5 KB of text of turn `i` of session `session` that no other session's turn holds."""
    words = hashlib.sha256(f"{session}:{i}".encode()).hexdigest()
    return (" ".join(words[j:j + 8] for j in range(0, 64, 8)) + " ") * 35


def _own_tool(tool: dict, client: int) -> dict:
    fn = tool.get("function")
    if isinstance(fn, dict):
        return dict(tool, function=_own_tool(fn, client))
    return dict(tool, description=f"{tool.get('description') or ''} [client {client}]")


PACED = "paced"  # the results key of the paced text streams


def clients_key(i: int, beyond: bool = False) -> str:
    return f"{'many' if beyond else ''}clients{i}n"


def open_real_key(i: int) -> str:
    return f"open-real{i}"


def later_key(i: int) -> str:
    return f"later{i}n"


def sessions_key(i: int) -> str:
    return f"sessions{i}n"


def open_later_key(i: int) -> str:
    return f"open-later{i}"


def real_key(i: int, stream: bool) -> str:
    return f"real{i}{'s' if stream else 'n'}"


# REAL's Chat Completions capture: the one request of the three the hand-written floor translates
FLOOR_REAL = 1


def floor_load(key: str) -> bool:
    """Whether the hand-written floor (floor.py, Chat Completions to Anthropic only) runs this
    load: the small requests and streams, and the Codex chat capture."""
    return (key.startswith(("ns", "text", "tools")) or key == PACED
            or key in (real_key(FLOOR_REAL, False), real_key(FLOOR_REAL, True)))


# ---------------------------------------------------------------- the run

class Bench:
    def __init__(self, s: Settings):
        self.s = s
        self.pin = Pinning(s.pin)
        self.tmp = None
        if s.workdir is None:
            self.tmp = tempfile.TemporaryDirectory(prefix="engine-bench-")
            self.dir = Path(self.tmp.name)
        else:
            self.dir = Path(s.workdir)
            self.dir.mkdir(parents=True, exist_ok=True)
        self.results: dict = {}
        self.notes: list[str] = []
        self.procs: list[Proc] = []
        self.use_wrk = (s.loadgen == "wrk") or (s.loadgen == "auto" and wrk_mod.available() is not None)
        if s.loadgen == "wrk" and not wrk_mod.available():
            raise RuntimeError(wrk_mod.MISSING)
        self.text_model = model_name("text", n=s.text_deltas)
        self.tools_model = model_name("tools", n=s.tool_fragments, k=s.tool_calls)
        self.open_model = model_name("text", n=s.open_deltas, pace_ms=s.open_pace_ms)
        self.paced_model = model_name("text", n=s.text_deltas, pace_ms=s.paced_ms)
        self.events = {m: len(stream_events(m)) for m in (self.text_model, self.tools_model, self.open_model,
                                                          self.paced_model)}
        self.pids: dict[str, list[int]] = {}  # base URL -> the processes serving it
        self.bodies: dict[str, list[Path]] = {}  # body key -> files the load generators send, in turn
        self.paths: dict = {}  # body key -> request path, when not PATH
        for key, data in {
            "ns": _body(self.text_model, False),
            "text": _body(self.text_model, True),
            "tools": _body(self.tools_model, True, tools=True),
            "open": _body(self.open_model, True),
            "paced": _body(self.paced_model, True),
        }.items():
            self._add_body(key, None, data)
        if s.real:
            for i, (_, capture, provider) in enumerate(REAL):
                model = model_name("text", n=s.real_deltas, provider=provider)
                for stream in (False, True):
                    self._add_body(real_key(i, stream), *real_body(capture, model, stream))
                # the same request held open, for what a real stream costs in memory
                open_model = model_name("text", n=s.open_deltas, pace_ms=s.open_pace_ms, provider=provider)
                self._add_body(open_real_key(i), *real_body(capture, open_model, True))
                # ...and as a later request of the same session: the conversation so far with it
                self._add_body(open_later_key(i), *real_body(capture, open_model, True, turns=s.later_turns))
                self._add_body(later_key(i), *real_body(capture, model, False, turns=s.later_turns))
                # ...from many sessions of their own, in turn: more than the gateway keeps
                for k in range(s.real_sessions):
                    self._add_body(sessions_key(i), *real_body(capture, model, False, turns=s.later_turns, session=k))
                # the same request from many clients, each with tools of its own, in turn
                for k in range(s.real_clients):
                    self._add_body(clients_key(i), *real_body(capture, model, False, client=k))
                for k in range(s.real_clients_beyond):
                    self._add_body(clients_key(i, True), *real_body(capture, model, False, client=k))

    def _add_body(self, key: str, path: str | None, data: bytes):
        """A body for the load generators, sent to `path` (None: PATH). A key given several
        bodies sends them in turn (the asyncio client only)."""
        if path is not None:
            self.paths[key] = path
        files = self.bodies.setdefault(key, [])
        file = self.dir / f"body-{key}{f'-{len(files)}' if files else ''}.json"
        file.write_bytes(data)
        files.append(file)

    def say(self, msg: str):
        print(f"[bench] {msg}", file=self.s.log, flush=True)

    # -- processes
    def _start(self, name: str, cmd: list[str], cpus: str | None, port: int, env=None, health=None) -> Proc:
        p = Proc(name, self.pin.prefix(cpus) + cmd, env=env, log=self.dir / f"{name}.log")
        self.procs.append(p)
        p.wait_port(port, path=health)
        return p

    def _stop(self, p: Proc):
        p.stop()
        if p in self.procs:
            self.procs.remove(p)

    def start_upstream(self):
        self.up_port = free_port()
        self.upstream = self._start("upstream", [python(), "-m", "engine.bench.upstream", "--port",
                                                 str(self.up_port)], self.pin.load_cpus, self.up_port)
        self.up_url = f"http://127.0.0.1:{self.up_port}"

    def start_proxy(self) -> tuple[Proc, str]:
        port = free_port()
        p = self._start("byte-proxy", [python(), "-m", "engine.bench.proxy", "--port", str(port),
                                       "--upstream", self.up_url], self.pin.server_cpus, port)
        return p, f"http://127.0.0.1:{port}"

    def start_floor(self) -> tuple[Proc, str]:
        port = free_port()
        p = self._start("floor", [python(), "-m", "engine.bench.floor", "--port", str(port), "--upstream",
                                  self.up_url, "--api-key", ANTHROPIC_KEY, "--client", "engine"],
                        self.pin.server_cpus, port)
        return p, f"http://127.0.0.1:{port}"

    def start_engine(self, workers: int = 1, up_url: str | None = None, extra_env: dict | None = None,
                     name: str | None = None) -> tuple[Proc, str]:
        port = free_port()
        data = self.dir / f"data-{port}"
        data.mkdir(exist_ok=True)
        env = {k: v for k, v in os.environ.items() if not k.startswith("TOKLIGENCE_")}
        for k in [k for k in os.environ if k.startswith("TOKLIGENCE_")]:
            env[k] = ""  # the bench measures the defaults, not the caller's config
        env.update({"TOKLIGENCE_ANTHROPIC_BASE_URL": up_url or self.up_url,
                    "TOKLIGENCE_ANTHROPIC_API_KEY": ANTHROPIC_KEY, "TOKLIGENCE_DATA_DIR": str(data),
                    "TOKLIGENCE_OPENAI_BASE_URL": (up_url or self.up_url) + "/v1",
                    "TOKLIGENCE_OPENAI_API_KEY": OPENAI_KEY})
        env.update(extra_env or {})
        env.pop("TOKLIGENCE_CONFIG", None)
        cmd = [python(), "-m", "engine", "serve", "--host", "127.0.0.1", "--port", str(port)]
        if workers != 1:
            cmd += ["--workers", str(workers)]
        cpus = self.pin.server_cpus if workers == 1 else self.pin.all_cpus
        p = self._start(name or f"engine-w{workers}", cmd, cpus, port, env=env, health="/health")
        return p, f"http://127.0.0.1:{port}"

    def fault_settings(self) -> faults_mod.FaultSettings:
        s = self.s
        return faults_mod.FaultSettings(streams=s.fault_streams, percent=s.fault_percent, kinds=s.fault_kinds,
                                        max_retries=s.fault_retries)

    def fault_phase(self, fs: faults_mod.FaultSettings | None = None) -> dict:
        """A fresh fake upstream (it counts attempts per stream) and a fresh `engine serve` with the
        fault run's timeouts; the streams from this process (the load CPU)."""
        fs = fs or self.fault_settings()
        up_port = free_port()
        up = self._start("upstream-faults", [python(), "-m", "engine.bench.upstream", "--port", str(up_port)],
                         self.pin.load_cpus, up_port)
        up_url = f"http://127.0.0.1:{up_port}"
        try:
            eng, base = self.start_engine(up_url=up_url, extra_env=fs.engine_env(), name="engine-faults")
            self.say(f"fault load test: {fs.streams} streams at once, {fs.percent}% faulted ({fs.kinds}), "
                     f"upstream_max_retries={fs.max_retries}, upstream_idle_timeout={fs.idle_timeout:g}s")
            try:
                res = asyncio.run(faults_mod.drive(base, up_url, fs))
                alive = eng.p.poll() is None
                res["checks"].append({"name": "engine process still running", "ok": alive,
                                      "detail": "running" if alive else f"exited {eng.p.returncode}"})
            finally:
                self._stop(eng)
            log = (self.dir / "engine-faults.log").read_text(errors="replace")
            tracebacks = log.count("Traceback (most recent call last)")
            first = log[log.find("Traceback"):][:1500] if tracebacks else ""
            res["checks"].append({"name": "no traceback in the gateway log", "ok": tracebacks == 0,
                                  "detail": f"{tracebacks} tracebacks" + (f": {first}" if first else "")})
        finally:
            self._stop(up)
        return res

    # -- load
    def nonstream(self, base: str, conc: int, duration: float | None = None) -> dict:
        d = self.s.duration if duration is None else duration
        if self.use_wrk:
            return wrk_mod.run(base + PATH, self.bodies["ns"][0], conc, d, self.pin.prefix(self.pin.load_cpus),
                               self.dir)
        return self.client(base, "ns", conc, d)

    def client(self, base: str, body: str, conc: int, duration: float | None = None, mode: str = "duration",
               warmup: float = 0.0) -> dict:
        d = self.s.duration if duration is None else duration
        cmd = self.pin.prefix(self.pin.load_cpus) + [
            python(), "-m", "engine.bench.client", "--url", base + self.paths.get(body, PATH),
            *(a for f in self.bodies[body] for a in ("--body", str(f))),
            "--mode", mode, "--concurrency", str(conc), "--duration", str(d), "--warmup", str(warmup)]
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=d + warmup + 300,
                             env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])})
        if out.returncode != 0:
            raise RuntimeError(f"load generator failed: {out.stderr.strip()[-2000:]}")
        r = json.loads(out.stdout.strip().splitlines()[-1])
        r["warmup_s"] = warmup
        return r

    def stream(self, base: str, kind: str, conc: int) -> dict:
        r = self.client(base, kind, conc, warmup=min(self.s.warmup, 1.0))
        model = self.text_model if kind == "text" else self.tools_model
        r["events_per_stream"] = self.events[model]
        r["events_s"] = r["ok"] * self.events[model] / r["elapsed"] if r["elapsed"] else 0.0
        return r

    def paced(self, base: str) -> dict:
        """Paced text streams: the CPU the process under test spent per event carried. No warmup,
        so that every stream it served is one the client counted; at this pace neither side is
        busy, and each event comes in a read of its own, as from a real upstream."""
        pids = self.pids.get(base, [])
        before = cpu_seconds(pids)
        r = self.client(base, "paced", self.s.paced_concurrency)
        used = cpu_seconds(pids) - before
        events = r["ok"] * self.events[self.paced_model]
        r["events_per_stream"] = self.events[self.paced_model]
        r["events_s"] = events / r["elapsed"] if r["elapsed"] else 0.0
        r["cpu_us_event"] = used * 1e6 / events if events else None
        return r

    def warm(self, base: str):
        d = max(self.s.warmup, 0.2)
        if self.use_wrk:
            wrk_mod.run(base + PATH, self.bodies["ns"][0], 16, max(1.0, d), self.pin.prefix(self.pin.load_cpus),
                        self.dir)
        else:
            self.client(base, "ns", 16, d)
        self.client(base, "text", 8, d)

    def load_all(self, targets: dict):
        """Every load on every target (name -> base URL), each load run `rounds` times per target,
        the targets alternated within a round and their order swapped every round, so that a
        slow spell of the machine falls on both sides. Each target keeps its median round."""
        for name, base in targets.items():
            self.warm(base)
        loads = [(f"ns{c}", f"non-stream, concurrency {c}", lambda b, c=c: self.nonstream(b, c))
                 for c in self.s.ns_concurrency]
        loads += [(f"text{c}", f"text streams ({self.events[self.text_model]} events each), concurrency {c}",
                   lambda b, c=c: self.stream(b, "text", c)) for c in self.s.stream_concurrency]
        c = max(self.s.stream_concurrency)
        loads.append((f"tools{c}", f"tool-call streams ({self.events[self.tools_model]} events each), "
                                   f"concurrency {c}", lambda b: self.stream(b, "tools", c)))
        if self.s.paced_concurrency:
            loads.append((PACED, f"text streams ({self.events[self.paced_model]} events each, {self.s.paced_ms} ms "
                                  f"apart), concurrency {self.s.paced_concurrency}", self.paced))
        if self.s.real:
            c = self.s.real_concurrency

            def real(key: str, what: str):
                loads.append((key, f"{what}, concurrency {c}", lambda b: self.client(b, key, c)))

            for i, (name, _, provider) in enumerate(REAL):
                for stream in (False, True):
                    key = real_key(i, stream)
                    real(key, f"{name} request ({self.bodies[key][0].stat().st_size:,} bytes, to {provider}), "
                              f"{'streamed' if stream else 'non-stream'}")
                for beyond, n in ((False, self.s.real_clients), (True, self.s.real_clients_beyond)):
                    real(clients_key(i, beyond), f"{name} request from {n} clients with tools of their own, "
                                                 "in turn, non-stream")
                real(later_key(i), f"{name} request {self.s.later_turns} turns in "
                                   f"({self.bodies[later_key(i)][0].stat().st_size:,} bytes), non-stream")
                real(sessions_key(i), f"{name} request {self.s.later_turns} turns in, from "
                                      f"{self.s.real_sessions} sessions in turn, non-stream")
        rounds = max(1, self.s.rounds)
        for key, what, load in loads:
            runs: dict = {name: [] for name in targets}
            for r in range(rounds):
                order = list(targets) if r % 2 == 0 else list(reversed(list(targets)))
                for name in order:
                    if name == "floor" and not floor_load(key):
                        continue
                    self.say(f"{name}: {what}" + (f" (round {r + 1} of {rounds})" if rounds > 1 else ""))
                    runs[name].append(self.busy(load, targets[name]))
            for name, got in runs.items():
                if got:
                    self.results.setdefault(name, {})[key] = median_run(got)

    def busy(self, load, base: str) -> dict:
        """load(base)'s result with `busy`: the share of one core the processes serving `base`
        used while the load generator was sending (its warmup and measured time; wrk's run)."""
        pids = self.pids.get(base)
        before = cpu_seconds(pids) if pids else None
        t0 = time.monotonic()
        r = load(base)
        if before is not None:
            window = r["elapsed"] + r.get("warmup_s", 0.0) if "elapsed" in r else time.monotonic() - t0
            r["busy"] = (cpu_seconds(pids) - before) / window if window > 0 else None
        return r

    def costed(self, load, gateway_pids: list[int]) -> dict:
        """load()'s result with the cores each side used while it ran: the gateway's processes,
        the fake upstream and the load generator (a child this process waits for)."""
        t0 = time.monotonic()
        before = (cpu_seconds(gateway_pids), cpu_seconds([self.upstream.pid]), children_cpu_seconds())
        r = load()
        wall = time.monotonic() - t0
        after = (cpu_seconds(gateway_pids), cpu_seconds([self.upstream.pid]), children_cpu_seconds())
        r["cores"] = {k: (b - a) / wall for k, a, b in zip(("gateway", "upstream", "loadgen"), before, after)}
        return r

    def open_streams(self, name: str, start, body: str = "open") -> dict:
        proc, base = start()
        pids = proc.tree()
        idle = sum(status_kb(p, "VmRSS") for p in pids)
        n = self.s.open_streams
        self.say(f"{name}: {n} streams open at once, body {body} ({self.s.open_deltas} deltas, "
                 f"{self.s.open_pace_ms} ms apart)")
        peak = [idle]
        stop = threading.Event()

        def sample():
            while not stop.is_set():
                peak[0] = max(peak[0], sum(status_kb(p, "VmRSS") for p in pids))
                stop.wait(0.05)

        th = threading.Thread(target=sample, daemon=True)
        th.start()
        try:
            r = self.client(base, body, n, duration=0, mode="once")
        finally:
            stop.set()
            th.join()
        hwm = sum(status_kb(p, "VmHWM") for p in pids)
        r["rss_idle_mb"] = idle / 1024
        r["rss_peak_mb"] = max(peak[0], hwm) / 1024
        self._stop(proc)
        return r

    def run(self) -> dict:
        s = self.s
        self.pin.pin_self()
        t0 = time.monotonic()
        self.say(self.pin.describe())
        if not self.use_wrk:
            self.say(wrk_mod.MISSING if not wrk_mod.available() else "non-stream load: asyncio client (--loadgen python)")
        try:
            self.start_upstream()
            D = self.results.setdefault("direct", {})
            self.say("load generator ceiling: straight at the fake upstream")
            self.warm(self.up_url)
            D["ns1"] = self.nonstream(self.up_url, 1)
            D[f"ns{max(s.ns_concurrency)}"] = self.nonstream(self.up_url, max(s.ns_concurrency))
            c = max(s.stream_concurrency)
            D[f"text{c}"] = self.stream(self.up_url, "text", c)
            D["text1"] = self.stream(self.up_url, "text", 1)

            # all three up at once (each pinned to the same CPU, idle while another is loaded)
            proxy, pbase = self.start_proxy()
            floor, fbase = self.start_floor()
            engine, ebase = self.start_engine()
            self.pids = {pbase: proxy.tree(), fbase: floor.tree(), ebase: engine.tree()}
            self.load_all({"proxy": pbase, "floor": fbase, "engine": ebase})
            for p in (proxy, floor, engine):
                self._stop(p)

            if s.open_streams:
                self.results["proxy"]["open"] = self.open_streams("proxy", self.start_proxy)
                self.results.setdefault("floor", {})["open"] = self.open_streams("floor", self.start_floor)
                self.results["engine"]["open"] = self.open_streams("engine", self.start_engine)
                if s.real:
                    for i in range(len(REAL)):
                        for key in (open_real_key(i), open_later_key(i)):
                            for side, start in (("proxy", self.start_proxy), ("engine", self.start_engine)):
                                self.results[side][key] = self.open_streams(side, start, key)

            if s.workers and s.workers > 1:
                w = s.workers
                eng, base = self.start_engine(workers=w)
                W = self.results.setdefault(f"engine-w{w}", {})
                self.warm(base)
                cn, cs = max(s.ns_concurrency), max(s.stream_concurrency)
                self.say(f"engine --workers {w}: non-stream concurrency {cn}, text streams concurrency {cs}")
                gw = eng.tree()
                W[f"ns{cn}"] = self.costed(lambda: self.nonstream(base, cn), gw)
                W[f"text{cs}"] = self.costed(lambda: self.stream(base, "text", cs), gw)
                self._stop(eng)

            if s.faults and s.fault_streams:
                self.results["faults"] = self.fault_phase()
        finally:
            for p in list(self.procs):
                self._stop(p)
        if s.micro:
            self.say("micro-benchmark of the engine alone")
            self.results["micro"] = micro_mod.run(quick=s.duration < 3, budget=s.micro_budget)
        self.results["seconds"] = time.monotonic() - t0
        return self.results

    def close(self):
        for p in list(self.procs):
            self._stop(p)
        self.pin.restore()
        if self.tmp is not None:
            self.tmp.cleanup()


def median_run(runs: list[dict]) -> dict:
    """The run with the median throughput (its latencies with it, so a row stays one run), with
    the failures of every run added up: no round's failure is hidden by the choice."""
    key = "events_s" if "events_s" in runs[0] else "rps"
    chosen = dict(sorted(runs, key=lambda r: r.get(key) or 0.0)[(len(runs) - 1) // 2])
    chosen["failed"] = sum(r.get("failed", 0) for r in runs)
    chosen["rounds"] = [r.get(key) for r in runs]
    return chosen


# ---------------------------------------------------------------- the table

def _fmt(v, kind):
    if v is None:
        return "-"
    if kind == "int":
        return f"{v:,.0f}"
    if kind == "ms":
        return f"{v:.2f}"
    if kind in ("mb", "us"):
        return f"{v:.1f}"
    return str(v)


def rows(res: dict, s: Settings) -> list[dict]:
    """Every row of the table: label, direct / proxy / floor / engine values, engine/proxy ratio, target."""
    D, P, E = res.get("direct", {}), res.get("proxy", {}), res.get("engine", {})
    F = res.get("floor", {})
    out = []

    def row(label, key, field, kind, target=None, better="high", direct=True):
        d = D.get(key, {}).get(field) if direct else None
        p, e = P.get(key, {}).get(field), E.get(key, {}).get(field)
        r = _row(label, d, p, e, kind, target, better, F.get(key, {}).get(field))
        busy = P.get(key, {}).get("busy")
        if r["verdict"] in ("met", "MISSED") and busy is not None and busy < SATURATED:
            r["verdict"] = LOAD_BOUND
        out.append(r)

    for c in s.ns_concurrency:
        tgt = 1.0 if c == max(s.ns_concurrency) else None
        row(f"non-stream c={c}: requests/s", f"ns{c}", "rps", "int", tgt, "high", f"ns{c}" in D)
        row(f"non-stream c={c}: latency p50 ms", f"ns{c}", "lat_p50", "ms", None, "low", f"ns{c}" in D)
        row(f"non-stream c={c}: latency p99 ms", f"ns{c}", "lat_p99", "ms", None, "low", f"ns{c}" in D)
        if c == 1:
            base = D.get("ns1", {}).get("lat_p50")
            p, e = P.get("ns1", {}).get("lat_p50"), E.get("ns1", {}).get("lat_p50")
            f = F.get("ns1", {}).get("lat_p50")
            out.append(_row("non-stream c=1: added p50 ms (over upstream)", base,
                            None if p is None or base is None else p - base,
                            None if e is None or base is None else e - base, "ms", 1.0, "low",
                            None if f is None or base is None else f - base))
    for c in s.stream_concurrency:
        k = f"text{c}"
        row(f"text stream c={c}: TTFT p50 ms", k, "ttft_p50", "ms", 1.0 if c == max(s.stream_concurrency) else None,
            "low", k in D)
        row(f"text stream c={c}: full stream p50 ms", k, "lat_p50", "ms", None, "low", k in D)
        row(f"text stream c={c}: events/s", k, "events_s", "int", 0.9 if c == max(s.stream_concurrency) else None,
            "high", k in D)
    c = max(s.stream_concurrency)
    row(f"tool stream c={c}: TTFT p50 ms", f"tools{c}", "ttft_p50", "ms", None, "low", False)
    row(f"tool stream c={c}: events/s", f"tools{c}", "events_s", "int", None, "high", False)
    if s.paced_concurrency:
        label = f"text stream c={s.paced_concurrency}, {s.paced_ms} ms between events"
        row(f"{label}: TTFT p50 ms", PACED, "ttft_p50", "ms", None, "low", False)
        row(f"{label}: CPU µs per event", PACED, "cpu_us_event", "us", None, "low", False)
    if s.real:
        for i, (name, _, _) in enumerate(REAL):
            for stream in (False, True):
                key = real_key(i, stream)
                what = "stream" if stream else "non-stream"
                row(f"{name}, {what} c={s.real_concurrency}: requests/s", key, "rps", "int", 0.7, "high", False)
            for beyond, n in ((False, s.real_clients), (True, s.real_clients_beyond)):
                row(f"{name}, {n} clients in turn, non-stream c={s.real_concurrency}: requests/s",
                    clients_key(i, beyond), "rps", "int", None, "high", False)
            row(f"{name}, {s.later_turns} turns in, non-stream c={s.real_concurrency}: requests/s",
                later_key(i), "rps", "int", None, "high", False)
            row(f"{name}, {s.later_turns} turns in, {s.real_sessions} sessions in turn, non-stream "
                f"c={s.real_concurrency}: requests/s", sessions_key(i), "rps", "int", None, "high", False)
    if "open" in E or "open" in P:
        n = s.open_streams
        row(f"{n:,} open streams: RSS before MB", "open", "rss_idle_mb", "mb", None, "low", False)
        pr = _row(f"{n:,} open streams: peak RSS MB", None, P.get("open", {}).get("rss_peak_mb"),
                  E.get("open", {}).get("rss_peak_mb"), "mb", None, "low", F.get("open", {}).get("rss_peak_mb"))
        e = E.get("open", {}).get("rss_peak_mb")
        pr["target"] = f"<= {OPEN_STREAMS_MB} MB"
        pr["verdict"] = "-" if e is None else ("met" if e <= OPEN_STREAMS_MB else "MISSED")
        out.append(pr)
        row(f"{n:,} open streams: most open at once", "open", "max_open", "int", None, "high", False)
        fr = _row(f"{n:,} open streams: failed", None, P.get("open", {}).get("failed"),
                  E.get("open", {}).get("failed"), "int", None, "low")
        fr["ratio"] = ""
        fr["floor"] = _fmt(F.get("open", {}).get("failed"), "int")  # a count: no ratio
        fr["target"] = "0 failed"
        ef = E.get("open", {}).get("failed")
        fr["verdict"] = "-" if ef is None else ("met" if ef == 0 else "MISSED")
        out.append(fr)
    for i, (name, _, _) in enumerate(REAL):
        for key, label in ((open_real_key(i), name), (open_later_key(i), f"{name} {s.later_turns} turns in")):
            if key in E or key in P:
                row(f"{s.open_streams:,} open streams, {label}: peak RSS MB", key, "rss_peak_mb", "mb", None, "low",
                    False)
    fails = {name: sum(v.get("failed", 0) for k, v in res.get(name, {}).items() if isinstance(v, dict) and k != "open")
             for name in ("direct", "proxy", "engine", "floor")}
    fr = _row("failed requests/streams (all load runs above)", fails["direct"], fails["proxy"], fails["engine"],
              "int", None, "low")
    fr["floor"] = _fmt(fails["floor"] if "floor" in res else None, "int")
    fr["ratio"] = ""
    out.append(fr)
    for name in [k for k in res if k.startswith("engine-w")]:
        W = res[name]
        w = name.split("-w")[1]
        cn, cs = max(s.ns_concurrency), max(s.stream_concurrency)
        for label, key, fld in ((f"--workers {w}: non-stream c={cn} requests/s", f"ns{cn}", "rps"),
                                (f"--workers {w}: text stream c={cs} events/s", f"text{cs}", "events_s")):
            one, many = E.get(key, {}).get(fld), W.get(key, {}).get(fld)
            out.append({"label": label, "direct": "", "proxy": "1 worker: " + _fmt(one, "int"), "floor": "",
                        "engine": _fmt(many, "int"),
                        "ratio": "-" if not one or many is None else f"{many / one:.2f}x vs 1 worker",
                        "target": "", "verdict": ""})
    return out


# A target compares the gateway with the byte proxy at full speed: where the proxy's process used
# less than this share of its core, the load generator (on the other CPU, with the fake upstream)
# set the pace, and the ratio says nothing of either side.
SATURATED = 0.85
LOAD_BOUND = "load-bound"


def _row(label, d, p, e, kind, target, better, f=None) -> dict:
    """`f`: the hand-written floor's figure, shown with its own ratio to the byte proxy."""
    ratio = None
    if p is not None and e is not None and p > 0:
        ratio = e / p
    verdict = ""
    tgt = ""
    if target is not None:
        tgt = (">= " if better == "high" else "<= ") + f"{target:g}x"
        if ratio is None:
            verdict = "-"
        else:
            verdict = "met" if (ratio >= target if better == "high" else ratio <= target) else "MISSED"
    floor = _fmt(f, kind)
    if f is not None and p:
        floor += f" ({f / p:.2f}x)"
    return {"label": label, "direct": _fmt(d, kind), "proxy": _fmt(p, kind), "floor": floor, "engine": _fmt(e, kind),
            "ratio": "-" if ratio is None else f"{ratio:.2f}x", "target": tgt, "verdict": verdict}


def render(res: dict, s: Settings, pin: Pinning, use_wrk: bool) -> str:
    import aiohttp

    R = rows(res, s)
    heads = ("metric", "upstream direct", "byte proxy", "floor (/proxy)", "engine", "engine/proxy", "target", "")
    widths = [max(len(heads[i]), *(len(str(r[k])) for r in R))
              for i, k in enumerate(("label", "direct", "proxy", "floor", "engine", "ratio", "target", "verdict"))]
    line = lambda cells: "  ".join(  # noqa: E731
        (str(c).ljust(widths[i]) if i == 0 else str(c).rjust(widths[i])) for i, c in enumerate(cells)).rstrip()
    D = res.get("direct", {})
    cn, cs = max(s.ns_concurrency), max(s.stream_concurrency)
    lg = "wrk -t1" if use_wrk else "asyncio client (wrk missing)"
    head = [
        "engine bench: byte proxy, hand-written floor and engine serve, same load, same run (loopback)",
        f"machine: {os.cpu_count()} CPUs, Python {platform.python_version()}, aiohttp {aiohttp.__version__}; "
        f"{pin.describe()}",
        f"load: non-stream via {lg}; streams via the asyncio client; {s.duration:g} s per measured run, "
        f"{max(1, s.rounds)} rounds of each (proxy, floor and engine alternated, order swapped each round; median "
        f"round shown); "
        f"text stream = {len(stream_events(model_name('text', n=s.text_deltas)))} upstream events, "
        f"tool stream = {len(stream_events(model_name('tools', n=s.tool_fragments, k=s.tool_calls)))}",
        f"load generator ceiling (straight at the fake upstream, same CPU): non-stream c={cn} "
        f"{_fmt(D.get(f'ns{cn}', {}).get('rps'), 'int')} req/s, text streams c={cs} "
        f"{_fmt(D.get(f'text{cs}', {}).get('events_s'), 'int')} events/s",
        "",
        line(heads),
        line(["-" * w for w in widths]),
    ]
    body = [line([r["label"], r["direct"], r["proxy"], r["floor"], r["engine"], r["ratio"], r["target"], r["verdict"]])
            for r in R]
    notes = ["",
             "events/s: upstream events carried per second, all streams together (streams completed x events "
             "per stream / time). TTFT: request sent -> first text delta (or argument fragment) received.",
             "added p50: p50 latency minus the p50 straight at the upstream. ratio: engine / byte proxy.",
             "floor: a hand-written Chat Completions -> Messages gateway (engine/bench/floor.py) on the engine's "
             "own stack (aiohttp server, the gateway's upstream client, msgspec, the same jsonschema-rs check) "
             "with no mapping specs and none of the gateway's features, on the Chat Completions rows only; "
             "in brackets its ratio to the byte proxy. Proxy -> floor is what translating costs at least; "
             "floor -> engine what the specs and the features add."]
    if any(r["verdict"] == LOAD_BOUND for r in R):
        P = res.get("proxy", {})
        busy = ", ".join(f"{k} {v['busy']:.0%}" for k, v in P.items()
                         if isinstance(v, dict) and v.get("busy") is not None and v["busy"] < SATURATED)
        notes.append(f"{LOAD_BOUND}: a target row whose byte-proxy run used under {SATURATED:.0%} of its core "
                     f"(such runs: {busy}): the load generator and the fake upstream, on the other CPU, set the "
                     "pace, so the ratio measures neither side; run on a quieter machine (or with more CPUs) for "
                     "a verdict.")
    if s.workers and s.workers > 1:
        notes.append(f"--workers {s.workers}: both CPUs for the gateway, so its workers share CPU "
                     f"{pin.load_cpus or '-'} with the upstream and the load generator: the gain shown is a "
                     "floor, not what a dedicated machine gives.")
        for name in [k for k in res if k.startswith("engine-w")]:
            for key, what in ((f"ns{cn}", f"non-stream c={cn}"), (f"text{cs}", f"text stream c={cs}")):
                cores = res[name].get(key, {}).get("cores")
                if cores:
                    notes.append(f"--workers {s.workers}, {what}: cores busy during the run: gateway workers "
                                 f"{cores['gateway']:.2f}, fake upstream {cores['upstream']:.2f}, load generator "
                                 f"{cores['loadgen']:.2f} (of {os.cpu_count()})")
    micro = res.get("micro")
    out = "\n".join(head + body + notes)
    if res.get("faults"):
        out += "\n\n" + faults_mod.render(res["faults"])
    if micro:
        out += "\n\n" + micro_mod.render(micro)
        for r in micro["stream"]:
            if r["beyond_us_event"] is not None:
                ok = "met" if r["beyond_us_event"] <= 5 else "MISSED"
                out += f"\ntarget <= 5 µs/event beyond json decode/encode, {r['spec']}: " \
                       f"{r['beyond_us_event']:.2f} µs  {ok}"
    out += f"\n\n(run took {res.get('seconds', 0):.0f} s)"
    return out


def run_faults(s: Settings, fs: faults_mod.FaultSettings | None = None) -> dict:
    """The fault load test alone (`engine bench --faults`)."""
    b = Bench(s)
    try:
        b.pin.pin_self()
        b.say(b.pin.describe())
        return b.fault_phase(fs)
    finally:
        b.close()


def main(quick_run: bool = False, micro_only: bool = False, faults_only: bool = False, **over) -> int:
    if micro_only:
        print(micro_mod.render(micro_mod.run(quick=quick_run)))
        return 0
    s = quick(**over) if quick_run else Settings(**over)
    if faults_only:
        res = run_faults(s)
        print(faults_mod.render(res))
        return 0 if faults_mod.passed(res) else 1
    b = Bench(s)
    try:
        res = b.run()
        print(render(res, s, b.pin, b.use_wrk))
        failed = sum(v.get("failed", 0) for name in ("proxy", "engine") for v in res.get(name, {}).values()
                     if isinstance(v, dict))
        if res.get("faults") and not faults_mod.passed(res["faults"]):
            failed += 1
        return 0 if failed == 0 else 1
    finally:
        b.close()
