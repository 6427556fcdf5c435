"""Wall time of one training step of each paper preset on this machine, as ratios to mod-arith.

Every workload runs through the real training loop (``edgesweep.workloads.train``) with AdamW at
its paper batch size; the time of a step is the interval between consecutive ``on_step``
callbacks (batch sampling, forward, backward, clipping, optimiser step). The first ``--warmup``
steps are discarded, the median of the rest is reported. Evaluation and snapshots are pushed
beyond the budget so they do not land inside a timed interval; language models get one tiny
evaluation batch because the loop always evaluates at step 0.

By default torch uses one thread (one CPU per trial, as a Ray sweep schedules them).
All workloads are measured in one run so the ratios share the machine's state (machines here are
shared and noisy: compare ratios, not absolute times, across machines).

    nice -n 10 python benchmarks/workloads_steptime.py
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

import torch

from edgesweep.workloads import TrainConfig, get_workload, parameter_counts, train

try:
    from workloads_grokking import cpu_model
except ImportError:  # run from another directory
    from benchmarks.workloads_grokking import cpu_model

FAR = 10**9


class StepTimer:
    def __init__(self):
        self.t = []

    def on_step(self, step, loss, lr):
        self.t.append(time.perf_counter())


def measure(workload: str, preset: str, steps: int, warmup: int, optimizer: str,
            batch_size: int | None = None) -> dict:
    family = get_workload(workload).family
    task_overrides = {"eval_batches": 1, "eval_batch_size": 1} if family == "lm" else {}
    cfg = TrainConfig(workload, preset=preset, optimizer=optimizer, max_steps=warmup + steps + 1,
                      eval_every=FAR, snapshot_every=FAR, checkpoint_every=FAR, device="cpu",
                      batch_size=batch_size, task_overrides=task_overrides)
    timer = StepTimer()
    train(cfg, callbacks=[timer])
    dts = [b - a for a, b in zip(timer.t, timer.t[1:])][warmup:]
    total, attn = parameter_counts(workload, preset, task_overrides=task_overrides)
    res = cfg.resolve()
    paper_batch = TrainConfig(workload, preset=preset).resolve().batch_size
    ms = 1000 * statistics.median(dts)
    return dict(workload=workload, preset=preset, optimizer=optimizer, params=total, attn_params=attn,
                batch_size=res.batch_size, preset_batch_size=paper_batch, timed_steps=len(dts),
                ms_per_step=ms, ms_min=1000 * min(dts), ms_max=1000 * max(dts),
                # Forward/backward cost is linear in the batch; the optimiser step is not, so this
                # slightly overestimates when the batch was reduced.
                ms_per_step_at_preset_batch=ms * paper_batch / res.batch_size)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workloads", default="mod_add,multitask_3,dyck,scan,tinystories,gpt2")
    ap.add_argument("--preset", default="paper")
    ap.add_argument("--optimizer", default="adamw")
    ap.add_argument("--steps", type=int, default=20, help="timed steps per small workload")
    ap.add_argument("--lm-steps", type=int, default=3, help="timed steps per language model")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--lm-tokens", type=int, default=1024,
                    help="language models run batch = lm_tokens // ctx_len (≥ 1) instead of the preset "
                         "batch (GPT-2 at 8×1024 needs ~14 GB and minutes per step on 2 cores); the table "
                         "also extrapolates linearly to the preset batch. 0 = preset batch")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch intra-op threads (default 1, like a 1-CPU Ray trial; 0 = torch's choice). "
                         "On a shared machine 2 OpenMP threads on 2 cores stall whenever another process "
                         "runs: steps of tiny models then vary 2–100 ms instead of ~2 ms")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    if args.threads > 0:
        torch.set_num_threads(args.threads)

    print(f"load average at start: {os.getloadavg()}")
    print(f"machine: nproc={os.cpu_count()}  cpu={cpu_model()}  torch={torch.__version__} "
          f"threads={torch.get_num_threads()}", flush=True)
    rows = []
    for w in args.workloads.split(","):
        lm = get_workload(w).family == "lm"
        batch = None
        if lm and args.lm_tokens:
            batch = max(1, args.lm_tokens // get_workload(w).preset(args.preset).task["ctx_len"])
        t = time.perf_counter()
        row = measure(w, args.preset, args.lm_steps if lm else args.steps, 1 if lm else args.warmup, args.optimizer,
                      batch)
        row["measure_wall_s"] = round(time.perf_counter() - t, 1)
        rows.append(row)
        print(json.dumps(row), flush=True)

    key = "ms_per_step_at_preset_batch"
    base = next((r[key] for r in rows if r["workload"] == "mod_add"), rows[0][key])
    print(f"load average at end: {os.getloadavg()}")
    print()
    print(f"{'workload':<12} {'params':>12} {'attn':>11} {'batch':>6} {'ms/step':>10} {'min':>10} {'max':>10} "
          f"{'preset bs':>9} {'ms/step@bs':>11} {'× mod_add':>10}")
    for r in rows:
        r["ratio_to_mod_add"] = r[key] / base
        print(f"{r['workload']:<12} {r['params']:>12,} {r['attn_params']:>11,} {r['batch_size']:>6} "
              f"{r['ms_per_step']:>10.1f} {r['ms_min']:>10.1f} {r['ms_max']:>10.1f} {r['preset_batch_size']:>9} "
              f"{r[key]:>11.1f} {r['ratio_to_mod_add']:>10.1f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"machine": {"nproc": os.cpu_count(), "cpu": cpu_model(), "torch": torch.__version__},
                       "args": vars(args), "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
