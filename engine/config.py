"""Typed gateway configuration, compatible with the Go Tokligence gateway.

Sources, highest precedence first::

    command-line flags  >  TOKLIGENCE_* environment  >  INI file  >  engine/default.ini

* ``engine/default.ini`` (package data) holds every known key with its default
  value and documentation; it is also the list of known keys.
* The INI file is named by the ``config`` flag, else by ``TOKLIGENCE_CONFIG``.
  Its format is the Go gateway's: section-less ``key=value`` lines with ``#``
  or ``;`` comments; ``[sections]`` are accepted and flattened.  Unknown keys
  are kept in :attr:`Config.extra` (logged at debug), never fatal.
* Environment: ``TOKLIGENCE_<KEY_UPPER>`` for every key.
* Flags: ``load(args)`` with ``config``, ``host``, ``port``, ``set`` (a list of
  ``"key=value"``) and, optionally, any known key by name.

As in the Go gateway, an *empty* value in the INI file or the environment
means "not set" (the level below applies); an empty value given by a flag is
taken as is.  Aliases kept from the Go gateway: ``model_provider_routes`` for
``routes``; ``log_file`` (``TOKLIGENCE_LOG_FILE``) for ``log_file_daemon``.
Within one level the canonical key wins over its alias.

Every validation error is a :class:`ConfigError` naming the key, the bad value
and where it came from (``flag --port``, ``env TOKLIGENCE_WORK_MODE``,
``/etc/gw.ini:12`` or ``default``).
"""

from __future__ import annotations

import dataclasses
import difflib
import fnmatch
import logging
import math
import os
import re
from dataclasses import dataclass, field
from importlib import resources
from types import MappingProxyType
from typing import Any, Callable, Iterable, Literal, Mapping
from urllib.parse import urlsplit

__all__ = [
    "Config",
    "ConfigError",
    "Route",
    "load",
    "parse_duration",
    "parse_bool",
    "parse_ini",
    "ENV_PREFIX",
    "CONFIG_ENV",
]

log = logging.getLogger("engine.config")

ENV_PREFIX = "TOKLIGENCE_"
CONFIG_ENV = "TOKLIGENCE_CONFIG"
DEFAULT_SOURCE = "default"

# Go-gateway key -> our key.  Used only when the canonical key is absent from
# the same level.
_KEY_ALIASES = {"model_provider_routes": "routes", "log_file": "log_file_daemon"}
# Flags with a meaning of their own (not a config key of the same name).
_RESERVED_ARGS = frozenset({"config", "host", "port", "set"})
_SECRET_KEYS = frozenset({"anthropic_api_key", "openai_api_key", "api_keys", "upstream_proxy",
                          "anthropic_extra_headers", "openai_extra_headers"})
_SECRET_SUFFIXES = ("_key", "_secret", "_password", "_passwd", "_token")

WORK_MODES = ("auto", "passthrough", "translation")
ROUTE_MODES = {"translate": "translate", "translation": "translate", "passthrough": "passthrough"}
LOG_LEVELS = {"debug": "debug", "info": "info", "warn": "warning", "warning": "warning", "error": "error"}
LOG_FORMATS = ("text", "json")
_BOOLS = {
    "true": True, "1": True, "yes": True, "on": True,
    "false": False, "0": False, "no": False, "off": False,
}


# --------------------------------------------------------------------- errors
class ConfigError(ValueError):
    """Invalid configuration.  ``key``, ``value`` and ``source`` when known."""

    def __init__(
        self,
        message: str,
        *,
        key: str | None = None,
        value: str | None = None,
        source: str | None = None,
    ) -> None:
        super().__init__(message)
        self.key = key
        self.value = value
        self.source = source

    @classmethod
    def invalid(cls, key: str, value: Any, source: str, reason: str) -> "ConfigError":
        shown = _show(key, value)
        return cls(f"invalid {key}={shown} from {source}: {reason}", key=key, value=value, source=source)


def _is_secret(key: str) -> bool:
    return key in _SECRET_KEYS or key.endswith(_SECRET_SUFFIXES)


def _show(key: str, value: Any) -> str:
    if _is_secret(key) and value:
        return "'***'"
    text = repr(value)
    return text if len(text) <= 120 else text[:117] + "..."


