"""The reference for a sweep run: its trials through the exact per-trial code path
(``execute_trial``: train + monitor + Parquet writer) one after another in this process, no
Ray, no interruption; then the aggregation. Tests compare a sweep that lost a node against it.

    python tests/bare_sweep.py SPEC.yaml STORAGE

One intra-op thread, as a 1-CPU Ray trial gets (run_trial pins torch to its CPUs): CPU training
is then deterministic per seed, so an uninterrupted run is a fixed expectation.
"""

from __future__ import annotations

import sys

import torch

from edgesweep.platform.aggregate import aggregate_sweep
from edgesweep.platform.spec import load_spec
from edgesweep.platform.trainable import execute_trial


def run(spec_path: str, storage: str) -> str:
    spec = load_spec(spec_path, storage=storage)
    torch.set_num_threads(int(spec.trial_resources["cpu"]))
    for trial in spec.trials:
        execute_trial(trial, spec.name, storage)
    return aggregate_sweep(f"{storage}/{spec.name}", use_ray=False, report=False)


if __name__ == "__main__":
    print(run(sys.argv[1], sys.argv[2]))
