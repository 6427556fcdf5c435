"""The Ray Tune trainable: one trial = workload + spectral monitor + Parquet writer.

Checkpoint protocol (what makes "nothing lost, nothing doubled" hold, DESIGN.md §5):
at every ``checkpoint_every`` steps the training loop hands over its state; we first *seal*
every buffered feature/eval row as Parquet parts, then report the checkpoint to Tune. If the
worker dies, Tune restarts the trial from the last checkpoint; the new attempt (a higher
attempt number) replays exactly the steps after it, and readers keep the newest attempt of
every (trial_id, step). Only ``ray.tune`` APIs are used inside the trial (Ray 2.60).
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import json
import math
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import polars as pl
import torch

from ..analysis import Detector, make_detector
from ..spectral import SpectralMonitor
from ..storage import StorageError, TrialWriter, next_attempt, recorded_trial, write_table
from ..storage.liveness import process_identity
from ..storage.schema import DECLARED, FINISHED
from ..workloads import compute_environment, family, resolve_device, train
from .spec import TrialSpec

EVAL_COLUMNS = [n for n in DECLARED["evals"].names
                if n not in ("trial_id", "workload", "optimizer", "weight_decay", "attempt")]
FEATURE_COLUMNS = [n for n in DECLARED["features"].names
                   if n not in ("trial_id", "workload", "optimizer", "weight_decay", "attempt")]


@functools.cache
def code_version() -> str:
    """git commit of the code (with '+dirty' when modified), else the package version. Once
    per process: the code a process runs is the code it imported (a reused worker runs many
    trials; two git calls per trial row cost ~0.1–1 s on a busy CPU). ``EDGESWEEP_CODE_VERSION``
    names it instead, for a copy of the tree without its ``.git`` (the GPU check's machine)."""
    given = os.environ.get("EDGESWEEP_CODE_VERSION", "").strip()
    if given:
        return given
    here = Path(__file__).resolve().parents[2]
    try:
        rev = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=here, capture_output=True,
                             text=True, timeout=5)
        if rev.returncode == 0:
            dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here,
                                   capture_output=True, text=True, timeout=5).stdout.strip()
            return rev.stdout.strip() + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        pass
    from importlib.metadata import PackageNotFoundError, version
    try:
        return "edgesweep-" + version("edgesweep")
    except PackageNotFoundError:
        return "unknown"


