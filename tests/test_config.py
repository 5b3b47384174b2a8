"""engine.config: sources, precedence, parsing and validation."""

from __future__ import annotations

import argparse
import dataclasses
import logging
from importlib import resources

import pytest

from engine.config import (
    Config,
    ConfigError,
    Route,
    load,
    parse_duration,
    parse_ini,
)
from engine import config as config_mod


@pytest.fixture
def ini(tmp_path):
    """Write an INI file and return its path."""

    def write(text: str, name: str = "gateway.ini") -> str:
        path = tmp_path / name
        path.write_text(text, encoding="utf-8")
        return str(path)

    return write


# ------------------------------------------------------------------ defaults
def test_defaults():
    cfg = load(env={})
    # auth off and no address chosen: loopback only (an explicit address is honoured, see below)
    assert cfg.http_address == "127.0.0.1:8081" and cfg.loopback_only
    assert (cfg.host, cfg.port) == ("127.0.0.1", 8081)
    assert cfg.anthropic_api_key == ""
    assert cfg.anthropic_base_url == "https://api.anthropic.com"
    assert cfg.anthropic_version == "2023-06-01"
    assert cfg.openai_api_key == ""
    assert cfg.openai_base_url == "https://api.openai.com/v1"
    assert cfg.describe_routes() == "claude*=>anthropic, gpt*=>openai, o1*=>openai, o3*=>openai, o4*=>openai"
    assert cfg.work_mode == "auto"
    assert cfg.auth_disabled is True
    assert cfg.marketplace_enabled is False
    assert cfg.api_keys == ()
    assert cfg.api_keys_file == ""
    assert cfg.log_file_daemon == ""
    assert cfg.log_level == "info"
    assert cfg.log_format == "text"
    assert cfg.default_max_tokens == 4096
    assert cfg.max_tokens_cap == 0
    assert dict(cfg.mapping_versions) == {}
    assert cfg.model_aliases == ()
    assert cfg.data_dir == "./data"
    assert cfg.session_store == "sqlite"
    assert cfg.response_ttl_seconds == 604800
    assert cfg.upstream_connect_timeout == 10.0
    assert cfg.upstream_first_byte_timeout == 120.0
    assert cfg.upstream_idle_timeout == 120.0
    assert cfg.upstream_max_retries == 2
    assert cfg.max_body_bytes == 20971520
    assert cfg.keepalive_seconds == 15.0
    assert cfg.shutdown_grace_seconds == 30.0
    assert cfg.listen_backlog == 4096
    assert cfg.forward_client_keys is False
    assert cfg.workers == 1
    assert dict(cfg.extra) == {}
    assert cfg.config_file is None
    assert set(cfg.sources.values()) == {"default"}


def test_default_ini_lists_exactly_the_known_keys():
    text = resources.files("engine").joinpath("default.ini").read_text(encoding="utf-8")
    keys = [k for k, _, _ in parse_ini(text, "default.ini")]
    assert sorted(keys) == sorted(config_mod.KNOWN_KEYS)
    assert len(keys) == len(set(keys))
    fields = {f.name for f in dataclasses.fields(Config)} - {"extra", "sources", "config_file", "_host", "_port", "_alias_rx"}
    assert fields == set(config_mod.KNOWN_KEYS)


def test_config_is_frozen():
    cfg = load(env={})
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.log_level = "debug"  # type: ignore[misc]


# ---------------------------------------------------------------- precedence
def test_precedence_each_level(ini):
    path = ini("log_level=warn\nlog_format=json\nwork_mode=translation\n")
    env = {"TOKLIGENCE_CONFIG": path, "TOKLIGENCE_LOG_FORMAT": "text", "TOKLIGENCE_WORK_MODE": "passthrough"}
    cfg = load({"set": ["work_mode=auto"]}, env)
    assert cfg.work_mode == "auto"  # flag over env over INI
    assert cfg.sources["work_mode"] == "flag --set work_mode"
    assert cfg.log_format == "text"  # env over INI
    assert cfg.sources["log_format"] == "env TOKLIGENCE_LOG_FORMAT"
    assert cfg.log_level == "warning"  # INI over default
    assert cfg.sources["log_level"] == f"{path}:1"
    assert cfg.session_store == "sqlite"  # default
    assert cfg.sources["session_store"] == "default"
    assert cfg.config_file == path


