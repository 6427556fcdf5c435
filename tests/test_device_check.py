"""The prepared GPU check (scripts/device-check.sh → benchmarks/device_check.py) and the two
defects it found on the path a GPU machine takes.

* The dry run, exactly as CI can run it: ``scripts/device-check.sh --cpu --tiny`` — the same
  script a lent GPU machine runs, on the CPU, tiny presets, Ray hidden as on the device image —
  and what it must leave behind. Without this the script would rot between GPU leases.
* The deadline: a trial cut when the sweep's time is up is recorded as cut (never silently
  dropped), a trial never started as not started.
* ``execute_trial`` where Ray is not installed (the device image), and the monitor after a
  non-finite snapshot whose row landed in any ring slot but the next one.
"""

from __future__ import annotations

import importlib.metadata
import json
import math
import os
import subprocess
import sys
import tarfile
import time
import warnings
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch

from edgesweep.platform.spec import parse_spec
from edgesweep.platform.trainable import execute_trial
from edgesweep.spectral import MonitorConfig, SpectralMonitor
from edgesweep.storage import scan
from edgesweep.workloads.catalog import WORKLOADS

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
import device_check  # noqa: E402

DRY_RUN_LIMIT_S = 150  # the script's own budget is 110 s; headroom for a loaded 2-core machine


# ------------------------------------------------------------------------------------------
# The dry run
# ------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def dry_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("device-check-out")
    env = dict(os.environ, OUT=str(out), PYTHON=sys.executable)
    env.pop("CUDA_VISIBLE_DEVICES", None)
    t0 = time.perf_counter()
    proc = subprocess.run(["bash", str(REPO / "scripts" / "device-check.sh"), "--cpu", "--tiny"],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=240)
    wall = time.perf_counter() - t0
    doc = json.loads((out / "device_check.json").read_text()) if (out / "device_check.json").exists() else None
    return {"out": out, "proc": proc, "wall": wall, "doc": doc}


def test_dry_run_succeeds_within_its_budget(dry_run):
    proc, doc = dry_run["proc"], dry_run["doc"]
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert doc["finished"] is True and doc["all_checks_passed"] is True
    assert doc["mode"] == {"cpu": True, "tiny": True}
    assert {k: v["status"] for k, v in doc["sections"].items()} == {
        k: "ok" for k in ("checks", "steptime", "monitor", "sweep", "aggregate")}
    assert dry_run["wall"] <= DRY_RUN_LIMIT_S, f"dry run took {dry_run['wall']:.0f}s"
    # timings recorded: per section, per check, and the whole run
    assert 0 < doc["wall_s"] <= dry_run["wall"]
    assert all(v["wall_s"] > 0 for v in doc["sections"].values())
    assert all(v["wall_s"] >= 0 for v in doc["checks"].values())


def test_dry_run_leaves_few_small_files(dry_run):
    files = sorted(p.name for p in dry_run["out"].iterdir())
    assert files == ["device-check.log", "device_check.json", "device_check.md", "sweep.tar.gz"]
    assert all((dry_run["out"] / f).stat().st_size < 16 << 20 for f in files)  # what a device call returns
    log = (dry_run["out"] / "device-check.log").read_text()
    assert "checks PASS" in log and "device-check: exit" not in log  # the script's log, not the wrapper's


