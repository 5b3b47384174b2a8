"""`engine serve | check | translate | replay`."""
from __future__ import annotations

import argparse
import json
import logging
import sys
import time

from .catalog import MAPPINGS_DIR, Catalog, compile_dir
from .errors import SpecErrors


def _serve(args) -> int:
    from . import config as config_mod
    from .logs import setup_logging
    from .server.app import create_app
    from aiohttp import web

    try:
        cfg = config_mod.load(vars(args))
    except config_mod.ConfigError as e:
        print(f"engine: config error: {e}", file=sys.stderr)
        return 2
    setup_logging(cfg)
    log = logging.getLogger("engine")
    try:
        catalog = Catalog.load()
    except SpecErrors as e:
        print(f"engine: the mapping specs do not compile:\n{e}", file=sys.stderr)
        return 1
    app = create_app(cfg, catalog)
    log.info("engine listening on http://%s:%s", cfg.host, cfg.port)
    log.info("routes: %s", cfg.describe_routes())
    log.info("mapping specs: %s", ", ".join(s.ref for s in catalog._latest.values()))
    if not cfg.anthropic_api_key:
        log.warning("no Anthropic API key set (anthropic_api_key / TOKLIGENCE_ANTHROPIC_API_KEY): "
                    "requests routed to anthropic will fail until one is set")
    web.run_app(app, host=cfg.host, port=cfg.port, print=None, access_log=None,
                shutdown_timeout=cfg.shutdown_grace_seconds, handle_signals=True)
    return 0


def _check(args) -> int:
    specs, errors = compile_dir(args.mappings or MAPPINGS_DIR)
    for e in errors:
        print(e, file=sys.stderr)
    if errors:
        print(f"{len(errors)} error(s) in the mapping specs", file=sys.stderr)
        return 1
    for (name, version), spec in sorted(specs.items()):
        print(f"ok  {name}@{version}  ({spec.kind}, {spec.file})")
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
    cfg = {"default_max_tokens": args.default_max_tokens}
    scope = spec.scope(src=doc, req=req, cfg=cfg, model=args.model or (doc.get("model") if isinstance(doc, dict) else None))
    failed = spec.check(scope) if spec.checks else None
    if failed:
        print(json.dumps({"rejected": {"param": failed[0], "message": failed[1], "status": failed[2]}}, indent=2))
        return 1
    print(json.dumps(spec.template(scope), indent=2, ensure_ascii=False))
    return 0


def _replay(args) -> int:
    from .sse import SSEDecoder
    from .stream import StreamTranslator

    catalog = Catalog.load(args.mappings or MAPPINGS_DIR)
    spec = _spec(catalog, args.spec)
    raw = open(args.fixture, "rb").read()
    req = _load_json(args.req) if args.req else {"stream": True, "stream_options": {"include_usage": True}}
    cfg = {"default_max_tokens": 4096, "stream_id": "replay"}

    def run_once():
        t = StreamTranslator(spec, req=req, cfg=cfg, model=args.model)
        return t.encode(t.start()) + t.feed(raw) + t.finish(), t.events_in

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
    s.set_defaults(fn=_serve)

    c = sub.add_parser("check", help="validate and compile every mapping spec; exit 1 on any error")
    c.add_argument("--mappings", help="folder of specs (default: the project's mappings/)")
    c.set_defaults(fn=_check)

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
    r.add_argument("--spec", default="chat-to-messages/stream")
    r.add_argument("--req", help="client request JSON (default: stream with include_usage)")
    r.add_argument("--model", default="replay-model")
    r.add_argument("--time", action="store_true", help="print µs per event beside json decode/encode alone")
    r.add_argument("--repeat", type=int, default=2000)
    r.add_argument("--quiet", action="store_true")
    r.add_argument("--mappings")
    r.set_defaults(fn=_replay)

    args = p.parse_args(argv)
    return args.fn(args)
