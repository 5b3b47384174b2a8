"""`engine serve | check | translate | replay | bench`."""
from __future__ import annotations

import argparse
import gc
import json
import logging
import sys
import time

from . import pairs
from .catalog import MAPPINGS_DIR, Catalog, PinError, compile_dir
from .spec_errors import SpecErrors
from .profiles import shipped


def _serve(args) -> int:
    from . import config as config_mod
    from .logs import setup_logging
    from .server.app import create_app
    from .server.api_errors import install_http_error_shapes
    from aiohttp import web

    try:
        cfg = config_mod.load(vars(args))
    except config_mod.ConfigError as e:
        print(f"engine: config error: {e}", file=sys.stderr)
        return 2
    setup_logging(cfg)
    log = logging.getLogger("engine")
    try:
        catalog = Catalog.load(cfg.mappings_dir or MAPPINGS_DIR, serving=(cfg.mapping_versions, cfg.routes))
    except SpecErrors as e:
        print(f"engine: the mapping specs do not compile:\n{e}", file=sys.stderr)
        return 1
    try:
        app = create_app(cfg, catalog)
    except PinError as e:
        print(f"engine: config error: pinned mapping versions the specs do not have:\n{e}", file=sys.stderr)
        return 2
    install_http_error_shapes()
    catalog.warm()  # not paid by each API's first request, and made before the workers fork
    try:
        loop_factory = event_loop_factory(cfg.event_loop)
    except ImportError:
        print("engine: config error: event_loop=uvloop, but uvloop is not installed (pip install uvloop)",
              file=sys.stderr)
        return 2
    log.info("engine listening on http://%s:%s", cfg.host, cfg.port)
    log.info("event loop: %s", "uvloop" if loop_factory.__module__.startswith("uvloop") else "asyncio")
    log.info("routes: %s", cfg.describe_routes())
    log.info("mapping specs: %s", ", ".join(catalog.latest_refs()))
    if cfg.auth_disabled:
        log.warning("auth disabled (auth_disabled=true, the dev default): every client is let through "
                    "without a gateway key")
        if cfg.loopback_only:
            log.warning("listening on 127.0.0.1 only, because auth is disabled and no listen address is set; "
                        "set http_address (or --host) to listen elsewhere, and api_keys to require keys")
        elif cfg.host not in ("127.0.0.1", "::1", "localhost"):
            log.warning("listening on %s with auth disabled: anyone who can reach this address spends the "
                        "upstream keys; set api_keys and auth_disabled=false", cfg.host)
    else:
        log.info("auth enabled: %d gateway key(s); clients send them as Bearer or x-api-key",
                 len(cfg.all_api_keys()))
    if not cfg.anthropic_api_key:
        log.warning("no Anthropic API key set (anthropic_api_key / TOKLIGENCE_ANTHROPIC_API_KEY): "
                    "requests routed to anthropic will fail until one is set")
    problem = _probe_store(cfg)
    if problem:
        log.error("the response store is unusable, so the gateway does not start: %s", problem)
        logging.shutdown()
        return 1
    _raise_nofile()
    # everything built so far (compiled specs, schemas, modules) lives as long as the process:
    # out of every later GC pass, and shared copy-on-write with forked workers
    gc.collect()
    gc.freeze()
    # a request frees nearly all it allocates by reference counting; at the default threshold
    # (700) the young generation is still scanned every few requests, ~5% of the CPU under load
    gc.set_threshold(5000, 10, 10)
    workers = cfg.worker_count
    if workers <= 1:
        app.on_startup.append(_reopen_logs_on_sighup)
        web.run_app(app, host=cfg.host, port=cfg.port, print=None, access_log=None, handler_cancellation=True,
                    backlog=cfg.listen_backlog, shutdown_timeout=cfg.shutdown_grace_seconds, handle_signals=True,
                    loop=loop_factory())
        return 0
    return _supervise(workers, lambda: _run_worker(app, cfg, loop_factory), log, cfg.port)


def event_loop_factory(choice: str):
    """What makes the serving event loop: uvloop's where `event_loop` is uvloop, or auto and uvloop
    is importable (it takes less CPU per request and per stream event than asyncio's own loop);
    else asyncio's. ImportError when uvloop is asked for by name and missing."""
    if choice != "asyncio":
        try:
            import uvloop
        except ImportError:
            if choice == "uvloop":
                raise
        else:
            return uvloop.new_event_loop
    import asyncio
    return asyncio.new_event_loop