class TrialRecorder:
    """Training-loop callback: monitor at snapshots, rows to the writer, grok/alarm events,
    the stop rule, and progress to Tune. Its state rides in the training checkpoint."""

    def __init__(self, trial: TrialSpec, writer: TrialWriter, monitor: SpectralMonitor,
                 detector: Detector, report=None):
        self.trial, self.writer, self.monitor, self.detector = trial, writer, monitor, detector
        self.report = report
        self.grok_step = None
        self.memo_step = None
        self.alarm_step = None
        self.loss = math.nan
        self.grad_norm = math.nan
        self.last_eval = {}
        self.last_feature = {}
        self.t0 = time.perf_counter()
        self.steps_at_t0 = None

    # -- training-loop hooks
    def on_step_stats(self, step, stats):
        self.loss = float(stats.get("loss", math.nan))
        self.grad_norm = float(stats.get("grad_norm", math.nan))

    def on_snapshot(self, step, model, lr):
        row = self.monitor.observe(model, step=step, lr=lr)
        if row is None:
            return
        row.update(loss=self.loss if step > 0 else math.nan,
                   grad_norm=self.grad_norm if step > 0 else math.nan)
        row = {k: row.get(k) for k in FEATURE_COLUMNS}
        self.writer.add("features", row)
        self.last_feature = row
        if self.detector.update(feature=row) is not None:
            self.alarm_step = step

    def on_eval(self, step, metrics):
        row = {k: metrics.get(k) for k in EVAL_COLUMNS}
        row["step"] = step
        self.writer.add("evals", row)
        self.last_eval = row
        if self.detector.update(eval=row) is not None:
            self.alarm_step = step
        stop = self.trial.stop
        if self.grok_step is None and (row.get("grok_acc") or 0) >= stop["grok_threshold"]:
            self.grok_step = step
        if self.memo_step is None and (row.get("memo_acc") or 0) >= stop["memo_threshold"]:
            self.memo_step = step
        if self.report is not None:
            self.report(self.progress(step), None)
        after = stop["after_grok"]
        return self.grok_step is not None and after is not None and step >= self.grok_step + after

    def progress(self, step) -> dict:
        if self.steps_at_t0 is None:
            self.steps_at_t0, self.t0 = step, time.perf_counter()
        elapsed = time.perf_counter() - self.t0
        rate = (step - self.steps_at_t0) / elapsed if elapsed > 0 else 0.0
        ev, f = self.last_eval, self.last_feature
        return {"step": step, "steps_per_s": rate,
                "test_acc": _finite(ev.get("grok_acc")), "train_acc": _finite(ev.get("memo_acc")),
                "grok_step": -1 if self.grok_step is None else self.grok_step,
                "alarm_step": -1 if self.alarm_step is None else self.alarm_step,
                # For the trackers (Tune logger callbacks, platform/trackers.py): the training
                # step as Tune's x-axis, the latest eval and spectral scalars, events as 0/1.
                "timesteps_total": step,
                "test_loss": _finite(ev.get("test_loss")), "train_loss": _finite(ev.get("train_loss")),
                "feature_step": f.get("step", -1), "g23": _finite(f.get("g23")),
                "gap_ratio": _finite(f.get("gap_ratio")), "k_star": _finite(f.get("k_star")),
                "adiabatic": _finite(f.get("adiabatic")), "update_norm": _finite(f.get("update_norm")),
                "grokked": int(self.grok_step is not None), "alarmed": int(self.alarm_step is not None)}

    # -- checkpointed state
    def state_dict(self):
        return {"monitor": self.monitor.state_dict(), "detector": self.detector.state_dict(),
                "grok_step": self.grok_step, "memo_step": self.memo_step,
                "alarm_step": self.alarm_step}

    def load_state_dict(self, state):
        self.monitor.load_state_dict(state["monitor"])
        self.detector.load_state_dict(state["detector"])
        self.grok_step, self.memo_step = state["grok_step"], state["memo_step"]
        self.alarm_step = state["alarm_step"]


def _finite(x):
    return float(x) if x is not None and math.isfinite(x) else float("nan")


def _now():
    return datetime.now(timezone.utc)


def trial_row(trial: TrialSpec, sweep: str, attempt: int, status: str, *, steps=0, error=None,
              started=None, finished=None, wall_s=None, node_id=None, extra=None) -> dict:
    from importlib.metadata import PackageNotFoundError, version  # not `import ray`: the bare-loop
    # path needs no Ray, and runs where Ray is not installed at all (the GPU check's image)
    try:
        ray_version = version("ray")
    except PackageNotFoundError:
        ray_version = None

    row = {
        "trial_id": trial.trial_id, "workload": trial.workload, "family": family(trial.workload),
        "optimizer": trial.optimizer,
        "weight_decay": trial.weight_decay, "attempt": attempt, "sweep": sweep,
        "preset": trial.train["preset"], "seed": trial.seed, "status": status, "steps": steps,
        "error": error, "node_id": node_id, "config": json.dumps(trial.as_dict(), sort_keys=True),
        "code_version": code_version(), "torch_version": torch.__version__,
        "ray_version": ray_version, "started_at": started, "finished_at": finished,
        "wall_s": wall_s,
    }
    row.update(extra or {})
    return row