def test_config_flag_wins_over_config_env(ini):
    a = ini("log_level=debug\n", "a.ini")
    b = ini("log_level=error\n", "b.ini")
    cfg = load({"config": a}, {"TOKLIGENCE_CONFIG": b})
    assert cfg.log_level == "debug"
    assert cfg.config_file == a


def test_env_for_every_key_name():
    env = {
        "TOKLIGENCE_ANTHROPIC_API_KEY": "sk-ant",
        "TOKLIGENCE_ROUTES": "claude*=>openai",
        "TOKLIGENCE_HTTP_ADDRESS": "127.0.0.1:9000",
        "TOKLIGENCE_LOG_FILE_DAEMON": "/tmp/gw.log",
        "TOKLIGENCE_AUTH_DISABLED": "false",
        "TOKLIGENCE_UPSTREAM_IDLE_TIMEOUT": "2m",
    }
    cfg = load({}, env)
    assert cfg.anthropic_api_key == "sk-ant"
    assert cfg.route_for("claude-x") == Route("claude*", "openai")
    assert (cfg.host, cfg.port) == ("127.0.0.1", 9000)
    assert cfg.log_file_daemon == "/tmp/gw.log"
    assert cfg.auth_disabled is False
    assert cfg.upstream_idle_timeout == 120.0
    assert cfg.sources["anthropic_api_key"] == "env TOKLIGENCE_ANTHROPIC_API_KEY"


def test_empty_env_and_ini_values_mean_unset(ini):
    path = ini("log_level=\nlog_format=json\n")
    cfg = load({"config": path}, {"TOKLIGENCE_LOG_FORMAT": "", "TOKLIGENCE_WORK_MODE": "  "})
    assert cfg.log_level == "info"
    assert cfg.log_format == "json"
    assert cfg.work_mode == "auto"


def test_empty_flag_value_is_explicit():
    cfg = load({"set": ["routes="]}, {"TOKLIGENCE_ROUTES": "gpt*=>openai"})
    assert cfg.routes == ()
    assert cfg.route_for("gpt-4o") is None
    assert cfg.describe_routes() == "(none)"


def test_host_and_port_flags_override_http_address():
    env = {"TOKLIGENCE_HTTP_ADDRESS": "127.0.0.1:9000"}
    cfg = load({"port": 7000}, env)
    assert (cfg.host, cfg.port, cfg.http_address) == ("127.0.0.1", 7000, "127.0.0.1:7000")
    assert cfg.sources["http_address"] == "flag --port (rest from env TOKLIGENCE_HTTP_ADDRESS)"
    cfg = load({"host": "::1", "port": "8000"}, env)
    assert (cfg.host, cfg.port, cfg.http_address) == ("::1", 8000, "[::1]:8000")
    assert cfg.sources["http_address"] == "flag --host/--port"
    cfg = load({"host": "localhost", "port": None}, {})
    assert (cfg.host, cfg.port) == ("localhost", 8081)


def test_known_key_as_direct_flag_and_namespace():
    ns = argparse.Namespace(config=None, host=None, port=None, set=None, log_level="debug", command="serve")
    cfg = load(ns, {"TOKLIGENCE_LOG_LEVEL": "error"})
    assert cfg.log_level == "debug"
    assert cfg.sources["log_level"] == "flag --log-level"
    cfg = load({"auth-disabled": False}, {})
    assert cfg.auth_disabled is False


def test_set_accepts_a_single_string():
    assert load({"set": "workers=auto"}, {}).workers == "auto"


def test_set_without_equals_is_an_error():
    with pytest.raises(ConfigError, match=r"flag --set 'log_level'"):
        load({"set": ["log_level"]}, {})


# ----------------------------------------------------------------- INI files
SEED_INI = """\
# Overrides for the dev environment
base_url=https://dev.tokligence.ai
email=dev@example.com
display_name=Dev Gateway
price_per_1k=0.5000
log_file_daemon=logs/dev-gatewayd.log
log_level=debug
bridge_session_ttl = 5m
auth_disabled=true
; provider keys
anthropic_api_key=sk-ant-123
# openai_api_key=
work_mode=auto
model_provider_routes=gpt*=openai,claude*=anthropic
"""