def test_dry_run_compared_cpu_with_cpu_on_both_paths(dry_run):
    """With --cpu the "device" is the CPU: the device side runs the monitor's torch path (what
    CUDA runs), the reference the numba kernels — two implementations, same rows."""
    doc = dry_run["doc"]
    env = doc["environment"]
    assert env["device"] == "cpu" and env["cuda_available"] is False and env["ray_importable"] is False
    assert env["packages"]["ray"] is None  # hidden, as on the device image
    checks = doc["checks"]
    assert set(checks) == {"monitor_device_vs_cpu", "monitor_restore", "sketch_device_vs_cpu",
                           "amp_bf16_step", "trainer_placement"}
    for name in ("monitor_device_vs_cpu", "monitor_restore", "sketch_device_vs_cpu"):
        assert checks[name]["reference"] == {"device": "cpu", "backend": "numba"}
        assert checks[name]["device_side"] == {"device": "cpu", "backend": "torch"}
    mon = checks["monitor_device_vs_cpu"]
    for case in mon["cases"].values():
        assert case["ok"] and case["rows_with_features"] >= 10 and case["worst"] <= 1e-6
        assert case["nonfinite_rows"] == 1  # the NaN snapshot is flagged once, then the window refills
    assert all(c["ok"] for c in checks["monitor_restore"]["cases"].values())
    assert checks["monitor_restore"]["cases"]["trainer_resume"]["worst"] == 0.0  # bit-identical on CPU
    rerun = checks["monitor_restore"]["cases"]["trainer_rerun"]  # two uninterrupted runs of one trial
    assert rerun["ok"] and rerun["worst"] == 0.0 and rerun["rows_with_features"] >= 5
    assert env["compute"].startswith("cpu: ") and env["compute"].endswith(", 1 thread")
    amp = checks["amp_bf16_step"]
    assert amp["expected_output_dtype"] == "float32" and amp["autocast_active"] is False
    assert set(amp["families"]) == {"mod_add", "multitask_2", "dyck", "scan", "tinystories"}
    placement = checks["trainer_placement"]
    assert placement["auto_resolves_to"] == "cpu"
    assert all(w["model_params"] == ["cpu"] and w["monitor_ring"] == ["cpu"]
               for w in placement["workloads"].values())


def test_dry_run_measured_every_preset_and_the_monitor(dry_run):
    doc = dry_run["doc"]
    rows = doc["steptime"]
    assert sorted((r["workload"], r["optimizer"]) for r in rows) == sorted(
        [(w, "adamw") for w in WORKLOADS] + [("tinystories", "muon")])  # float32 only on the CPU
    assert all(r["preset"] == "tiny" and r["ms_per_step"] > 0 and r["timed_steps"] >= 2 for r in rows)
    costs = {c["sweep"]: c for c in doc["cost_estimates"]}
    assert set(costs) == {"grokking.yaml", "optimizers.yaml"}
    assert costs["grokking.yaml"]["trials"] == 48 and costs["optimizers.yaml"]["device_hours_upper_bound"] > 0
    cost = doc["monitor_cost"]["rows"]
    assert [(r["P"], r["mode"]) for r in cost] == [(100_000, "exact"), (100_000, "sketch"),
                                                   (1_000_000, "exact"), (1_000_000, "sketch")]
    assert all(r["ms_per_snapshot"] > 0 and r["x_floor"] > 0 and r["rows_finite"] for r in cost)
    md = (dry_run["out"] / "device_check.md").read_text()
    for heading in ("## Checks", "## Step times", "## Monitor cost", "## Sweep `grokking`", "### Precedence"):
        assert heading in md


