"""`python -m edgesweep spectral-demo`: one real training run with the monitor, no Ray.

Trains the laptop modular-addition transformer (DESIGN.md §1.4) and prints one spectral-edge
row per snapshot as it goes, plus the evaluations — the quickest way to see real spectra.
"""

from __future__ import annotations

import math
import time

from ..spectral import MonitorConfig, SpectralMonitor
from ..workloads import TrainConfig, train


def spectral_demo(steps: int = 3000, every: int = 50, window: int = 10, seed: int = 42,
                  weight_decay: float = 1.0) -> int:
    monitor = SpectralMonitor(MonitorConfig(window=window, every=every, params="attention"))
    cfg = TrainConfig("mod_add", preset="laptop", weight_decay=weight_decay, max_steps=steps,
                      eval_every=every * 2, snapshot_every=every, checkpoint_every=steps, seed=seed)
    print(f"mod_add laptop preset, AdamW wd={weight_decay}, seed {seed}: attention-only snapshots every "
          f"{every} steps, window W={window}")
    print(f"{'step':>6} {'σ1':>9} {'σ2':>9} {'σ3':>9} {'k*':>3} {'R':>7} {'g23':>10} {'𝒜':>9} "
          f"{'rot':>6} {'BBP':>7} {'ms':>6}")
    state = {"grok": None}
    t0 = time.time()

    class Printer:
        def on_snapshot(self, step, model, lr):
            row = monitor.observe(model, step=step, lr=lr)
            if row is None or row["nonfinite"]:
                return
            s = row["sigma"] + [math.nan] * 3
            k = "—" if row["k_star"] is None else row["k_star"]  # an all-zero window has no edge
            print(f"{step:>6} {s[0]:>9.3e} {s[1]:>9.3e} {s[2]:>9.3e} {k:>3} "
                  f"{row['gap_ratio']:>7.3f} {row['g23']:>10.3e} {row['adiabatic']:>9.2e} "
                  f"{row['subspace_rotation']:>6.3f} {row['bbp_ratio']:>7.1f} {row['gram_ms']:>6.2f}",
                  flush=True)

        def on_eval(self, step, metrics):
            print(f"{'':>6} eval @ {step}: train acc {metrics['memo_acc']:.3f}, test acc "
                  f"{metrics['grok_acc']:.3f}, test loss {metrics['test_loss']:.3f}", flush=True)
            if state["grok"] is None and metrics["grok_acc"] >= 0.95:
                state["grok"] = step
                print(f"{'':>6} *** grokked at step {step} (test accuracy ≥ 0.95) ***", flush=True)

    result = train(cfg, callbacks=[Printer()])
    print(f"{result.status} after {result.steps} steps in {time.time() - t0:.0f}s; "
          f"monitor parameters P = {monitor.n_params:,}; grok step: {state['grok']}")
    return 0