async def _reopen_logs_on_sighup(app):
    """SIGHUP reopens the log file by name: `postrotate kill -HUP <pid>` after logrotate moved it."""
    import asyncio
    import signal
    from .logs import reopen_logs
    asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, reopen_logs)


def _probe_store(cfg) -> str | None:
    """Why the configured response store cannot be used (read and written), or None."""
    import asyncio
    from .store.factory import open_store

    async def probe():
        store = open_store(cfg.session_store, cfg.data_dir, cfg.response_ttl_seconds, timeout=cfg.store_timeout,
                           settings=cfg)
        try:
            async with asyncio.timeout(cfg.store_timeout + 1):
                await store.ping()
        finally:
            await store.close()

    try:
        asyncio.run(probe())
    except Exception as e:
        return f"{cfg.session_store} ({cfg.data_dir}): {e or type(e).__name__}"
    return None


def _raise_nofile():
    """Soft open-files limit up to the hard one: each open stream holds two sockets."""
    try:
        import resource
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        want = hard if hard != resource.RLIM_INFINITY else 65536
        if soft != resource.RLIM_INFINITY and soft < want:
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    except (ImportError, ValueError, OSError):
        pass


def _run_worker(app, cfg, loop_factory) -> None:
    """One of N worker processes: its own socket on the shared port (SO_REUSEPORT, the kernel
    spreads connections), its own event loop and upstream connection pools. Answers carry
    `x-engine-worker: <pid>`. The first SIGTERM/SIGINT starts a graceful stop; repeats (the
    parent forwards what the process group may also have received) are ignored."""
    import asyncio
    import os
    import signal
    from aiohttp import web

    pid = str(os.getpid())

    async def tag(request, response):
        response.headers["x-engine-worker"] = pid

    async def signals_once(app):
        loop = asyncio.get_running_loop()
        fired = []

        def stop():
            if not fired:
                fired.append(True)
                raise web.GracefulExit()

        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop)

    app.on_response_prepare.append(tag)
    app.on_startup.append(signals_once)
    app.on_startup.append(_reopen_logs_on_sighup)
    logging.getLogger("engine").info("worker %s serving on http://%s:%s", pid, cfg.host, cfg.port)
    web.run_app(app, host=cfg.host, port=cfg.port, print=None, access_log=None, handler_cancellation=True, reuse_port=True,
                backlog=cfg.listen_backlog, shutdown_timeout=cfg.shutdown_grace_seconds, handle_signals=True,
                loop=loop_factory())


def _supervise(n: int, run, log, port) -> int:
    """Parent of `n` forked workers: forwards SIGTERM/SIGINT to them and exits when they have
    all exited. A worker that dies on its own after running a while is replaced; one that dies
    within seconds of starting (bad port, bad config) stops them all, with its exit code."""
    import os
    import signal
    import traceback

    children: dict[int, float] = {}
    state = {"stopping": False, "code": 0}

    def spawn():
        pid = os.fork()
        if pid == 0:  # the worker
            code = 1
            try:
                signal.signal(signal.SIGTERM, signal.SIG_DFL)
                signal.signal(signal.SIGINT, signal.SIG_DFL)
                signal.signal(signal.SIGHUP, signal.SIG_IGN)  # until the worker's loop handles it
                run()
                code = 0
            except SystemExit as e:
                code = e.code if isinstance(e.code, int) else 0
            except BaseException:
                traceback.print_exc()
            finally:
                for h in logging.getLogger().handlers:
                    try:
                        h.flush()
                    except Exception:
                        pass
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(code)
        children[pid] = time.monotonic()
        return pid

    def forward(signum, frame):
        state["stopping"] = True
        for pid in list(children):
            try:
                os.kill(pid, signum)
            except ProcessLookupError:
                pass

    def reopen(signum, frame):
        from .logs import reopen_logs
        reopen_logs()
        for pid in list(children):
            try:
                os.kill(pid, signal.SIGHUP)
            except ProcessLookupError:
                pass

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    signal.signal(signal.SIGHUP, reopen)
    for _ in range(n):
        spawn()
    log.info("engine: %d workers on port %s (SO_REUSEPORT), pids %s", n, port,
             " ".join(map(str, children)))
    while children:
        try:
            pid, status = os.wait()
        except ChildProcessError:
            break
        started = children.pop(pid, None)
        if started is None:
            continue
        rc = os.waitstatus_to_exitcode(status)
        if state["stopping"]:
            continue
        if time.monotonic() - started > 5.0:
            log.warning("worker %s exited (code %s); starting another", pid, rc)
            spawn()
        else:
            log.error("worker %s exited at start (code %s); stopping the others", pid, rc)
            state["code"] = rc or 1
            forward(signal.SIGTERM, None)
    return state["code"]


