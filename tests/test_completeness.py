"""The completeness rule (storage/completeness.py) that `verify` and the aggregation apply to a
finished trial's rows, checked against the real monitor: for every step a trial can end at, the
rule's last features row is the step of the last row the monitor wrote — from the first row
(which needs two updates) on, and around a non-finite update (after which the monitor seeds
again). A rule that expected a row the monitor never writes would call healthy sweeps damaged."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from edgesweep.spectral import MonitorConfig, SpectralMonitor
from edgesweep.storage.completeness import last_snapshot, shortfall, snapshot_every


@pytest.mark.parametrize("bad", [None, 1, 2, 5, 11])  # the snapshot whose update is non-finite
@pytest.mark.parametrize("sketch", [None, 8])
def test_the_last_row_the_rule_expects_is_the_last_row_the_monitor_wrote(bad, sketch):
    every, n = 10, 14
    rng = np.random.default_rng(0)
    monitor = SpectralMonitor(MonitorConfig(window=3, every=every, params="all", sketch_dim=sketch))
    written, nonfinite = [], []
    theta = torch.zeros(64, dtype=torch.float32)
    for i in range(n):
        theta = theta + torch.from_numpy(rng.standard_normal(64).astype(np.float32))
        snap = theta.clone()
        if i == bad:
            snap[0] = float("inf")
        row = monitor.observe(snap, step=i * every)
        if row is not None:
            written.append(i * every)
            if row["nonfinite"]:
                nonfinite.append(i * every)
    assert (bad is None) == (not nonfinite)
    for steps in range(n * every):  # a trial ending at any step sees the snapshots up to it
        rows = [s for s in written if s <= steps]
        bads = [s for s in nonfinite if s <= steps]
        assert last_snapshot(steps, every, bads[-1] if bads else None) == (rows[-1] if rows else None), steps


def test_shortfall_names_the_table_and_judges_only_finished_trials():
    every = snapshot_every(json.dumps({"monitor": {"every": 50}}))
    assert every == 50
    assert snapshot_every(None) is None and snapshot_every('{"monitor": {"every": true}}') is None
    assert shortfall("completed", 1000, 1000, 1000, every) is None
    assert shortfall("stopped", 1020, 1020, 1000, every) is None  # last snapshot 1000
    assert shortfall("completed", 70, 70, None, every) is None     # no row before step 100
    assert shortfall("completed", 1000, 900, 1000, every) == (
        "evals", "its trials row says completed at step 1000 but its evaluations end at 900")
    assert shortfall("completed", 1000, 1000, 950, every) == (
        "features", "its trials row says completed at step 1000 but its features end at step 950 (a snapshot "
                    "every 50 steps: the last row at 1000)")
    assert shortfall("completed", 1000, 1000, 950, every, last_nonfinite=950) is None  # then two silent
    assert shortfall("completed", 1000, 1000, 950, None) is None  # no monitor.every: features unchecked
    for status in ("running", "failed", "diverged", None):
        assert shortfall(status, 1000, None, None, every) is None