def test_sectionless_seed_ini(ini, caplog):
    path = ini(SEED_INI)
    with caplog.at_level(logging.DEBUG, logger="engine.config"):
        cfg = load({"config": path}, {})
    assert cfg.log_file_daemon == "logs/dev-gatewayd.log"
    assert cfg.log_level == "debug"
    assert cfg.anthropic_api_key == "sk-ant-123"
    assert cfg.openai_api_key == ""
    assert cfg.describe_routes() == "gpt*=>openai, claude*=>anthropic"
    assert cfg.sources["routes"] == f"{path}:14 (model_provider_routes)"
    assert dict(cfg.extra) == {
        "base_url": "https://dev.tokligence.ai",
        "email": "dev@example.com",
        "display_name": "Dev Gateway",
        "price_per_1k": "0.5000",
        "bridge_session_ttl": "5m",
    }
    assert cfg.sources["price_per_1k"] == f"{path}:5"
    assert "unknown key 'price_per_1k'" in caplog.text


def test_sectioned_ini_is_flattened(ini):
    path = ini(
        "[server]\nhttp_address = 127.0.0.1:9001\n\n[anthropic]\nanthropic_api_key = \"sk-q\"\n"
        "[logging] ; trailing comment\nLog_Level: error\n[misc]\ncolour=blue\n"
    )
    cfg = load({"config": path}, {})
    assert cfg.port == 9001
    assert cfg.anthropic_api_key == "sk-q"
    assert cfg.log_level == "error"
    assert dict(cfg.extra) == {"colour": "blue"}


def test_later_line_wins_and_canonical_beats_alias(ini):
    path = ini("routes=a*=>x\nmodel_provider_routes=b*=>y\nroutes=c*=>z\n")
    cfg = load({"config": path}, {})
    assert cfg.describe_routes() == "c*=>z"
    assert cfg.sources["routes"] == f"{path}:3"


def test_alias_env_beats_canonical_ini(ini):
    path = ini("routes=a*=>x\nlog_file_daemon=ini.log\n")
    env = {"TOKLIGENCE_MODEL_PROVIDER_ROUTES": "b*=>y", "TOKLIGENCE_LOG_FILE": "env.log"}
    cfg = load({"config": path}, env)
    assert cfg.describe_routes() == "b*=>y"
    assert cfg.log_file_daemon == "env.log"
    assert cfg.sources["log_file_daemon"] == "env TOKLIGENCE_LOG_FILE (log_file)"


def test_unknown_env_keys_in_extra():
    cfg = load({}, {"TOKLIGENCE_LOG_FILE_CLI": "cli.log", "OTHER": "x"})
    assert dict(cfg.extra) == {"log_file_cli": "cli.log"}
    assert cfg.sources["log_file_cli"] == "env TOKLIGENCE_LOG_FILE_CLI"


def test_missing_config_file(tmp_path):
    missing = str(tmp_path / "nope.ini")
    with pytest.raises(ConfigError) as err:
        load({}, {"TOKLIGENCE_CONFIG": missing})
    assert "env TOKLIGENCE_CONFIG" in str(err.value) and missing in str(err.value)
    with pytest.raises(ConfigError, match="flag --config"):
        load({"config": missing}, {})


def test_malformed_ini_line_is_skipped(ini, caplog):
    path = ini("this is not an assignment\nlog_level=debug\n")
    with caplog.at_level(logging.WARNING, logger="engine.config"):
        cfg = load({"config": path}, {})
    assert cfg.log_level == "debug"
    assert f"{path}:1" in caplog.text


def test_utf8_bom_in_ini(ini):
    path = ini("\ufefflog_level=debug\n")
    assert load({"config": path}, {}).log_level == "debug"