# --------------------------------------------------------------------- routes
def _glob(pattern: str) -> re.Pattern[str]:
    return re.compile(fnmatch.translate(pattern), re.IGNORECASE | re.DOTALL)


@dataclass(frozen=True)
class Route:
    """``pattern=>provider[:mode][@version]``; ``pattern`` is a case-insensitive glob;
    ``version`` pins the mapping spec version for requests on this route."""

    pattern: str
    provider: str
    mode: str | None = None  # "translate" | "passthrough" | None (work_mode decides)
    version: str | None = None
    _rx: re.Pattern[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_rx", _glob(self.pattern))

    def matches(self, model: str) -> bool:
        return self._rx.match(model) is not None

    def __str__(self) -> str:
        return (f"{self.pattern}=>{self.provider}" + (f":{self.mode}" if self.mode else "")
                + (f"@{self.version}" if self.version else ""))


# ---------------------------------------------------------- value parsers
# Each takes the raw string and returns the typed value, or raises ValueError
# with the reason; the loader turns that into a ConfigError with key/source.

def parse_bool(text: str) -> bool:
    try:
        return _BOOLS[text.strip().lower()]
    except KeyError:
        raise ValueError("expected a boolean (true/false, 1/0, yes/no, on/off)") from None


_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}
_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ms|s|m|h|d|w)")


def parse_duration(text: str) -> float:
    """Seconds from ``"90"``, ``"1.5"``, ``"500ms"``, ``"30s"``, ``"5m"``, ``"1h30m"``, ``"7d"``."""
    t = text.strip().lower()
    try:
        value = float(t)
    except ValueError:
        value = None
    if value is None:
        total, pos = 0.0, 0
        for m in _DURATION_PART.finditer(t):
            if m.start() != pos:
                break
            total += float(m.group(1)) * _DURATION_UNITS[m.group(2)]
            pos = m.end()
        if pos == 0 or pos != len(t):
            raise ValueError("expected seconds or a duration such as 500ms, 30s, 5m, 1h, 7d")
        value = total
    if not math.isfinite(value):
        raise ValueError("expected a finite duration")
    if value < 0:
        raise ValueError("must not be negative")
    return value


_SIZE_UNITS = {"": 1, "b": 1, "k": 1024, "kb": 1024, "m": 1024 ** 2, "mb": 1024 ** 2, "g": 1024 ** 3, "gb": 1024 ** 3}


def parse_size(text: str) -> int:
    """A size in bytes: `0`, `1048576`, `512K`, `100M`, `1G` (binary units, case ignored)."""
    m = re.fullmatch(r"\s*(\d+)\s*([a-zA-Z]*)\s*", text)
    if not m or m.group(2).lower() not in _SIZE_UNITS:
        raise ValueError("expected a size in bytes, e.g. 0, 1048576, 512K, 100M or 1G")
    return int(m.group(1)) * _SIZE_UNITS[m.group(2).lower()]


def _int(minimum: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text.strip())
        except ValueError:
            raise ValueError("expected an integer") from None
        if value < minimum:
            raise ValueError(f"must be >= {minimum}")
        return value

    return parse


def _whole_seconds(text: str) -> int:
    value = parse_duration(text)
    if value != int(value):
        raise ValueError("expected a whole number of seconds")
    return int(value)


def _choice(choices: Iterable[str] | Mapping[str, str]) -> Callable[[str], str]:
    table = dict(choices) if isinstance(choices, Mapping) else {c: c for c in choices}
    shown = ", ".join(table)

    def parse(text: str) -> str:
        try:
            return table[text.strip().lower()]
        except KeyError:
            raise ValueError(f"expected one of {shown}") from None

    return parse


def _string(text: str) -> str:
    return text.strip()


def _url(text: str) -> str:
    t = text.strip()
    parts = urlsplit(t)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError("expected an http:// or https:// URL")
    return t.rstrip("/")


def _split_entries(text: str) -> list[str]:
    """Comma- or newline-separated entries; ``#``/``;`` comment lines skipped."""
    out = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line[0] in "#;":
            continue
        out.extend(e for e in (p.strip() for p in line.split(",")) if e)
    return out