def execute_trial(trial: TrialSpec, sweep: str, storage: str, *, resume_state: dict | None = None,
                  report=None, save_checkpoint=None, node_id: str | None = None):
    """Run one trial end to end without any Ray dependency; returns the TrainResult.

    report(metrics): progress after every evaluation. save_checkpoint(step, state, metrics):
    called after the rows up to ``step`` are sealed (the order that makes resume exact).
    Used by the Tune trainable below and by the bare-loop baseline of benchmarks/sweep.py.
    Returns None, without training, when the trials table already records the trial as
    finished.
    """
    partition = trial.partition
    done = recorded_trial(storage, sweep, trial.trial_id, partition)
    if done is not None and done["status"] in FINISHED:
        # The trials table is the source of truth: a trial that finished before a driver or
        # worker died (and before Tune recorded it) is not trained again.
        if report is not None:
            report({"step": done["steps"], "steps_per_s": 0.0, "attempt": done["attempt"],
                    "grok_step": -1 if done.get("grok_step") is None else done["grok_step"],
                    "alarm_step": -1 if done.get("alarm_step") is None else done["alarm_step"],
                    "test_acc": float("nan"), "train_acc": float("nan"),
                    "done_status": done["status"], "already_finished": True})
        return None
    started = _now()
    attempt = next_attempt(storage, sweep, trial.trial_id, partition)
    extra = {"pid": os.getpid(), "hostname": socket.gethostname(), "pid_start": process_identity(),
             "compute": _compute(trial)}
    writer = TrialWriter(storage, sweep, trial.trial_id, attempt, partition)
    # The online detector is the analysis' default, on full windows — the same rule and rows the
    # aggregation replays offline, so runs.alarm_step equals the live ALARM.
    detector = make_detector(window=trial.monitor["window"], context={"weight_decay": trial.weight_decay})
    recorder = TrialRecorder(trial, writer, SpectralMonitor(trial.monitor_config()), detector,
                             None if report is None else (lambda m, _ckpt: report(dict(m, attempt=attempt))))
    write_table(storage, sweep, "trials", pl.DataFrame([trial_row(
        trial, sweep, attempt, "running", started=started, node_id=node_id, extra=extra)]))

    def checkpoint_fn(step, state):
        writer.flush()  # seal rows first: see the module docstring
        if save_checkpoint is not None:
            save_checkpoint(step, state, dict(recorder.progress(step), attempt=attempt))

    t0 = time.perf_counter()
    # Hand the state over without keeping a reference here: train() drops its own once it has
    # restored it, so the (possibly gigabytes of) checkpoint is not held for the whole trial.
    handover = [resume_state]
    del resume_state
    result = train(trial.train_config(), callbacks=[recorder], checkpoint_fn=checkpoint_fn,
                   resume_state=handover.pop())
    writer.flush()
    writer.compact(end_step=result.steps)
    write_table(storage, sweep, "trials", pl.DataFrame([trial_row(
        trial, sweep, attempt, result.status, steps=result.steps, error=result.error,
        started=started, finished=_now(), wall_s=time.perf_counter() - t0, node_id=node_id,
        extra=dict(extra, grok_step=recorder.grok_step, alarm_step=recorder.alarm_step,
                   n_params=result.n_params))]))
    if report is not None:
        report(dict(recorder.progress(result.steps), attempt=attempt, done_status=result.status))
    return result


def _compute(trial: TrialSpec) -> str | None:
    """The trials row's ``compute``; None where the device cannot be resolved (train() then
    fails the trial with the reason)."""
    try:
        return compute_environment(resolve_device(trial.train_config().device))
    except (ValueError, RuntimeError):
        return None


def load_resume_state(ckpt, trial_id: str, log=None) -> dict | None:
    """The training state in a Tune checkpoint, or None to start at step 0.

    A checkpoint that cannot be read must not fail every retry of the trial: its directory
    deleted (Tune keeps ``num_to_keep`` and deletes older ones; a driver killed between that
    deletion and its next experiment-state save can resume pointing at a deleted one — read in
    Ray 2.60's source, not seen here) or its file damaged. The trial then starts again from
    step 0 under a new attempt, which rewrites every row (deterministic replay); a trial that
    storage already records as finished is not trained at all (execute_trial checks first)."""
    if ckpt is None:
        return None
    try:
        with ckpt.as_directory() as d:
            return torch.load(Path(d) / "state.pt", weights_only=False, map_location="cpu")
    except Exception as exc:  # noqa: BLE001 — any unreadable checkpoint: the same safe fallback
        (log or _warn)(f"edgesweep: trial {trial_id}: checkpoint {getattr(ckpt, 'path', ckpt)} is "
                       f"unreadable ({type(exc).__name__}: {exc}); starting it again from step 0")
        return None