def test_dry_run_ran_the_48_trial_protocol_and_aggregated_it(dry_run, tmp_path):
    """All 48 trials of sweeps/grokking.yaml (tiny presets), aggregated without Ray. The sweep
    has a deadline (the dry run's 2-minute budget); on a machine so loaded that it is reached,
    what did not finish must be recorded as cut or not started — and only then."""
    doc = dry_run["doc"]
    sw = doc["sweep"]
    assert sw["planned"] == 48 and len(sw["trials"]) == 48 and len(sw["order"]) == 48
    assert sum(sw["counts"].values()) == 48  # every planned trial is accounted for
    assert set(sw["counts"]) <= {"completed", "stopped", "cut", "not_started"}, sw["counts"]  # no error
    assert sw["overrides"]["train"]["preset"] == "tiny" and sw["workers"] >= 2 and sw["wall_s"] > 0
    # weight-decay trials first, then longest first (max_steps × the step time measured here)
    assert sw["order_policy"] == "positives-first"
    arms = [sw["trials"][t]["weight_decay"] == 0 for t in sw["order"]]
    assert arms == [False] * 24 + [True] * 24
    for half in (sw["order"][:24], sw["order"][24:]):
        costs = [sw["trials"][t]["expected_max_s"] for t in half]
        assert costs == sorted(costs, reverse=True)
    finished = [t for t, r in sw["trials"].items() if r["status"] in ("completed", "stopped")]
    started = [t for t, r in sw["trials"].items() if r["status"] != "not_started"]
    assert sw["finished"] == len(finished) and sw["complete"] == (len(finished) == 48)
    if not sw["complete"]:
        assert sw["wall_s"] >= sw["deadline_s_after_start"], "trials left unfinished before the deadline"
        warnings.warn(f"dry-run sweep reached its deadline on a loaded machine: {sw['counts']}")
    for t, r in sw["trials"].items():
        if r["status"] == "cut":
            assert "deadline" in r["error"] and r["steps"] <= r["max_steps"]
    if not started:
        assert doc["sections"]["aggregate"]["status"].startswith("skipped")
        return
    agg = doc["aggregate"]
    assert agg["n_runs"] == len(started) and agg["n_errors"] == 0 and agg["wall_s"] > 0
    assert agg["n_running"] == len(started) - len(finished)  # cut trials are still "running"
    assert "preceded" in agg["precedence_table"]
    # the bundle: the sweep's tables and report, readable with Polars
    with tarfile.open(dry_run["out"] / "sweep.tar.gz") as tar:
        names = tar.getnames()
        tar.extractall(tmp_path, filter="data")
    assert "grokking/report.md" in names and "grokking/scorecard.json" in names
    runs = pl.read_parquet(next((tmp_path / "grokking" / "runs").glob("*.parquet")))
    assert sorted(runs["trial_id"].to_list()) == sorted(started)
    trials = scan(tmp_path / "grokking", "trials").collect()
    assert trials["ray_version"].null_count() == trials.height == len(started)  # ran without Ray
    status = dict(zip(trials["trial_id"].to_list(), trials["status"].to_list()))
    assert all(status[t] in ("completed", "stopped") for t in finished)
    assert all(status[t] == "running" for t in set(started) - set(finished))
    assert doc["bundle"]["bytes"] == (dry_run["out"] / "sweep.tar.gz").stat().st_size


def test_dry_run_records_what_a_device_call_carries(dry_run):
    """The working tree plus the carried wheels must fit one call (64 MiB). The wheels come from
    scripts/fetch-device-wheels.sh; where .whl/ is absent (CI), their last measured size."""
    travel = dry_run["doc"]["environment"]["travel"]
    # the 7 wheels after scripts/lzma_wheels.py (56,007,837 bytes as downloaded; Polars 2.2.0),
    # measured 2026-12-08 with `bash scripts/fetch-device-wheels.sh` and `du -cb .whl/*.whl`
    wheel_bytes = travel["wheel_bytes"] or 36_459_109
    assert travel["tree_bytes"] and travel["tree_bytes"] + wheel_bytes <= travel["limit_bytes"], travel