# -------------------------------------------------------------------- routes
def test_route_parsing_and_first_match_order():
    cfg = load({"set": ["routes=claude-3*=>openai:translate, claude*=>anthropic:passthrough\n"
                        "gpt*=openai\n# comment\n*=>Loopback:auto"]}, {})
    assert cfg.routes == (
        Route("claude-3*", "openai", "translate"),
        Route("claude*", "anthropic", "passthrough"),
        Route("gpt*", "openai", None),
        Route("*", "loopback", None),
    )
    assert cfg.route_for("claude-3-haiku") == Route("claude-3*", "openai", "translate")
    assert cfg.route_for("CLAUDE-sonnet-4") == Route("claude*", "anthropic", "passthrough")
    assert cfg.route_for("gpt-4o").provider == "openai"
    assert cfg.route_for("llama").provider == "loopback"
    assert cfg.describe_routes() == (
        "claude-3*=>openai:translate, claude*=>anthropic:passthrough, gpt*=>openai, *=>loopback"
    )


def test_route_translation_mode_spelling_normalised():
    cfg = load({"set": ["routes=x*=>p:translation"]}, {})
    assert cfg.routes == (Route("x*", "p", "translate"),)


def test_route_glob_features():
    cfg = load({"set": ["routes=o[13]-*=>openai,gpt-?o=>openai"]}, {})
    assert cfg.route_for("o1-mini") is not None
    assert cfg.route_for("o2-mini") is None
    assert cfg.route_for("gpt-4o") is not None
    assert cfg.route_for("gpt-4o-mini") is None


@pytest.mark.parametrize(
    "value,fragment",
    [
        ("claude*", "is not of the form pattern=>provider"),
        ("=>anthropic", "is not of the form pattern=>provider"),
        ("claude*=>anthropic:fast", "mode must be translate or passthrough"),
        ("claude*=>anthropic:", "mode must be translate or passthrough"),
        ("claude*=>an thropic", "bad provider name"),
    ],
)
def test_bad_routes(value, fragment):
    with pytest.raises(ConfigError) as err:
        load({}, {"TOKLIGENCE_ROUTES": value})
    msg = str(err.value)
    assert "routes" in msg and "env TOKLIGENCE_ROUTES" in msg and fragment in msg
    assert err.value.key == "routes" and err.value.source == "env TOKLIGENCE_ROUTES"


# ------------------------------------------------------------------- aliases
def test_inline_aliases():
    cfg = load({}, {"TOKLIGENCE_MODEL_ALIASES": "claude-sonnet-4-5=>gpt-4o,claude-haiku*=>gpt-4o-mini"})
    assert cfg.model_aliases == (("claude-sonnet-4-5", "gpt-4o"), ("claude-haiku*", "gpt-4o-mini"))
    assert cfg.alias("claude-sonnet-4-5") == "gpt-4o"
    assert cfg.alias("Claude-Haiku-4-5") == "gpt-4o-mini"
    assert cfg.alias("claude-opus-4") == "claude-opus-4"


def test_aliases_dir_and_file(tmp_path):
    d = tmp_path / "aliases.d"
    d.mkdir()
    (d / "b.aliases").write_text("# comment\nclaude-3-5-sonnet*  => claude-3-5-haiku-latest\n")
    (d / "a.aliases").write_text("claude-3-5-sonnet-20241022=claude-exact\n\n")
    (d / ".hidden").write_text("claude*=>hidden\n")
    f = tmp_path / "one.aliases"
    f.write_text("gpt-4=>gpt-4o\n")
    env = {
        "TOKLIGENCE_MODEL_ALIASES": "x=>y",
        "TOKLIGENCE_MODEL_ALIASES_DIR": str(d),
        "TOKLIGENCE_MODEL_ALIASES_FILE": str(f),
    }
    cfg = load({}, env)
    assert cfg.model_aliases == (
        ("x", "y"),
        ("claude-3-5-sonnet-20241022", "claude-exact"),
        ("claude-3-5-sonnet*", "claude-3-5-haiku-latest"),
        ("gpt-4", "gpt-4o"),
    )
    assert cfg.alias("claude-3-5-sonnet-20241022") == "claude-exact"
    assert cfg.alias("claude-3-5-sonnet-latest") == "claude-3-5-haiku-latest"
    assert cfg.alias("gpt-4") == "gpt-4o"
    assert cfg.alias("gpt-4o") == "gpt-4o"


