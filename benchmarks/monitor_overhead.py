"""Monitor overhead as a fraction of training time, at the paper's cadence, for every preset.

    .venv/bin/python benchmarks/monitor_overhead.py [--presets laptop,paper] [--workloads ...]

For each (workload, preset) the real training loop (``edgesweep.workloads.train``) runs with the
trial's own per-snapshot path — ``TrialRecorder.on_snapshot``: ``SpectralMonitor.observe``, the
feature row into a real ``TrialWriter``, the online detector — driven by a wrapper that times
it. Snapshots are taken at every step until the window is full (W + 1 snapshots), then at every
*other* step, so steps without a snapshot and steps with one alternate in the same run:

* **step** — median interval between consecutive steps with no snapshot in between (sampling,
  forward, backward, clipping, optimiser step);
* **snapshot** — median time of ``on_snapshot`` once the window is full (what a trial pays per
  snapshot, whatever the cadence); also shown: the median interval of the steps that carry a
  snapshot minus **step**, the same cost measured from outside;
* **overhead** = snapshot / (every × step), ``every`` the paper's cadence for the workload
  (DESIGN.md 1.4: 100 for modular arithmetic and Dyck-1, 500 for SCAN, 200 for the language
  models; the laptop mod-arith preset snapshots every 50), with the paper's parameter set
  (attention for the grokking tasks, all parameters for the language models) and window.

The first ``observe`` (kernel compile or cache load when the exact path uses numba, P ≥ 2²⁰)
is a once-per-process cost, printed separately and as a fraction of a typical run.

Language models run a reduced batch (``--lm-tokens`` tokens per step, like
benchmarks/workloads_steptime.py): the step is then shorter than at the paper batch while the
snapshot costs the same, so their overhead at the paper batch is at most the printed one (the
``@ preset batch`` column scales the step linearly). One torch thread (a 1-CPU trial).
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time

import torch

from edgesweep.analysis import make_detector
from edgesweep.platform.spec import parse_spec
from edgesweep.platform.trainable import TrialRecorder
from edgesweep.spectral import SpectralMonitor
from edgesweep.storage import TrialWriter
from edgesweep.workloads import get_workload, train

FAR = 10**9

#: The paper's monitor per workload (DESIGN.md 1.4 and sweeps/grokking.yaml) and per preset.
CADENCE = {  # workload -> (window, every, params)
    "mod_add": (10, 100, "attention"), "multitask_3": (10, 100, "attention"),
    "dyck": (3, 100, "attention"), "scan": (5, 500, "attention"),
    "tinystories": (10, 200, "all"), "gpt2": (10, 200, "all"),
}
LAPTOP_EVERY = {"mod_add": 50, "multitask_3": 50}  # the laptop grokking protocol (DESIGN.md 1.4)
#: Typical steps of one run, for the once-per-process cost (DESIGN.md 1.4 / workloads.md).
TYPICAL_STEPS = {"mod_add": 4000, "multitask_3": 4000, "dyck": 1400, "scan": 4000,
                 "tinystories": 10000, "gpt2": 10000}


class Timed:
    """The training-loop callback: forwards to the recorder, time-stamps steps, times snapshots
    and decides which steps snapshot (the loop asks at every step: snapshot_every = 1)."""

    def __init__(self, recorder: TrialRecorder, window: int):
        self.rec, self.fill = recorder, window + 1
        self.t_step: list[tuple[int, float]] = []
        self.snapped: set[int] = set()
        self.t_snap: list[tuple[int, float]] = []  # (snapshot index, seconds)

    def on_step(self, step, loss, lr):
        self.t_step.append((step, time.perf_counter()))

    def on_step_stats(self, step, stats):
        self.rec.on_step_stats(step, stats)

    def on_eval(self, step, metrics):
        self.rec.on_eval(step, metrics)

    def on_snapshot(self, step, model, lr):
        n = len(self.t_snap)
        if n >= self.fill and step % 2:
            return  # after the window is full: every other step
        t0 = time.perf_counter()
        self.rec.on_snapshot(step, model, lr)
        self.t_snap.append((n, time.perf_counter() - t0))
        self.snapped.add(step)


def measure(workload: str, preset: str, reps: int, lm_tokens: int, work: str) -> dict:
    window, every, params = CADENCE[workload]
    if preset == "laptop":
        every = LAPTOP_EVERY.get(workload, every)
    spec_w = get_workload(workload)
    lm = spec_w.family == "lm"
    train_sec: dict = {"preset": preset}
    batch = None
    if lm:
        batch = max(1, lm_tokens // spec_w.preset(preset).task["ctx_len"])
        train_sec["task"] = {"eval_batches": 1, "eval_batch_size": 1}  # the loop evaluates at step 0
    raw = {"name": "overhead", "storage": work, "grid": {"workload": [workload], "optimizer": ["adamw"],
                                                         "weight_decay": [1.0], "seed": [42]},
           "train": train_sec, "monitor": {"window": window, "every": 1, "params": params}}
    trial = parse_spec(raw).trials[0]
    cfg = trial.train_config()
    steps = window + 2 * reps + 2
    cfg.max_steps, cfg.eval_every, cfg.checkpoint_every = steps, FAR, FAR
    if batch is not None:
        cfg.batch_size = batch
    writer = TrialWriter(work, "overhead", f"{workload}-{preset}", 0, trial.partition)
    recorder = TrialRecorder(trial, writer, SpectralMonitor(trial.monitor_config()),
                             make_detector(window=window, context={"weight_decay": 1.0}))
    timed = Timed(recorder, window)
    t0 = time.perf_counter()
    result = train(cfg, callbacks=[timed])
    wall = time.perf_counter() - t0
    writer.flush()
    plain, with_snap = [], []
    for (s, t), (s1, t1) in zip(timed.t_step, timed.t_step[1:]):
        if s <= window + 1:
            continue  # warm-up and window filling
        (with_snap if s in timed.snapped else plain).append(t1 - t)
    full = [dt for n, dt in timed.t_snap if n >= timed.fill]
    step, snap = statistics.median(plain), statistics.median(full)
    preset_batch = cfg.resolve().batch_size if batch is None else type(cfg)(
        workload, preset=preset).resolve().batch_size
    scale = preset_batch / cfg.resolve().batch_size
    return dict(workload=workload, preset=preset, params=params, P=recorder.monitor.n_params,
                n_model=result.n_params,
                window=window, every=every, batch=cfg.resolve().batch_size, preset_batch=preset_batch,
                step_ms=1000 * step, snap_ms=1000 * snap,
                outside_ms=1000 * (statistics.median(with_snap) - step),
                first_ms=1000 * timed.t_snap[0][1], n_plain=len(plain), n_full=len(full),
                overhead=snap / (every * step), overhead_preset_batch=snap / (every * step * scale),
                first_fraction=timed.t_snap[0][1] / (TYPICAL_STEPS[workload] * step * scale),
                wall_s=wall)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workloads", default="mod_add,multitask_3,dyck,scan,tinystories,gpt2")
    ap.add_argument("--presets", default="laptop,paper")
    ap.add_argument("--reps", type=int, default=15, help="snapshots timed once the window is full")
    ap.add_argument("--lm-reps", type=int, default=3)
    ap.add_argument("--lm-tokens", type=int, default=1024)
    args = ap.parse_args()
    torch.set_num_threads(1)
    print(f"machine: {os.cpu_count()} CPUs, torch {torch.__version__}, 1 thread; "
          f"load average at start {os.getloadavg()[0]:.1f}", flush=True)
    rows = []
    with tempfile.TemporaryDirectory(prefix="es-overhead-") as work:
        for preset in args.presets.split(","):
            for w in args.workloads.split(","):
                lm = get_workload(w).family == "lm"
                r = measure(w, preset, args.lm_reps if lm else args.reps, args.lm_tokens, work)
                r["load"] = os.getloadavg()[0]
                rows.append(r)
                print(f"  {w}/{preset}: step {r['step_ms']:.1f} ms, snapshot {r['snap_ms']:.2f} ms, "
                      f"overhead {100 * r['overhead']:.3f} % ({r['wall_s']:.0f}s, load {r['load']:.1f})",
                      flush=True)
    print(f"load average at end {os.getloadavg()[0]:.1f}\n")
    head = (f"{'workload':<12} {'preset':<7} {'params':<9} {'P':>11} {'W':>2} {'every':>5} {'batch':>5} {'step ms':>9} "
            f"{'snap ms':>8} {'outside':>8} {'overhead':>9} {'@preset bs':>10} {'first ms':>9} {'first/run':>9}")
    print(head)
    for r in rows:
        print(f"{r['workload']:<12} {r['preset']:<7} {r['params']:<9} {r['P']:>11,} {r['window']:>2} {r['every']:>5} "
              f"{r['batch']:>5} {r['step_ms']:>9.1f} {r['snap_ms']:>8.2f} {r['outside_ms']:>8.2f} "
              f"{100 * r['overhead']:>8.3f}% {100 * r['overhead_preset_batch']:>9.3f}% {r['first_ms']:>9.1f} "
              f"{100 * r['first_fraction']:>8.3f}%")
    worst = max(rows, key=lambda r: r["overhead_preset_batch"])
    print(f"\nlargest overhead at the preset batch: {100 * worst['overhead_preset_batch']:.3f} % "
          f"({worst['workload']}/{worst['preset']}); goal ≤ 1 %")


if __name__ == "__main__":
    main()
