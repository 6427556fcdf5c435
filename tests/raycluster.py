"""Real Ray clusters for tests: `ray start --head` (+ extra nodes) as processes we own.

Every node gets its own short --temp-dir (nodes sharing one delete each other's job working
dirs, DESIGN.md §4). Each `ray start --block` runs in its own process group, so teardown
signals exactly the processes this test started — never `ray stop`, never kill by name.
Leftover Ray processes are found by *our* temp dir in their command line, i.e. still only ours.

Traffic must stay on loopback: scripts/test.sh runs pytest in a private network namespace
with only `lo`, where Ray binds 127.0.0.1. Outside such a namespace these fixtures refuse to
start (a clear failure, not a skip).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
RAY_BIN = str(Path(sys.executable).with_name("ray"))


def only_loopback() -> bool:
    """True inside a network namespace whose only interface is lo (/proc/net/dev is
    per-namespace; /sys/class/net may still show the host's interfaces)."""
    lines = Path("/proc/net/dev").read_text().splitlines()[2:]
    names = [ln.split(":", 1)[0].strip() for ln in lines if ":" in ln]
    return names == ["lo"]


def require_loopback_namespace():
    if not only_loopback():
        pytest.fail("Ray tests must run in a network namespace with only loopback; run them via "
                    "`bash scripts/test.sh` (it uses `unshare -n`)", pytrace=False)


def ray_env(extra: dict | None = None) -> dict:
    env = dict(os.environ)
    env.update(RAY_AUTH_MODE="disabled", RAY_USAGE_STATS_ENABLED="0", PYTHONUNBUFFERED="1")
    env.pop("RAY_ADDRESS", None)
    env.update(extra or {})
    return env


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_port(port: int, timeout: float) -> None:
    t_end = time.time() + timeout
    while time.time() < t_end:
        with socket.socket() as s:
            s.settimeout(0.5)
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.3)
    raise TimeoutError(f"nothing listening on 127.0.0.1:{port} after {timeout}s")


class RayCluster:
    """A head node and optional worker nodes, each its own `ray start --block` process."""

    def __init__(self, num_cpus: int = 2):
        self.base = Path(tempfile.mkdtemp(prefix="esray-", dir="/tmp"))
        self.gcs_port = free_port()
        self.dashboard_port = free_port()
        while 10002 <= self.dashboard_port <= 19999:  # Ray's default worker port range
            self.dashboard_port = free_port()
        self.procs: list[subprocess.Popen] = []
        self.logs: list[Path] = []
        self.num_cpus = num_cpus

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.gcs_port}"

    @property
    def dashboard(self) -> str:
        return f"http://127.0.0.1:{self.dashboard_port}"

    def _start(self, args: list[str], name: str) -> subprocess.Popen:
        temp = self.base / name
        temp.mkdir()
        log = self.base / f"{name}.log"
        self.logs.append(log)
        # Agent ports default to fixed numbers (e.g. 52365): two clusters, or two nodes, on one
        # machine would fight over them, and the loser's job agent never comes up.
        agent_ports = [f"--dashboard-agent-listen-port={free_port()}",
                       f"--dashboard-agent-grpc-port={free_port()}",
                       f"--metrics-export-port={free_port()}",
                       f"--runtime-env-agent-port={free_port()}",
                       f"--ray-client-server-port={free_port()}"]
        cmd = [RAY_BIN, "start", "--block", f"--temp-dir={temp}", "--node-ip-address=127.0.0.1",
               f"--num-cpus={self.num_cpus}", "--disable-usage-stats", *agent_ports, *args]
        with open(log, "w") as out:  # the child keeps its own descriptor
            proc = subprocess.Popen(cmd, env=ray_env(), stdout=out, stderr=subprocess.STDOUT,
                                    start_new_session=True, cwd=self.base)
        self.procs.append(proc)
        return proc

    def start_head(self, timeout: float = 90) -> "RayCluster":
        self._start(["--head", f"--port={self.gcs_port}", "--include-dashboard=true",
                     "--dashboard-host=127.0.0.1", f"--dashboard-port={self.dashboard_port}"], "head")
        try:
            _wait_port(self.gcs_port, timeout)
            _wait_port(self.dashboard_port, timeout)
            self._wait_job_agent(timeout)
        except TimeoutError:
            self.stop()
            raise RuntimeError("Ray head did not start:\n" + self.tail())
        return self

    def _wait_job_agent(self, timeout: float) -> None:
        """The dashboard answers before the job agent is up ("No available agent to submit
        job"): run one trivial job so that tests start against a head that takes jobs."""
        from ray.job_submission import JobStatus, JobSubmissionClient

        t_end = time.time() + timeout
        old = os.environ.get("RAY_AUTH_MODE")
        os.environ["RAY_AUTH_MODE"] = "disabled"
        try:
            client = JobSubmissionClient(self.dashboard)
            while True:
                try:
                    job = client.submit_job(entrypoint="true")
                    break
                except RuntimeError as exc:
                    if "No available agent" not in str(exc) or time.time() > t_end:
                        raise
                    time.sleep(1)
            while client.get_job_status(job) not in (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.STOPPED):
                if time.time() > t_end:
                    raise TimeoutError("warm-up job did not finish")
                time.sleep(0.5)
        finally:
            if old is None:
                os.environ.pop("RAY_AUTH_MODE", None)
            else:
                os.environ["RAY_AUTH_MODE"] = old

    def add_node(self, name: str = "node2", timeout: float = 60) -> None:
        self._start([f"--address={self.address}"], name)
        import ray  # noqa: F401  (only for the wait below, via the state API client)
        t_end = time.time() + timeout
        while time.time() < t_end:
            out = subprocess.run([RAY_BIN, "status", f"--address={self.address}"], env=ray_env(),
                                 capture_output=True, text=True)
            if out.stdout.count("node_") >= len(self.procs):
                return
            time.sleep(1)
        raise RuntimeError(f"node {name} did not join:\n" + self.tail())

    def tail(self, n: int = 60) -> str:
        out = []
        for log in self.logs:
            if log.exists():
                lines = log.read_text(errors="replace").splitlines()[-n:]
                out.append(f"--- {log.name}\n" + "\n".join(lines))
        return "\n".join(out)

    def our_pids(self) -> list[int]:
        """Processes whose command line names our temp dir: only ever ours."""
        mine = []
        marker = str(self.base)
        for pid in os.listdir("/proc"):
            if not pid.isdigit():
                continue
            try:
                cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if marker in cmd and int(pid) != os.getpid():
                mine.append(int(pid))
        return mine

    def stop(self) -> None:
        for proc in reversed(self.procs):
            if proc.poll() is None:
                try:
                    os.killpg(proc.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
        t_end = time.time() + 20
        for proc in self.procs:
            try:
                proc.wait(timeout=max(0.1, t_end - time.time()))
            except subprocess.TimeoutExpired:
                pass
        for proc in self.procs:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        for pid in self.our_pids():  # daemons that left our process group
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        shutil.rmtree(self.base, ignore_errors=True)
