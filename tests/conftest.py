"""Shared pytest fixtures for end-to-end tests.

Fixtures:
  fixtures_dir            Path of tests/fixtures (recorded wire data)
  fake_anthropic          function-scoped FakeUpstream (flavor "anthropic")
  fake_openai             function-scoped FakeUpstream (flavor "openai")
  fake_anthropic_session  session-scoped FakeUpstream, reset before every test
  fake_openai_session     session-scoped FakeUpstream, reset before every test
  gateway                 session-scoped GatewayProcess wired to the two session fakes, the
                          API pairs to Anthropic pinned to their 2025-06-01 specs
  gateway_latest          the same with every pair at its newest spec version (the default)
  gateway_each            each of the two in turn (a test of both versions: the pinned 2025-06-01
                          and the newest, which is what users get)
  make_gateway            factory for tests needing their own env/config/args (stopped
                          at teardown); by default wired to fake_anthropic / fake_openai
  snapshot                syrupy snapshot writing to <repo>/snapshots/<test module>/
  snapshot_json           same, one .json file per snapshot
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

TESTS_DIR = Path(__file__).resolve().parent
REPO_ROOT = TESTS_DIR.parent
SNAPSHOTS_DIR = REPO_ROOT / "snapshots"
if str(TESTS_DIR) not in sys.path:
    sys.path.insert(0, str(TESTS_DIR))

from syrupy.extensions.amber import AmberSnapshotExtension  # noqa: E402
from syrupy.extensions.json import JSONSnapshotExtension  # noqa: E402

from support.fake_upstream import FakeUpstream  # noqa: E402
from support.gateway import GatewayProcess  # noqa: E402

UPSTREAM_ANTHROPIC_KEY = "sk-ant-upstream-secret"
UPSTREAM_OPENAI_KEY = "sk-openai-upstream-secret"


def gateway_env(fake_anthropic: FakeUpstream, fake_openai: FakeUpstream, data_dir) -> dict:
    """The standard gateway environment pointing at two fakes."""
    return {
        "TOKLIGENCE_ANTHROPIC_BASE_URL": fake_anthropic.url,
        "TOKLIGENCE_OPENAI_BASE_URL": fake_openai.url + "/v1",
        "TOKLIGENCE_ANTHROPIC_API_KEY": UPSTREAM_ANTHROPIC_KEY,
        "TOKLIGENCE_OPENAI_API_KEY": UPSTREAM_OPENAI_KEY,
        "TOKLIGENCE_DATA_DIR": str(data_dir),
        # the shared gateways test how errors map; retries are tested on gateways of their own
        "TOKLIGENCE_UPSTREAM_MAX_RETRIES": "0",
        # the tests written against the 2025-06-01 translation keep testing it (still selectable);
        # the newest version is tested through gateway_latest or with this variable removed
        "TOKLIGENCE_MAPPING_VERSIONS": PINNED_2025,
    }


PINNED_2025 = "chat-to-messages=2025-06-01,responses-to-messages=2025-06-01"


# ------------------------------------------------------------------ xdist workers


def pytest_xdist_auto_num_workers(config):
    """`-n auto` (the default, pyproject addopts): one worker more than the CPUs this process may use.
    Part of every end-to-end test is spent waiting on a gateway, a CLI or a socket, so one worker per
    CPU leaves the CPUs idle at times, and many more workers each pay the collection and the session
    gateways again. PYTEST_XDIST_AUTO_NUM_WORKERS still overrides it."""
    if os.environ.get("PYTEST_XDIST_AUTO_NUM_WORKERS"):
        return None  # xdist's own hook reads it
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return cpus + 1


# ------------------------------------------------------------------ the engine alone


@pytest.fixture(scope="session")
def catalog():
    """Every mapping spec, compiled once for the whole run."""
    from engine.catalog import Catalog
    return Catalog.load()


@pytest.fixture
def fixed_clock(monkeypatch):
    """now() answers one instant, so `created` fields can be snapshotted."""
    from engine import functions
    monkeypatch.setattr(functions, "clock", lambda: 1760000000)


# ------------------------------------------------------------------ recorded data


@pytest.fixture(scope="session")
def fixtures_dir() -> Path:
    return TESTS_DIR / "fixtures"


# ------------------------------------------------------------------ fake upstreams


@pytest.fixture
def fake_anthropic():
    with FakeUpstream(flavor="anthropic") as up:
        yield up


@pytest.fixture
def fake_openai():
    with FakeUpstream(flavor="openai") as up:
        yield up


_SESSION_FAKES: list[FakeUpstream] = []


@pytest.fixture(scope="session")
def fake_anthropic_session():
    with FakeUpstream(flavor="anthropic") as up:
        _SESSION_FAKES.append(up)
        yield up
        _SESSION_FAKES.remove(up)


@pytest.fixture(scope="session")
def fake_openai_session():
    with FakeUpstream(flavor="openai") as up:
        _SESSION_FAKES.append(up)
        yield up
        _SESSION_FAKES.remove(up)


@pytest.fixture(autouse=True)
def _reset_session_fakes():
    """Every test starts with empty request logs and reply queues on the session fakes
    (only those already started: this never starts a server by itself)."""
    for up in list(_SESSION_FAKES):
        up.reset()
    yield


# ------------------------------------------------------------------ gateway


@pytest.fixture(scope="session")
def gateway(fake_anthropic_session, fake_openai_session, tmp_path_factory):
    gw = GatewayProcess(gateway_env(fake_anthropic_session, fake_openai_session,
                                    tmp_path_factory.mktemp("gateway-data")))
    gw.start()
    yield gw
    gw.close()


@pytest.fixture(scope="session")
def gateway_latest(fake_anthropic_session, fake_openai_session, tmp_path_factory):
    env = gateway_env(fake_anthropic_session, fake_openai_session, tmp_path_factory.mktemp("gateway-latest-data"))
    env["TOKLIGENCE_MAPPING_VERSIONS"] = None
    gw = GatewayProcess(env)
    gw.start()
    yield gw
    gw.close()


@pytest.fixture(params=["gateway", "gateway_latest"], ids=["2025-06-01", "newest"])
def gateway_each(request):
    return request.getfixturevalue(request.param)


@pytest.fixture
def make_gateway(fake_anthropic, fake_openai, tmp_path):
    """``make_gateway(env_overrides=None, args=(), config_text=None, start=True, **kw)``.

    env_overrides are merged over the standard env pointing at the function-scoped
    fake_anthropic / fake_openai (a None value removes a variable). Extra keyword
    arguments go to GatewayProcess (cmd, health_path, startup_timeout, port...)."""
    made: list[GatewayProcess] = []

    def factory(env_overrides: dict | None = None, args=(), config_text: str | None = None,
                start: bool = True, **kw) -> GatewayProcess:
        data_dir = tmp_path / f"gateway-data-{len(made)}"
        data_dir.mkdir()
        env = gateway_env(fake_anthropic, fake_openai, data_dir)
        env.update(env_overrides or {})
        gw = GatewayProcess(env, args=args, config_text=config_text, **kw)
        made.append(gw)
        if start:
            gw.start()
        return gw

    yield factory
    for gw in made:
        gw.close()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """On failure, attach the gateway log lines written during the test."""
    outcome = yield
    rep = outcome.get_result()
    if rep.when != "call" or not rep.failed:
        return
    funcargs = getattr(item, "funcargs", {})
    gw = funcargs.get("gateway") or funcargs.get("gateway_latest") or funcargs.get("gateway_each")
    if isinstance(gw, GatewayProcess):
        start = getattr(item, "_gateway_log_offset", 0)
        text = gw.output_since(start)
        if text:
            rep.sections.append(("gateway log (this test)", text[-20000:]))
        else:
            tail = "\n".join(gw.output().splitlines()[-40:])
            rep.sections.append(("gateway log (nothing during this test; last lines)", tail))


@pytest.fixture(autouse=True)
def _gateway_log_offset(request):
    for name in ("gateway", "gateway_latest", "gateway_each"):
        if name in request.fixturenames:
            gw = request.getfixturevalue(name)
            request.node._gateway_log_offset = gw.output_size()
    yield


# ------------------------------------------------------------------ snapshots


def _snapshot_dir(test_location) -> str:
    return str(SNAPSHOTS_DIR / Path(test_location.filepath).stem)


class RepoAmberExtension(AmberSnapshotExtension):
    """.ambr files under <repo>/snapshots/<test module>/<test module>.ambr"""

    @classmethod
    def dirname(cls, *, test_location) -> str:
        return _snapshot_dir(test_location)


class RepoJSONExtension(JSONSnapshotExtension):
    """One .json per snapshot under <repo>/snapshots/<test module>/"""

    @classmethod
    def dirname(cls, *, test_location) -> str:
        return _snapshot_dir(test_location)


@pytest.fixture
def snapshot(snapshot):
    return snapshot.use_extension(RepoAmberExtension)


@pytest.fixture
def snapshot_json(snapshot):
    return snapshot.use_extension(RepoJSONExtension)