def _check(args) -> int:
    specs, errors = compile_dir(args.mappings or MAPPINGS_DIR)
    for e in errors:
        print(e, file=sys.stderr)
    if errors:
        print(f"{len(errors)} error(s) in the mapping specs", file=sys.stderr)
        return 1
    if _check_pins(args, specs):
        return 1
    try:
        declared = pairs.load_dir(args.mappings or MAPPINGS_DIR)
    except pairs.PairError as e:
        for err in e.errors:
            print(err, file=sys.stderr)
        print(f"{len(e.errors)} error(s) in the API pair declarations", file=sys.stderr)
        return 1
    if args.show_source:
        return _print_source(Catalog(specs), args.show_source)
    for (name, version), spec in sorted(specs.items()):
        print(f"ok  {name}@{version}  ({spec.kind}, {spec.file})")
    for name, decl in sorted(declared.items()):
        routes = ", ".join(f"{m} {p}" for m, p in decl.endpoints)
        print(f"ok  pair {name}: {routes} -> {decl.provider} {decl.upstream_path}  ({decl.file})")
    return 0


def _check_pins(args, specs) -> int:
    """The config's version pins (routes `@version`, mapping_versions) against the specs checked:
    the config of `--config`, TOKLIGENCE_CONFIG and TOKLIGENCE_* as `engine serve` reads it."""
    from . import config as config_mod

    try:
        cfg = config_mod.load({"config": args.config, "set": args.set})
    except config_mod.ConfigError as e:
        print(f"engine: config error: {e}", file=sys.stderr)
        return 1
    if cfg.mappings_dir and not args.mappings and cfg.mappings_dir != str(MAPPINGS_DIR):
        specs, errors = compile_dir(cfg.mappings_dir)
        for e in errors:
            print(e, file=sys.stderr)
        if errors:
            return len(errors)
    problems = Catalog(specs).pin_errors(cfg.routes, cfg.mapping_versions)
    for p in problems:
        print(f"{cfg.config_file or 'config'}: {p}", file=sys.stderr)
    return len(problems)


def _explain(args) -> int:
    specs, errors = compile_dir(args.mappings or MAPPINGS_DIR)
    for e in errors:
        print(e, file=sys.stderr)
    if errors:
        return 1
    return _print_source(Catalog(specs), args.spec)


def _print_source(catalog: Catalog, ref: str) -> int:
    """The Python a spec compiled to, each piece under the file name tracebacks show for it."""
    try:
        spec = _spec(catalog, ref)
    except KeyError as e:
        print(f"engine: {e.args[0]}", file=sys.stderr)
        return 2
    print(f"# {spec.ref} ({spec.kind}, {spec.file}): {len(spec.generated)} generated functions")
    read = "every member (it reads req as a whole)" if spec.req_members is None else \
        ", ".join(sorted(spec.req_members)) or "none"
    print(f"# members of req it reads: {read}")
    for filename, src in spec.generated:
        print(f"\n# {filename}")
        print(src.rstrip("\n"))
    return 0


def _spec(catalog: Catalog, ref: str):
    name, _, version = ref.partition("@")
    return catalog.get(name, version or None)


def _load_json(path):
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def _translate(args) -> int:
    catalog = Catalog.load(args.mappings or MAPPINGS_DIR)
    spec = _spec(catalog, args.spec)
    doc = _load_json(args.file)
    if isinstance(doc, dict) and "body" in doc and "path" in doc:
        doc = doc["body"]  # a captured client request
    req = _load_json(args.req) if args.req else {}
    cfg = {"default_max_tokens": args.default_max_tokens, "prompt_cache": "auto", "prompt_cache_ttl": "5m"}
    model = args.model or (doc.get("model") if isinstance(doc, dict) else None)
    scope = spec.scope(src=doc, req=req, cfg=cfg, model=model, profile=shipped().get(model))
    failed = spec.check(scope) if spec.checks else None
    if failed:
        print(json.dumps({"rejected": {"param": failed[0], "message": failed[1], "status": failed[2]}}, indent=2))
        return 1
    print(json.dumps(spec.template(scope), indent=2, ensure_ascii=False))
    return 0


def _recorded_exchange(fixture) -> dict | None:
    """requests/<name>.json beside a fixture `engine serve --record` wrote, if there is one."""
    from pathlib import Path

    side = Path(fixture).parent / "requests" / (Path(fixture).stem + ".json")
    return _load_json(side) if side.is_file() else None