def _pair(entry: str, form: str = "pattern=>target") -> tuple[str, str]:
    sep = "=>" if "=>" in entry else "="
    left, found, right = entry.partition(sep)
    left, right = left.strip(), right.strip()
    if not found or not left or not right:
        raise ValueError(f"entry {entry!r} is not of the form {form}")
    return left, right


_PROVIDER = re.compile(r"[a-z0-9][a-z0-9_.-]*")


def parse_routes(text: str) -> tuple[Route, ...]:
    routes = []
    for entry in _split_entries(text):
        pattern, target = _pair(entry, "pattern=>provider")
        target, at, version = target.partition("@")
        version = version.strip() or None
        if at and not re.fullmatch(r"\d{4}-\d{2}-\d{2}", version or ""):
            raise ValueError(f"entry {entry!r}: mapping version must look like 2025-06-01, not {version!r}")
        provider, colon, mode = target.rpartition(":")
        if not colon:
            provider, mode = target, ""
        provider = provider.strip().lower()
        mode = mode.strip().lower()
        if not _PROVIDER.fullmatch(provider):
            raise ValueError(f"entry {entry!r}: bad provider name {provider!r}")
        if colon and mode != "auto":
            if mode not in ROUTE_MODES:
                raise ValueError(f"entry {entry!r}: mode must be translate or passthrough, not {mode!r}")
            routes.append(Route(pattern, provider, ROUTE_MODES[mode], version))
        else:
            routes.append(Route(pattern, provider, None, version))
    return tuple(routes)


def parse_aliases(text: str) -> tuple[tuple[str, str], ...]:
    return tuple(_pair(e) for e in _split_entries(text))


def _mapping_versions(text: str) -> Mapping[str, str]:
    return MappingProxyType(dict(_pair(e, "mapping=version") for e in _split_entries(text)))


def _list(text: str) -> tuple[str, ...]:
    return tuple(_split_entries(text))


def _workers(text: str) -> int | str:
    t = text.strip().lower()
    if t == "auto":
        return "auto"
    try:
        n = int(t)
    except ValueError:
        raise ValueError('expected a positive integer or "auto"') from None
    if n < 1:
        raise ValueError('expected a positive integer or "auto"')
    return n


def _session_store(text: str) -> str:
    t = text.strip()
    if t.lower() == "sqlite":
        return "sqlite"
    if t.lower().startswith(("redis://", "rediss://")) and urlsplit(t).netloc:
        return t
    if t.lower().startswith("unix://") and urlsplit(t).path:
        return t
    raise ValueError('expected "sqlite", a redis://host:port/db or rediss:// URL, or unix:///path/redis.sock')


_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_NOT_EXTRA = frozenset({"host", "content-length", "transfer-encoding", "connection", "te", "upgrade"})


def _headers(text: str) -> tuple[tuple[str, str], ...]:
    """``"anthropic-beta: a,b; X-Team: infra"`` (entries split by ``;`` or new lines) ->
    ``(("anthropic-beta", "a,b"), ("X-Team", "infra"))``."""
    out = []
    for line in text.splitlines():
        for entry in line.split(";"):
            entry = entry.strip()
            if not entry:
                continue
            name, sep, value = entry.partition(":")
            name, value = name.strip(), value.strip()
            if not sep or not _TOKEN.fullmatch(name):
                raise ValueError(f"expected 'Name: value' entries separated by ';', got {entry[:80]!r}")
            if name.lower() in _NOT_EXTRA:
                raise ValueError(f"{name} is set by the gateway itself")
            out.append((name, value))
    return tuple(out)


def _proxy(text: str) -> str:
    t = text.strip()
    if not t or t.lower() == "none":
        return t.lower()
    u = urlsplit(t if "://" in t else "http://" + t)
    if u.scheme != "http" or not u.hostname:
        raise ValueError('expected "none" or an http://[user:password@]host:port proxy URL')
    try:
        u.port
    except ValueError as e:
        raise ValueError(str(e)) from None
    return t