def _warn(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


CKPT_PREFIX = "edgesweep-ckpt-"


def _scratch_prefix() -> str:
    # The host in the name: a TMPDIR shared between machines holds other hosts' directories,
    # whose locks may not be visible from here (flock over some network file systems). '@'
    # ends it, which no host name contains: "node1@" is not a prefix of "node1-gpu@…".
    return f"{CKPT_PREFIX}{socket.gethostname().replace('/', '_').replace('@', '_')}@"


@contextlib.contextmanager
def checkpoint_scratch(base: str | None = None):
    """A scratch directory for one checkpoint on its way to Tune, removed afterwards.

    While in use, an exclusive ``flock`` is held on ``<dir>.lock`` beside it; a worker killed
    before its cleanup leaves both, unlocked (the kernel drops a dead process's locks), which is
    how :func:`remove_orphaned_scratch` tells an orphan from a directory still in use — in
    other processes, other containers sharing this /tmp, other pid namespaces alike. The lock
    file is made and locked under a temporary name and then renamed into place, so no other
    process can see it unlocked."""
    path = tempfile.mkdtemp(prefix=_scratch_prefix(), dir=base)
    pending, fd = f"{path}.lock-{os.getpid()}", None
    try:
        fd = os.open(pending, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
        except OSError:
            # No flock here (NFS mounted nolock, some FUSE file systems): no lock file either,
            # so no remover ever takes this directory for an orphan; it is only left on a kill.
            os.unlink(pending)
        else:
            os.replace(pending, f"{path}.lock")
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)
        for name in (f"{path}.lock", pending):  # unlinked while still locked: see the remover
            with contextlib.suppress(FileNotFoundError):
                os.unlink(name)
        if fd is not None:
            os.close(fd)


def remove_orphaned_scratch(base: str | None = None) -> list[str]:
    """Delete this host's checkpoint scratch directories that no live process holds; returns
    what was removed.

    A worker SIGKILLed inside ``save_checkpoint`` never reaches its cleanup, and each such
    directory holds a whole training state (gigabytes for the large presets with ``params:
    all``), so every trial start clears the orphans: those whose lock file it can lock."""
    base = base or tempfile.gettempdir()
    prefix = _scratch_prefix()
    try:
        names = os.listdir(base)
    except OSError:
        return []
    removed = []
    for name in names:
        if not (name.startswith(prefix) and name.endswith(".lock")):
            continue
        lock = os.path.join(base, name)
        try:
            fd = os.open(lock, os.O_WRONLY)
        except OSError:
            continue  # gone meanwhile (its owner finished)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                continue  # held: in use
            if not os.path.exists(lock):
                continue  # its owner finished between our open and our lock
            path = lock[: -len(".lock")]
            shutil.rmtree(path, ignore_errors=True)
            if not os.path.exists(path):
                os.unlink(lock)
                removed.append(path)
        finally:
            os.close(fd)
    return removed


def run_trial(config: dict) -> None:
    """Tune function trainable. ``config = {"trial": TrialSpec.as_dict(), "sweep": {...}}``."""
    import logging

    import ray
    from ray import tune

    for name in ("ray.tune", "ray.train"):  # one "checkpoint created" line per checkpoint is noise
        logging.getLogger(name).setLevel(logging.WARNING)
    trial = TrialSpec.from_dict(config["trial"])
    # Pin intra-op threads to the CPUs Tune gave this trial: on an oversubscribed machine
    # OpenMP threads spin while another process holds "their" core (measured here: a tiny
    # model's step went from 6.5 ms to 900 ms with 2 threads on a busy 2-core machine).
    torch.set_num_threads(max(1, int(config["sweep"].get("cpus_per_trial", 1))))
    for path in remove_orphaned_scratch():
        _warn(f"edgesweep: removed {path}, a checkpoint scratch directory of a killed worker")

    sweep = config["sweep"]

    def save_checkpoint(step, state, metrics):
        with checkpoint_scratch() as tmp:
            torch.save(state, Path(tmp) / "state.pt")
            try:
                tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(tmp))
            except OSError as exc:  # Tune's copy into storage names no file (a full disk: errno 28)
                where = f"{sweep['storage'].rstrip('/')}/{sweep['name']}/_tune/{trial.trial_id}"
                raise StorageError(f"{where}: cannot store the checkpoint of step {step}: {exc}", where) from exc

    # The state is loaded inline, not kept in a local: execute_trial hands it on to train(),
    # which frees it once restored.
    execute_trial(trial, config["sweep"]["name"], config["sweep"]["storage"],
                  resume_state=load_resume_state(tune.get_checkpoint(), trial.trial_id),
                  report=tune.report, save_checkpoint=save_checkpoint,
                  node_id=ray.get_runtime_context().get_node_id())
