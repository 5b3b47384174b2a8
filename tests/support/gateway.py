"""Run the real gateway (``python -m engine serve``) as a subprocess for end-to-end tests.

    gw = GatewayProcess({"TOKLIGENCE_ANTHROPIC_BASE_URL": fake.url,
                         "TOKLIGENCE_ANTHROPIC_API_KEY": "sk-ant-test"})
    gw.start()            # waits for GET /health == 200 (15 s), raises GatewayStartError
    ...                   # talk to gw.url
    gw.restart()          # same port, same env/config, log file appended
    gw.stop()             # SIGTERM, wait, SIGKILL
    print(gw.output())    # combined stdout+stderr of every run so far
    gw.close()            # stop + delete the temp dir

The environment is a copy of os.environ without any TOKLIGENCE_* variable, plus
``env_overrides`` (a value of None removes a variable). TOKLIGENCE_DATA_DIR defaults to
a fresh temp dir unless given. stdout/stderr go to a log file (never a pipe, so a chatty
gateway cannot block).
"""
from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Mapping, Sequence

REPO_ROOT = Path(__file__).resolve().parents[2]

__all__ = ["GatewayProcess", "GatewayStartError", "free_port", "REPO_ROOT"]


class GatewayStartError(RuntimeError):
    """The gateway died or did not become healthy; the message carries its output."""


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