def _host_ports(text: str) -> tuple[tuple[str, int], ...]:
    """``"10.0.0.1:26379, [::1]:26380"`` -> ``(("10.0.0.1", 26379), ("::1", 26380))``."""
    out = []
    for entry in _split_entries(text):
        host, sep, port = entry.rpartition(":")
        host = host.strip("[]")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"expected host:port entries, got {entry!r}")
        out.append((host, int(port)))
    return tuple(out)


def _path(text: str) -> str:
    t = text.strip()
    return os.path.expanduser(t) if t else ""


def _data_dir(text: str) -> str:
    t = _path(text)
    if not t:
        raise ValueError("must not be empty")
    return t


def parse_address(text: str) -> tuple[str, int]:
    """``":8081"`` -> ``("0.0.0.0", 8081)``; ``"[::1]:80"`` -> ``("::1", 80)``."""
    t = text.strip()
    if t.isdigit():
        host, port = "", t
    elif t.startswith("["):
        m = re.fullmatch(r"\[([^\]]*)\]:(\d+)", t)
        if not m:
            raise ValueError('expected "[ipv6]:port"')
        host, port = m.group(1), m.group(2)
    else:
        host, colon, port = t.rpartition(":")
        if not colon:
            raise ValueError('expected "host:port" or ":port"')
        if ":" in host:
            raise ValueError('an IPv6 host needs brackets: "[::1]:8081"')
    return host or "0.0.0.0", _port(port)


def _port(text: Any) -> int:
    try:
        port = int(str(text).strip())
    except ValueError:
        raise ValueError("port must be an integer") from None
    if not 0 <= port <= 65535:
        raise ValueError("port must be in 0..65535")
    return port


def format_address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _address(text: str) -> str:
    parse_address(text)
    return text.strip()


_DURATION = parse_duration
_PARSERS: dict[str, Callable[[str], Any]] = {
    "http_address": _address,
    "anthropic_api_key": _string,
    "anthropic_base_url": _url,
    "anthropic_version": _string,
    "openai_api_key": _string,
    "openai_base_url": _url,
    "openai_org": _string,
    "openai_project": _string,
    "anthropic_extra_headers": _headers,
    "openai_extra_headers": _headers,
    "upstream_proxy": _proxy,
    "upstream_ca_file": _path,
    "upstream_client_cert": _path,
    "upstream_client_key": _path,
    "routes": parse_routes,
    "work_mode": _choice(WORK_MODES),
    "auth_disabled": parse_bool,
    "marketplace_enabled": parse_bool,
    "api_keys": _list,
    "api_keys_file": _path,
    "log_file_daemon": _path,
    "log_level": _choice(LOG_LEVELS),
    "log_format": _choice(LOG_FORMATS),
    "log_max_files": _int(0),
    "log_max_bytes": parse_size,
    "default_max_tokens": _int(1),
    "max_tokens_cap": _int(0),
    "mapping_versions": _mapping_versions,
    "mappings_dir": _path,
    "record_dir": _path,
    "model_aliases": parse_aliases,
    "model_aliases_dir": _path,
    "model_aliases_file": _path,
    "model_profiles_file": _path,
    "prompt_cache": _choice(("auto", "off")),
    "prompt_cache_ttl": _choice(("5m", "1h")),
    "data_dir": _data_dir,
    "session_store": _session_store,
    "redis_sentinels": _host_ports,
    "redis_sentinel_master": _string,
    "redis_sentinel_password": _string,
    "redis_cluster": parse_bool,
    "response_ttl_seconds": _whole_seconds,
    "upstream_connect_timeout": _DURATION,
    "upstream_first_byte_timeout": _DURATION,
    "upstream_idle_timeout": _DURATION,
    "upstream_max_retries": _int(0),
    "upstream_max_body_bytes": _int(1),
    "upstream_max_decompressed_bytes": _int(1),
    "upstream_max_error_bytes": _int(1),
    "upstream_max_event_bytes": _int(1),
    "store_timeout": _DURATION,
    "max_body_bytes": _int(1),
    "max_json_depth": _int(2),
    "max_messages": _int(1),
    "keepalive_seconds": _DURATION,
    "shutdown_grace_seconds": _DURATION,
    "listen_backlog": _int(1),
    "history_memo_conversations": _int(0),
    "history_memo_max_bytes": parse_size,
    "tools_memo_texts": _int(0),
    "tools_memo_max_bytes": parse_size,
    "memo_idle_seconds": _DURATION,
    "memo_admit_one_in": _int(1),
    "forward_client_keys": parse_bool,
    "workers": _workers,
    "event_loop": _choice(("auto", "uvloop", "asyncio")),
}
KNOWN_KEYS = frozenset(_PARSERS)


