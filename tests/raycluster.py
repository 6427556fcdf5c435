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

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import polars as pl
import pytest

from edgesweep.storage import scan

from netports import free_port

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


def _wait_port(port: int, timeout: float) -> None:
    t_end = time.time() + timeout
    while time.time() < t_end:
        with socket.socket() as s:
            s.settimeout(0.5)
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.3)
    raise TimeoutError(f"nothing listening on 127.0.0.1:{port} after {timeout}s")


def node_resource(name: str) -> str:
    return f"esnode_{name}"


#: What `ray start` prints once its node is up: processes started, raylet registered.
STARTED = "Ray runtime started."
#: Starts of one node before its start-up failure fails the test. Ray gives a new raylet 30 s
#: to register with the GCS and otherwise exits ("The current node timed out during startup",
#: ray/_private/node.py, not configurable); on a 2-core machine busy with other tests both worker
#: nodes of one cluster missed that, once in four runs. A retry is what an operator would do.
START_ATTEMPTS = 3
#: Seconds a `ray start` that is still running gets to say it started before it counts as hung
#: and is started again (at least; more where the caller's timeout is longer). One that exits is
#: started again at once. Killing a slow start only repeats its work on a machine that is already
#: slow: under four busy processes on two cores a worker node's start was still going at 60 s.
START_PATIENCE = 180


