"""Does the laptop preset grok? Weight decay 1.0 vs 0.0, seeds 42/137/2024 (slow, not a CI test).

For every (workload, weight decay, seed) it trains the laptop preset with the paper protocol
(AdamW lr 1e-3, betas (0.9, 0.98), batch 512, clip 1.0, 50 % split, eval every 100 steps) for
at most ``--steps`` steps and reports

* grok step  — first evaluation with test accuracy ≥ 0.95 (DESIGN.md 1.3),
* memo step  — first evaluation with train accuracy ≥ 0.99,
* best and final test accuracy, steps run, wall time and ms per step.

Runs with weight decay stop ``--after-grok`` steps after grokking (0: at the grok evaluation)
to save time; controls always run the full budget, since "no grok by step N" needs all N.

    nice -n 10 python benchmarks/workloads_grokking.py --steps 6000 --json out.json

On a shared 2-core machine, one process per weight-decay arm with ``--threads 1`` each
(``--wds 1.0`` and ``--wds 0.0``) finishes sooner and is less sensitive to other load than one
2-thread process.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import time

import torch

from edgesweep.workloads import TrainConfig, train


class GrokWatch:
    """Records the grok and memorisation steps; asks to stop ``after`` steps past the grok."""

    def __init__(self, after: int | None):
        self.after = after
        self.grok_step = self.memo_step = None
        self.best_test = 0.0

    def on_eval(self, step, m):
        if step % 1000 == 0:
            print(f"  step {step}: train {m['memo_acc']:.3f} test {m['grok_acc']:.3f}", flush=True)
        self.best_test = max(self.best_test, m["grok_acc"])
        if self.memo_step is None and m["memo_acc"] >= 0.99:
            self.memo_step = step
        if self.grok_step is None and m["grok_acc"] >= 0.95:
            self.grok_step = step
        return self.after is not None and self.grok_step is not None and step >= self.grok_step + self.after


def cpu_model() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        for line in out.splitlines():
            if line.startswith("Model name"):
                return line.split(":", 1)[1].strip()
    except (OSError, subprocess.CalledProcessError):
        pass
    return platform.processor() or "unknown"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workloads", default="mod_add")
    ap.add_argument("--preset", default="laptop")
    ap.add_argument("--seeds", default="42,137,2024")
    ap.add_argument("--wds", default="1.0,0.0")
    ap.add_argument("--steps", type=int, default=6000)
    ap.add_argument("--after-grok", type=int, default=0)
    ap.add_argument("--threads", type=int, default=None,
                    help="torch intra-op threads (default: torch's choice); 1 is steadier on a shared machine")
    ap.add_argument("--json", default=None, help="also write the rows here")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    print(f"machine: nproc={os.cpu_count()}  cpu={cpu_model()}  torch={torch.__version__} "
          f"threads={torch.get_num_threads()}", flush=True)
    rows = []
    for w in args.workloads.split(","):
        for wd in (float(x) for x in args.wds.split(",")):
            for seed in (int(x) for x in args.seeds.split(",")):
                watch = GrokWatch(args.after_grok if wd > 0 else None)
                cfg = TrainConfig(w, preset=args.preset, weight_decay=wd, seed=seed, max_steps=args.steps,
                                  eval_every=100, device="cpu")
                t = time.perf_counter()
                r = train(cfg, callbacks=[watch])
                wall = time.perf_counter() - t
                row = dict(workload=w, preset=args.preset, weight_decay=wd, seed=seed, status=r.status,
                           steps=r.steps, grok_step=watch.grok_step, memo_step=watch.memo_step,
                           best_test_acc=round(watch.best_test, 4),
                           final_test_acc=round(r.metrics["grok_acc"], 4), wall_s=round(wall, 1),
                           ms_per_step=round(1000 * wall / max(1, r.steps), 1))
                rows.append(row)
                print(json.dumps(row), flush=True)

    print()
    hdr = ("workload", "wd", "seed", "grok_step", "memo_step", "best_test", "final_test", "steps", "wall_s", "ms/step")
    print(" | ".join(hdr))
    for r in rows:
        print(" | ".join(str(x) for x in (r["workload"], r["weight_decay"], r["seed"], r["grok_step"], r["memo_step"],
                                          r["best_test_acc"], r["final_test_acc"], r["steps"], r["wall_s"],
                                          r["ms_per_step"])))
    for w in args.workloads.split(","):
        for wd in (float(x) for x in args.wds.split(",")):
            sel = [r for r in rows if r["workload"] == w and r["weight_decay"] == wd]
            n = sum(r["grok_step"] is not None for r in sel)
            print(f"{w} wd={wd}: {n}/{len(sel)} grokked within {args.steps} steps")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"machine": {"nproc": os.cpu_count(), "cpu": cpu_model(), "torch": torch.__version__},
                       "args": vars(args), "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
