"""The Ray Tune trainable: one trial = workload + spectral monitor + Parquet writer.

Checkpoint protocol (what makes "nothing lost, nothing doubled" hold, DESIGN.md §5):
at every ``checkpoint_every`` steps the training loop hands over its state; we first *seal*
every buffered feature/eval row as Parquet parts, then report the checkpoint to Tune. If the
worker dies, Tune restarts the trial from the last checkpoint; the new attempt (a higher
attempt number) replays exactly the steps after it, and readers keep the newest attempt of
every (trial_id, step). Only ``ray.tune`` APIs are used inside the trial (Ray 2.60).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import socket
import subprocess
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import polars as pl
import torch

from ..spectral import MonitorConfig, SpectralMonitor
from ..spectral.detector import DetectorConfig, G23CollapseDetector
from ..storage import TrialWriter, write_table
from ..storage.fs import resolve_root
from ..storage.layout import parse_part_name, table_dir, trial_file_name
from ..storage.schema import DECLARED
from ..workloads import TrainConfig, train
from .spec import TrialSpec

EVAL_COLUMNS = [n for n in DECLARED["evals"].names
                if n not in ("trial_id", "workload", "optimizer", "weight_decay", "attempt")]
FEATURE_COLUMNS = [n for n in DECLARED["features"].names
                   if n not in ("trial_id", "workload", "optimizer", "weight_decay", "attempt")]


def code_version() -> str:
    """git commit of the code (with '+dirty' when modified), else the package version."""
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


def train_config_for(trial: TrialSpec) -> TrainConfig:
    t, o = trial.train, trial.optim
    return TrainConfig(
        workload=trial.workload, preset=t["preset"], optimizer=trial.optimizer, lr=o["lr"],
        weight_decay=trial.weight_decay, decay=o["decay"],
        betas=None if o["betas"] is None else tuple(o["betas"]), momentum=o["momentum"],
        batch_size=t["batch_size"], grad_clip=o["grad_clip"], schedule=o["schedule"],
        warmup_steps=o["warmup_steps"], max_steps=t["max_steps"], eval_every=t["eval_every"],
        snapshot_every=trial.monitor["every"], checkpoint_every=t["checkpoint_every"],
        seed=trial.seed, data_seed=t["data_seed"], device=t["device"], amp=t["amp"],
        model_overrides=dict(t["model"]), task_overrides=dict(t["task"]))


def monitor_config_for(trial: TrialSpec) -> MonitorConfig:
    return MonitorConfig(**trial.monitor)


def next_attempt(storage: str, sweep: str, trial_id: str, partition: dict) -> int:
    """1 + the highest attempt this trial has written, so replayed rows always win."""
    root = resolve_root(storage)
    best = -1
    for table in ("features", "evals"):
        directory = root.path(table_dir(sweep, table, partition))
        if not root.is_dir(directory):
            continue
        for info in root.list_files(directory):
            part = parse_part_name(os.path.basename(info.path))
            if part is not None and part.trial_id == trial_id:
                best = max(best, part.attempt)
    return best + 1


class TrialRecorder:
    """Training-loop callback: monitor at snapshots, rows to the writer, grok/alarm events,
    the stop rule, and progress to Tune. Its state rides in the training checkpoint."""

    def __init__(self, trial: TrialSpec, writer: TrialWriter, monitor: SpectralMonitor,
                 detector: G23CollapseDetector, report=None):
        self.trial, self.writer, self.monitor, self.detector = trial, writer, monitor, detector
        self.report = report
        self.grok_step = None
        self.memo_step = None
        self.alarm_step = None
        self.loss = math.nan
        self.grad_norm = math.nan
        self.last_eval = {}
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
        self.writer.add("features", {k: row.get(k) for k in FEATURE_COLUMNS})
        if not row["nonfinite"] and self.detector.update(step, row["g23"], row["gap_ratio"]):
            self.alarm_step = step

    def on_eval(self, step, metrics):
        row = {k: metrics.get(k) for k in EVAL_COLUMNS}
        row["step"] = step
        self.writer.add("evals", row)
        self.last_eval = row
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
        ev = self.last_eval
        return {"step": step, "steps_per_s": rate,
                "test_acc": _finite(ev.get("grok_acc")), "train_acc": _finite(ev.get("memo_acc")),
                "grok_step": -1 if self.grok_step is None else self.grok_step,
                "alarm_step": -1 if self.alarm_step is None else self.alarm_step}

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
    from importlib.metadata import version  # not `import ray`: the bare-loop path needs no Ray

    row = {
        "trial_id": trial.trial_id, "workload": trial.workload, "optimizer": trial.optimizer,
        "weight_decay": trial.weight_decay, "attempt": attempt, "sweep": sweep,
        "preset": trial.train["preset"], "seed": trial.seed, "status": status, "steps": steps,
        "error": error, "node_id": node_id, "config": json.dumps(trial.as_dict(), sort_keys=True),
        "code_version": code_version(), "torch_version": torch.__version__,
        "ray_version": version("ray"), "started_at": started, "finished_at": finished,
        "wall_s": wall_s,
    }
    row.update(extra or {})
    return row


FINISHED = ("completed", "stopped", "diverged")


def recorded_trial(storage: str, sweep: str, trial: TrialSpec) -> dict | None:
    """This trial's row in the ``trials`` table (its own file), or None."""
    import pyarrow.parquet as pq

    root = resolve_root(storage)
    path = root.path(table_dir(sweep, "trials", trial.partition), trial_file_name(trial.trial_id))
    if not root.exists(path):
        return None
    rows = pq.read_table(path, filesystem=root.fs).to_pylist()
    return rows[-1] if rows else None


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
    done = recorded_trial(storage, sweep, trial)
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
    extra = {"pid": os.getpid(), "hostname": socket.gethostname()}
    writer = TrialWriter(storage, sweep, trial.trial_id, attempt, partition)
    recorder = TrialRecorder(trial, writer, SpectralMonitor(monitor_config_for(trial)),
                             G23CollapseDetector(DetectorConfig()),
                             None if report is None else (lambda m, _ckpt: report(dict(m, attempt=attempt))))
    write_table(storage, sweep, "trials", pl.DataFrame([trial_row(
        trial, sweep, attempt, "running", started=started, node_id=node_id, extra=extra)]))

    def checkpoint_fn(step, state):
        writer.flush()  # seal rows first: see the module docstring
        if save_checkpoint is not None:
            save_checkpoint(step, state, dict(recorder.progress(step), attempt=attempt))

    t0 = time.perf_counter()
    result = train(train_config_for(trial), callbacks=[recorder], checkpoint_fn=checkpoint_fn,
                   resume_state=resume_state)
    writer.flush()
    writer.compact()
    write_table(storage, sweep, "trials", pl.DataFrame([trial_row(
        trial, sweep, attempt, result.status, steps=result.steps, error=result.error,
        started=started, finished=_now(), wall_s=time.perf_counter() - t0, node_id=node_id,
        extra=dict(extra, grok_step=recorder.grok_step, alarm_step=recorder.alarm_step,
                   n_params=result.n_params))]))
    if report is not None:
        report(dict(recorder.progress(result.steps), attempt=attempt, done_status=result.status))
    return result


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
    resume_state = None
    ckpt = tune.get_checkpoint()
    if ckpt is not None:
        with ckpt.as_directory() as d:
            resume_state = torch.load(Path(d) / "state.pt", weights_only=False, map_location="cpu")

    def save_checkpoint(step, state, metrics):
        tmp = tempfile.mkdtemp(prefix="edgesweep-ckpt-")
        try:
            torch.save(state, Path(tmp) / "state.pt")
            tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(tmp))
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    execute_trial(trial, config["sweep"]["name"], config["sweep"]["storage"],
                  resume_state=resume_state, report=tune.report, save_checkpoint=save_checkpoint,
                  node_id=ray.get_runtime_context().get_node_id())