def test_bad_alias_file_line_names_file_and_line(tmp_path):
    d = tmp_path / "aliases.d"
    d.mkdir()
    (d / "x.aliases").write_text("ok=>fine\nbroken line\n")
    with pytest.raises(ConfigError) as err:
        load({}, {"TOKLIGENCE_MODEL_ALIASES_DIR": str(d)})
    assert f"{d / 'x.aliases'}:2" in str(err.value)
    assert "model_aliases_dir" in str(err.value)


def test_missing_aliases_dir_is_a_warning(tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="engine.config"):
        cfg = load({}, {"TOKLIGENCE_MODEL_ALIASES_DIR": str(tmp_path / "nope")})
    assert cfg.model_aliases == ()
    assert "model_aliases_dir" in caplog.text


# --------------------------------------------------------------- value types
@pytest.mark.parametrize(
    "text,expected",
    [("true", True), ("FALSE", False), ("1", True), ("0", False), ("yes", True), ("No", False),
     ("on", True), ("off", False), (" true ", True)],
)
def test_bools(text, expected):
    assert load({}, {"TOKLIGENCE_FORWARD_CLIENT_KEYS": text}).forward_client_keys is expected


@pytest.mark.parametrize(
    "text,seconds",
    [("90", 90.0), ("1.5", 1.5), ("500ms", 0.5), ("30s", 30.0), ("5m", 300.0), ("1h", 3600.0),
     ("7d", 604800.0), ("1h30m", 5400.0), ("2w", 1209600.0), ("0", 0.0), (" 10S ", 10.0)],
)
def test_durations(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "5x", "m", "5m3", "-1", "1h-5m", "nan", "inf", "5 m"])
def test_bad_durations(text):
    with pytest.raises(ValueError):
        parse_duration(text)


def test_duration_keys():
    env = {
        "TOKLIGENCE_RESPONSE_TTL_SECONDS": "7d",
        "TOKLIGENCE_UPSTREAM_CONNECT_TIMEOUT": "500ms",
        "TOKLIGENCE_UPSTREAM_FIRST_BYTE_TIMEOUT": "5m",
        "TOKLIGENCE_KEEPALIVE_SECONDS": "30s",
        "TOKLIGENCE_SHUTDOWN_GRACE_SECONDS": "1m",
    }
    cfg = load({}, env)
    assert cfg.response_ttl_seconds == 604800 and isinstance(cfg.response_ttl_seconds, int)
    assert cfg.upstream_connect_timeout == 0.5
    assert cfg.upstream_first_byte_timeout == 300.0
    assert cfg.keepalive_seconds == 30.0
    assert cfg.shutdown_grace_seconds == 60.0


def test_ints_workers_log_levels_mapping_versions():
    cfg = load(
        {"set": [
            "default_max_tokens=8192", "max_tokens_cap=32000", "upstream_max_retries=0",
            "max_body_bytes=1_048_576", "workers=4", "log_level=WARN",
            "mapping_versions=chat-to-messages=2025-06-01, responses-to-messages=>2025-07-01",
            "api_keys=k1, k2,,k3", "session_store=redis://localhost:6379/0",
            "anthropic_base_url=http://localhost:8080/",
        ]},
        {},
    )
    assert (cfg.default_max_tokens, cfg.max_tokens_cap, cfg.upstream_max_retries) == (8192, 32000, 0)
    assert cfg.max_body_bytes == 1048576
    assert cfg.workers == 4 and cfg.worker_count == 4
    assert cfg.log_level == "warning" and cfg.log_level_no == logging.WARNING
    assert dict(cfg.mapping_versions) == {"chat-to-messages": "2025-06-01", "responses-to-messages": "2025-07-01"}
    assert cfg.api_keys == ("k1", "k2", "k3")
    assert cfg.session_store == "redis://localhost:6379/0"
    assert cfg.anthropic_base_url == "http://localhost:8080"


def test_workers_auto():
    cfg = load({}, {"TOKLIGENCE_WORKERS": "auto"})
    assert cfg.workers == "auto" and cfg.worker_count >= 1


