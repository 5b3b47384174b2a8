"""The processes of a benchmark run: started pinned to CPUs (taskset), waited for, measured, stopped."""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover
        return os.cpu_count() or 1


class Pinning:
    """Which CPUs the process under test and the load side (upstream + load generator) get.

    With 2 or more CPUs and taskset installed: the proxy under test on CPU 0, the rest on CPU 1,
    so each figure is the cost per core of the process under test. Otherwise nothing is pinned
    (and the table says so)."""

    def __init__(self, enabled: bool = True):
        cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
        self.requested = enabled
        self.taskset = shutil.which("taskset")
        self.enabled = bool(enabled and self.taskset and len(cpus) >= 2)
        self.server_cpus = str(cpus[0]) if self.enabled else None
        self.load_cpus = str(cpus[1]) if self.enabled else None
        self.all_cpus = ",".join(map(str, cpus[:2])) if self.enabled else None
        self.saved: set | None = None  # the runner's CPUs before pin_self()

    def prefix(self, cpus: str | None) -> list[str]:
        return [self.taskset, "-c", cpus] if self.enabled and cpus else []

    def describe(self) -> str:
        if not self.enabled:
            why = ("pinning turned off" if not self.requested else "taskset is missing" if not self.taskset
                   else "fewer than 2 CPUs")
            return f"not pinned ({why}): the process under test shares the CPUs with the load side"
        return (f"process under test pinned to CPU {self.server_cpus}; fake upstream and load generator "
                f"pinned to CPU {self.load_cpus} (taskset)")

    def pin_self(self):
        """The runner itself lives with the load side (until restore())."""
        if self.enabled:
            self.saved = os.sched_getaffinity(0)
            os.sched_setaffinity(0, {int(self.load_cpus)})

    def restore(self):
        """The runner's CPUs as they were before pin_self(): a caller that goes on (a test
        session) must not stay on one CPU, nor the processes it starts next."""
        if self.saved is not None:
            os.sched_setaffinity(0, self.saved)
            self.saved = None


class Proc:
    def __init__(self, name: str, cmd: list[str], env: dict | None = None, log: Path | None = None):
        self.name = name
        self.cmd = cmd
        self.log_path = log
        self._log = open(log, "ab") if log else subprocess.DEVNULL
        full_env = dict(os.environ)
        full_env.update(env or {})
        pp = full_env.get("PYTHONPATH")
        full_env["PYTHONPATH"] = str(REPO) + (os.pathsep + pp if pp else "")
        self.p = subprocess.Popen(cmd, env=full_env, stdin=subprocess.DEVNULL, stdout=self._log,
                                  stderr=subprocess.STDOUT, cwd=str(REPO))

    @property
    def pid(self) -> int:
        return self.p.pid

    def wait_port(self, port: int, timeout: float = 30.0, path: str | None = None):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.p.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.p.returncode} before listening"
                                   f"{self._tail()}")
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
                    if path is None:
                        return self
                    s.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
                    if s.recv(64).startswith(b"HTTP/1.1 200"):
                        return self
            except OSError:
                pass
            time.sleep(0.05)
        raise RuntimeError(f"{self.name} not listening on {port} after {timeout}s{self._tail()}")

    def _tail(self) -> str:
        if not self.log_path:
            return ""
        try:
            return "\n--- log tail ---\n" + self.log_path.read_text(errors="replace")[-3000:]
        except OSError:
            return ""

    def tree(self) -> list[int]:
        """This process and its descendants (workers)."""
        pids = [self.pid]
        try:
            entries = [e for e in os.listdir("/proc") if e.isdigit()]
        except OSError:
            return pids
        parents = {}
        for e in entries:
            try:
                with open(f"/proc/{e}/stat") as f:
                    parts = f.read().rsplit(")", 1)[1].split()
                parents[int(e)] = int(parts[1])
            except (OSError, IndexError, ValueError):
                continue
        frontier = [self.pid]
        while frontier:
            kids = [p for p, pp in parents.items() if pp in frontier]
            pids += kids
            frontier = kids
        return pids

    def stop(self, timeout: float = 10.0):
        if self.p.poll() is None:
            self.p.send_signal(signal.SIGTERM)
            try:
                self.p.wait(timeout)
            except subprocess.TimeoutExpired:
                for pid in reversed(self.tree()):
                    try:
                        os.kill(pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
                self.p.wait(5)
        if self._log is not subprocess.DEVNULL:
            self._log.close()


def status_kb(pid: int, field: str) -> int:
    """VmRSS / VmHWM (peak resident set) of one process, in kB; 0 if gone."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def cpu_seconds(pids) -> float:
    """User + system CPU seconds of these processes so far (0 for one that is gone): to the
    nanosecond from each one's CPU-time clock (Linux, clock_getcpuclockid's id for a pid), else
    in clock ticks (10 ms) from /proc."""
    total = 0.0
    for pid in pids:
        try:
            total += time.clock_gettime(((~pid) << 3) | 2)  # CPUCLOCK_SCHED of the whole process
            continue
        except (OSError, AttributeError, OverflowError):
            pass
        try:
            with open(f"/proc/{pid}/stat") as f:
                parts = f.read().rsplit(")", 1)[1].split()
            total += (int(parts[11]) + int(parts[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime
        except (OSError, IndexError, ValueError):
            continue
    return total


def children_cpu_seconds() -> float:
    """CPU seconds of this process's finished children (the load generators it ran and waited for)."""
    import resource
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def python() -> str:
    return sys.executable
