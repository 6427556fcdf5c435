"""The prepared GPU check (issue 15): CUDA checks, GPU timings and the paper-scale grokking
protocol through the trial code path without Ray, in one command that fits a short lease.

    bash scripts/device-check.sh                 # on a lent GPU machine (writes under $OUT)
    bash scripts/device-check.sh --cpu --tiny    # the dry run: same code, CPU, tiny sizes (CI)

Sections, in order (each timed, each failure recorded without stopping the others):

* ``checks`` — the CUDA-relevant checks, each a comparison against the CPU path:
  the exact and the sketched monitor on the device against the CPU monitor (numba kernels)
  over the same snapshots (a multi-tensor model, a non-finite snapshot in the stream), every
  float64 feature to 1e-6 relative; monitor state restored onto the device (CPU → device,
  device → CPU, and the training loop's resume from a CPU checkpoint); the count-sketch on the
  device against the CPU kernel; a bf16/AMP training step of every model family; the trainer's
  device placement (model, optimiser state, task tensors, batches, monitor ring and θ_prev).
  With ``--cpu`` the "device" is the CPU too: the device side then runs the monitor's torch
  path and the reference its numba kernels, so both paths are still compared.
* ``steptime`` — ms per training step of every paper preset (``--tiny``: tiny presets) at its
  preset batch size, through the real training loop, float32 and (on CUDA) bf16 autocast.
* ``monitor`` — the monitor's cost per snapshot at P = 10⁷ and 1.6·10⁸ (``--tiny``: 10⁵, 10⁶),
  exact and count-sketch d = 10W, against one read of the window ring and the bytes floor.
* ``sweep`` — ``sweeps/grokking.yaml``'s 48 trials through ``execute_trial`` (the function the
  Tune trainable calls) in worker processes that share the one device as fractional-GPU trials
  would (as many as the spec's cpu and gpu per trial allow), weight-decay trials first, longest first,
  until a deadline. Nothing is truncated silently: every planned trial is
  recorded as completed / stopped / diverged / cut (at the deadline: its last step and its rows
  up to the last sealed checkpoint are kept, the trials table says "running") / not started /
  error.
* ``aggregate`` — ``aggregate_sweep(..., use_ray=False)`` with the report; its precedence table.

Outputs (``--out``, at most a few files, all small): ``device_check.json`` (everything, rewritten
after every section so a killed run still leaves what it measured), ``device_check.md`` (the
tables), ``sweep.tar.gz`` (the sweep's tables, report, scorecard and figures), and the log that
``scripts/device-check.sh`` tees next to them. Exit status 0 when every check passed and every
section ran — a sweep the deadline cut is "ok" with a note, a trial that failed or a worker that
could not set up its device is an error (:func:`sweep_verdict`) — 1 otherwise, 2 when no CUDA
device is found without ``--cpu``.

Why a benchmarks script and not a module of the package: it is a measurement run on one machine,
like the other scripts here, that nothing imports; the trial, monitor and aggregation code it
exercises is the package's own, called exactly as the Tune trainable and the CLI call it.
"""

from __future__ import annotations

import os
import sys

# Hide distributions the device image does not have (the dry run sets this, so that CI proves
# the check needs no Ray). Installed before anything imports edgesweep; spawned workers inherit
# the variable and install it again when they import this module.
HIDE_ENV = "EDGESWEEP_DEVICE_CHECK_HIDE"


def _hide_distributions(names: set[str]) -> None:
    import importlib.abc
    import importlib.metadata as md

    class _Hidden(importlib.abc.MetaPathFinder):
        def find_spec(self, fullname, path=None, target=None):
            if fullname.split(".")[0] in names:
                raise ModuleNotFoundError(f"No module named {fullname!r} (hidden: the device image "
                                          "has no such package)", name=fullname)
            return None

    sys.meta_path.insert(0, _Hidden())
    real_version, real_distribution = md.version, md.distribution

    def version(name):
        if name.lower().replace("_", "-") in names:
            raise md.PackageNotFoundError(name)
        return real_version(name)

    def distribution(name):
        if name.lower().replace("_", "-") in names:
            raise md.PackageNotFoundError(name)
        return real_distribution(name)

    md.version, md.distribution = version, distribution


if os.environ.get(HIDE_ENV):
    _hide_distributions({n.strip().lower() for n in os.environ[HIDE_ENV].split(",") if n.strip()})

import argparse  # noqa: E402
import contextlib  # noqa: E402
import copy  # noqa: E402
import io  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import platform  # noqa: E402
import queue as queue_mod  # noqa: E402
import shutil  # noqa: E402
import signal  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import tarfile  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import traceback  # noqa: E402
from datetime import datetime, timezone  # noqa: E402
from pathlib import Path  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SWEEP_FILE = REPO / "sweeps" / "grokking.yaml"
FAR = 10**9
TRAVEL_LIMIT = 64 << 20          # what one device call may carry (working tree + carried paths)
BUNDLE_LIMIT = 15 << 20          # each file back from $OUT must stay under 16 MiB

# The dry run's protocol: the same 48 trials and keys, tiny models and budgets. Per-workload
# overrides of the same keys are replaced too, so every trial gets these values.
TINY_OVERRIDES = {"train": {"preset": "tiny", "max_steps": 30, "eval_every": 10, "checkpoint_every": 15},
                  "monitor": {"every": 5}, "stop": {"after_grok": 10}}

# Features of a monitor row: compared as floats (relative), lists of floats, or exactly.
FLOAT_FEATURES = ("gap_ratio", "gap", "g23", "delta_gram_fro", "delta_gram_fro_exact", "adiabatic",
                  "subspace_rotation", "bbp_ratio", "update_norm", "lr")
LIST_FEATURES = ("sigma", "alpha")
EXACT_FEATURES = ("step", "window", "k_star", "k_star_weighted", "nonfinite")
BOUNDED = {"alpha", "subspace_rotation"}  # in [0, 1]: an absolute floor of 1 for the relative error
ROW_TOL = 1e-6


class DeadlineReached(Exception):
    """Raised from a trial's progress callback once the sweep's deadline has passed."""


# ------------------------------------------------------------------------------------------
# Small helpers
# ------------------------------------------------------------------------------------------

def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def _jsonable(x):
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if hasattr(x, "item") and callable(x.item) and getattr(x, "ndim", 1) == 0:
        x = x.item()
    if isinstance(x, float) and not math.isfinite(x):
        return None if math.isnan(x) else ("inf" if x > 0 else "-inf")
    if isinstance(x, Path):
        return str(x)
    if isinstance(x, (str, int, float, bool)) or x is None:
        return x
    return str(x)


def rel_err(a, b, floor: float = 1e-300) -> float:
    """|a − b| / max(|a|, |b|, floor); 0 when both are NaN or the same infinity, inf when only
    one is NaN (a NaN that appears on one side only is a real difference)."""
    if a is None or b is None:
        return 0.0 if a is b else math.inf
    a, b = float(a), float(b)
    if math.isnan(a) or math.isnan(b):
        return 0.0 if (math.isnan(a) and math.isnan(b)) else math.inf
    if math.isinf(a) or math.isinf(b):
        return 0.0 if a == b else math.inf
    return abs(a - b) / max(abs(a), abs(b), floor)


def compare_rows(ref: list, dev: list, tol: float = ROW_TOL) -> dict:
    """Feature rows of two monitors over the same stream: the same rows (None where one is None),
    exact integer features, and the largest relative error of every float64 feature."""
    out = {"rows": len(ref), "rows_with_features": 0, "mismatches": [], "max_rel_err": {}}
    if len(ref) != len(dev):
        out["mismatches"].append(f"{len(ref)} rows vs {len(dev)}")
        out["ok"] = False
        return out
    worst = {k: 0.0 for k in FLOAT_FEATURES + LIST_FEATURES}
    for i, (r, d) in enumerate(zip(ref, dev)):
        if (r is None) != (d is None):
            out["mismatches"].append(f"row {i}: {'None' if r is None else 'a row'} vs {'None' if d is None else 'a row'}")
            continue
        if r is None:
            continue
        out["rows_with_features"] += 1
        for k in EXACT_FEATURES:
            if r.get(k) != d.get(k):
                out["mismatches"].append(f"row {i} {k}: {r.get(k)!r} vs {d.get(k)!r}")
        for k in FLOAT_FEATURES:
            worst[k] = max(worst[k], rel_err(r.get(k), d.get(k), 1.0 if k in BOUNDED else 1e-300))
        for k in LIST_FEATURES:
            a, b = r.get(k), d.get(k)
            if (a is None) != (b is None) or (a is not None and len(a) != len(b)):
                out["mismatches"].append(f"row {i} {k}: {a!r} vs {b!r}")
                continue
            for x, y in zip(a or (), b or ()):
                worst[k] = max(worst[k], rel_err(x, y, 1.0 if k in BOUNDED else 1e-300))
    out["max_rel_err"] = worst
    out["worst"] = max(worst.values()) if worst else 0.0
    out["ok"] = not out["mismatches"] and out["worst"] <= tol and out["rows_with_features"] > 0
    return out


@contextlib.contextmanager
def monitor_backend(name: str):
    """EDGESWEEP_MONITOR_BACKEND for the calls inside (read at every observe)."""
    from edgesweep.spectral import kernels

    old = os.environ.get(kernels.BACKEND_ENV)
    os.environ[kernels.BACKEND_ENV] = name
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(kernels.BACKEND_ENV, None)
        else:
            os.environ[kernels.BACKEND_ENV] = old


def sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def tensors_in(obj, seen=None, depth=0):
    """Every torch tensor reachable from obj's attributes, tuples, lists and dicts."""
    import torch

    seen = set() if seen is None else seen
    if id(obj) in seen or depth > 4:
        return []
    seen.add(id(obj))
    if isinstance(obj, torch.Tensor):
        return [obj]
    if isinstance(obj, dict):
        items = obj.values()
    elif isinstance(obj, (list, tuple)):
        items = obj
    elif hasattr(obj, "__dict__") and not isinstance(obj, type):
        items = vars(obj).values()
    else:
        return []
    out = []
    for v in items:
        out += tensors_in(v, seen, depth + 1)
    return out


# ------------------------------------------------------------------------------------------
# The run record
# ------------------------------------------------------------------------------------------

class Record:
    """device_check.json, rewritten after every section (a killed run keeps what it measured)."""

    def __init__(self, out: Path, args):
        self.out = out
        self.t0 = time.perf_counter()
        self.doc = {"format": "edgesweep.device_check/1", "started_at": datetime.now(timezone.utc).isoformat(),
                    "args": vars(args), "mode": {"cpu": args.cpu, "tiny": args.tiny},
                    "sections": {}, "checks": {}, "steptime": [], "monitor_cost": [], "sweep": {},
                    "aggregate": {}, "finished": False}

    def elapsed(self) -> float:
        return time.perf_counter() - self.t0

    def save(self) -> None:
        self.doc["wall_s"] = round(self.elapsed(), 2)
        tmp = self.out / "device_check.json.tmp"
        tmp.write_text(json.dumps(_jsonable(self.doc), indent=1, allow_nan=False))
        tmp.replace(self.out / "device_check.json")

    @contextlib.contextmanager
    def section(self, name: str):
        log(f"== {name}")
        t0 = time.perf_counter()
        entry = {"status": "running"}
        self.doc["sections"][name] = entry
        try:
            yield entry
            entry["status"] = "ok" if entry.get("status") == "running" else entry["status"]
        except Exception as exc:  # noqa: BLE001 — one section's failure must not hide the others
            entry["status"] = "error"
            entry["error"] = f"{type(exc).__name__}: {exc}"
            entry["traceback"] = traceback.format_exc(limit=20)
            log(f"   {name} failed: {entry['error']}")
        finally:
            if entry["status"] == "running":  # left by an interrupt (SIGTERM from the hard limit)
                entry["status"] = "interrupted"
            entry["wall_s"] = round(time.perf_counter() - t0, 2)
            log(f"   {name}: {entry['status']} in {entry['wall_s']:.1f}s")
            self.save()

    def check(self, name: str, fn, *a, **kw) -> dict:
        log(f"-- check {name}")
        t0 = time.perf_counter()
        try:
            res = fn(*a, **kw)
        except Exception as exc:  # noqa: BLE001
            res = {"ok": False, "error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc(limit=20)}
        res["wall_s"] = round(time.perf_counter() - t0, 2)
        self.doc["checks"][name] = res
        log(f"   {name}: {'PASS' if res.get('ok') else 'FAIL'} ({res['wall_s']:.1f}s)"
            + (f" — {res['error']}" if res.get("error") else ""))
        self.save()
        return res


# ------------------------------------------------------------------------------------------
# Environment
# ------------------------------------------------------------------------------------------

def environment(device) -> dict:
    import importlib.metadata as md

    import torch

    env = {"python": sys.version.split()[0], "executable": sys.executable, "platform": platform.platform(),
           "hostname": platform.node(), "cpu_count": os.cpu_count(), "torch": torch.__version__,
           "cuda_available": torch.cuda.is_available(), "device": str(device),
           "torch_threads": torch.get_num_threads(), "packages": {}}
    from edgesweep.workloads import compute_environment
    env["compute"] = compute_environment(device)  # what the trials table's `compute` column says
    for name in ("numpy", "scipy", "pyarrow", "polars", "pydantic", "numba", "matplotlib", "pandas",
                 "pyyaml", "ray", "edgesweep"):
        try:
            env["packages"][name] = md.version(name)
        except md.PackageNotFoundError:
            env["packages"][name] = None
    try:
        import ray  # noqa: F401  (imported only to say whether it can be)
        env["ray_importable"] = True
    except ImportError:
        env["ray_importable"] = False
    if device.type == "cuda":
        p = torch.cuda.get_device_properties(device)
        env["gpu"] = {"name": p.name, "total_memory_gib": round(p.total_memory / 2**30, 1),
                      "capability": f"{p.major}.{p.minor}", "multiprocessors": p.multi_processor_count,
                      "cuda": torch.version.cuda, "cudnn": torch.backends.cudnn.version()}
        try:
            smi = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total,clocks.sm,clocks.mem,compute_mode",
                                  "--format=csv,noheader"], capture_output=True, text=True, timeout=20)
            env["gpu"]["nvidia_smi"] = smi.stdout.strip() or smi.stderr.strip()
        except (OSError, subprocess.SubprocessError) as exc:
            env["gpu"]["nvidia_smi"] = f"unavailable: {exc}"
    env["travel"] = travel_size()
    return env


def travel_size() -> dict:
    """Bytes a device call carries: the files git tracks (plus untracked, not ignored ones) and
    the wheels in .whl/ (or, absent, the sizes scripts/fetch-device-wheels.sh fetched last)."""
    out = {"limit_bytes": TRAVEL_LIMIT}
    try:
        names = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                               cwd=REPO, capture_output=True, timeout=30, check=True).stdout.split(b"\0")
        out["tree_bytes"] = sum((REPO / n.decode()).stat().st_size for n in names
                                if n and (REPO / n.decode()).is_file())
    except (OSError, subprocess.SubprocessError) as exc:
        out["tree_bytes"] = None
        out["tree_error"] = str(exc)
    wheels = sorted((REPO / ".whl").glob("*.whl"))
    out["wheels"] = {w.name: w.stat().st_size for w in wheels}
    out["wheel_bytes"] = sum(out["wheels"].values()) if wheels else None
    return out


# ------------------------------------------------------------------------------------------
# Checks
# ------------------------------------------------------------------------------------------