def test_http_address_forms():
    assert (load({}, {"TOKLIGENCE_HTTP_ADDRESS": "[::1]:8443"}).host) == "::1"
    assert (load({}, {"TOKLIGENCE_HTTP_ADDRESS": "8082"}).port) == 8082
    assert (load({}, {"TOKLIGENCE_HTTP_ADDRESS": "0.0.0.0:0"}).port) == 0


def test_api_keys_file(tmp_path):
    f = tmp_path / "keys.txt"
    f.write_text("# gateway keys\nkey-a\nkey-b\n")
    cfg = load({}, {"TOKLIGENCE_API_KEYS": "key-c", "TOKLIGENCE_API_KEYS_FILE": str(f)})
    assert cfg.all_api_keys() == frozenset({"key-a", "key-b", "key-c"})


# ---------------------------------------------------------------- validation
@pytest.mark.parametrize(
    "key,value,fragment",
    [
        ("work_mode", "fast", "expected one of auto, passthrough, translation"),
        ("auth_disabled", "maybe", "expected a boolean"),
        ("log_level", "trace", "expected one of"),
        ("log_format", "xml", "expected one of text, json"),
        ("default_max_tokens", "0", "must be >= 1"),
        ("default_max_tokens", "4k", "expected an integer"),
        ("max_tokens_cap", "-1", "must be >= 0"),
        ("upstream_idle_timeout", "soon", "expected seconds or a duration"),
        ("response_ttl_seconds", "1.5", "whole number of seconds"),
        ("http_address", "localhost", "host:port"),
        ("http_address", ":99999", "port must be in 0..65535"),
        ("http_address", "::1:80", "IPv6 host needs brackets"),
        ("openai_base_url", "api.openai.com", "expected an http:// or https:// URL"),
        ("session_store", "postgres://x", "sqlite"),
        ("workers", "0", "positive integer"),
        ("mapping_versions", "chat-to-messages", "mapping=version"),
        ("data_dir", " ", None),  # empty env value = unset: no error
    ],
)
def test_bad_values_name_key_value_and_env_source(key, value, fragment):
    env_name = "TOKLIGENCE_" + key.upper()
    if fragment is None:
        load({}, {env_name: value})
        return
    with pytest.raises(ConfigError) as err:
        load({}, {env_name: value})
    msg = str(err.value)
    assert msg.startswith(f"invalid {key}={value!r} from env {env_name}: ")
    assert fragment in msg
    assert (err.value.key, err.value.value, err.value.source) == (key, value, f"env {env_name}")


def test_bad_value_from_ini_names_file_and_line(ini):
    path = ini("# comment\n\nwork_mode=fast\n")
    with pytest.raises(ConfigError) as err:
        load({"config": path}, {})
    assert str(err.value) == (
        f"invalid work_mode='fast' from {path}:3: expected one of auto, passthrough, translation"
    )


def test_bad_value_from_flags():
    with pytest.raises(ConfigError, match=r"invalid log_format='xml' from flag --set log_format"):
        load({"set": ["log_format=xml"]}, {})
    with pytest.raises(ConfigError, match=r"invalid port='http' from flag --port: port must be an integer"):
        load({"port": "http"}, {})
    with pytest.raises(ConfigError, match=r"from flag --port: port must be in 0..65535"):
        load({"port": 70000}, {})


def test_overridden_bad_value_is_not_an_error(ini):
    path = ini("work_mode=fast\n")
    assert load({"config": path}, {"TOKLIGENCE_WORK_MODE": "translation"}).work_mode == "translation"


def test_missing_api_keys_file(tmp_path):
    with pytest.raises(ConfigError, match=r"api_keys_file=.* from env TOKLIGENCE_API_KEYS_FILE: no such file"):
        load({}, {"TOKLIGENCE_API_KEYS_FILE": str(tmp_path / "none")})


def test_secrets_are_not_shown():
    cfg = load({"set": ["auth_secret=s3cret"]}, {"TOKLIGENCE_ANTHROPIC_API_KEY": "sk-ant-secret"})
    text = repr(cfg)
    assert "sk-ant-secret" not in text and "s3cret" not in text
    assert "anthropic_api_key='***'" in text
    assert cfg.anthropic_api_key == "sk-ant-secret"
    assert cfg.extra["auth_secret"] == "s3cret"
