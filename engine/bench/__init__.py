"""`engine bench`: the gateway side by side with a plain byte proxy, on loopback.

Modules, one job each:

| module | job |
|---|---|
| upstream.py | a fast fake Anthropic Messages upstream (raw asyncio HTTP/1.1, prebuilt replies) |
| proxy.py | the baseline: a plain aiohttp proxy forwarding bytes untouched, one pooled session |
| floor.py | the hand-written floor: Chat Completions to Messages written out in Python on the
  gateway's own stack, no specs and no features (what translating costs at the least) |
| client.py | the asyncio load generator for streams (TTFT, full-stream time, events/s) and a
  fallback non-stream load generator when wrk is missing |
| wrk.py | non-stream load through wrk (Debian package `wrk`), output parsed |
| procs.py | starting, pinning (taskset) and measuring (RSS) the processes under test |
| runner.py | the phases, in one run, and the one table with ratios to the byte proxy |
| micro.py | the engine alone: µs per stream event per stream spec, µs per request translation |
| caching.py | the prompt-caching replay: a multi-turn Codex session against a fake upstream that
  caches prefixes and bills tokens as Anthropic does, caching on beside off (`engine bench --cache`) |
| faults.py | the fault load test: 200 streams at once, a share faulted by the fake upstream, every
  outcome checked exactly (`engine bench --faults`) |

Every process under test is started as a subprocess (``python -m engine.bench.upstream``,
``python -m engine.bench.proxy``, ``python -m engine.bench.floor``, ``python -m engine serve``), so each can be pinned to a core.
"""
