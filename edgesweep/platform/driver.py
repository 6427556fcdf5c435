"""The job driver behind `python -m edgesweep run SWEEP.yaml` (DESIGN.md §3.1).

Order matters: the spec is validated and the storage root probed *before* Ray is imported,
so a bad spec never starts a cluster. Then one Tune trial per grid point runs
(:func:`.trainable.run_trial`), a compact progress view goes to the driver log, failed trials
are recorded in the ``trials`` table with their error, and the aggregation + report run.
"""

from __future__ import annotations

import math
import os
import time
from pathlib import Path

from ..storage.errors import StorageError
from ..storage.fs import resolve_root
from .spec import SpecError, SweepSpec, TrialSpec, load_spec

TUNE_DIR = "_tune"  # Tune's experiment state inside the sweep folder (hidden from scans)


def _log(msg: str) -> None:
    print(f"[edgesweep {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def _inside_ray_job_package() -> bool:
    cwd = os.getcwd()
    return "runtime_resources" in cwd and "working_dir_files" in cwd


def resolve_storage(storage: str) -> str:
    """Absolute local path or s3:// URI. A relative path inside a `ray job submit` working
    dir would land in a temporary copy that Ray deletes, so it is anchored at
    $EDGESWEEP_RESULTS_BASE (default: the home directory) instead, and said so."""
    if storage.startswith("s3://"):
        return storage
    path = Path(storage).expanduser()
    if path.is_absolute():
        return str(path)
    if _inside_ray_job_package():
        base = Path(os.environ.get("EDGESWEEP_RESULTS_BASE", Path.home()))
        anchored = (base / path).resolve()
        _log(f"storage {storage!r} is relative and this is a Ray job working dir (deleted after "
             f"the job); writing to {anchored} instead (set EDGESWEEP_RESULTS_BASE or an absolute path)")
        return str(anchored)
    return str(path.resolve())


def check_storage_writable(spec: SweepSpec, storage: str) -> None:
    """Create <storage>/<sweep> and write/delete a probe file; SpecError naming the path."""
    try:
        root = resolve_root(storage)
        sweep_dir = root.path(spec.name)
        root.fs.create_dir(sweep_dir, recursive=True)
        probe = root.path(spec.name, f".write-probe-{os.getpid()}")
        with root.fs.open_output_stream(probe) as out:
            out.write(b"ok")
        root.fs.delete_file(probe)
    except (OSError, StorageError) as exc:
        raise SpecError(f"{spec.source}: storage: cannot write to {storage}/{spec.name}: {exc}") from None


def connect_ray(address: str | None):
    import ray
    if ray.is_initialized():
        return ray
    addr = address or os.environ.get("RAY_ADDRESS")
    if addr:
        _log(f"connecting to Ray at {addr}")
        ray.init(address=addr)
    else:
        # "local" never attaches to a stale cluster recorded in /tmp/ray.
        _log("no Ray cluster given (--address / RAY_ADDRESS): starting a local one")
        ray.init(address="local", include_dashboard=False)
    res = ray.cluster_resources()
    _log(f"cluster: {len(ray.nodes())} node(s), {res.get('CPU', 0):g} CPU, {res.get('GPU', 0):g} GPU")
    return ray


def _progress_callback(total: int, every_s: float):
    from ray import tune

    class ProgressView(tune.Callback):
        """One readable line per event and a periodic summary, instead of Tune's tables."""

        def __init__(self):
            self.last = {}
            self.status = {}
            self.t_print = 0.0
            self.t_start = time.time()

        @staticmethod
        def _id(trial):
            return trial.config["trial"]["trial_id"]

        def on_trial_start(self, iteration, trials, trial, **info):
            self.status[self._id(trial)] = "running"

        def on_trial_result(self, iteration, trials, trial, result, **info):
            tid = self._id(trial)
            prev = self.last.get(tid, {})
            self.last[tid] = result
            if result.get("grok_step", -1) >= 0 and prev.get("grok_step", -1) < 0:
                _log(f"GROK  {tid} at step {result['grok_step']}"
                     + (f" (alarm at {result['alarm_step']})" if result.get("alarm_step", -1) >= 0 else ""))
            if result.get("alarm_step", -1) >= 0 and prev.get("alarm_step", -1) < 0:
                _log(f"ALARM {tid}: g23 collapse detector fired at step {result['alarm_step']}")
            if time.time() - self.t_print >= every_s:
                self.summary()

        def on_trial_complete(self, iteration, trials, trial, **info):
            tid = self._id(trial)
            self.status[tid] = "done"
            r = self.last.get(tid, {})
            _log(f"DONE  {tid}: {r.get('done_status', 'finished')} after {r.get('step', '?')} steps, "
                 f"test acc {r.get('test_acc', math.nan):.3f}, grok {_step(r.get('grok_step'))}")
            self.summary()

        def on_trial_error(self, iteration, trials, trial, **info):
            tid = self._id(trial)
            self.status[tid] = "failed"
            _log(f"FAIL  {tid}: {_error_text(trial)}")

        def on_trial_recover(self, iteration, trials, trial, **info):
            _log(f"RETRY {self._id(trial)}: worker failed ({_error_text(trial)}); restarting from its last checkpoint")

        def summary(self):
            self.t_print = time.time()
            counts = {s: list(self.status.values()).count(s) for s in ("done", "running", "failed")}
            rate = sum(r.get("steps_per_s", 0.0) for t, r in self.last.items() if self.status.get(t) == "running")
            groks = sum(1 for r in self.last.values() if r.get("grok_step", -1) >= 0)
            _log(f"trials {counts['done']}/{total} done, {counts['running']} running, {counts['failed']} failed"
                 f" | {rate:,.0f} steps/s | groks {groks} | {time.time() - self.t_start:,.0f}s elapsed")

    return ProgressView()


def _step(x):
    return "—" if x is None or x < 0 else str(int(x))


def _error_text(trial) -> str:
    msg = getattr(trial, "error_msg", None)
    if not msg:
        path = getattr(trial, "error_file", None)
        try:
            msg = Path(path).read_text() if path else None
        except OSError:
            msg = None
    if not msg:
        return "unknown error"
    lines = [ln for ln in str(msg).strip().splitlines() if ln.strip()]
    return lines[-1][:400] if lines else "unknown error"


def run_sweep(spec_path: str, storage: str | None = None, resume: bool = False,
              address: str | None = None, aggregate: bool = True) -> int:
    spec = load_spec(spec_path, storage=storage)
    storage_uri = resolve_storage(spec.storage)
    check_storage_writable(spec, storage_uri)
    root = resolve_root(storage_uri)
    exp_path = root.path(spec.name, TUNE_DIR)
    _log(f"sweep {spec.name!r}: {len(spec.trials)} trials → {storage_uri}/{spec.name}")

    exists = root.exists(exp_path)
    fs = root.fs if root.is_s3 else None  # the same S3 client settings as our tables
    # User errors first: nothing below may start a cluster before these are settled.
    from ray import tune  # importing Tune starts nothing
    if resume and (not exists or not tune.Tuner.can_restore(exp_path, storage_filesystem=fs)):
        raise SpecError(f"{spec.source}: --resume: no sweep state at {storage_uri}/{spec.name}/{TUNE_DIR} "
                        "to resume (run without --resume to start it)")
    if not resume and exists:
        raise SpecError(f"{spec.source}: storage: {storage_uri}/{spec.name} already holds this sweep's "
                        "state; use --resume to continue it, `edgesweep aggregate` to re-aggregate, "
                        "or another name/storage to start afresh")

    # Our progress view replaces Tune's tables and its checkpoint-sync chatter.
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    ray = connect_ray(address)
    if not root.is_s3 and len(ray.nodes()) > 1:
        _log(f"WARNING: storage {storage_uri} is a local path and the cluster has {len(ray.nodes())} "
             "nodes; every node must see it as the same shared filesystem, otherwise use s3://")

    from .trainable import next_attempt, recorded_trial, run_trial, trial_row
    import polars as pl
    from ..storage import write_table

    trainable = tune.with_resources(run_trial, {"cpu": spec.trial_resources["cpu"],
                                                "gpu": spec.trial_resources["gpu"]})
    callbacks = [_progress_callback(len(spec.trials), every_s=30.0)]
    if resume:
        _log("resuming: finished trials are kept, unfinished and errored ones continue from their checkpoints")
        tuner = tune.Tuner.restore(exp_path, trainable, resume_unfinished=True, resume_errored=True,
                                   storage_filesystem=fs)
        try:  # Tune does not persist callbacks; re-attach the progress view (private in Ray 2.60)
            tuner._local_tuner._run_config.callbacks = callbacks
        except AttributeError:
            _log("(progress view unavailable when resuming with this Ray version)")
    else:
        run_config = tune.RunConfig(
            name=TUNE_DIR,
            storage_path=root.path(spec.name),
            storage_filesystem=fs,
            failure_config=tune.FailureConfig(max_failures=spec.max_failures),
            checkpoint_config=tune.CheckpointConfig(num_to_keep=2),
            verbose=0,
            callbacks=callbacks,
        )
        param_space = {"trial": tune.grid_search([t.as_dict() for t in spec.trials]),
                       "sweep": {"name": spec.name, "storage": storage_uri,
                                 "cpus_per_trial": spec.trial_resources["cpu"]}}
        tuner = tune.Tuner(trainable, param_space=param_space, run_config=run_config,
                           tune_config=tune.TuneConfig(
                               trial_name_creator=lambda t: t.config["trial"]["trial_id"],
                               trial_dirname_creator=lambda t: t.config["trial"]["trial_id"],
                               reuse_actors=False))
    t0 = time.time()
    grid = tuner.fit()
    wall = time.time() - t0

    failed = []
    for result in grid:
        if result.error is None:
            continue
        trial = TrialSpec.from_dict(result.config["trial"])
        text = str(result.error).strip().splitlines()
        failed.append((trial.trial_id, text[-1] if text else repr(result.error)))
        # Keep what the trial recorded (start time, node, pid); mark it failed with the error.
        row = recorded_trial(storage_uri, spec.name, trial) or trial_row(
            trial, spec.name, next_attempt(storage_uri, spec.name, trial.trial_id, trial.partition), "failed")
        row.update(status="failed", error="\n".join(text[-20:])[:4000])
        write_table(storage_uri, spec.name, "trials", pl.DataFrame([row]))
    _log(f"training finished in {wall:,.0f}s: {len(spec.trials) - len(failed)} trials finished, "
         f"{len(failed)} failed")
    for tid, err in failed:
        _log(f"  failed: {tid}: {err}")

    if aggregate:
        from ..storage import scan
        from .aggregate import aggregate_sweep, precedence_sentence, precedence_text
        out = aggregate_sweep(f"{storage_uri}/{spec.name}")
        summary = scan(out, "summary").collect()
        print(precedence_text(summary), flush=True)
        _log(precedence_sentence(summary))
        _log(f"aggregated: {out}/runs, {out}/summary, {out}/scorecard.json; report: {out}/report.md")
    _log(f"results: {storage_uri}/{spec.name}  (query: python -m edgesweep query {storage_uri}/{spec.name} "
         "\"SELECT * FROM runs\")")
    return 1 if failed else 0