# --------------------------------------------------------------------- config
@dataclass(frozen=True)
class Config:
    """The effective configuration.  Build it with :func:`load`."""

    http_address: str
    anthropic_api_key: str
    anthropic_base_url: str
    anthropic_version: str
    openai_api_key: str
    openai_base_url: str
    openai_org: str  # sent as OpenAI-Organization
    openai_project: str  # sent as OpenAI-Project
    anthropic_extra_headers: tuple[tuple[str, str], ...]  # sent on every request to that provider
    openai_extra_headers: tuple[tuple[str, str], ...]
    upstream_proxy: str  # "" = HTTPS_PROXY/HTTP_PROXY/NO_PROXY; "none"; or an http:// proxy URL
    upstream_ca_file: str  # PEM bundle trusted for upstream TLS instead of the system's
    upstream_client_cert: str  # PEM client certificate (and key, unless upstream_client_key)
    upstream_client_key: str
    routes: tuple[Route, ...]
    work_mode: str  # auto | passthrough | translation
    auth_disabled: bool
    marketplace_enabled: bool
    api_keys: tuple[str, ...]
    api_keys_file: str
    log_file_daemon: str
    log_level: str  # debug | info | warning | error ("warn" is normalised)
    log_format: str  # text | json
    log_max_files: int  # log files kept (the newest); 0 keeps all
    log_max_bytes: int  # a day's file continues in a new part from this size; 0: no cap
    default_max_tokens: int
    max_tokens_cap: int
    mapping_versions: Mapping[str, str]
    mappings_dir: str  # "" = the shipped mappings/
    record_dir: str  # "" = no recording
    # model_aliases entries, then those of model_aliases_dir, then model_aliases_file
    model_aliases: tuple[tuple[str, str], ...]
    model_aliases_dir: str
    model_aliases_file: str
    model_profiles_file: str  # a YAML table of model profiles read before the shipped one
    prompt_cache: str  # auto | off: cache breakpoints on translated requests to Anthropic
    prompt_cache_ttl: str  # 5m | 1h
    data_dir: str
    session_store: str  # "sqlite" or a redis://, rediss:// or unix:// URL
    redis_sentinels: tuple[tuple[str, int], ...]  # Sentinel addresses; () = the URL's server
    redis_sentinel_master: str
    redis_sentinel_password: str
    redis_cluster: bool  # the URL names a node of a Redis Cluster
    response_ttl_seconds: int
    upstream_connect_timeout: float
    upstream_first_byte_timeout: float
    upstream_idle_timeout: float
    upstream_max_retries: int
    upstream_max_body_bytes: int
    upstream_max_decompressed_bytes: int
    upstream_max_error_bytes: int
    upstream_max_event_bytes: int
    store_timeout: float
    max_body_bytes: int
    max_json_depth: int
    max_messages: int
    keepalive_seconds: float
    shutdown_grace_seconds: float
    listen_backlog: int  # connections the kernel queues before the gateway accepts them
    history_memo_conversations: int  # 0: no history memo (engine/server/history.py)
    history_memo_max_bytes: int
    tools_memo_texts: int  # 0: no tools memo (engine/server/members.py)
    tools_memo_max_bytes: int
    memo_idle_seconds: float  # a full memo's idle entry makes room at once (engine/server/admission.py)
    memo_admit_one_in: int
    forward_client_keys: bool
    workers: int | Literal["auto"]
    event_loop: str  # auto (uvloop where installed) | uvloop | asyncio
    extra: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    sources: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    config_file: str | None = None  # the INI file read, if any
    # True when the gateway listens on loopback only because auth is off and no address was set
    # (not a key: set by load())
    loopback_only = False

    _host: str = field(init=False, repr=False, compare=False)
    _port: int = field(init=False, repr=False, compare=False)
    _alias_rx: tuple = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        host, port = parse_address(self.http_address)
        object.__setattr__(self, "_host", host)
        object.__setattr__(self, "_port", port)
        object.__setattr__(self, "_alias_rx", tuple((_glob(p), t) for p, t in self.model_aliases))

    # -- derived values
    @property
    def host(self) -> str:
        return self._host

    @property
    def port(self) -> int:
        return self._port

    @property
    def worker_count(self) -> int:
        """``workers`` with ``"auto"`` resolved to the CPU count."""
        if self.workers == "auto":
            return os.cpu_count() or 1
        return int(self.workers)

    @property
    def log_level_no(self) -> int:
        """``log_level`` as a :mod:`logging` level number."""
        return logging.getLevelName(self.log_level.upper())

    # -- lookups
    def route_for(self, model: str) -> Route | None:
        """First route whose pattern matches ``model``, in written order."""
        for route in self.routes:
            if route._rx.match(model) is not None:
                return route
        return None

    def alias(self, model: str) -> str:
        """``model`` rewritten by the first matching alias (or unchanged)."""
        for rx, target in self._alias_rx:
            if rx.match(model) is not None:
                return target
        return model

    def describe_routes(self) -> str:
        """``"claude*=>anthropic, gpt*=>openai"`` (``"(none)"`` when empty)."""
        return ", ".join(map(str, self.routes)) or "(none)"

    def all_api_keys(self) -> frozenset[str]:
        """``api_keys`` plus the keys in ``api_keys_file`` (read on each call)."""
        keys = set(self.api_keys)
        if self.api_keys_file:
            with open(self.api_keys_file, encoding="utf-8") as f:
                keys.update(_split_entries(f.read()))
        return frozenset(keys)

    def __repr__(self) -> str:  # never print secrets
        parts = []
        for f in dataclasses.fields(self):
            if not f.repr:
                continue
            value = getattr(self, f.name)
            if f.name == "extra":
                value = {k: ("***" if _is_secret(k) and v else v) for k, v in value.items()}
            elif f.name in ("sources", "mapping_versions"):
                value = dict(value)
            elif _is_secret(f.name) and value:
                value = "***"
            parts.append(f"{f.name}={value!r}")
        return f"Config({', '.join(parts)})"


