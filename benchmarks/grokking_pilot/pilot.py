"""Pilot: map which training conditions grok quickly on a 2-core CPU.

Usage (from the repository root): .venv/bin/python benchmarks/grokking_pilot/pilot.py BATCH [BATCH ...]
Each condition runs once (skipped if its key is already in results.jsonl); one process, 1 thread.
"""
from __future__ import annotations

import json
import math
import os
import sys
import time

import torch

torch.set_num_threads(1)
from edgesweep.workloads import TrainConfig, train  # noqa: E402

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results.jsonl")
HOLD = 500  # stop once test acc >= 0.95 has held this many steps


class Rec:
    def __init__(self, hold=HOLD):
        self.rows = []
        self.hold = hold
        self.streak_start = None
        self.t_last_step = None
        self.eval_time = 0.0
        self.t0 = time.perf_counter()

    def on_step(self, step, loss, lr):
        self.t_last_step = time.perf_counter()

    def on_eval(self, step, m):
        t = time.perf_counter()
        if self.t_last_step is not None:
            self.eval_time += t - self.t_last_step
        self.rows.append([step, round(m["memo_acc"], 5), round(m["grok_acc"], 5),
                          round(m["test_loss"], 5), round(m["train_loss"], 5)])
        if m["grok_acc"] >= 0.95:
            if self.streak_start is None:
                self.streak_start = step
            if step - self.streak_start >= self.hold:
                return True
        else:
            self.streak_start = None
        return False


def first(rows, col, thr):
    for r in rows:
        if r[col] is not None and not math.isnan(r[col]) and r[col] >= thr:
            return r[0]
    return None


def done_keys():
    if not os.path.exists(OUT):
        return set()
    return {json.loads(l)["key"] for l in open(OUT) if l.strip()}


def cond_key(c):
    return json.dumps(c, sort_keys=True)


def run_cond(c, hold=HOLD):
    c = dict(c)
    wl = c.pop("workload")
    tasko = c.pop("task", {})
    modelo = c.pop("model", {})
    max_steps = c.pop("max_steps", 6000)
    eval_every = c.pop("eval_every", 50)
    cfg = TrainConfig(wl, preset="laptop", max_steps=max_steps, eval_every=eval_every,
                      snapshot_every=10**9, checkpoint_every=10**9, task_overrides=tasko,
                      model_overrides=modelo, **c)
    rec = Rec(hold)
    t0 = time.perf_counter()
    res = train(cfg, callbacks=[rec])
    wall = time.perf_counter() - t0
    rows = rec.rows
    memo = first(rows, 1, 0.99)
    g90, g95, g99 = first(rows, 2, 0.90), first(rows, 2, 0.95), first(rows, 2, 0.99)
    best = max(r[2] for r in rows)
    steps = max(res.steps, 1)
    return dict(status=res.status, steps=res.steps, n_params=res.n_params, wall_s=round(wall, 2),
                ms_step=round(1000 * wall / steps, 2),
                ms_step_train=round(1000 * (wall - rec.eval_time) / steps, 2),
                memo=memo, g90=g90, g95=g95, g99=g99, best_test=best,
                final_test=rows[-1][2], final_train=rows[-1][1], error=res.error, evals=rows)


def main(batches):
    import batches as B
    conds = []
    for b in batches:
        conds += getattr(B, b)()
    done = done_keys()
    for c in conds:
        k = cond_key(c)
        if k in done:
            continue
        load = os.getloadavg()[0]
        out = run_cond(c)
        rec = dict(key=k, cond=c, load1=round(load, 2), t=time.strftime("%H:%M:%S"), **out)
        with open(OUT, "a") as f:
            f.write(json.dumps(rec) + "\n")
        done.add(k)
        print(f"{rec['t']} {summary(rec)}", flush=True)


def summary(r):
    c = r["cond"]
    t = c.get("task", {})
    m = c.get("model", {})
    return (f"{c['workload']:<12} p{t.get('p', '-')} tf{t.get('train_frac', t.get('n_train', '-'))} "
            f"d{m.get('d_model', 64)} L{m.get('n_layers', 2)} lr{c.get('lr')} wd{c.get('weight_decay')} "
            f"bs{c.get('batch_size')} s{c.get('seed')} ds{c.get('data_seed', 0)} | memo {r['memo']} "
            f"g90 {r['g90']} g95 {r['g95']} g99 {r['g99']} best {r['best_test']:.3f} "
            f"steps {r['steps']} {r['status']} {r['ms_step']}ms ({r['ms_step_train']} train) load {r['load1']}")


if __name__ == "__main__":
    main(sys.argv[1:])
