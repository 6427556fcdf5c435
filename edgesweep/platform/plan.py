"""``python -m edgesweep plan SWEEP.yaml``: the trials a spec expands to, and a rough cost.

Nothing starts: the spec is validated exactly as ``run`` validates it (no Ray import), then one
line per trial (id and the varied values) and a CPU-time estimate are printed. The estimate
scales each preset's measured step time (benchmarks/workloads.md, one CPU thread) by the
trial's parameter count × batch size relative to the preset's, times ``max_steps``: an upper
bound for runs that stop after grokking, and rough — small models are overhead-bound.
"""

from __future__ import annotations

import os
import sys

from ..workloads.catalog import get_workload
from .spec import DEFAULT_MAX_TRIALS, SpecError, SweepSpec, TrialSpec, load_spec

# (family, preset) → (ms per step, parameters, batch) measured on one CPU thread of the 2-core
# development machine (benchmarks/workloads.md; laptop modular: the corpus pilot of
# docs/DETECTOR.md, a one-layer d = 64 model mod 31 at batch 128, 4.0–5.3 ms with evaluations
# every 50 steps).
MEASURED_STEP = {
    ("modular", "paper"): (31.0, 290_401, 512), ("modular", "laptop"): (4.6, 37_727, 128),
    ("dyck", "paper"): (36.1, 270_349, 50), ("dyck", "laptop"): (36.1, 270_349, 50),
    ("scan", "paper"): (2574.0, 3_978_249, 256),
    ("lm", "paper"): (37_600.0, 51_082_752, 32),
}
# Small models are overhead-bound (optimizer and Python per step): no step is estimated below
# this (the smoke sweep's 19k-parameter model measures ~4 ms per step with evaluations).
MIN_STEP_MS = 3.0


def step_ms(trial: TrialSpec, n_params: int) -> float | None:
    """Estimated milliseconds per optimizer step of ``trial`` on one CPU thread (None: no
    measurement of that family)."""
    spec = get_workload(trial.workload)
    batch = trial.train["batch_size"] or spec.preset(trial.train["preset"]).batch_size
    ref = MEASURED_STEP.get((spec.family, trial.train["preset"])) or MEASURED_STEP.get((spec.family, "paper"))
    if ref is None:
        return None
    ms, p_ref, b_ref = ref
    return max(MIN_STEP_MS, ms * (n_params * batch) / (p_ref * b_ref))


def _fmt_s(seconds: float) -> str:
    return f"{seconds / 3600:.1f} h" if seconds >= 5400 else f"{seconds / 60:.1f} min"


def plan_text(spec: SweepSpec) -> str:
    from ..workloads.table import parameter_counts  # meta device: shapes only

    lines = [f"sweep {spec.name!r} ({spec.method}): {len(spec.trials)} trials → {spec.storage}/{spec.name}",
             f"each trial: {spec.trial_resources['cpu']:g} CPU, {spec.trial_resources['gpu']:g} GPU; "
             f"max_failures {spec.max_failures}"]
    lines += [f"note: {n}" for n in spec.notes]
    width = max(len(t.trial_id) for t in spec.trials)
    lines.append(f"{'trial':<{width}}  {'steps':>7}  {'params':>9}  {'est.':>9}  varied")
    total, unknown, cache = 0.0, 0, {}
    for t in spec.trials:
        key = (t.workload, t.train["preset"], repr(t.train["model"]), repr(t.train["task"]))
        if key not in cache:
            cache[key] = parameter_counts(t.workload, t.train["preset"], t.train["model"], t.train["task"])[0]
        ms = step_ms(t, cache[key])
        est = None if ms is None else ms * t.train["max_steps"] / 1000
        total += est or 0.0
        unknown += est is None
        varied = ", ".join(f"{k}={v}" for k, v in t.axes.items())
        lines.append(f"{t.trial_id:<{width}}  {t.train['max_steps']:>7}  {cache[key]:>9,}  "
                     f"{_fmt_s(est) if est is not None else '—':>9}  {varied}")
    cpus = os.cpu_count() or 1
    parallel = max(1.0, cpus / max(spec.trial_resources["cpu"], 1e-9))
    lines.append(f"{len(spec.trials)} trials; ≈ {_fmt_s(total)} of one CPU thread in all (max_steps × "
                 f"estimated step time: an upper bound for runs that stop after grokking; rough); "
                 f"≈ {_fmt_s(total / min(parallel, len(spec.trials)))} of wall time on this machine's {cpus} CPUs"
                 + (f"; {unknown} trial(s) without a measured step time" if unknown else ""))
    return "\n".join(lines)


def plan_main(path: str, storage: str | None = None, max_trials: int = DEFAULT_MAX_TRIALS) -> int:
    spec = load_spec(path, storage=storage, max_trials=max_trials)
    notes = [_storage_note(spec), _tracker_note(spec)]
    sys.stdout.write(plan_text(spec) + "\n" + "".join(f"note: {n}\n" for n in notes if n))
    return 0


def _tracker_note(spec: SweepSpec) -> str | None:
    """`run`'s checks of ``loggers:``: a configuration it refuses is refused here too; a
    tracker not installed here is a note (the sweep may be planned here and run elsewhere)."""
    from .driver import resolve_storage
    from .trackers import check_trackers, trackers_not_installed

    if not spec.loggers:
        return None
    check_trackers(spec, resolve_storage(spec.storage))
    missing = trackers_not_installed(spec)
    return f"{missing}: `run` refuses to start on this Python without it" if missing else None


def _storage_note(spec: SweepSpec) -> str | None:
    """`run`'s storage checks that need no network: a local root that is a sweep's folder or
    lies inside one is refused as `run` refuses it; a sweep folder that already holds this
    sweep's state or another run's tables is a note. An object store is left to `run`."""
    from ..storage.errors import StorageError
    from .driver import check_storage_root, resolve_storage, stored_sweep_note

    try:
        storage_uri = resolve_storage(spec.storage)
    except StorageError as exc:
        raise SpecError(f"{spec.source}: storage: {exc}") from None
    if "://" in storage_uri and not storage_uri.startswith("file://"):
        return None
    check_storage_root(spec, storage_uri)
    return stored_sweep_note(spec, storage_uri)