# ------------------------------------------------------------------ INI files
def parse_ini(text: str, origin: str) -> list[tuple[str, str, str]]:
    """``(key, value, "origin:line")`` for every assignment, in file order.

    Section headers are skipped (flattened), ``#``/``;`` lines are comments,
    keys are lower-cased, a value in matching quotes is unquoted.  A line that
    is not an assignment is ignored with a warning (the Go gateway ignores it).
    """
    out = []
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line[0] in "#;" or (line[0] == "[" and "]" in line):
            continue
        eq, colon = line.find("="), line.find(":")
        cut = eq if colon < 0 or (0 <= eq < colon) else colon
        key = line[:cut].strip().lower().replace("-", "_") if cut > 0 else ""
        if not key or not re.fullmatch(r"[a-z0-9_.]+", key):
            log.warning("config: %s:%d: ignoring line that is not key=value: %r", origin, lineno, raw)
            continue
        value = line[cut + 1 :].strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
            value = value[1:-1]
        out.append((key, value, f"{origin}:{lineno}"))
    return out


def _read_text(path: str, key: str, source: str) -> str:
    try:
        with open(path, encoding="utf-8-sig") as f:
            return f.read()
    except FileNotFoundError:
        raise ConfigError(f"{key}: file {path!r} (from {source}) does not exist", key=key, value=path, source=source) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{key}: cannot read {path!r} (from {source}): {exc}", key=key, value=path, source=source) from None


def _default_ini_text() -> str:
    try:
        return resources.files("engine").joinpath("default.ini").read_text(encoding="utf-8")
    except (OSError, ModuleNotFoundError) as exc:  # pragma: no cover - packaging error
        raise ConfigError(
            f"engine/default.ini is missing ({exc}); it must be installed as package data"
        ) from None


# -------------------------------------------------------------------- loading
Layer = dict  # key -> (raw value, source)