def test_lzma_recompressed_wheels_install_with_pip(tmp_path):
    """scripts/lzma_wheels.py (what makes the wheels fit beside the tree): a wheel rewritten with
    LZMA members installs with the device script's own pip command and imports, with its
    executable bit and RECORD intact; a second pass leaves it alone."""
    import base64
    import hashlib
    import zipfile

    payload = os.urandom(1 << 16).hex().encode() * 4  # compressible, so LZMA must actually shrink it
    files = {"lzprobe/__init__.py": b"VALUE = 42\n", "lzprobe/data.bin": payload,
             "lzprobe/tool.sh": b"#!/bin/sh\necho hi\n",
             "lzprobe-1.0.dist-info/METADATA": b"Metadata-Version: 2.1\nName: lzprobe\nVersion: 1.0\n",
             "lzprobe-1.0.dist-info/WHEEL": b"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n"}

    def digest(data):
        return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()

    record = "".join(f"{n},{digest(d)},{len(d)}\n" for n, d in files.items()) + "lzprobe-1.0.dist-info/RECORD,,\n"
    wheel = tmp_path / "lzprobe-1.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w", zipfile.ZIP_DEFLATED) as z:
        for name, data in [*files.items(), ("lzprobe-1.0.dist-info/RECORD", record.encode())]:
            info = zipfile.ZipInfo(name, date_time=(2026, 1, 2, 3, 4, 6))
            info.external_attr = (0o100755 if name.endswith(".sh") else 0o100644) << 16
            z.writestr(info, data, zipfile.ZIP_DEFLATED)
    deflated = wheel.stat().st_size

    tool = [sys.executable, str(REPO / "scripts" / "lzma_wheels.py"), "--min-bytes", "0", str(wheel)]
    first = subprocess.run(tool, capture_output=True, text=True, timeout=120)
    assert first.returncode == 0 and "(LZMA)" in first.stdout, first.stdout + first.stderr
    with zipfile.ZipFile(wheel) as z:
        assert z.testzip() is None
        assert {i.filename for i in z.infolist()} == set(files) | {"lzprobe-1.0.dist-info/RECORD"}
        assert all(i.compress_type == zipfile.ZIP_LZMA for i in z.infolist())
        assert z.read("lzprobe/data.bin") == payload
    assert wheel.stat().st_size < deflated
    again = subprocess.run(tool, capture_output=True, text=True, timeout=120)
    assert again.returncode == 0 and "LZMA already" in again.stdout

    site = tmp_path / "site"
    pip = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--no-compile",
                          "--no-cache-dir", "--upgrade", "--target", str(site), str(wheel)],
                         capture_output=True, text=True, timeout=300)
    assert pip.returncode == 0, pip.stdout + pip.stderr
    probe = subprocess.run([sys.executable, "-c", "import lzprobe, pathlib; print(lzprobe.VALUE, "
                            "len(pathlib.Path(lzprobe.__file__).with_name('data.bin').read_bytes()))"],
                           env=dict(os.environ, PYTHONPATH=str(site)), capture_output=True, text=True, timeout=60)
    assert probe.stdout.split() == ["42", str(len(payload))], probe.stdout + probe.stderr
    assert os.access(site / "lzprobe" / "tool.sh", os.X_OK)


# ------------------------------------------------------------------------------------------
# The deadline: cut and not-started trials are recorded, never dropped
# ------------------------------------------------------------------------------------------

def _run_in_one_worker(spec, storage, seconds: float) -> dict:
    """The sweep section's pool with one worker, ``seconds`` to the deadline."""
    pool = device_check.TrialPool(1, 1, storage, spec.name)
    try:
        assert pool.wait_ready(120) == 1
        return pool.run(spec, time.time() + seconds, step_ms={}, grace_s=30)
    finally:
        pool.close()


def test_sweep_deadline_records_cut_and_not_started_trials(tmp_path):
    spec = parse_spec({
        "name": "deadline", "storage": str(tmp_path),
        "grid": {"workload": ["mod_add", "dyck"], "weight_decay": [1.0]},
        "train": {"preset": "tiny", "max_steps": 30, "eval_every": 5, "checkpoint_every": 5},
        "monitor": {"window": 3, "every": 5, "params": "all"},
        "per_workload": {"mod_add": {"train": {"max_steps": 1_000_000}}},
    })
    # 20 s: the long trial (10^6 steps) is cut whatever the machine, and even a loaded one
    # trains and seals some steps first (with 5 s a busy CI machine reached only step 0)
    res = _run_in_one_worker(spec, tmp_path, seconds=20.0)
    long_id, short_id = res["order"]  # one arm: longest first
    assert long_id.startswith("mod_add") and short_id.startswith("dyck")
    cut, skipped = res["trials"][long_id], res["trials"][short_id]
    assert cut["status"] == "cut" and 0 < cut["steps"] < 1_000_000 and "deadline" in cut["error"]
    assert skipped["status"] == "not_started" and skipped["steps"] == 0
    assert res["counts"] == {"cut": 1, "not_started": 1} and res["complete"] is False
    assert device_check.sweep_verdict(res) == ("error", "no trial finished ({'cut': 1, 'not_started': 1})")
    trials = scan(tmp_path / "deadline", "trials").collect()
    assert trials["trial_id"].to_list() == [long_id] and trials["status"].to_list() == ["running"]
    feats = scan(tmp_path / "deadline", "features").collect()  # sealed up to the last checkpoint
    assert feats.height > 0 and feats["step"].max() <= cut["steps"]


