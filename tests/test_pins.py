"""Version pins (a route's `@version`, mapping_versions) the specs cannot serve are refused by
`engine check` and at start, with the versions there are: no fallback, no traceback."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from support.gateway import REPO_ROOT, free_port


def engine(*args, env=None):
    base = {k: v for k, v in os.environ.items() if not k.startswith("TOKLIGENCE_")}
    return subprocess.run([sys.executable, "-m", "engine", *args], capture_output=True, text=True, timeout=60,
                          cwd=REPO_ROOT, env={**base, **(env or {})})


BAD_PINS = [
    ("routes=claude*=>anthropic@2099-01-01", "route claude*=>anthropic@2099-01-01: no mapping version '2099-01-01'"),
    ("mapping_versions=chat-to-messages=2099-01-01", "no version '2099-01-01' of chat-to-messages"),
    ("mapping_versions=chat-to-messages=2024-01-01", "no version '2024-01-01' of chat-to-messages"),
    ("mapping_versions=chat-to-mesages=2025-06-01", "no mapping pair 'chat-to-mesages'; pairs: chat-to-messages,"),
]


@pytest.mark.parametrize("setting,message", BAD_PINS)
def test_check_refuses_a_pin_the_specs_cannot_serve(setting, message):
    r = engine("check", "--set", setting)
    assert r.returncode == 1, r.stdout + r.stderr
    assert message in r.stderr, r.stderr
    assert "versions: 2025-06-01" in r.stderr or "pairs: chat-to-messages" in r.stderr, r.stderr
    assert "Traceback" not in r.stderr


def test_check_reads_the_pins_of_the_config_file(tmp_path):
    ini = tmp_path / "gw.ini"
    ini.write_text("routes=claude*=>anthropic@2099-01-01\n")
    r = engine("check", "--config", str(ini))
    assert r.returncode == 1 and f"{ini}: route claude*=>anthropic@2099-01-01" in r.stderr, r.stderr
    ini.write_text("routes=claude*=>anthropic@2025-06-01\nmapping_versions=chat-to-messages=2025-06-01\n")
    assert engine("check", "--config", str(ini)).returncode == 0


@pytest.mark.parametrize("setting,message", BAD_PINS[:2])
def test_serve_exits_with_the_message_at_start(setting, message):
    r = engine("serve", "--host", "127.0.0.1", "--port", str(free_port()), "--set", setting)
    assert r.returncode == 2, r.stdout + r.stderr
    assert "pinned mapping versions the specs do not have" in r.stderr and message in r.stderr, r.stderr
    assert "versions: 2025-06-01" in r.stderr
    assert "Traceback" not in r.stderr


class _Route:
    def __init__(self, version):
        self.version = version


def test_a_serving_catalog_compiles_the_versions_the_config_serves():
    from engine.catalog import Catalog

    full = Catalog.load()
    newest = Catalog.load(serving=({}, ()))
    assert set(newest.specs) == {(n, v) for n, v in (ref.split("@") for ref in full.latest_refs())}
    assert newest.known == full.known and newest.all_versions() == full.all_versions()
    assert newest.pair("chat-to-messages")["request"].ref == full.pair("chat-to-messages")["request"].ref
    with pytest.raises(KeyError, match="is not compiled in this catalog"):
        newest.get("chat-to-messages/request", "2025-06-01")
    # pins are still checked against every version, with the same words
    assert newest.pin_errors((), {"chat-to-messages": "2099-01-01"}) == \
        full.pin_errors((), {"chat-to-messages": "2099-01-01"})
    assert newest.pin_errors((), {"chat-to-messages": "2025-06-01"}) == []

    pinned = Catalog.load(serving=({"chat-to-messages": "2025-06-01"}, (_Route("2025-06-01"),)))
    for pair in pinned.pairs():  # a route's pin applies to every pair
        assert {k: s.ref for k, s in pinned.pair(pair, {pair: "2025-06-01"}).items()} == \
            {k: s.ref for k, s in full.pair(pair, {pair: "2025-06-01"}).items()}
    assert pinned.pair("chat-to-messages", {"chat-to-messages": "2025-06-01"})["request"].version == "2025-06-01"
    assert pinned.pair("responses-to-messages")["request"].ref == full.pair("responses-to-messages")["request"].ref
    assert ("chat-to-messages/request", "2026-12-01") not in pinned.specs


def test_a_serving_catalog_leaves_a_broken_file_it_does_not_serve_to_engine_check(tmp_path):
    import shutil

    from engine.catalog import MAPPINGS_DIR, Catalog
    from engine.spec_errors import SpecErrors

    root = tmp_path / "mappings"
    shutil.copytree(MAPPINGS_DIR, root)
    old = root / "chat-to-messages" / "error" / "2024-01-01.yaml"
    text = (root / "chat-to-messages" / "error" / "2025-06-01.yaml").read_text()
    old.write_text(text.replace('version: "2025-06-01"', 'version: "2024-01-01"')
                   .replace("  provider: \"src.provider || 'upstream'\"", "  provider: nowhere.provider"))
    with pytest.raises(SpecErrors, match="nowhere"):
        Catalog.load(root)
    served = Catalog.load(root, serving=({}, ()))
    assert "2024-01-01" in served.all_versions()
    assert served.pair("chat-to-messages")["error"].version == "2025-06-01"
    assert ("chat-to-messages/error", "2024-01-01") not in served.specs