class RayCluster:
    """A head node and optional worker nodes, each its own `ray start --block` process."""

    def __init__(self, num_cpus: int = 2, env: dict | None = None):
        self.base = Path(tempfile.mkdtemp(prefix="esray-", dir="/tmp"))
        self.gcs_port = free_port()
        self.dashboard_port = free_port()  # outside Ray's worker range (tests/netports.py)
        self.procs: list[subprocess.Popen] = []
        self.nodes: dict[str, subprocess.Popen] = {}  # by name: what kill_node() takes down
        self.logs: list[Path] = []
        self.launches: dict[str, tuple] = {}  # by name: how it was started (to start it again)
        self.attempts: dict[str, int] = {}    # by name: how many times `ray start` was run for it
        self.log_of: dict[str, Path] = {}     # by name: the log of its latest `ray start`
        self.num_cpus = num_cpus
        self.env = dict(env or {})  # extra environment of every node (and so of its workers)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.gcs_port}"

    @property
    def dashboard(self) -> str:
        return f"http://127.0.0.1:{self.dashboard_port}"

    def _start(self, args: list[str], name: str, num_cpus: int | None = None,
               resources: dict | None = None) -> subprocess.Popen:
        attempt = self.attempts.get(name, 0) + 1
        self.attempts[name] = attempt
        self.launches[name] = (args, num_cpus, resources)
        temp = self.base / name
        temp.mkdir()
        log = self.base / (f"{name}.log" if attempt == 1 else f"{name}.start{attempt}.log")
        self.logs.append(log)
        self.log_of[name] = log
        cmd = self._command(name, temp, args, num_cpus, resources)
        with open(log, "w") as out:  # the child keeps its own descriptor
            proc = subprocess.Popen(cmd, env=ray_env(self.env), stdout=out, stderr=subprocess.STDOUT,
                                    start_new_session=True, cwd=self.base)
        self.procs.append(proc)
        self.nodes[name] = proc
        return proc

    def _command(self, name: str, temp: Path, args: list[str], num_cpus: int | None,
                 resources: dict | None) -> list[str]:
        # Agent ports default to fixed numbers (e.g. 52365): two clusters, or two nodes, on one
        # machine would fight over them, and the loser's job agent never comes up.
        agent_ports = [f"--dashboard-agent-listen-port={free_port()}",
                       f"--dashboard-agent-grpc-port={free_port()}",
                       f"--metrics-export-port={free_port()}",
                       f"--runtime-env-agent-port={free_port()}",
                       f"--ray-client-server-port={free_port()}"]
        cmd = [RAY_BIN, "start", "--block", f"--temp-dir={temp}", "--node-ip-address=127.0.0.1",
               f"--num-cpus={self.num_cpus if num_cpus is None else num_cpus}",
               "--disable-usage-stats", *agent_ports, *args]
        # A custom resource named after the node: how node_ids() tells nodes apart (every node
        # here has the same IP). Trials do not ask for it, so it changes no scheduling.
        cmd.append(f"--resources={json.dumps({node_resource(name): 1, **(resources or {})})}")
        return cmd

    def _patience(self, name: str, timeout: float) -> float:
        """Seconds the running start of node `name` gets to say it started: at least
        START_PATIENCE (tests of the harness shorten it for a start they make hang)."""
        return max(timeout, START_PATIENCE)

    def _wait_started(self, names: list[str], timeout: float) -> None:
        """Until every node's `ray start` says it started. One that exits first, or is still
        starting after its patience (max(`timeout`, START_PATIENCE) s), is cleared away (its
        processes killed, its temp dir deleted) and started again as the same node, up to
        START_ATTEMPTS starts; its log is kept."""
        deadline = {name: time.time() + self._patience(name, timeout) for name in names}
        pending = list(names)
        while pending:
            for name in list(pending):
                if STARTED in self.log_of[name].read_text(errors="replace"):
                    pending.remove(name)
                    continue
                exited = self.nodes[name].poll() is not None
                if not exited and time.time() < deadline[name]:
                    continue
                what = (f"exited with {self.nodes[name].returncode}" if exited
                        else f"not up after {self._patience(name, timeout):.0f} s")
                if self.attempts[name] >= START_ATTEMPTS:
                    raise RuntimeError(f"Ray node {name!r}: start {self.attempts[name]} of {START_ATTEMPTS} "
                                       f"{what}:\n" + self.tail())
                print(f"raycluster: node {name!r} start {self.attempts[name]} {what}; starting it again",
                      file=sys.stderr)
                self.kill_node(name)
                args, num_cpus, resources = self.launches[name]
                self._start(args, name, num_cpus, resources)
                deadline[name] = time.time() + self._patience(name, timeout)
            time.sleep(0.3)

    def start_head(self, timeout: float = 90, num_cpus: int | None = None,
                   warm_up: bool = True) -> "RayCluster":
        """warm_up=False: return once the dashboard answers; the caller then retries its first
        job submission itself (see _wait_job_agent) — seconds saved where a test is timed."""
        self._start(["--head", f"--port={self.gcs_port}", "--include-dashboard=true",
                     "--dashboard-host=127.0.0.1", f"--dashboard-port={self.dashboard_port}"], "head",
                    num_cpus=num_cpus)
        try:
            self._wait_started(["head"], timeout)
            _wait_port(self.gcs_port, timeout)
            _wait_port(self.dashboard_port, timeout)
            if warm_up:
                self._wait_job_agent(timeout)
        except (TimeoutError, RuntimeError) as exc:
            logs = self.tail()  # before stop(), which deletes them
            self.stop()
            raise RuntimeError(f"Ray head did not start: {str(exc).splitlines()[0]}\n{logs}") from None
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

    def add_node(self, name: str = "node2", timeout: float = 60, num_cpus: int | None = None,
                 resources: dict | None = None) -> None:
        self.add_nodes([name], timeout, num_cpus, resources)

    def add_nodes(self, names: list[str], timeout: float = 60, num_cpus: int | None = None,
                  resources: dict | None = None) -> None:
        """Start the nodes together (their start-ups overlap), then wait until all have joined."""
        for name in names:
            self._start([f"--address={self.address}"], name, num_cpus=num_cpus, resources=resources)
        self._wait_started(names, timeout)
        self.wait_node_ids(names, timeout)

    def node_ids(self) -> dict[str, str]:
        """{node name: Ray node id} of the nodes alive now (recognised by node_resource(name))."""
        from ray.util.state import list_nodes

        old = os.environ.get("RAY_AUTH_MODE")
        os.environ["RAY_AUTH_MODE"] = "disabled"
        try:
            nodes = list_nodes(address=self.dashboard, detail=True, raise_on_missing_output=False)
        except Exception:  # the state API is not up yet on a just-started head
            return {}
        finally:
            if old is None:
                os.environ.pop("RAY_AUTH_MODE", None)
            else:
                os.environ["RAY_AUTH_MODE"] = old
        out = {}
        for n in nodes:
            if n.state != "ALIVE":
                continue
            for name in self.nodes:
                if node_resource(name) in (n.resources_total or {}):
                    out[name] = n.node_id
        return out

    def wait_node_ids(self, names, timeout: float = 60) -> dict[str, str]:
        """node_ids() once it lists every one of `names` (the state API can answer empty or
        fail for a moment on a loaded machine; one such answer must not read as "no node")."""
        t_end = time.time() + timeout
        while not set(names) <= set(ids := self.node_ids()):
            if time.time() > t_end:
                missing = sorted(set(names) - set(ids))
                raise RuntimeError(f"node(s) {missing} did not join (not listed alive):\n" + self.tail())
            time.sleep(1)
        return ids

    def kill_node(self, name: str) -> list[int]:
        """A lost machine: SIGKILL every process of node `name` at once — its `ray start`, the
        raylet, its workers and agents: the process group we started it in, every descendant
        of it, and whatever names its temp dir — then delete its temp dir (the machine's local
        disk is gone with it). Returns the pids killed. Never touches another node's processes."""
        proc = self.nodes[name]
        temp = str(self.base / name)
        victims = set(_descendants(proc.pid)) | {proc.pid}
        victims |= {p for p in _all_pids() if _pgid(p) == proc.pid}
        victims |= {p for p in _all_pids() if temp + "/" in _cmdline(p) or _cmdline(p).endswith(temp)}
        victims.discard(os.getpid())
        for sig in (signal.SIGSTOP, signal.SIGKILL):  # freeze first: nothing can respawn or exit cleanly
            for pid in victims:
                try:
                    os.kill(pid, sig)
                except ProcessLookupError:
                    pass
        proc.wait(timeout=30)
        t_end = time.time() + 30
        while any(_alive(p) for p in victims) and time.time() < t_end:
            time.sleep(0.2)
        shutil.rmtree(temp, ignore_errors=True)
        return sorted(victims)

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

    def our_pids_of(self, name: str) -> list[int]:
        """Live processes of node `name`: in its process group or naming its temp dir."""
        temp, pg = str(self.base / name), self.nodes[name].pid
        return [p for p in _all_pids() if _alive(p) and (_pgid(p) == pg or temp + "/" in _cmdline(p)
                                                          or _cmdline(p).endswith(temp))]

    def stop(self, grace: float = 3) -> None:
        """SIGTERM every node, SIGKILL what is left after `grace` seconds. A short grace: a
        `ray start --block` head took 34 s to exit on SIGTERM here (2-core VM, Ray 2.60), so a
        long one only delayed the SIGKILL — by 20 s per cluster, as the old default did."""
        for proc in reversed(self.procs):
            if proc.poll() is None:
                try:
                    os.killpg(proc.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
        t_end = time.time() + grace
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
        # Daemons that left our process group; a SIGKILLed process shows its command line until
        # it has exited, and a raylet not yet dead may start one more worker: kill until none.
        t_end = time.time() + 15
        while (left := self.our_pids()) and time.time() < t_end:
            for pid in left:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            time.sleep(0.2)
        shutil.rmtree(self.base, ignore_errors=True)


def _all_pids() -> list[int]:
    return [int(p) for p in os.listdir("/proc") if p.isdigit()]


def _stat(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return []
    return raw[raw.rindex(")") + 2:].split()  # fields after "pid (comm)"; comm may hold spaces


def _pgid(pid: int) -> int | None:
    f = _stat(pid)
    return int(f[2]) if f else None


def _alive(pid: int) -> bool:
    f = _stat(pid)
    return bool(f) and f[0] != "Z"  # a zombie is dead, waiting for its parent to reap it


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""


def _descendants(root: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for pid in _all_pids():
        f = _stat(pid)
        if f:
            children.setdefault(int(f[1]), []).append(pid)
    out, todo = [], [root]
    while todo:
        for c in children.get(todo.pop(), []):
            out.append(c)
            todo.append(c)
    return out


VENV_BIN = str(Path(sys.executable).parent)


def cluster_env(extra=None):
    # `python` in a job entrypoint must be this interpreter (the venv's): put it first on PATH.
    return ray_env(dict({"PATH": VENV_BIN + os.pathsep + os.environ.get("PATH", "")}, **(extra or {})))


def check_tables(sweep_dir: Path, expect_trials: set[str]):
    trials = scan(sweep_dir, "trials").collect()
    evals = scan(sweep_dir, "evals").collect()
    feats = scan(sweep_dir, "features").collect()
    assert set(trials["trial_id"]) == expect_trials
    assert set(trials["status"]) <= {"completed", "stopped"}, trials.select("trial_id", "status", "error")
    for tid in expect_trials:
        steps = trials.filter(pl.col("trial_id") == tid)["steps"][0]
        f = feats.filter(pl.col("trial_id") == tid).sort("step")
        e = evals.filter(pl.col("trial_id") == tid).sort("step")
        # every snapshot from the second delta (step 50 at every=25) to the end, exactly once
        assert f["step"].to_list() == list(range(50, steps + 1, 25)), tid
        assert e["step"].to_list() == list(range(0, steps + 1, 50)), tid
        assert f["sigma"].list.len().max() == 8
        assert f.filter(pl.col("window") == 8)["g23"].is_nan().sum() == 0
    return trials, evals, feats