def _replay(args) -> int:
    from .sse import SSEDecoder
    from .stream import StreamTranslator

    catalog = Catalog.load(args.mappings or MAPPINGS_DIR)
    exchange = _recorded_exchange(args.fixture) or {}
    pair = exchange.get("pair") or "chat-to-messages"
    raw = open(args.fixture, "rb").read()
    # the client request of a translated exchange (a passed-through one is in the upstream's API)
    recorded = exchange.get("client", {}).get("body") if exchange.get("pair") else None
    req = _load_json(args.req) if args.req else recorded or {"stream": True, "stream_options": {"include_usage": True}}
    if str(args.fixture).endswith(".json"):  # a recorded non-streamed answer: the response spec
        spec = _spec(catalog, args.spec or f"{pair}/response")
        out = spec.apply(src=json.loads(raw), req=req, cfg={"default_max_tokens": 4096}, model=args.model)
        print(json.dumps(out, indent=2, ensure_ascii=False))
        return 0
    spec = _spec(catalog, args.spec or f"{pair}/stream")
    cfg = {"default_max_tokens": 4096, "stream_id": "replay"}

    def run_once():
        t = StreamTranslator(spec, req=req, cfg=cfg, model=args.model, profile=shipped().get(args.model))
        return t.start_bytes() + t.feed(raw) + t.finish(), t.events_in

    out, n_events = run_once()
    if not args.quiet:
        sys.stdout.write(out.decode())
    if args.time:
        reps = args.repeat
        start = time.perf_counter()
        for _ in range(reps):
            run_once()
        full = (time.perf_counter() - start) / reps
        # the floor any translator pays: SSE decode, json decode and re-encode of the same events
        start = time.perf_counter()
        for _ in range(reps):
            for _n, data in SSEDecoder().feed(raw):
                try:
                    obj = json.loads(data)
                except ValueError:
                    continue
                json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode()
        floor = (time.perf_counter() - start) / reps
        n = max(n_events, 1)
        print(f"\n# {args.fixture}: {n_events} events in, {out.count(b'data:')} out; "
              f"{full / n * 1e6:.2f} µs/event through {spec.ref}; "
              f"{floor / n * 1e6:.2f} µs/event for SSE + json decode/encode alone; "
              f"translation beyond that: {(full - floor) / n * 1e6:.2f} µs/event", file=sys.stderr)
    return 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="engine", description="LLM API gateway driven by YAML mapping specs")
    sub = p.add_subparsers(dest="cmd", required=True)

    s = sub.add_parser("serve", help="run the gateway")
    s.add_argument("--config", help="INI config file (else TOKLIGENCE_CONFIG, else embedded defaults)")
    s.add_argument("--host")
    s.add_argument("--port", type=int)
    s.add_argument("--workers", help="processes sharing the port (N or auto)")
    s.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override any config key")
    s.add_argument("--record", dest="record_dir", metavar="DIR",
                   help="write every upstream exchange as fixture files into DIR (config key record_dir)")
    s.set_defaults(fn=_serve)

    c = sub.add_parser("check", help="validate and compile every mapping spec; exit 1 on any error")
    c.add_argument("--mappings", help="folder of specs (default: mappings_dir, else the project's mappings/)")
    c.add_argument("--config", help="INI config whose version pins are checked too (else TOKLIGENCE_CONFIG)")
    c.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config key")
    c.add_argument("--show-source", metavar="SPEC", help="then print the Python SPEC (NAME[@VERSION]) compiled to")
    c.set_defaults(fn=_check)

    e = sub.add_parser("explain", help="print the Python a spec compiles to (what tracebacks through it show)")
    e.add_argument("spec", help="NAME[@VERSION], e.g. chat-to-messages/stream@2026-12-01")
    e.add_argument("--mappings", help="folder of specs (default: the project's mappings/)")
    e.set_defaults(fn=_explain)

    t = sub.add_parser("translate", help="apply a request or response spec to a JSON file")
    t.add_argument("--spec", required=True, help="NAME[@VERSION], e.g. chat-to-messages/request")
    t.add_argument("--req", help="the original client request (for response specs)")
    t.add_argument("--model", help="upstream model name (default: the body's model)")
    t.add_argument("--default-max-tokens", type=int, default=4096)
    t.add_argument("--mappings")
    t.add_argument("file")
    t.set_defaults(fn=_translate)

    r = sub.add_parser("replay", help="run a recorded SSE stream through a stream spec")
    r.add_argument("fixture")
    r.add_argument("--spec", help="NAME[@VERSION] (default: the recorded exchange's pair beside the fixture, "
                                  "else chat-to-messages; its stream spec, or its response spec for a .json)")
    r.add_argument("--req", help="client request JSON (default: the recorded client request, else stream "
                                 "with include_usage)")
    r.add_argument("--model", default="replay-model")
    r.add_argument("--time", action="store_true", help="print µs per event beside json decode/encode alone")
    r.add_argument("--repeat", type=int, default=2000)
    r.add_argument("--quiet", action="store_true")
    r.add_argument("--mappings")
    r.set_defaults(fn=_replay)

    d = sub.add_parser("diff", help="run every case file and recorded fixture through two versions of an "
                                    "API pair and print what changes, per case")
    d.add_argument("pair", help="e.g. chat-to-messages")
    d.add_argument("version_a")
    d.add_argument("version_b")
    d.add_argument("--mappings", help="folder of specs (default: the project's mappings/)")
    d.add_argument("--cases", help="folder of case files (default: tests/cases)")
    d.add_argument("--fixtures", action="append", default=[], metavar="DIR",
                   help="a folder of recorded fixtures (repeatable; tests/fixtures is always read)")
    d.set_defaults(fn=_diff)

    b = sub.add_parser("bench", help="benchmark: the gateway beside a plain byte proxy, one table of ratios")
    b.add_argument("--quick", action="store_true", help="short runs (about 5 minutes on 2 CPUs)")
    b.add_argument("--micro-only", action="store_true", help="only the engine alone: µs per event / request")
    b.add_argument("--faults", action="store_true",
                   help="only the fault load test: 200 streams at once through engine serve, 20%% faulted, "
                        "each outcome checked exactly")
    b.add_argument("--no-faults", action="store_true", help="skip the fault load test in a full run")
    b.add_argument("--cache", action="store_true",
                   help="only the prompt-caching replay: a multi-turn Codex session, billed input tokens with "
                        "prompt_cache=auto beside off (counts, not timings)")
    b.add_argument("--turns", type=int, default=12, help="turns of the --cache replay (default 12)")
    b.add_argument("--loadgen", choices=("auto", "wrk", "python"), default="auto",
                   help="non-stream load generator (auto: wrk if installed)")
    b.add_argument("--duration", type=float, help="seconds per measured load run")
    b.add_argument("--rounds", type=int,
                   help="runs of each load per process, proxy and engine alternated; the median is shown (default 3)")
    b.add_argument("--open-streams", type=int, help="streams held open at once for the RSS test (default 1000)")
    b.add_argument("--workers", type=int, help="worker count for the scaling row (default 2; 0 skips it)")
    b.add_argument("--no-micro", action="store_true", help="skip the micro-benchmark")
    b.add_argument("--no-real", action="store_true",
                   help="skip the real-sized request rows (the recorded Codex and Claude Code requests)")
    b.add_argument("--no-pin", action="store_true", help="do not pin processes to CPUs")
    b.set_defaults(fn=_bench)

    args = p.parse_args(argv)
    return args.fn(args)