class Stream:
    """θ_t of a random walk with a 3-direction backbone (spectra with an edge), float32 on the
    CPU, deterministic; ``nan_at`` puts a NaN into one snapshot (not into the walk)."""

    def __init__(self, p: int, seed: int = 0, nan_at: int | None = None):
        import torch

        self.gen = torch.Generator().manual_seed(seed)
        self.basis = torch.randn(3, p, generator=self.gen)
        self.theta = torch.randn(p, generator=self.gen)
        self.nan_at, self.i = nan_at, 0

    def next(self):
        import torch

        coef = torch.randn(3, generator=self.gen) * torch.tensor([3.0, 1.5, 0.7])
        noise = torch.randn(self.theta.shape, generator=self.gen)
        self.theta.add_(coef @ self.basis, alpha=1e-3).add_(noise, alpha=3e-4)
        snap = self.theta.clone()
        if self.i == self.nan_at:
            snap[len(snap) // 3] = float("nan")
        self.i += 1
        return snap


def _multi_module(sizes, device):
    """A module whose parameters ("all") are the stream split into tensors of several shapes:
    the monitor's per-parameter (multi-view) path, as with a real model."""
    import torch

    mod = torch.nn.Module()
    shapes = []
    for n in sizes:
        shapes.append((n // 4, 4) if n % 4 == 0 and n >= 8 else (n,))
    mod.ps = torch.nn.ParameterList([torch.nn.Parameter(torch.zeros(s, device=device)) for s in shapes])
    return mod


def _load(mod, flat):
    import torch

    with torch.no_grad():
        off = 0
        for p in mod.ps:
            n = p.numel()
            p.copy_(flat[off:off + n].view_as(p))
            off += n


def _monitor_rows(cfg, snaps, device, backend, sizes, start_state=None, stop=None, return_monitor=False):
    """Rows of a monitor (config cfg) on ``device`` over snapshots[?:stop], optionally restored
    from ``start_state`` first (then it observes snapshots from the state's position)."""
    from edgesweep.spectral import SpectralMonitor

    mon = SpectralMonitor(cfg)
    if start_state is not None:
        mon.load_state_dict(start_state)
    mod = _multi_module(sizes, device)
    rows = []
    with monitor_backend(backend):
        for step, flat in snaps[:stop]:
            _load(mod, flat.to(device))
            rows.append(mon.observe(mod, step=step, lr=1e-3))
    return (rows, mon) if return_monitor else rows


def _checkpoint_roundtrip(state):
    """A monitor state as a training checkpoint carries it: every tensor copied to the CPU,
    through torch.save / torch.load(map_location="cpu") as the Tune trainable does."""
    import torch

    from edgesweep.workloads.training import _cpu_copy

    buf = io.BytesIO()
    torch.save(_cpu_copy(state), buf)
    buf.seek(0)
    return torch.load(buf, map_location="cpu", weights_only=False)


def _ref_backend() -> str:
    from edgesweep.spectral import kernels

    return "numba" if kernels.numba_kernels() is not None else "torch"


def check_monitor(device, tiny: bool) -> dict:
    """Exact and sketched monitors: device (torch path) vs CPU reference (numba), same rows."""
    from edgesweep.spectral import MonitorConfig

    p = 60_007 if tiny else 3_000_017
    sizes = [p // 2, p // 4, p // 8 + 3]
    sizes.append(p - sum(sizes))
    n_snap = 20
    stream = Stream(p, seed=1, nan_at=13)
    snaps = [(100 * i, stream.next()) for i in range(n_snap)]
    ref_backend = _ref_backend()
    out = {"P": p, "tensors": len(sizes), "snapshots": n_snap, "nonfinite_snapshot": 13,
           "reference": {"device": "cpu", "backend": ref_backend},
           "device_side": {"device": str(device), "backend": "torch"}, "cases": {}}
    for name, cfg in (("exact_W10", MonitorConfig(window=10, params="all")),
                      ("exact_W3", MonitorConfig(window=3, params="all")),
                      ("sketch_W10_d100", MonitorConfig(window=10, params="all", sketch_dim=100, sketch_seed=7))):
        ref = _monitor_rows(cfg, snaps, _cpu(), ref_backend, sizes)
        dev, mon = _monitor_rows(cfg, snaps, device, "torch", sizes, return_monitor=True)
        cmp = compare_rows(ref, dev)
        cmp["ring_device"] = str(mon.ring.device)
        cmp["nonfinite_rows"] = sum(1 for r in dev if r is not None and r["nonfinite"])
        cmp["ok"] = cmp["ok"] and mon.ring.device.type == device.type and cmp["nonfinite_rows"] == 1
        out["cases"][name] = cmp
    out["ok"] = all(c["ok"] for c in out["cases"].values())
    return out


def _cpu():
    import torch

    return torch.device("cpu")


def check_restore(device, tiny: bool) -> dict:
    """Monitor state restored across devices (as checkpoints travel), then the training loop's
    resume from a CPU checkpoint on the device."""
    from edgesweep.spectral import MonitorConfig, SpectralMonitor

    p = 40_003 if tiny else 2_000_003
    sizes = [p // 2, p - p // 2]
    stream = Stream(p, seed=2, nan_at=None)
    snaps = [(50 * i, stream.next()) for i in range(20)]
    k = 14  # the window (W = 10) is full and the ring has wrapped when the state is taken
    ref_backend = _ref_backend()
    out = {"P": p, "restore_after_snapshot": k, "reference": {"device": "cpu", "backend": ref_backend},
           "device_side": {"device": str(device), "backend": "torch"}, "cases": {}}
    for mode, cfg in (("exact", MonitorConfig(window=10, params="all")),
                      ("sketch", MonitorConfig(window=10, params="all", sketch_dim=100, sketch_seed=3))):
        ref = _monitor_rows(cfg, snaps, _cpu(), ref_backend, sizes)
        # CPU state → continue on the device (a CPU checkpoint resumed on a GPU worker).
        _, cpu_mon = _monitor_rows(cfg, snaps, _cpu(), ref_backend, sizes, stop=k, return_monitor=True)
        state = _checkpoint_roundtrip(cpu_mon.state_dict())
        rows, mon = _monitor_rows(cfg, snaps[k:], device, "torch", sizes, start_state=state, return_monitor=True)
        c = compare_rows(ref[k:], rows)
        c["ring_device_after"] = str(mon.ring.device)
        c["ok"] = c["ok"] and mon.ring.device.type == device.type
        out["cases"][f"{mode}_cpu_to_device"] = c
        # Device state → continue on the CPU (a GPU checkpoint resumed on a CPU node).
        _, dev_mon = _monitor_rows(cfg, snaps, device, "torch", sizes, stop=k, return_monitor=True)
        state = _checkpoint_roundtrip(dev_mon.state_dict())
        rows, mon = _monitor_rows(cfg, snaps[k:], _cpu(), ref_backend, sizes, start_state=state,
                                  return_monitor=True)
        c = compare_rows(ref[k:], rows)
        c["ring_device_after"] = str(mon.ring.device)
        c["ok"] = c["ok"] and mon.ring.device.type == "cpu"
        out["cases"][f"{mode}_device_to_cpu"] = c
        # load_state_dict(device=...) straight onto the device.
        mon = SpectralMonitor(cfg)
        mon.load_state_dict(_checkpoint_roundtrip(cpu_mon.state_dict()), device=device)
        on_device = mon.ring.device.type == device.type
        mod = _multi_module(sizes, device)
        rows = []
        with monitor_backend("torch"):
            for step, flat in snaps[k:]:
                _load(mod, flat.to(device))
                rows.append(mon.observe(mod, step=step, lr=1e-3))
        c = compare_rows(ref[k:], rows)
        c["ok"] = c["ok"] and on_device
        out["cases"][f"{mode}_load_onto_device"] = c
    out["cases"]["trainer_resume"], out["cases"]["trainer_rerun"] = _trainer_resume(device, tiny)
    out["ok"] = all(c["ok"] for c in out["cases"].values())
    return out


def _trainer_resume(device, tiny: bool) -> tuple[dict, dict]:
    """execute_trial from a CPU checkpoint (torch.load(map_location="cpu"), as Tune restores)
    on the device, against the uninterrupted run on the same device; and, from the same runs,
    two uninterrupted runs of one trial against each other (does a rerun on this device repeat
    its rows?). On the CPU the rows must be bit-identical; on CUDA, atomics-based kernels may
    differ in the last bits, so the gate there is 1e-3 relative on the features (the measured
    error is recorded either way)."""
    import tempfile

    from edgesweep.platform.spec import parse_spec
    from edgesweep.platform.trainable import execute_trial
    from edgesweep.storage import scan

    steps = 30 if tiny else 80
    half = steps // 2
    spec = parse_spec({
        "name": "resume", "grid": {"workload": ["mod_add"], "weight_decay": [1.0]},
        "train": {"preset": "tiny" if tiny else "paper", "max_steps": steps, "eval_every": 10,
                  "checkpoint_every": half, "device": "auto"},
        "monitor": {"window": 4, "every": 5, "params": "all"},
    })
    trial = spec.trials[0]
    with tempfile.TemporaryDirectory(prefix="devcheck-resume-") as tmp:
        execute_trial(trial, "resume", f"{tmp}/ref")
        states = {}

        def save(step, state, _metrics):
            buf = io.BytesIO()
            import torch
            torch.save(state, buf)
            states[step] = buf.getvalue()

        execute_trial(trial, "resume", f"{tmp}/run", save_checkpoint=save)
        rerun = scan(f"{tmp}/run/resume", "features").collect().sort("step")
        import torch
        state = torch.load(io.BytesIO(states[half]), map_location="cpu", weights_only=False)
        # a fresh storage, the trial resumed from the checkpoint half-way (what Tune does after a crash)
        shutil.rmtree(f"{tmp}/run")
        execute_trial(trial, "resume", f"{tmp}/run", resume_state=state)
        ref = scan(f"{tmp}/ref/resume", "features").collect().sort("step")
        got = scan(f"{tmp}/run/resume", "features").collect().sort("step")
    ref_rows = [r for r in ref.to_dicts() if r["step"] > half]
    got_rows = [r for r in got.to_dicts() if r["step"] > half]
    tol = 0.0 if device.type == "cpu" else 1e-3
    cmp = compare_rows(ref_rows, got_rows, tol=tol)
    cmp["tolerance"] = tol
    cmp["resumed_from_step"] = half
    again = compare_rows(ref.to_dicts(), rerun.to_dicts(), tol=tol)
    again["tolerance"] = tol
    return cmp, again


def check_sketch(device, tiny: bool) -> dict:
    """CountSketch on the device (torch integer hash + index_add) vs the CPU kernel (numba)."""
    import torch

    from edgesweep.spectral import CountSketch

    p = 500_009 if tiny else 20_000_003
    d = 100
    gen = torch.Generator().manual_seed(5)
    x = torch.randn(p, generator=gen)
    ref_backend = _ref_backend()
    ref = CountSketch(p, d, seed=11).project(x, backend=ref_backend)
    dev = CountSketch(p, d, seed=11, device=device).project(x.to(device), backend="torch").cpu()
    err = float((ref - dev).norm() / ref.norm())
    idx = torch.tensor([0, 1, 2, p - 1, 2**31 - 1, 2**31, 2**32 + 5, 2**40 + 3, 2**62 + 1], dtype=torch.int64)
    cs_cpu, cs_dev = CountSketch(p, d, seed=11), CountSketch(p, d, seed=11, device=device)
    b0, s0 = cs_cpu.buckets_and_signs(idx)
    b1, s1 = cs_dev.buckets_and_signs(idx.to(device))
    same_hash = bool(torch.equal(b0, b1.cpu()) and torch.equal(s0, s1.cpu()))
    # E‖Sx‖² = ‖x‖²: a sanity bound on the sketch itself (relative sd ≤ √(2/d) ≈ 0.14)
    norm_ratio = float(dev.norm() / x.double().norm())
    return {"P": p, "d": d, "reference": {"device": "cpu", "backend": ref_backend},
            "device_side": {"device": str(device), "backend": "torch"}, "rel_err": err,
            "hash_equal_incl_indices_beyond_2e31": same_hash, "sketch_norm_over_norm": norm_ratio,
            "ok": err <= 1e-9 and same_hash and 0.5 < norm_ratio < 1.5}


class _Capture:
    """Wraps the training loop's builders to keep what train() built (model, task, optimiser)
    and record the dtype of the model's outputs while training (autocast or not)."""

    def __init__(self):
        self.models, self.tasks, self.opts, self.batches = [], [], [], []
        self.out_dtypes = set()

    @contextlib.contextmanager
    def patched(self):
        from edgesweep.workloads import training

        bm, bt, bo = training.build_model, training.build_task, training.build_optimizer

        def build_model(*a, **kw):
            m = bm(*a, **kw)

            def hook(mod, _inp, out):
                if mod.training:
                    first = out[0] if isinstance(out, (list, tuple)) else out
                    self.out_dtypes.add(str(first.dtype).removeprefix("torch."))
            m.register_forward_hook(hook)
            self.models.append(m)
            return m

        def build_task(*a, **kw):
            t = bt(*a, **kw)
            sample = t.sample_batch

            def sample_batch(gen, bs):
                b = sample(gen, bs)
                if len(self.batches) < 3:
                    self.batches.append(b)
                return b
            t.sample_batch = sample_batch
            self.tasks.append(t)
            return t

        def build_optimizer(*a, **kw):
            o = bo(*a, **kw)
            self.opts.append(o)
            return o

        training.build_model, training.build_task, training.build_optimizer = build_model, build_task, build_optimizer
        try:
            yield self
        finally:
            training.build_model, training.build_task, training.build_optimizer = bm, bt, bo


class _Losses:
    def __init__(self):
        self.losses = []

    def on_step(self, step, loss, lr):
        self.losses.append(loss)


def check_amp(device, tiny: bool) -> dict:
    """A bf16 autocast training run of every model family: outputs in bf16 on CUDA (autocast
    is CUDA-only by design: float32 on the CPU), float32 master weights, finite losses and
    evaluations, the first loss within bf16 rounding of the float32 run's (same init, batch)."""
    from edgesweep.workloads import TrainConfig, train

    preset = "tiny" if tiny else "paper"
    out = {"expected_output_dtype": "bfloat16" if device.type == "cuda" else "float32",
           "autocast_active": device.type == "cuda", "families": {}}
    for wl, steps, bs in (("mod_add", 30, None), ("multitask_2", 20, None), ("dyck", 20, None),
                          ("scan", 20, None), ("tinystories", 5, 4)):
        steps = min(steps, 6) if tiny else steps
        res = {}
        for amp in (False, True):
            cap, lc = _Capture(), _Losses()
            cfg = TrainConfig(wl, preset=preset, max_steps=steps, eval_every=steps, snapshot_every=FAR,
                              checkpoint_every=FAR, device=device.type, amp=amp, seed=42, batch_size=bs,
                              task_overrides={"eval_batches": 1} if wl == "tinystories" else {})
            with cap.patched():
                r = train(cfg, callbacks=[lc])
            model = cap.models[0]
            res["amp" if amp else "fp32"] = {
                "status": r.status, "losses_first_last": [lc.losses[0], lc.losses[-1]],
                "output_dtypes": sorted(cap.out_dtypes),
                "param_dtypes": sorted({str(p.dtype).removeprefix("torch.") for p in model.parameters()}),
                "eval_finite": all(math.isfinite(v) for k, v in r.metrics.items()
                                   if isinstance(v, float) and k in ("train_loss", "test_loss")),
                "losses_finite": all(math.isfinite(v) for v in lc.losses)}
        a, f = res["amp"], res["fp32"]
        res["first_loss_rel_diff"] = rel_err(a["losses_first_last"][0], f["losses_first_last"][0])
        res["ok"] = (a["status"] == "completed" and a["losses_finite"] and a["eval_finite"]
                     and a["output_dtypes"] == [out["expected_output_dtype"]]
                     and f["output_dtypes"] == ["float32"] and a["param_dtypes"] == ["float32"]
                     and res["first_loss_rel_diff"] <= 5e-2)
        out["families"][wl] = res
    out["ok"] = all(r["ok"] for r in out["families"].values())
    return out


def check_placement(device, tiny: bool) -> dict:
    """Trials through execute_trial with ``device: auto`` (the sweep's setting): where the
    trainer put the model, the optimiser state, the task tensors and batches, and where the
    TrialRecorder's monitor keeps its ring and θ_prev (an encoder–decoder and a modular model)."""
    import tempfile

    from edgesweep.platform import trainable
    from edgesweep.platform.spec import parse_spec
    from edgesweep.platform.trainable import execute_trial
    from edgesweep.spectral import SpectralMonitor
    from edgesweep.workloads.training import resolve_device

    want = device.type
    out = {"expected": want, "auto_resolves_to": resolve_device("auto").type, "workloads": {}}

    def where(ts):
        return sorted({t.device.type for t in ts})

    for wl, window in (("scan", 5), ("multitask_2", 10)):
        monitors = []

        class Recording(SpectralMonitor):
            def __init__(self, *a, **kw):
                super().__init__(*a, **kw)
                monitors.append(self)

        spec = parse_spec({
            "name": "placement", "grid": {"workload": [wl], "weight_decay": [1.0]},
            "train": {"preset": "tiny" if tiny else "paper", "max_steps": 30, "eval_every": 10,
                      "checkpoint_every": 15, "device": "auto"},
            "monitor": {"window": window, "every": 5, "params": "attention"},
        })
        cap = _Capture()
        saved = trainable.SpectralMonitor
        trainable.SpectralMonitor = Recording
        try:
            with tempfile.TemporaryDirectory(prefix="devcheck-place-") as tmp, cap.patched():
                result = execute_trial(spec.trials[0], "placement", tmp)
        finally:
            trainable.SpectralMonitor = saved
        mon = monitors[0]
        opt_state = [t for st in cap.opts[0].state_dict()["state"].values() for t in tensors_in(st)
                     if t.numel() > 1]  # AdamW's step counters live on the CPU by design
        found = {"model_params": where(cap.models[0].parameters()),
                 "optimizer_state": where(opt_state),
                 "task_tensors": where(tensors_in(cap.tasks[0])),
                 "batches": where([t for b in cap.batches for t in tensors_in(b)]),
                 "monitor_ring": where([mon.ring]), "monitor_prev": where([mon.prev]),
                 "monitored_params": mon.n_params, "status": result.status}
        found["ok"] = found["status"] == "completed" and all(
            found[k] == [want] for k in ("model_params", "optimizer_state", "task_tensors", "batches",
                                         "monitor_ring", "monitor_prev"))
        out["workloads"][wl] = found
    out["ok"] = out["auto_resolves_to"] == want and all(f["ok"] for f in out["workloads"].values())
    return out


# ------------------------------------------------------------------------------------------
# Step times
# ------------------------------------------------------------------------------------------

class _StepClock:
    def __init__(self):
        self.t = []

    def on_step(self, step, loss, lr):
        self.t.append(time.perf_counter())  # after float(loss): the step's work is done


def steptime(device, tiny: bool, deadline: float) -> list[dict]:
    """Every preset with AdamW, float32 and (CUDA) bf16 autocast; the TinyStories model also
    with Muon (sweeps/optimizers.yaml compares the two)."""
    import gc

    import torch

    from edgesweep.workloads import TrainConfig, get_workload, parameter_counts, train
    from edgesweep.workloads.catalog import WORKLOADS

    preset = "tiny" if tiny else "paper"
    runs = [(wl, "adamw") for wl in WORKLOADS] + [("tinystories", "muon")]
    rows = []
    for wl, opt in runs:
        lm = get_workload(wl).family == "lm"
        timed, warm = (3, 1) if tiny else ((8, 3) if lm else (30, 5))
        for amp in ((False, True) if device.type == "cuda" else (False,)):
            head = {"workload": wl, "optimizer": opt, "amp": amp}
            if time.monotonic() > deadline:
                rows.append(dict(head, skipped="section deadline"))
                continue
            over = {"eval_batches": 1, "eval_batch_size": 1} if lm else {}
            cfg = TrainConfig(wl, preset=preset, optimizer=opt, max_steps=warm + timed + 1, eval_every=FAR,
                              snapshot_every=FAR, checkpoint_every=FAR, device=device.type, amp=amp,
                              task_overrides=over)
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            clock = _StepClock()
            t0 = time.perf_counter()
            try:
                train(cfg, callbacks=[clock])
            except Exception as exc:  # noqa: BLE001 — one preset's failure (an OOM, say) is recorded
                rows.append(dict(head, error=f"{type(exc).__name__}: {exc}"))
                continue
            finally:
                if device.type == "cuda":
                    gc.collect()
                    torch.cuda.empty_cache()
            dts = [b - a for a, b in zip(clock.t, clock.t[1:])][warm:]
            total, attn = parameter_counts(wl, preset, task_overrides=over)
            row = dict(head, preset=preset, params=total, attn_params=attn,
                       batch_size=cfg.resolve().batch_size, timed_steps=len(dts),
                       ms_per_step=1e3 * statistics.median(dts), ms_min=1e3 * min(dts),
                       ms_max=1e3 * max(dts), wall_s=round(time.perf_counter() - t0, 2))
            if device.type == "cuda":
                row["peak_mem_gib"] = round(torch.cuda.max_memory_allocated(device) / 2**30, 2)
            rows.append(row)
            log(f"   {wl:<13} {opt:<5} amp={amp!s:<5} {row['ms_per_step']:9.2f} ms/step (batch {row['batch_size']})")
    return rows


def cost_estimates(rows: list[dict]) -> list[dict]:
    """Device-hours of the shipped paper-size sweeps from the step times just measured: the sum
    over trials of max_steps × ms/step, one trial at a time — an upper bound (a weight-decay
    grokking trial stops after_grok steps past its grok; evaluation and snapshots are not
    counted). What several trials sharing the device achieve is the sweep section's number."""
    from edgesweep.platform.spec import load_spec

    ms = {(r["workload"], r["optimizer"], r["amp"]): r["ms_per_step"] for r in rows if "ms_per_step" in r}
    out = []
    for name in ("grokking.yaml", "optimizers.yaml"):
        spec = load_spec(REPO / "sweeps" / name)
        for amp in sorted({k[2] for k in ms}):
            missing = sorted({f"{t.workload}/{t.optimizer}" for t in spec.trials
                              if (t.workload, t.optimizer, amp) not in ms})
            hours = sum(t.train["max_steps"] * ms.get((t.workload, t.optimizer, amp), math.nan)
                        for t in spec.trials) / 3.6e6
            out.append({"sweep": name, "amp": amp, "step_times_preset": rows[0].get("preset"), "trials": len(spec.trials),
                        "steps": sum(t.train["max_steps"] for t in spec.trials),
                        "device_hours_upper_bound": None if missing else hours, "missing_step_times": missing})
    return out


# ------------------------------------------------------------------------------------------
# Monitor cost per snapshot
# ------------------------------------------------------------------------------------------

def _bandwidth(device, nbytes: int) -> float:
    """Device-to-device copy bandwidth, bytes read + written per second (median of 5)."""
    import torch

    a = torch.empty(nbytes // 4, dtype=torch.float32, device=device).uniform_()
    b = torch.empty_like(a)
    ts = []
    for _ in range(6):
        sync(device)
        t0 = time.perf_counter()
        b.copy_(a)
        sync(device)
        ts.append(time.perf_counter() - t0)
    del a, b
    return 2 * nbytes / statistics.median(ts[1:])


def _observe_cost(device, p: int, W: int, d: int | None, reps: int, backend: str, bw: float) -> dict:
    """One (P, mode): a random walk on the device, W+1 snapshots to fill the window, then
    ``reps`` timed observe() calls, each after a timed read of the ring (exact mode)."""
    import torch

    from edgesweep.spectral import MonitorConfig, SpectralMonitor

    cfg = MonitorConfig(window=W, params="all", sketch_dim=d, sketch_seed=1)
    gen = torch.Generator(device=device).manual_seed(0)
    basis = torch.randn(3, p, generator=gen, device=device)
    theta = torch.randn(p, generator=gen, device=device)
    noise = torch.empty_like(theta)
    scale = torch.tensor([3.0, 1.5, 0.7], device=device)

    def step_stream():
        coef = torch.randn(3, generator=gen, device=device) * scale
        noise.normal_(generator=gen)
        theta.add_(coef @ basis, alpha=1e-3).add_(noise, alpha=3e-4)
        return theta

    mon = SpectralMonitor(cfg)
    ts, reads, rows = [], [], []
    with monitor_backend(backend):
        for i in range(W + 1):
            mon.observe(step_stream(), step=i, lr=1e-3)
        for i in range(reps):
            x = step_stream()
            sync(device)
            if d is None:
                t0 = time.perf_counter()
                float(mon.ring.sum())  # one read of the (W+1)·P window ring: the bandwidth bound
                reads.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            rows.append(mon.observe(x, step=W + 1 + i, lr=1e-3))  # ends on the host: synchronised
            ts.append(time.perf_counter() - t0)
    ms = 1e3 * statistics.median(ts)
    # The fewest bytes a snapshot must move: exact — read θ and θ_prev, write δ and θ_prev, read
    # the (W+1)·P ring once; sketch — read θ once.
    floor_ms = 1e3 * (((W + 1) + 4) * p * 4 if d is None else p * 4) / bw
    state = mon.ring.numel() * mon.ring.element_size() + (0 if mon.prev is None else mon.prev.numel() * mon.prev.element_size())
    row = {"P": p, "mode": "exact" if d is None else "sketch", "sketch_dim": d, "backend": backend, "reps": reps,
           "ms_per_snapshot": ms, "ms_min": 1e3 * min(ts), "floor_ms": floor_ms, "x_floor": ms / floor_ms,
           "gram_ms_median": statistics.median(r["gram_ms"] for r in rows), "state_mib": round(state / 2**20, 1),
           "rows_finite": all(r is not None and not r["nonfinite"] for r in rows)}
    if reads:
        row["read_ring_ms"] = 1e3 * statistics.median(reads)
        row["x_read_ring"] = ms / row["read_ring_ms"]
    return row


def monitor_cost(device, tiny: bool, deadline: float) -> dict:
    """ms per observe() once the window is full: exact and count-sketch d = 10W, at two P."""
    import gc

    import torch

    W, reps = 10, (5 if tiny else 9)
    sizes = [100_000, 1_000_000] if tiny else [10_000_000, 160_000_000]
    bw = _bandwidth(device, (64 << 20) if tiny else (2 << 30))
    backend = "torch" if device.type == "cuda" else _ref_backend()
    out = {"window": W, "dtype": "float32", "copy_bandwidth_gb_s": bw / 1e9, "backend": backend, "rows": []}
    for p in sizes:
        for mode, d in (("exact", None), ("sketch", 10 * W)):
            if time.monotonic() > deadline:
                out["rows"].append({"P": p, "mode": mode, "skipped": "section deadline"})
                continue
            row = _observe_cost(device, p, W, d, reps, backend, bw)
            out["rows"].append(row)
            log(f"   P={p:>12,} {mode:<6} {row['ms_per_snapshot']:9.3f} ms/snapshot "
                f"({row['x_floor']:.1f}× the bytes floor)")
            gc.collect()
            if device.type == "cuda":
                torch.cuda.empty_cache()
    return out


# ------------------------------------------------------------------------------------------
# The sweep: execute_trial in worker processes, with a deadline
# ------------------------------------------------------------------------------------------

def sweep_spec(tiny: bool, storage: Path, sweep_file: Path = SWEEP_FILE):
    """sweeps/grokking.yaml as load_spec reads it; with ``tiny`` the same trials with
    TINY_OVERRIDES (also replacing those keys where per_workload sets them)."""
    from edgesweep.platform.spec import load_spec, parse_spec
    from edgesweep.platform.spec_yaml import load_yaml

    if not tiny:
        return load_spec(sweep_file, storage=str(storage))
    raw, lines = load_yaml(sweep_file.read_text())
    raw = copy.deepcopy(raw)
    raw["storage"] = str(storage)
    for sec, vals in TINY_OVERRIDES.items():
        raw[sec] = {**(raw.get(sec) or {}), **vals}
        for over in (raw.get("per_workload") or {}).values():
            for k in vals:
                if sec in over and k in over[sec]:
                    over[sec][k] = vals[k]
    return parse_spec(raw, f"{sweep_file} (tiny)", lines)


def default_workers(spec, cpus: int, on_gpu: bool) -> int:
    """Trials at once: as many as Tune would run on this one machine — CPUs / the spec's cpu per
    trial and, on a GPU, 1 / its gpu fraction (``gpu: 0.25`` → 4 share it; a trial asking for a
    whole GPU or more runs alone) — and on the CPU at least 2, so the dry run shares too."""
    res = spec.trial_resources
    n = cpus // max(1, int(math.ceil(res.get("cpu", 1) or 1)))
    gpu = res.get("gpu") or 0
    if on_gpu and gpu > 0:
        n = max(1, min(n, int(math.floor(1 / gpu + 1e-9))))
    else:
        n = max(2, n)
    return min(len(spec.trials), n)


def _worker(tasks, results, storage: str, sweep: str, deadline, threads: int) -> None:
    """One worker process (a trial slot on the shared device): imports first — while the parent
    runs its other sections — then trials from ``tasks`` until a None or the deadline."""
    import torch

    from edgesweep.platform.spec import TrialSpec
    from edgesweep.platform.trainable import execute_trial
    from edgesweep.storage import writer  # noqa: F401 — what the first trial would import
    import polars  # noqa: F401
    import pyarrow.parquet  # noqa: F401

    torch.set_num_threads(threads)
    try:
        # The first optimizer built imports torch._dynamo (~2.4 s here): pay that before
        # "ready", not inside the first trial's share of the sweep's deadline.
        torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))])
        if torch.cuda.is_available():
            # Likewise this process's CUDA context and cuBLAS handle (seconds each); and a GPU
            # in EXCLUSIVE_PROCESS mode fails here, once, rather than in every trial.
            x = torch.ones(64, 64, device="cuda")
            (x @ x).sum().item()
    except Exception as exc:  # noqa: BLE001 — recorded by the parent; this slot takes no trial
        results.put(("broken", None, {"pid": os.getpid(), "t": time.time(),
                                      "error": f"{type(exc).__name__}: {exc}"}))
        return
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    results.put(("ready", None, {"pid": os.getpid(), "t": time.time()}))
    while True:
        item = tasks.get()
        if item is None or time.time() >= deadline.value:
            return  # a trial taken after the deadline was never started: the parent says so
        trial = TrialSpec.from_dict(item)
        tid = trial.trial_id
        results.put(("started", tid, {"pid": os.getpid(), "t": time.time()}))
        last = {"step": 0}

        def report(m, tid=tid, last=last):
            last["step"] = int(m.get("step", last["step"]))
            results.put(("progress", tid, {"step": last["step"], "t": time.time()}))
            if "done_status" not in m and time.time() >= deadline.value:
                raise DeadlineReached(f"deadline reached at step {last['step']}")

        t0 = time.perf_counter()
        try:
            res = execute_trial(trial, sweep, storage, report=report)
            info = {"status": res.status, "steps": res.steps, "error": res.error, "n_params": res.n_params}
        except DeadlineReached:
            info = {"status": "cut", "steps": last["step"],
                    "error": f"cut at the sweep deadline after step {last['step']} (rows kept up to the "
                             "last sealed checkpoint; the trials table says running)"}
        except Exception as exc:  # noqa: BLE001 — recorded, the worker goes on
            info = {"status": "error", "steps": last["step"], "error": f"{type(exc).__name__}: {exc}",
                    "traceback": traceback.format_exc(limit=15)}
        info["wall_s"] = round(time.perf_counter() - t0, 2)
        info["t"] = time.time()
        results.put(("done", tid, info))


def _expected_cost(trial, step_ms: dict) -> float:
    """Seconds a trial can take at most: max_steps × the measured (or a rough) ms per step."""
    ms = step_ms.get(trial.workload)
    if ms is None:
        ms = {"scan": 8.0, "dyck": 3.0}.get(trial.workload, 3.0)
    return trial.train["max_steps"] * ms / 1e3


class TrialPool:
    """``workers`` processes that run execute_trial, started early (their imports overlap the
    other sections); :meth:`run` gives them a sweep's trials, longest first, and a deadline."""

    def __init__(self, workers: int, threads: int, storage: Path, sweep: str):
        import multiprocessing as mp

        ctx = mp.get_context("spawn")  # CUDA is (or will be) initialised in this process: never fork
        self.tasks, self.results = ctx.Queue(), ctx.Queue()
        self.deadline = ctx.Value("d", float("inf"))
        self.workers, self.threads = workers, threads
        self.t_created = time.time()
        self.ready: dict[int, float] = {}
        self.broken: dict[int, str] = {}  # workers whose set-up failed: pid → error
        self.procs = [ctx.Process(target=_worker, daemon=True,
                                  args=(self.tasks, self.results, str(storage), sweep, self.deadline, threads))
                      for _ in range(workers)]
        for p in self.procs:
            p.start()

    def wait_ready(self, timeout: float) -> int:
        """Block until every worker has done its imports (or ``timeout``); how many have."""
        end = time.time() + timeout
        while len(self.ready) + len(self.broken) < len(self.procs) and time.time() < end:
            try:
                kind, _tid, info = self.results.get(timeout=max(0.01, min(1.0, end - time.time())))
            except queue_mod.Empty:
                continue
            assert kind in ("ready", "broken"), kind  # nothing else comes before run() hands out trials
            if kind == "broken":
                self.broken[info["pid"]] = info["error"]
                log(f"   trial worker {info['pid']} failed to set up: {info['error']}")
            else:
                self.ready[info["pid"]] = round(info["t"] - self.t_created, 2)
        return len(self.ready)

    def close(self) -> list[int]:
        """Stop what still runs (after the grace period): terminate, then kill; their pids."""
        # Trials never taken stay in the queue's pipe; past its buffer (64 KiB, ~100 trials) the
        # feeder thread would block this process's exit on them.
        self.tasks.cancel_join_thread()
        killed = []
        for p in self.procs:
            if p.is_alive():
                killed.append(p.pid)
                p.terminate()
                p.join(5)
                if p.is_alive():
                    p.kill()
                    p.join(5)
        return killed

    def run(self, spec, deadline_epoch: float, step_ms: dict, grace_s: float = 30.0,
            order: str = "positives-first") -> dict:
        """``order``: "longest-first" (the shortest makespan when everything fits) or
        "positives-first" (default): weight-decay trials — which stop after_grok steps past
        their grok — before the controls, longest first within each arm, so that a deadline
        that cannot fit all 48 cuts controls (negatives up to their last step) rather than
        leaving the weight-decay arm unrun."""
        if order == "longest-first":
            trials = sorted(spec.trials, key=lambda t: -_expected_cost(t, step_ms))
        elif order == "positives-first":
            trials = sorted(spec.trials, key=lambda t: (t.weight_decay == 0, -_expected_cost(t, step_ms)))
        else:
            raise ValueError(f"order must be longest-first or positives-first, got {order!r}")
        rec = {t.trial_id: {"status": "not_started", "steps": 0,
                            "expected_max_s": round(_expected_cost(t, step_ms), 3), "workload": t.workload,
                            "weight_decay": t.weight_decay, "seed": t.seed, "max_steps": t.train["max_steps"]}
               for t in trials}
        t0 = time.time()
        with self.deadline.get_lock():
            self.deadline.value = deadline_epoch
        for t in trials:
            self.tasks.put(t.as_dict())
        for _ in self.procs:
            self.tasks.put(None)

        def take(kind, tid, info):
            if kind == "ready":
                self.ready[info["pid"]] = round(info["t"] - self.t_created, 2)
            elif kind == "broken":
                self.broken[info["pid"]] = info["error"]
            elif kind == "started":
                rec[tid].update(status="running", pid=info["pid"], started_s=round(info["t"] - t0, 2))
            elif kind == "progress":
                if rec[tid]["status"] == "running":
                    rec[tid]["steps"] = info["step"]
            elif kind == "done":
                rec[tid].update({k: v for k, v in info.items() if k != "t"}, ended_s=round(info["t"] - t0, 2))
                return 1
            return 0

        n_done, last_print, interrupted = 0, time.time(), None
        try:
            while n_done < len(trials):
                if time.time() > deadline_epoch + grace_s:
                    break
                try:
                    msg = self.results.get(timeout=1.0)
                except queue_mod.Empty:
                    if not any(p.is_alive() for p in self.procs):
                        break
                    msg = None
                if msg is not None:
                    n_done += take(*msg)
                if time.time() - last_print > 15:
                    last_print = time.time()
                    running = sum(1 for r in rec.values() if r["status"] == "running")
                    steps = sum(r["steps"] for r in rec.values())
                    log(f"   sweep t={time.time() - t0:6.1f}s done {n_done}/{len(trials)} running {running} "
                        f"steps {steps:,} ({steps / max(1e-9, time.time() - t0):,.0f}/s)")
        except KeyboardInterrupt as exc:  # the hard limit: stop the workers, keep the record
            interrupted = str(exc) or "interrupted"
            with self.deadline.get_lock():
                self.deadline.value = 0.0
        finally:
            for p in self.procs:
                p.join(timeout=max(0.1, min(10.0, deadline_epoch + grace_s - time.time())))
            killed = self.close()
            while True:  # what arrived after the loop stopped listening
                try:
                    take(*self.results.get_nowait())
                except (queue_mod.Empty, OSError, ValueError, EOFError):
                    break
        for r in rec.values():
            if r["status"] == "running":  # its worker was killed (after the grace period, or an interrupt)
                r["status"] = "killed"
                r["error"] = (f"worker killed ({interrupted or f'{grace_s:.0f}s after the deadline'}); "
                              f"last reported step {r['steps']}")
        wall = time.time() - t0
        counts: dict[str, int] = {}
        for r in rec.values():
            counts[r["status"]] = counts.get(r["status"], 0) + 1
        trial_wall = sum(r.get("wall_s") or 0.0 for r in rec.values())
        steps = sum(r["steps"] for r in rec.values())
        finished = sum(counts.get(k, 0) for k in ("completed", "stopped", "diverged"))
        return {"sweep": spec.name, "planned": len(trials), "finished": finished, "counts": counts,
                "complete": finished == len(trials), "wall_s": round(wall, 2),
                "sum_trial_wall_s": round(trial_wall, 2),
                "concurrency": round(trial_wall / wall, 2) if wall else None,
                "workers": self.workers, "threads_per_worker": self.threads,
                "worker_ready_s": sorted(self.ready.values()), "killed_worker_pids": killed,
                "worker_setup_errors": {str(k): v for k, v in self.broken.items()},
                "trial_resources_in_spec": spec.trial_resources,
                "deadline_s_after_start": round(deadline_epoch - t0, 1), "steps_total": steps,
                "steps_per_s": round(steps / wall, 1) if wall else None,
                "interrupted": interrupted,
                "order_policy": order, "order": [t.trial_id for t in trials], "trials": rec}


#: Trial outcomes that are a failure of the check, not of the budget: a trial that raised, one
#: whose worker had to be killed (it did not stop at the deadline), a worker that could not
#: even set up its device.
FAILED_TRIALS = ("error", "failed", "killed")


def sweep_verdict(sw: dict) -> tuple[str, str]:
    """(section status, why) for a sweep record: "error" when a trial failed or a worker could
    not start (a CUDA-only crash inside the workers must not read as a pass), or when nothing
    finished; else "ok", with a note when the deadline cut or left trials unstarted (the
    budget, recorded trial by trial, is not a failure)."""
    bad = {k: n for k, n in sw["counts"].items() if k in FAILED_TRIALS}
    if bad or sw["worker_setup_errors"]:
        first = next((f"{tid}: {r.get('error')}" for tid, r in sw["trials"].items() if r["status"] in FAILED_TRIALS),
                     next(iter(sw["worker_setup_errors"].values()), ""))
        return "error", (f"{sum(bad.values())} trial(s) failed ({bad}), {len(sw['worker_setup_errors'])} worker(s) "
                         f"could not set up; first: {first}")
    if sw["finished"] == 0:
        return "error", f"no trial finished ({sw['counts']})"
    if not sw["complete"]:
        return "ok", (f"partial: {sw['finished']}/{sw['planned']} trials finished before the deadline; "
                      f"the rest were cut or not started ({sw['counts']})")
    return "ok", f"all {sw['planned']} trials finished"


def aggregate(storage: Path, sweep_name: str, trial_figures: bool = True) -> dict:
    """aggregate_sweep without Ray, then the report (the dry run draws no per-trial figures:
    48 of them cost a loaded 2-core machine over a minute; the overview figures are drawn)."""
    import polars as pl

    from edgesweep.platform.aggregate import aggregate_sweep
    from edgesweep.platform.report import precedence_sentence, precedence_text, write_report
    from edgesweep.storage import scan

    t0 = time.perf_counter()
    uri = aggregate_sweep(storage / sweep_name, use_ray=False, report=False)
    t_tables = time.perf_counter() - t0
    write_report(uri, trial_figures=trial_figures)
    t_agg = time.perf_counter() - t0
    summary = scan(uri, "summary").collect()
    runs = scan(uri, "runs").collect()
    cols = [c for c in ("trial_id", "workload", "weight_decay", "seed", "status", "running", "steps",
                        "grok_step", "memorization_step", "g23_decline", "preceded", "alarm_step", "lead_steps")
            if c in runs.columns]
    return {"wall_s": round(t_agg, 2), "tables_wall_s": round(t_tables, 2),
            "report_wall_s": round(t_agg - t_tables, 2), "trial_figures": trial_figures,
            "uri": uri, "precedence_table": precedence_text(summary),
            "precedence_sentence": precedence_sentence(summary),
            "runs": runs.select(cols).sort("trial_id").to_dicts(), "n_runs": runs.height,
            "n_running": int(runs["running"].fill_null(False).sum()) if "running" in runs.columns else None,
            "n_errors": runs.filter(pl.col("error").is_not_null()).height if "error" in runs.columns else None}


def bundle(storage: Path, sweep_name: str, out: Path) -> dict:
    """The sweep folder as one tar.gz; trial figures are dropped first if it would not fit."""
    src = storage / sweep_name
    dst = out / "sweep.tar.gz"
    for exclude in ((), ("figures/trials",), ("figures",)):
        with tarfile.open(dst, "w:gz") as tar:
            for f in sorted(src.rglob("*")):
                rel = f.relative_to(src).as_posix()
                if f.is_file() and not any(rel.startswith(e + "/") for e in exclude):
                    tar.add(f, arcname=f"{sweep_name}/{rel}")
        if dst.stat().st_size <= BUNDLE_LIMIT:
            break
    return {"file": dst.name, "bytes": dst.stat().st_size, "excluded": list(exclude),
            "files": sum(1 for f in src.rglob("*") if f.is_file())}


# ------------------------------------------------------------------------------------------
# The markdown summary
# ------------------------------------------------------------------------------------------

def _f(x, fmt=".3g"):
    if x is None:
        return "—"
    if isinstance(x, float):
        return format(x, fmt) if math.isfinite(x) else str(x)
    return str(x)


def write_markdown(doc: dict, out: Path) -> None:
    env = doc.get("environment", {})
    gpu = env.get("gpu", {})
    L = ["# edgesweep GPU check", ""]
    L.append(f"- mode: {'CPU dry run' if doc['mode']['cpu'] else 'GPU'}, {'tiny' if doc['mode']['tiny'] else 'paper'} sizes; "
             f"device `{env.get('device')}`" + (f" — {gpu.get('name')}, {gpu.get('total_memory_gib')} GiB, "
                                                 f"CUDA {gpu.get('cuda')}" if gpu else ""))
    L.append(f"- torch {env.get('torch')}, Python {env.get('python')}, {env.get('cpu_count')} CPUs; "
             f"Ray importable: {env.get('ray_importable')}")
    if env.get("compute"):
        L.append(f"- compute: {env['compute']}")
    L.append(f"- started {doc['started_at']}, wall {doc.get('wall_s')} s, finished: {doc.get('finished')}, "
             f"all checks passed: {doc.get('all_checks_passed')}")
    L += ["", "## Sections", "", "| section | status | wall s |", "|---|---|---|"]
    for name, s in doc["sections"].items():
        L.append(f"| {name} | {s['status']}{' — ' + s['error'] if s.get('error') else ''} | {s.get('wall_s')} |")
    L += ["", "## Checks", "", "| check | result | detail | wall s |", "|---|---|---|---|"]
    for name, c in doc["checks"].items():
        detail = c.get("error") or ""
        if "cases" in c:
            detail = "; ".join(f"{k}: {'ok' if v.get('ok') else 'FAIL'} (max rel {_f(v.get('worst'))})"
                               for k, v in c["cases"].items())
        elif "families" in c:
            detail = "; ".join(f"{k}: {'ok' if v.get('ok') else 'FAIL'} ({','.join(v['amp']['output_dtypes'])})"
                               if "amp" in v else f"{k}: FAIL" for k, v in c["families"].items())
        elif "rel_err" in c:
            detail = f"rel err {_f(c['rel_err'])}, hash equal {c['hash_equal_incl_indices_beyond_2e31']}"
        elif "workloads" in c:
            detail = f"auto → {c['auto_resolves_to']}; " + "; ".join(
                f"{wl}: {'ok' if f['ok'] else 'FAIL'} (" + ", ".join(
                    f"{k} {'/'.join(v)}" for k, v in f.items() if isinstance(v, list)) + ")"
                for wl, f in c["workloads"].items())
        ref = c.get("reference")
        if ref:
            detail += f" [reference {ref['device']}/{ref['backend']} vs {c['device_side']['device']}/{c['device_side']['backend']}]"
        L.append(f"| {name} | {'PASS' if c.get('ok') else 'FAIL'} | {detail} | {c.get('wall_s')} |")
    if doc.get("steptime"):
        L += ["", "## Step times (ms per training step, median; preset batch size)", "",
              "| workload | optimizer | params | attn params | batch | amp | ms/step | min | max | peak GiB |",
              "|---|---|---|---|---|---|---|---|---|---|"]
        for r in doc["steptime"]:
            if "ms_per_step" not in r:
                L.append(f"| {r['workload']} | {r['optimizer']} | | | | {r.get('amp')} | "
                         f"{r.get('error') or r.get('skipped')} | | | |")
                continue
            L.append(f"| {r['workload']} | {r['optimizer']} | {r['params']:,} | {r['attn_params']:,} | {r['batch_size']} | "
                     f"{r['amp']} | {r['ms_per_step']:.2f} | {r['ms_min']:.2f} | {r['ms_max']:.2f} | "
                     f"{_f(r.get('peak_mem_gib'))} |")
    if doc.get("cost_estimates"):
        L += ["", "Device-hours of the paper-size sweeps from these step times (Σ max_steps × ms/step, one "
              "trial at a time: an upper bound; grokking trials with weight decay stop after_grok past their grok):", "",
              "| sweep | step times of | amp | trials | steps | device-hours (upper bound) |", "|---|---|---|---|---|---|"]
        for c in doc["cost_estimates"]:
            if "error" in c:
                L.append(f"| {c['error']} | | | | | |")
                continue
            h = c["device_hours_upper_bound"]
            L.append(f"| {c['sweep']} | {c['step_times_preset']} presets | {c['amp']} | {c['trials']} | {c['steps']:,} | "
                     f"{'missing ' + ', '.join(c['missing_step_times']) if h is None else format(h, '.2f')} |")
    mc = doc.get("monitor_cost") or {}
    if mc.get("rows"):
        L += ["", f"## Monitor cost per snapshot (W = {mc['window']}, float32; copy bandwidth "
              f"{mc['copy_bandwidth_gb_s']:.0f} GB/s)", "",
              "| P | mode | backend | ms/snapshot | read ring ms | × read | bytes floor ms | × floor | state MiB |",
              "|---|---|---|---|---|---|---|---|---|"]
        for r in mc["rows"]:
            if "ms_per_snapshot" not in r:
                L.append(f"| {r['P']:,} | {r['mode']} | {r.get('skipped')} | | | | | | |")
                continue
            L.append(f"| {r['P']:,} | {r['mode']}{'' if r['sketch_dim'] is None else ' d=' + str(r['sketch_dim'])} | "
                     f"{r['backend']} | {r['ms_per_snapshot']:.3f} | {_f(r.get('read_ring_ms'))} | {_f(r.get('x_read_ring'))} | "
                     f"{r['floor_ms']:.3f} | {r['x_floor']:.2f} | {r['state_mib']} |")
    sw = doc.get("sweep") or {}
    if sw.get("trials"):
        L += ["", f"## Sweep `{sw['sweep']}` ({sw['planned']} planned trials)", "",
              f"- counts: {sw['counts']}; complete: {sw['complete']}",
              f"- wall {sw['wall_s']} s (deadline {sw['deadline_s_after_start']} s), sum of trial walls "
              f"{sw['sum_trial_wall_s']} s, concurrency {sw['concurrency']}, {sw['workers']} workers × "
              f"{sw['threads_per_worker']} threads; {sw['steps_total']:,} steps, {sw['steps_per_s']} steps/s"]
        if sw.get("overrides"):
            L.append(f"- dry-run overrides of the spec: `{json.dumps(sw['overrides'])}`")
    ag = doc.get("aggregate") or {}
    if ag.get("precedence_table"):
        L += ["", f"### Precedence (aggregate_sweep, use_ray=False, {ag['wall_s']} s)", "",
              ag["precedence_sentence"] + (f" — {ag['n_running']} run(s) still running (cut): provisional"
                                           if ag.get("n_running") else ""), "", "```",
              ag["precedence_table"], "```"]
    if sw.get("trials"):
        runs = {r["trial_id"]: r for r in ag.get("runs", [])}
        L += ["", "| trial | status | steps | max steps | grok step | preceded | wall s |", "|---|---|---|---|---|---|---|"]
        for tid in sw["order"]:
            t = sw["trials"][tid]
            r = runs.get(tid, {})
            L.append(f"| {tid} | {t['status']} | {t['steps']} | {t['max_steps']} | {_f(r.get('grok_step'))} | "
                     f"{_f(r.get('preceded'))} | {_f(t.get('wall_s'))} |")
    (out / "device_check.md").write_text("\n".join(L) + "\n")


# ------------------------------------------------------------------------------------------
# main
# ------------------------------------------------------------------------------------------

SECTIONS = ("checks", "steptime", "monitor", "sweep", "aggregate")
CHECKS = {"monitor_device_vs_cpu": check_monitor, "monitor_restore": check_restore,
          "sketch_device_vs_cpu": check_sketch, "amp_bf16_step": check_amp,
          "trainer_placement": check_placement}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, help="output folder ($OUT on the device machine)")
    ap.add_argument("--cpu", action="store_true", help="run on the CPU (the dry run); else CUDA is required")
    ap.add_argument("--tiny", action="store_true", help="tiny presets and sizes (the dry run)")
    ap.add_argument("--budget", type=float, default=None,
                    help="seconds for the whole run (default 450 on a GPU, 110 with --tiny); the sweep "
                         "gets what the other sections leave, less --reserve")
    ap.add_argument("--reserve", type=float, default=None,
                    help="seconds kept after the sweep's deadline for aggregation and the bundle "
                         "(default 75, 25 with --tiny)")
    ap.add_argument("--sections", default=",".join(SECTIONS), help=f"comma list of {SECTIONS}")
    ap.add_argument("--workers", type=int, default=None,
                    help="trial worker processes (default: as Tune would place the spec's trials on this "
                         "machine: CPUs / cpu per trial, on a GPU also 1 / gpu per trial; at least 2)")
    ap.add_argument("--threads", type=int, default=None,
                    help="torch threads of this process (checks, step times, the CPU reference; default: "
                         "1 with --cpu — two OpenMP threads on a busy 2-core machine stall — else torch's)")
    ap.add_argument("--order", default="positives-first", choices=("positives-first", "longest-first"),
                    help="trial order (see TrialPool.run)")
    ap.add_argument("--sweep-file", default=str(SWEEP_FILE))
    ap.add_argument("--workdir", default=None, help="where the sweep's storage goes (default: a temp dir)")
    args = ap.parse_args(argv)

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    budget = args.budget if args.budget is not None else (110.0 if args.tiny else 450.0)
    reserve = args.reserve if args.reserve is not None else (25.0 if args.tiny else 75.0)
    t_start = time.monotonic()
    end = t_start + budget
    sections = [s.strip() for s in args.sections.split(",") if s.strip()]
    bad = sorted(set(sections) - set(SECTIONS))
    if bad:
        ap.error(f"unknown section(s) {bad}; allowed: {', '.join(SECTIONS)}")

    def on_term(signum, _frame):
        raise KeyboardInterrupt(f"signal {signum}")
    signal.signal(signal.SIGTERM, on_term)

    rec = Record(out, args)
    rec.doc["budget_s"] = budget
    import torch

    if args.threads or args.cpu:
        torch.set_num_threads(args.threads or 1)

    if args.cpu:
        device = torch.device("cpu")
    elif torch.cuda.is_available():
        device = torch.device("cuda", 0)
    else:
        rec.doc["error"] = "no CUDA device (torch.cuda.is_available() is False); use --cpu for the dry run"
        rec.save()
        log(rec.doc["error"])
        return 2
    rec.doc["environment"] = environment(device)
    log(f"device {device}: {rec.doc['environment'].get('gpu', {}).get('name', platform.processor() or 'cpu')}; "
        f"torch {torch.__version__}; budget {budget:.0f}s")
    rec.save()
    step_ms: dict = {}
    interrupted = None
    pool = spec = None
    workdir = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="edgesweep-devcheck-"))
    storage = workdir / "results"
    try:
        if "sweep" in sections:
            # Start the trial workers now: their imports overlap the sections before the sweep.
            spec = sweep_spec(args.tiny, storage, Path(args.sweep_file))
            workers = args.workers or default_workers(spec, os.cpu_count() or 2, device.type == "cuda")
            cpu_per = max(1, int(math.ceil(spec.trial_resources.get("cpu", 1) or 1)))
            threads = max(1, min(cpu_per, (os.cpu_count() or 2) // workers))
            pool = TrialPool(workers, threads, storage, spec.name)
            log(f"started {workers} trial workers × {threads} threads for {len(spec.trials)} trials")
        if "checks" in sections:
            with rec.section("checks"):
                for name, fn in CHECKS.items():
                    rec.check(name, fn, device, args.tiny)
        if "steptime" in sections:
            with rec.section("steptime") as entry:
                rec.doc["steptime"] = steptime(device, args.tiny, deadline=min(end - reserve, time.monotonic()
                                                                               + (30 if args.tiny else 90)))
                failed = [r["workload"] for r in rec.doc["steptime"] if "error" in r]
                if failed:
                    entry["status"] = "error"
                    entry["error"] = f"{len(failed)} run(s) failed: {', '.join(failed)}"
            step_ms = {r["workload"]: r["ms_per_step"] for r in rec.doc["steptime"]
                       if "ms_per_step" in r and not r["amp"] and r["optimizer"] == "adamw"}
            try:
                rec.doc["cost_estimates"] = cost_estimates(rec.doc["steptime"])
            except Exception as exc:  # noqa: BLE001
                rec.doc["cost_estimates"] = [{"error": f"{type(exc).__name__}: {exc}"}]
        if "monitor" in sections:
            with rec.section("monitor"):
                rec.doc["monitor_cost"] = monitor_cost(device, args.tiny, deadline=min(
                    end - reserve, time.monotonic() + (20 if args.tiny else 60)))
        if device.type == "cuda":
            torch.cuda.empty_cache()
        if pool is not None:
            with rec.section("sweep") as entry:
                left = end - reserve - time.monotonic()
                entry["seconds_given"] = round(left, 1)
                log(f"   {len(spec.trials)} trials, deadline in {left:.0f}s")
                rec.doc["sweep"] = pool.run(spec, time.time() + max(0.0, left), step_ms, order=args.order)
                if args.tiny:
                    rec.doc["sweep"]["overrides"] = TINY_OVERRIDES
                sw = rec.doc["sweep"]
                log(f"   sweep: {sw['counts']} in {sw['wall_s']}s, {sw['steps_per_s']} steps/s")
                if sw["interrupted"]:
                    raise KeyboardInterrupt(sw["interrupted"])
                status, why = sweep_verdict(sw)
                entry["status"] = status
                entry[("error" if status == "error" else "note")] = why
        if "aggregate" in sections and rec.doc["sweep"].get("counts"):
            with rec.section("aggregate") as entry:
                ran = sum(v for k, v in rec.doc["sweep"]["counts"].items() if k != "not_started")
                if ran == 0:
                    entry["status"] = "skipped: no trial started before the deadline"
                else:
                    rec.doc["aggregate"] = aggregate(storage, spec.name, trial_figures=not args.tiny)
                    print(rec.doc["aggregate"]["precedence_table"], flush=True)
                    log("   " + rec.doc["aggregate"]["precedence_sentence"])
    except KeyboardInterrupt as exc:
        interrupted = str(exc) or "interrupted"
        rec.doc["interrupted"] = interrupted
        log(f"interrupted: {interrupted}")
    finally:
        if pool is not None:
            pool.close()
        if spec is not None and (storage / spec.name).is_dir():
            # whatever the sweep stored, aggregated or not (also after an interrupt)
            try:
                rec.doc["bundle"] = bundle(storage, spec.name, out)
            except Exception as exc:  # noqa: BLE001
                rec.doc["bundle"] = {"error": f"{type(exc).__name__}: {exc}"}
        if not args.workdir:  # the sweep's storage is in sweep.tar.gz now
            shutil.rmtree(workdir, ignore_errors=True)
    checks_ok = len(rec.doc["checks"]) == len(CHECKS) and all(c.get("ok") for c in rec.doc["checks"].values())
    sections_ok = all(s["status"] in ("ok",) or s["status"].startswith("skipped") for s in rec.doc["sections"].values())
    rec.doc["all_checks_passed"] = checks_ok if "checks" in sections else None
    rec.doc["finished"] = interrupted is None
    rec.save()
    write_markdown(rec.doc, out)
    rec.save()
    log(f"done in {rec.elapsed():.1f}s: checks {'PASS' if checks_ok else 'FAIL'}, sections "
        f"{'ok' if sections_ok else 'with errors'} → {out}")
    ok = sections_ok and interrupted is None and (checks_ok or "checks" not in sections)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