def _layer(entries: Iterable[tuple[str, str, str]], *, keep_empty: bool) -> Layer:
    """Merge one level's assignments: later wins, canonical key over alias."""
    layer: Layer = {}
    aliased: Layer = {}
    for key, value, source in entries:
        if not keep_empty and not value.strip():
            continue
        if key in _KEY_ALIASES:
            aliased[_KEY_ALIASES[key]] = (value, f"{source} ({key})")
        else:
            layer[key] = (value, source)
    for key, item in aliased.items():
        layer.setdefault(key, item)
    return layer


def _env_entries(env: Mapping[str, str]) -> list[tuple[str, str, str]]:
    out = []
    for name, value in env.items():
        if name.startswith(ENV_PREFIX) and name != CONFIG_ENV:
            key = name[len(ENV_PREFIX) :].lower()
            if key:
                out.append((key, value, f"env {name}"))
    return out


def _flag_entries(args: Mapping[str, Any]) -> list[tuple[str, str, str]]:
    out = []
    for name, value in args.items():
        key = name.replace("-", "_").lower()
        if value is None or key in _RESERVED_ARGS or key not in KNOWN_KEYS:
            continue
        if isinstance(value, bool):
            value = "true" if value else "false"
        out.append((key, str(value), f"flag --{key.replace('_', '-')}"))
    sets = args.get("set") or ()
    if isinstance(sets, str):
        sets = [sets]
    for item in sets:
        key, eq, value = str(item).partition("=")
        key = key.strip().lower().replace("-", "_")
        if not eq or not key:
            raise ConfigError(f"flag --set {item!r}: expected key=value", key=key or None, value=str(item), source="flag --set")
        out.append((key, value.strip(), f"flag --set {key}"))
    return out


def _read_alias_sources(path: str, kind: str, source: str) -> list[tuple[str, str]]:
    """Alias entries of ``model_aliases_dir`` / ``model_aliases_file``.

    A missing file or folder is logged and skipped, as in the Go gateway; a
    malformed line is a ConfigError naming ``file:line``.
    """
    if kind == "model_aliases_dir":
        if not os.path.isdir(path):
            log.warning("config: model_aliases_dir %r (from %s) is not a folder; ignored", path, source)
            return []
        files = [
            os.path.join(path, n)
            for n in sorted(os.listdir(path))
            if not n.startswith(".") and os.path.isfile(os.path.join(path, n))
        ]
    else:
        if not os.path.isfile(path):
            log.warning("config: model_aliases_file %r (from %s) does not exist; ignored", path, source)
            return []
        files = [path]
    out = []
    for fp in files:
        text = _read_text(fp, kind, source)
        for lineno, line in enumerate(text.splitlines(), 1):
            for entry in _split_entries(line):
                try:
                    out.append(_pair(entry))
                except ValueError as exc:
                    where = f"{fp}:{lineno}"
                    raise ConfigError.invalid(kind, entry, where, str(exc)) from None
    return out