def _diff(args) -> int:
    from . import diff
    from .cases import CASES_DIR

    catalog = Catalog.load(args.mappings or MAPPINGS_DIR)
    for version in (args.version_a, args.version_b):
        problem = catalog.pin_problem(args.pair, version)
        if problem:
            print(f"engine diff: {problem}", file=sys.stderr)
            return 2
    diff.run(catalog, args.pair, args.version_a, args.version_b, cases_dir=args.cases or CASES_DIR,
             fixtures=[diff.FIXTURES_DIR, *args.fixtures])
    return 0


def _bench(args) -> int:
    from engine.bench import runner

    if args.cache:
        from engine.bench import caching
        return caching.main(turns=args.turns)
    over = {"loadgen": args.loadgen, "pin": not args.no_pin, "micro": not args.no_micro, "real": not args.no_real}
    if args.duration:
        over["duration"] = args.duration
    if args.rounds:
        over["rounds"] = args.rounds
    if args.open_streams is not None:
        over["open_streams"] = args.open_streams
    if args.workers is not None:
        over["workers"] = args.workers
    if args.no_faults:
        over["faults"] = False
    try:
        return runner.main(quick_run=args.quick, micro_only=args.micro_only, faults_only=args.faults, **over)
    except RuntimeError as e:
        print(f"engine bench: {e}", file=sys.stderr)
        return 2