class GatewayProcess:
    def __init__(self, env_overrides: Mapping[str, str | None] | None = None,
                 args: Sequence[str] = (), config_text: str | None = None, *,
                 cmd: Sequence[str] | None = None, health_path: str = "/health",
                 startup_timeout: float = 15.0, port: int | None = None,
                 host: str = "127.0.0.1", cwd: str | os.PathLike | None = None,
                 config_name: str = "config.ini"):
        """
        env_overrides: added to os.environ minus TOKLIGENCE_* (None value = unset).
        args: extra CLI args appended after ``serve --host H --port P [--config F]``.
        config_text: written to <tmpdir>/<config_name>; ``--config <path>`` is passed.
        cmd: replace the whole command (tests of this helper, other entry points).
             ``{port}``, ``{host}``, ``{config}`` and ``{tmpdir}`` placeholders in its
             items are substituted; ``args`` are still appended.
        health_path: polled with GET until it answers 200.
        """
        self.env_overrides = dict(env_overrides or {})
        self.args = list(args)
        self.config_text = config_text
        self.cmd_template = list(cmd) if cmd is not None else None
        self.health_path = health_path if health_path.startswith("/") else "/" + health_path
        self.startup_timeout = startup_timeout
        self.host = host
        self.port = port or free_port(host)
        self.port_chosen = port is None  # free_port's pick: another may be retried
        self.cwd = str(cwd or REPO_ROOT)
        self.tmpdir = Path(tempfile.mkdtemp(prefix="gateway-"))
        self.log_path = self.tmpdir / "gateway.log"
        self.log_path.touch()
        self.config_path: Path | None = None
        if config_text is not None:
            self.config_path = self.tmpdir / config_name
            self.config_path.write_text(config_text)
        self.proc: subprocess.Popen | None = None
        self._log_file = None
        self.runs = 0

    # ---------------------------------------------------------------- properties

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    @property
    def returncode(self) -> int | None:
        return self.proc.poll() if self.proc else None

    def is_running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def data_dir(self) -> str:
        return self.env()["TOKLIGENCE_DATA_DIR"]

    # ---------------------------------------------------------------- command / env

    def command(self) -> list[str]:
        subst = {"port": str(self.port), "host": self.host, "tmpdir": str(self.tmpdir),
                 "config": str(self.config_path or "")}
        if self.cmd_template is not None:
            base = [_fill(a, subst) for a in self.cmd_template]
        else:
            base = [sys.executable, "-m", "engine", "serve", "--host", self.host,
                    "--port", str(self.port)]
            if self.config_path is not None:
                base += ["--config", str(self.config_path)]
        return base + [_fill(a, subst) for a in self.args]

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("TOKLIGENCE_")}
        # pytest/coverage vars that would confuse a child python
        env.pop("PYTEST_CURRENT_TEST", None)
        env.pop("PYTEST_ADDOPTS", None)
        env["PYTHONUNBUFFERED"] = "1"
        env.setdefault("PYTHONDONTWRITEBYTECODE", "1")
        # make `-m engine` importable from the repo even if not pip-installed
        pp = env.get("PYTHONPATH")
        env["PYTHONPATH"] = str(REPO_ROOT) + (os.pathsep + pp if pp else "")
        if "TOKLIGENCE_DATA_DIR" not in self.env_overrides:
            data = self.tmpdir / "data"
            data.mkdir(exist_ok=True)
            env["TOKLIGENCE_DATA_DIR"] = str(data)
        for k, v in self.env_overrides.items():
            if v is None:
                env.pop(k, None)
            else:
                env[k] = str(v)
        return env

    # ---------------------------------------------------------------- lifecycle

    def start(self) -> "GatewayProcess":
        """Starts the gateway and waits until it is healthy. A port free_port picked can be taken
        by another process (a parallel test worker) before the gateway binds it: then, on the
        first start only, another port is tried."""
        for attempt in range(3):
            try:
                return self._start_once()
            except GatewayStartError as e:
                taken = "address already in use" in str(e).lower()
                if not (taken and self.port_chosen and self.runs == attempt + 1 and attempt < 2):
                    raise
                self.port = free_port(self.host)
        raise AssertionError("unreachable")

    def _start_once(self) -> "GatewayProcess":
        if self.is_running():
            return self
        self.runs += 1
        self._log_file = open(self.log_path, "ab", buffering=0)
        cmd = self.command()
        self._log_file.write(
            f"--- run {self.runs}: {' '.join(cmd)}\n".encode())
        self.proc = subprocess.Popen(
            cmd, cwd=self.cwd, env=self.env(), stdin=subprocess.DEVNULL,
            stdout=self._log_file, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            self._wait_healthy()
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_healthy(self) -> None:
        deadline = time.monotonic() + self.startup_timeout
        url = self.url + self.health_path
        last_err: str = "no attempt"
        while True:
            rc = self.proc.poll()  # type: ignore[union-attr]
            if rc is not None:
                raise GatewayStartError(
                    f"gateway exited with code {rc} before {url} was healthy\n"
                    f"command: {self.command()}\n--- output ---\n{self.output()}")
            try:
                with urllib.request.urlopen(url, timeout=1.0) as r:
                    if r.status == 200:
                        return
                    last_err = f"HTTP {r.status}"
            except urllib.error.HTTPError as e:
                last_err = f"HTTP {e.code}"
            except (urllib.error.URLError, OSError) as e:
                last_err = repr(getattr(e, "reason", e))
            if time.monotonic() > deadline:
                raise GatewayStartError(
                    f"gateway not healthy at {url} after {self.startup_timeout}s "
                    f"(last: {last_err})\ncommand: {self.command()}\n"
                    f"--- output ---\n{self.output()}")
            time.sleep(0.05)

    def stop(self, timeout: float = 10.0) -> int | None:
        """SIGTERM, wait up to ``timeout``, then SIGKILL. Returns the exit code."""
        proc = self.proc
        if proc is None:
            return None
        if proc.poll() is None:
            self._signal_group(signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self._signal_group(signal.SIGKILL)
                proc.wait(5)
        else:
            # the leader is gone; reap any children it left in its session
            self._signal_group(signal.SIGKILL)
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None
        return proc.returncode

    def _signal_group(self, sig: int) -> None:
        proc = self.proc
        if proc is None:
            return
        try:
            # start_new_session=True → the child leads its own process group (pgid == pid)
            os.killpg(proc.pid, sig)
        except (ProcessLookupError, PermissionError):
            try:
                if proc.poll() is None:
                    proc.send_signal(sig)
            except ProcessLookupError:
                pass

    def send_signal(self, sig: int) -> None:
        """Signal the gateway process itself (e.g. SIGHUP for a reload)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)

    def restart(self, env_overrides: Mapping[str, str | None] | None = None,
                config_text: str | None = None) -> "GatewayProcess":
        """Stop and start again on the same port (optionally with updated env/config)."""
        self.stop()
        if env_overrides:
            self.env_overrides.update(env_overrides)
        if config_text is not None:
            if self.config_path is None:
                self.config_path = self.tmpdir / "config.ini"
            self.config_path.write_text(config_text)
            self.config_text = config_text
        # the port was just released; the server binds with SO_REUSEADDR, but give the
        # kernel a moment if something else grabbed it
        for _ in range(50):
            if _port_free(self.host, self.port):
                break
            time.sleep(0.1)
        return self.start()

    def close(self) -> None:
        """stop() and delete the temp dir (log, config, default data dir)."""
        self.stop()
        shutil.rmtree(self.tmpdir, ignore_errors=True)

    def __enter__(self) -> "GatewayProcess":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()

    # ---------------------------------------------------------------- logs

    def output(self) -> str:
        """Everything the process(es) wrote to stdout/stderr so far (all runs)."""
        try:
            return self.log_path.read_bytes().decode("utf-8", errors="replace")
        except FileNotFoundError:
            return ""

    def output_size(self) -> int:
        try:
            return self.log_path.stat().st_size
        except FileNotFoundError:
            return 0

    def output_since(self, offset: int) -> str:
        try:
            with open(self.log_path, "rb") as f:
                f.seek(offset)
                return f.read().decode("utf-8", errors="replace")
        except FileNotFoundError:
            return ""

    def wait_for_output(self, pattern: str, timeout: float = 5.0, since: int = 0) -> re.Match:
        """Wait until the regex ``pattern`` appears in the output (after byte ``since``)."""
        rx = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while True:
            m = rx.search(self.output_since(since))
            if m:
                return m
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"{pattern!r} not in gateway output after {timeout}s:\n"
                    f"{self.output_since(since)}")
            time.sleep(0.05)

    def __repr__(self) -> str:
        state = "running" if self.is_running() else f"stopped rc={self.returncode}"
        return f"<GatewayProcess {self.url} {state}>"


def _fill(arg: str, subst: dict[str, str]) -> str:
    for k, v in subst.items():
        arg = arg.replace("{" + k + "}", v)
    return arg


def _port_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
            return True
        except OSError:
            return False