def load(args: Mapping[str, Any] | Any | None = None, env: Mapping[str, str] | None = None) -> Config:
    """Build the effective :class:`Config`.

    ``args``: parsed command-line flags (a dict or an ``argparse.Namespace``):
    ``config`` (INI path), ``host``, ``port``, ``set`` (list of ``"key=value"``),
    and any known key by name (``log_level``/``log-level``); ``None`` values
    are ignored.  ``env``: the environment (default ``os.environ``).
    """
    if args is None:
        args = {}
    elif not isinstance(args, Mapping):
        args = vars(args)
    if env is None:
        env = os.environ

    # 1. levels, lowest first
    default_entries = parse_ini(_default_ini_text(), "default.ini")
    defaults = {k: (v, DEFAULT_SOURCE) for k, v, _ in default_entries}
    missing = KNOWN_KEYS - defaults.keys()
    if missing:  # pragma: no cover - guarded by a test
        raise ConfigError(f"engine/default.ini lacks keys: {', '.join(sorted(missing))}")

    config_file: str | None = None
    config_source = ""
    ini: Layer = {}
    if args.get("config"):
        config_file, config_source = str(args["config"]), "flag --config"
    elif env.get(CONFIG_ENV, "").strip():
        config_file, config_source = env[CONFIG_ENV].strip(), f"env {CONFIG_ENV}"
    if config_file:
        config_file = os.path.expanduser(config_file)
        if os.path.isdir(config_file):
            raise ConfigError(f"config: {config_file!r} (from {config_source}) is a folder, not an INI file",
                              key="config", value=config_file, source=config_source)
        ini = _layer(parse_ini(_read_text(config_file, "config", config_source), config_file), keep_empty=False)

    env_layer = _layer(_env_entries(env), keep_empty=False)
    flag_layer = _layer(_flag_entries(args), keep_empty=True)

    # 2. merge: later levels win
    merged: Layer = dict(defaults)
    for layer in (ini, env_layer, flag_layer):
        merged.update(layer)

    # 3. typed values
    values: dict[str, Any] = {}
    for key in _PARSERS:  # field order, for readable sources/errors
        raw, source = merged[key]
        try:
            values[key] = _PARSERS[key](raw)
        except ValueError as exc:
            raise ConfigError.invalid(key, raw, source, str(exc)) from None
    sources = {key: merged[key][1] for key in _PARSERS}

    # host / port flags override the parts of http_address
    host_flag, port_flag = args.get("host"), args.get("port")
    if host_flag is not None or port_flag is not None:
        host, port = parse_address(values["http_address"])
        used = []
        if host_flag is not None:
            host = str(host_flag).strip().strip("[]")
            if not host:
                raise ConfigError.invalid("host", host_flag, "flag --host", "must not be empty")
            used.append("--host")
        if port_flag is not None:
            try:
                port = _port(port_flag)
            except ValueError as exc:
                raise ConfigError.invalid("port", port_flag, "flag --port", str(exc)) from None
            used.append("--port")
        values["http_address"] = format_address(host, port)
        if len(used) == 2:
            sources["http_address"] = "flag --host/--port"
        else:
            sources["http_address"] = f"flag {used[0]} (rest from {sources['http_address']})"

    # Redis's protected mode as the model: with no gateway keys and no listen host chosen by the
    # user, listen on loopback only, so the gateway is not an open relay for its upstream keys
    loopback_only = False
    if values["auth_disabled"] and sources["http_address"] in (DEFAULT_SOURCE, f"flag --port (rest from {DEFAULT_SOURCE})"):
        _, port = parse_address(values["http_address"])
        values["http_address"] = format_address("127.0.0.1", port)
        loopback_only = True

    # api_keys_file must exist when given
    if values["api_keys_file"] and not os.path.isfile(values["api_keys_file"]):
        raise ConfigError.invalid("api_keys_file", values["api_keys_file"], sources["api_keys_file"], "no such file")

    if values["model_profiles_file"]:
        import yaml

        from .profiles import ProfileError, Profiles
        try:
            Profiles.load(values["model_profiles_file"])
        except FileNotFoundError:
            raise ConfigError.invalid("model_profiles_file", values["model_profiles_file"],
                                      sources["model_profiles_file"], "no such file") from None
        except (ProfileError, OSError, ValueError, yaml.YAMLError) as exc:
            raise ConfigError.invalid("model_profiles_file", values["model_profiles_file"],
                                      sources["model_profiles_file"], str(exc)) from None

    # alias files extend the inline aliases
    aliases = list(values["model_aliases"])
    for kind in ("model_aliases_dir", "model_aliases_file"):
        if values[kind]:
            aliases.extend(_read_alias_sources(values[kind], kind, sources[kind]))
    values["model_aliases"] = tuple(aliases)

    # unknown keys -> extra
    extra: dict[str, str] = {}
    for key, (value, source) in merged.items():
        if key in KNOWN_KEYS:
            continue
        extra[key] = value
        sources[key] = source
        close = difflib.get_close_matches(key, KNOWN_KEYS, n=1)
        log.debug("config: unknown key %r from %s kept in extra%s", key, source,
                  f" (did you mean {close[0]!r}?)" if close else "")

    cfg = Config(
        **values,
        extra=MappingProxyType(extra),
        sources=MappingProxyType(sources),
        config_file=config_file,
    )
    object.__setattr__(cfg, "loopback_only", loopback_only)
    return cfg
