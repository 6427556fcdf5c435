"""Shared test fixtures: one local Ray cluster, the real S3 server, and the hand-built sweep.

* ``local_ray`` — a real in-process local Ray cluster (``ray.init(address="local")``, own temp
  dir, 2 CPUs) for one test, inside the loopback-only namespace ``scripts/test.sh`` creates.
  Request environment fixtures (e.g. ``s3_env``) *before* it in a test's signature: Ray's
  workers inherit the environment of ``ray.init``.
* ``s3_server`` / ``s3_env`` / ``s3_root`` — a real SeaweedFS server (``tests/s3server.py``).
* ``make_sweep`` — a sweep file built from the smoke protocol's spec (``sweeps/smoke.yaml``
  parsed, changed as a mapping, validated through ``parse_spec``, written as YAML).
* ``synth`` — the hand-built sweep of ten trials whose every event is computable by hand
  (below), with helpers to write it through the real storage writer.

The hand-built streams: snapshots every 100 steps; the row at step s ends a window of
min(s/100 + 1, 10) rows, so steps 100..800 are filling windows (2..9 rows) and full windows
(10 rows, the configured ``monitor.window``) start at 900;
* g23 is NaN at step 100 (a 2-row window has no σ3), 10 before ``drop`` and 5 from ``drop`` on
  (a decline of exactly 2 > 1.5);
* gap ratio R = 3.0 on filling windows, 2.0 on full windows before the grok step, 2.2 from it
  on (so R is stable: any 5 consecutive full windows have rel. std ≤ 0.05 < 0.25);
* eval every 100 steps: grok_acc 0.1, then 0.97 from ``grok`` on; memo_acc 0.5, then 1.0 from
  ``memo`` on.
"""

from __future__ import annotations

import json
import math
import shutil
import tempfile
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from types import SimpleNamespace

import polars as pl
import pytest
from scipy import stats as sps

from edgesweep.storage import TrialWriter, write_table
from raycluster import REPO, require_loopback_namespace

pytest_plugins = ["s3server"]

#: Modules that start multi-process Ray clusters (`ray start` heads and nodes): minutes each.
#: When the suite runs in two processes (scripts/test.sh with no arguments, on 2+ cores) they form
#: one unit, so they run one after another in one process — never two clusters at once, fighting
#: over two cores (health checks, a first checkpoint polled for) — while the other process runs
#: everything else.
CLUSTER_MODULES = ("test_platform_ray.py", "test_cluster_nodeloss.py", "test_platform_twonode.py",
                   "test_raycluster.py")
#: Collected first (the rest keep their order), so that the long work starts at once instead of
#: one process waiting minutes on it at the end.
LONG_MODULES = CLUSTER_MODULES + ("test_device_check.py",)


def pytest_collection_modifyitems(config, items):
    rank = {name: i for i, name in enumerate(LONG_MODULES)}
    items.sort(key=lambda item: rank.get(item.path.name, len(LONG_MODULES)))  # stable: the rest keep their order


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config, log):
    """pytest-xdist's --dist loadfile (a module is one unit: its module-scoped clusters start
    once), except that CLUSTER_MODULES are one unit together."""
    from xdist.scheduler import LoadFileScheduling

    class ClustersTogether(LoadFileScheduling):
        def _split_scope(self, nodeid: str) -> str:
            path = nodeid.split("::", 1)[0]
            return "ray-cluster modules" if path.rsplit("/", 1)[-1] in CLUSTER_MODULES else path

    return ClustersTogether(config, log)


@pytest.fixture
def local_ray_dir():
    """The temp dir of the ``local_ray`` cluster (its session logs: tests grep them)."""
    tmp = Path(tempfile.mkdtemp(prefix="esray-local-", dir="/tmp"))
    yield tmp
    shutil.rmtree(tmp, ignore_errors=True)


