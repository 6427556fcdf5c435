"""Bad sweep specs: one clear message naming file and key, exit code ≠ 0, no Ray started."""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from edgesweep.platform.spec import SpecError, load_spec, parse_spec

REPO = Path(__file__).resolve().parents[1]

GOOD = textwrap.dedent("""\
    name: ok
    storage: {storage}
    grid:
      workload: [mod_add]
      weight_decay: [1.0, 0.0]
    train: {preset: tiny, max_steps: 10}
    """)


def run_cli(spec_text: str, tmp_path: Path, storage: str | None = None):
    spec = tmp_path / "sweep.yaml"
    spec.write_text(spec_text.replace("{storage}", str(storage or tmp_path / "results")))
    # Probe in the same process whether Ray was imported at all: a bad spec must be rejected
    # before Ray (and so before any cluster) is touched.
    code = ("import sys; from edgesweep.cli import main; rc = main(['run', sys.argv[1]]); "
            "print('RAY_IMPORTED=' + str('ray' in sys.modules)); sys.exit(rc)")
    env = dict(os.environ, RAY_ADDRESS="127.0.0.1:1")  # would fail loudly if ever dialled
    out = subprocess.run([sys.executable, "-c", code, str(spec)], capture_output=True, text=True,
                         cwd=REPO, env=env, timeout=120)
    return out, spec


BAD_SPECS = {
    "unknown workload": ("grid:\n  workload: [mod_div]\n", "grid.workload[0]", "unknown workload 'mod_div'"),
    "unknown optimizer": ("grid:\n  workload: [mod_add]\n  optimizer: [adam]\n", "grid.optimizer[0]",
                          "allowed: adamw, muon, sgd"),
    "typo'd key": ("grid:\n  workload: [mod_add]\nmonitr: {window: 3}\n", "monitr", "unknown key"),
    "typo'd nested key": ("grid:\n  workload: [mod_add]\nmonitor: {windw: 3}\n", "monitor.windw",
                          "allowed: window, every"),
    "negative weight decay": ("grid:\n  workload: [mod_add]\n  weight_decay: [1.0, -0.5]\n",
                              "grid.weight_decay[1]", "must be ≥ 0"),
    "zero budget": ("grid:\n  workload: [mod_add]\ntrain: {max_steps: 0}\n", "train.max_steps", "must be ≥ 1"),
    "equal grid values": ("grid:\n  workload: [mod_add]\n  weight_decay: [1, 1.0]\n", "grid",
                          "same trial twice: mod_add-adamw-wd1.0-s42"),
    "unknown model key": ("grid:\n  workload: [mod_add]\ntrain: {model: {d_modl: 32}}\n", "train.model",
                          "unknown key(s) ['d_modl']"),
    "momentum out of range": ("grid:\n  workload: [mod_add]\noptimizer: {momentum: 1.5}\n",
                              "optimizer.momentum", "[0, 1)"),
    "bad per-workload override": ("grid:\n  workload: [dyck]\nper_workload:\n  dyck: {monitor: {window: 1}}\n",
                                  "per_workload.dyck.monitor.window", "must be ≥ 2"),
}


@pytest.mark.parametrize("case", sorted(BAD_SPECS))
def test_bad_spec_is_one_clear_message_and_no_ray(case, tmp_path):
    body, key, words = BAD_SPECS[case]
    out, spec = run_cli("name: bad\nstorage: {storage}\n" + body, tmp_path)
    assert out.returncode == 2, out.stderr
    err = out.stderr.strip()
    assert len(err.splitlines()) == 1, err  # one line, no traceback
    assert str(spec) in err and key in err and words in err, err
    assert "Traceback" not in out.stderr
    assert "RAY_IMPORTED=False" in out.stdout


def test_unwritable_storage_root_is_rejected_before_ray(tmp_path):
    blocker = tmp_path / "file-not-dir"
    blocker.write_text("x")
    out, spec = run_cli(GOOD, tmp_path, storage=str(blocker / "sub"))
    assert out.returncode == 2
    assert "storage: cannot write to" in out.stderr and str(blocker) in out.stderr
    assert "RAY_IMPORTED=False" in out.stdout


def test_missing_file_and_bad_yaml(tmp_path):
    with pytest.raises(SpecError, match="not found"):
        load_spec(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [unclosed\n")
    with pytest.raises(SpecError, match=f"{bad}: not valid YAML"):
        load_spec(bad)


def test_grid_expands_with_overrides_and_stable_ids():
    spec = parse_spec({
        "name": "g", "grid": {"workload": ["mod_add", "scan"], "weight_decay": [1, 0.0], "seed": [42, 137]},
        "monitor": {"window": 10}, "per_workload": {"scan": {"monitor": {"window": 5}, "optimizer": {"lr": 1e-4}}},
    })
    assert len(spec.trials) == 8
    ids = [t.trial_id for t in spec.trials]
    assert len(set(ids)) == 8 and "scan-adamw-wd0.0-s137" in ids and "mod_add-adamw-wd1.0-s42" in ids
    scan = next(t for t in spec.trials if t.workload == "scan")
    add = next(t for t in spec.trials if t.workload == "mod_add")
    assert scan.monitor["window"] == 5 and scan.optim["lr"] == 1e-4
    assert add.monitor["window"] == 10 and add.optim["lr"] is None
    assert isinstance(add.weight_decay, float)


@pytest.mark.parametrize("path", sorted((REPO / "sweeps").glob("*.yaml")))
def test_shipped_sweeps_validate_and_are_executable(path):
    spec = load_spec(path)
    assert spec.trials
    assert path.read_text().startswith("#!/usr/bin/env -S python -m edgesweep run\n")
    assert os.access(path, os.X_OK)
    if path.name == "grokking.yaml":
        assert len(spec.trials) == 48
        assert sum(t.weight_decay > 0 for t in spec.trials) == 24