def test_the_hard_limit_exits_4_not_timeouts_124(tmp_path):
    """The device tool reads 124 and 137 as its own time limit; the script's hard stop (GNU
    timeout's 124) is reported as 4, with what it had written left in $OUT."""
    env = dict(os.environ, OUT=str(tmp_path), PYTHON=sys.executable, DEVICE_CHECK_HARD_LIMIT="3")
    proc = subprocess.run(["bash", str(REPO / "scripts" / "device-check.sh"), "--cpu", "--tiny"],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 4, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "device-check: hard limit of 3s reached (exit 124 from timeout); partial outputs in" in proc.stderr
    assert (tmp_path / "device-check.log").is_file()


def test_a_failed_trial_fails_the_sweep_section_while_a_cut_one_is_a_note(tmp_path):
    """A trial raising inside its worker (a CUDA-only crash would look the same) made the sweep
    section "ok" and the script exit 0; now it is an error naming the trial, and the exit is 1.
    The deadline's cuts stay "ok", with a note saying how much finished."""
    spec = parse_spec({
        "name": "fails", "storage": str(tmp_path),
        "grid": {"workload": ["mod_add", "tinystories"], "weight_decay": [1.0]},
        "train": {"preset": "tiny", "max_steps": 20, "eval_every": 10, "checkpoint_every": 10},
        "monitor": {"window": 3, "every": 5, "params": "all"},
        "per_workload": {"tinystories": {"train": {"task": {"corpus": "/nonexistent/corpus.txt"}}}},
    })
    res = _run_in_one_worker(spec, tmp_path, seconds=120.0)
    assert res["counts"] == {"completed": 1, "error": 1}, res["counts"]
    status, why = device_check.sweep_verdict(res)
    assert status == "error" and why.startswith("1 trial(s) failed ({'error': 1}), 0 worker(s) could not set up; "
                                                "first: tinystories-adamw-wd1.0-s42: ") and "corpus file not found" in why
    partial = dict(res, counts={"completed": 1, "cut": 1}, complete=False,
                   trials={t: dict(r, status="cut" if r["status"] == "error" else r["status"])
                           for t, r in res["trials"].items()})
    assert device_check.sweep_verdict(partial) == (
        "ok", "partial: 1/2 trials finished before the deadline; the rest were cut or not started "
              "({'completed': 1, 'cut': 1})")


# ------------------------------------------------------------------------------------------
# Defects on the device's path, each reproduced on the CPU
# ------------------------------------------------------------------------------------------

def test_execute_trial_runs_where_ray_is_not_installed(tmp_path, monkeypatch):
    """The device image has no Ray: the trials table's ray_version is then null, not a crash
    (it was importlib.metadata.PackageNotFoundError from trial_row)."""
    real = importlib.metadata.version

    def version(name):
        if name.lower() == "ray":
            raise importlib.metadata.PackageNotFoundError(name)
        return real(name)

    monkeypatch.setattr(importlib.metadata, "version", version)
    spec = parse_spec({"name": "noray", "grid": {"workload": ["mod_add"]},
                       "train": {"preset": "tiny", "max_steps": 20, "eval_every": 10},
                       "monitor": {"window": 3, "every": 5, "params": "all"}})
    result = execute_trial(spec.trials[0], "noray", str(tmp_path))
    assert result.status == "completed"
    trials = scan(tmp_path / "noray", "trials").collect()
    assert trials["ray_version"].to_list() == [None] and trials["status"].to_list() == ["completed"]


@pytest.mark.parametrize("sketch_dim", [None, 16])
@pytest.mark.parametrize("backend", ["numba", "torch"])
def test_monitor_window_refills_after_a_nan_in_any_ring_slot(sketch_dim, backend, monkeypatch):
    """W = 3 (4 ring slots): snapshots 1–5 fill slots 0, 1, 2, 3, 0; the NaN update of snapshot 6
    lands in slot 1. After the restart new rows take slot 0 first, and every row's dots run over
    all slots — the stale NaN used to flag every later row non-finite, forever."""
    if backend == "numba":
        pytest.importorskip("numba")
    monkeypatch.setenv("EDGESWEEP_MONITOR_BACKEND", backend)
    rng = np.random.default_rng(3)
    basis = rng.standard_normal((3, 2000))
    snaps, theta = [], rng.standard_normal(2000)
    for _ in range(14):
        theta = theta + rng.standard_normal(3) @ basis * 1e-2 + 1e-3 * rng.standard_normal(2000)
        snaps.append(torch.tensor(theta, dtype=torch.float32))
    bad = snaps[6].clone()
    bad[123] = float("nan")
    cfg = MonitorConfig(window=3, params="all", sketch_dim=sketch_dim, sketch_seed=1)
    mon = SpectralMonitor(cfg)
    rows = [mon.observe(s, step=i) for i, s in enumerate(snaps[:6])]
    assert rows[-1]["window"] == 3 and mon.slots == [2, 3, 0]
    flagged = mon.observe(bad, step=6)
    assert flagged["nonfinite"] is True
    after = [mon.observe(s, step=7 + i) for i, s in enumerate(snaps[7:])]
    fresh = SpectralMonitor(cfg)
    expected = [fresh.observe(s, step=7 + i) for i, s in enumerate(snaps[7:])]
    assert [r is None for r in after] == [True, True, False, False, False, False, False]
    assert not any(r["nonfinite"] for r in after if r is not None)
    for got, want in zip(after[2:], expected[2:]):
        assert got["window"] == want["window"] and got["k_star"] == want["k_star"]
        assert np.allclose(got["sigma"], want["sigma"], rtol=1e-12)
        assert math.isclose(got["g23"], want["g23"], rel_tol=1e-12) or (math.isnan(got["g23"]) and math.isnan(want["g23"]))


def test_trial_workers_follow_the_spec_as_tune_would_place_it():
    """As many trials share the device as Tune would put on this machine: CPUs / cpu per trial
    and, on a GPU, 1 / gpu per trial (grokking.yaml's gpu: 0.25 → 4 on one GPU, whatever the
    CPUs); on the CPU dry run the gpu fraction does not apply and at least 2 share."""
    def spec(cpu, gpu, n_seeds=3):
        return parse_spec({"name": "w", "trial_resources": {"cpu": cpu, "gpu": gpu},
                           "grid": {"workload": ["mod_add"], "weight_decay": [1.0, 0.0],
                                    "seed": list(range(n_seeds))},
                           "train": {"preset": "tiny", "max_steps": 10}})
    assert device_check.default_workers(spec(2, 0.25), 16, on_gpu=True) == 4
    assert device_check.default_workers(spec(2, 0.25), 16, on_gpu=False) == 6   # 8 by CPU, 6 trials
    assert device_check.default_workers(spec(2, 0.125, n_seeds=8), 16, on_gpu=True) == 8
    assert device_check.default_workers(spec(2, 0.1, n_seeds=8), 16, on_gpu=True) == 8  # 10 by GPU, 8 by CPU
    assert device_check.default_workers(spec(1, 0, n_seeds=8), 4, on_gpu=True) == 4
    assert device_check.default_workers(spec(2, 0.5), 2, on_gpu=True) == 1     # 2 CPUs hold one
    assert device_check.default_workers(spec(1, 2), 16, on_gpu=True) == 1      # more than one GPU: alone
    assert device_check.default_workers(spec(2, 0.25), 2, on_gpu=False) == 2   # the dry run still shares
    shipped = device_check.sweep_spec(False, Path("/tmp/unused"), REPO / "sweeps" / "grokking.yaml")
    assert device_check.default_workers(shipped, 16, on_gpu=True) == 4