@pytest.fixture
def local_ray(monkeypatch, local_ray_dir):
    require_loopback_namespace()
    import ray  # a hard dependency: failing to import it must fail the test

    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    ray.init(address="local", num_cpus=2, include_dashboard=False, _temp_dir=str(local_ray_dir),
             log_to_driver=False)
    try:
        yield ray
    finally:
        ray.shutdown()


@pytest.fixture(scope="session")
def make_sweep():
    """make_sweep(path, name, storage, seeds=(42,), wds=(1.0, 0.0), max_steps=1500,
    checkpoint_every=250, max_failures=2) → path of a validated sweep YAML."""
    import yaml

    from edgesweep.platform.spec import parse_spec
    from edgesweep.platform.spec_yaml import load_yaml

    base, _ = load_yaml((REPO / "sweeps" / "smoke.yaml").read_text())

    def make(path: Path, name: str, storage: Path, seeds=(42,), wds=(1.0, 0.0), max_steps=1500,
             checkpoint_every=250, max_failures=2) -> Path:
        doc = json.loads(json.dumps(base))  # a deep copy of plain data
        doc.update(name=name, storage=str(storage), max_failures=max_failures)
        doc["grid"].update(seed=list(seeds), weight_decay=list(wds))
        doc["train"].update(max_steps=max_steps, checkpoint_every=checkpoint_every)
        parse_spec(doc, str(path))  # what the driver will accept
        path.write_text(yaml.safe_dump(doc, sort_keys=False))
        return path

    return make


# ------------------------------------------------------------------------ the hand-built sweep

SWEEP = "synth"
EVERY = 100
W = 10
T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)


@dataclass
class Synth:
    """One constructed trial. ``drop``: first step with g23 = 5 (None: g23 stays 10); ``grok``,
    ``memo``: first eval step above the thresholds (None: never); ``last``: last step written."""

    trial_id: str
    workload: str
    weight_decay: float
    seed: int
    drop: int | None
    grok: int | None
    memo: int | None
    last: int = 4000
    status: str = "completed"
    grok_threshold: float | None = None      # written into the trial's config
    grok_early: int | None = None            # eval step with grok_acc 0.92 (between 0.9 and 0.95)
    nonfinite_at: int | None = None          # a diverged window with garbage numbers

    @property
    def partition(self):
        return {"workload": self.workload, "optimizer": "adamw", "weight_decay": self.weight_decay}

    def k_star(self, step: int) -> int:
        """Filling windows: 3. Full windows: 3 when (step/100) % 7 < 3, else 2. For steps
        900..4000 that is 13 threes and 19 twos over full windows (mode 2), while over *all*
        windows the 8 filling 3s make 21 threes (mode 3)."""
        if step < 900:
            return 3
        return 3 if (step // 100) % 7 < 3 else 2

    def feature_row(self, step: int) -> dict:
        window = min(step // EVERY + 1, W)
        g23 = math.nan if window < 3 else (5.0 if self.drop is not None and step >= self.drop else 10.0)
        if window < W:
            r = 3.0
        else:
            r = 2.2 if self.grok is not None and step >= self.grok else 2.0
        row = {"step": step, "window": window, "sigma": [float(W - i) for i in range(window)],
               "k_star": self.k_star(step), "k_star_weighted": self.k_star(step),
               "gap_ratio": r, "gap": 1.0, "g23": g23, "adiabatic": 0.5, "bbp_ratio": 50.0,
               "alpha": [0.5] * window, "lr": 1e-3, "nonfinite": False}
        if step == self.nonfinite_at:
            # Were this row used, g23's peak would be 1000 (early = 1000) and R = 50 would break
            # the detector's stability window.
            row.update(g23=1000.0, gap_ratio=50.0, nonfinite=True)
        return row

    def eval_row(self, step: int) -> dict:
        acc = 0.1
        if self.grok_early is not None and step >= self.grok_early:
            acc = 0.92
        if self.grok is not None and step >= self.grok:
            acc = 0.97
        memo = 1.0 if self.memo is not None and step >= self.memo else 0.5
        return {"step": step, "grok_acc": acc, "test_acc": acc, "memo_acc": memo, "train_acc": memo,
                "test_loss": 1.0 - acc, "train_loss": 1.0 - memo}

    def trial_row(self, status: str | None = None, steps: int | None = None) -> dict:
        stop = {"after_grok": None, "memo_threshold": 0.99,
                "grok_threshold": 0.95 if self.grok_threshold is None else self.grok_threshold}
        config = {"trial_id": self.trial_id, "monitor": {"window": W, "every": EVERY}, "stop": stop}
        status = status or self.status
        done = status != "running"
        return {"trial_id": self.trial_id, **self.partition, "attempt": 0, "seed": self.seed,
                "status": status, "steps": (self.last if steps is None else steps),
                "config": json.dumps(config), "started_at": T0,
                "finished_at": T0 + timedelta(seconds=100) if done else None,
                "wall_s": 100.0 if done else None}


# The constructed sweep (10 trials). Expected per-run values are derived in EXPECTED below.
SPEC = [
    Synth("A_add_wd1_s42", "mod_add", 1.0, 42, drop=1500, grok=3000, memo=1000, nonfinite_at=1200),
    Synth("B_sub_wd1_s137", "mod_sub", 1.0, 137, drop=1200, grok=2500, memo=800),
    Synth("C_dyck_wd1_s42", "dyck", 1.0, 42, drop=2500, grok=2000, memo=900),
    Synth("D_dyck_wd1_s137", "dyck", 1.0, 137, drop=None, grok=2000, memo=900),
    Synth("E_add_wd0_s42", "mod_add", 0.0, 42, drop=1500, grok=None, memo=1000),
    Synth("F_sub_wd0_s137", "mod_sub", 0.0, 137, drop=None, grok=None, memo=1000),
    Synth("G_dyck_wd0_s42", "dyck", 0.0, 42, drop=1000, grok=3000, memo=900),
    Synth("H_dyck_wd0_s137", "dyck", 0.0, 137, drop=None, grok=None, memo=None),
    Synth("I_mul_wd1_s2024", "mod_mul", 1.0, 2024, drop=1500, grok=None, memo=1000, last=2000,
          status="running"),
    Synth("J_add_wd1_s2024", "mod_add", 1.0, 2024, drop=1500, grok=2600, memo=1000,
          grok_threshold=0.9, grok_early=2200),
]
def write_trial(root, s: Synth, upto: int | None = None, start: int = EVERY, writer=None,
                compact: bool = True):
    """Stream s's rows for steps start..min(upto, s.last) and flush; optionally compact."""
    w = writer or TrialWriter(root, SWEEP, s.trial_id, 0, s.partition)
    end = s.last if upto is None else min(upto, s.last)
    for step in range(start, end + 1, EVERY):
        w.add("features", s.feature_row(step))
        w.add("evals", s.eval_row(step))
    w.flush()
    if compact:
        w.compact()
    return w


def write_trials(root, specs, **kw):
    write_table(root, SWEEP, "trials", pl.DataFrame([s.trial_row(**kw) for s in specs]))


def build_sweep(root, specs=SPEC) -> str:
    for s in specs:
        write_trial(root, s)
    write_trials(root, specs)
    return f"{root}/{SWEEP}"


def cp(k, n):
    """Clopper–Pearson 95 % from scipy's binomtest (not the code under test)."""
    ci = sps.binomtest(k, n).proportion_ci(confidence_level=0.95, method="exact")
    return ci.low, ci.high




@pytest.fixture(scope="session")
def synth():
    """The hand-built sweep: SPEC (ten trials), SWEEP, EVERY, W and the writing helpers."""
    return SimpleNamespace(SPEC=SPEC, BY_ID={s.trial_id: s for s in SPEC}, SWEEP=SWEEP, EVERY=EVERY, W=W,
                           T0=T0, Synth=Synth, write_trial=write_trial, write_trials=write_trials,
                           build_sweep=build_sweep, cp=cp)
