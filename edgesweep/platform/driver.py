"""The job driver behind `python -m edgesweep run SWEEP.yaml` (DESIGN.md §3.1).

Order matters: the spec is validated and the storage root probed *before* Ray is imported,
so a bad spec never starts a cluster. Then one Tune trial per grid point runs
(:func:`.trainable.run_trial`), a compact progress view goes to the driver log, failed trials
are recorded in the ``trials`` table with their error, and the aggregation + report run.
"""

from __future__ import annotations

import fnmatch
import math
import os
import shlex
import signal
import socket
import threading
import time
from dataclasses import asdict
from pathlib import Path

import pyarrow.fs as pafs

from ..storage.checks import holds_a_table
from ..storage.errors import StorageError
from ..storage.fs import Root, env_seconds, resolve_root
from ..storage.liveness import (STALE_HEARTBEATS, DriverRecord, driver_gone, read_driver_record,
                                 write_driver_record)
from ..storage.integrity import DRIVER_FILES
from ..storage.sweep import SweepPath
from .outcome import sweep_outcome
from .resources import RESOURCE_TIMEOUT_ENV, check_trial_resources, looks_autoscaling, reuse_workers
from .secrets import keep_credentials_out_of_runtime_envs
from .spec import DEFAULT_MAX_TRIALS, SpecError, SweepSpec, TrialSpec, load_spec
from .spec_record import SPEC_RECORD, read_spec_record, spec_changes, spec_record
from .tune_logs import install_tune_log_filters
from .tune_state import (TUNE_STATE, has_experiment_state, local_state_copies, trial_errors_from_tune,
                         tune_state_problem)

TUNE_DIR = "_tune"  # Tune's experiment state inside the sweep folder (hidden from scans)
#: Seconds between writing this driver's record and reading it back. Two drivers started on one
#: sweep at the same moment both find no live driver; the later write wins, and the earlier
#: writer, reading the other's record back, gives up before Tune writes anything.
CLAIM_SETTLE_S = 2.0


def _log(msg: str) -> None:
    print(f"[edgesweep {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def _inside_ray_job_package() -> bool:
    cwd = os.getcwd()
    return "runtime_resources" in cwd and "working_dir_files" in cwd


def resolve_storage(storage: str) -> str:
    """Absolute local path or s3:// URI. A relative path inside a `ray job submit` working
    dir would land in a temporary copy that Ray deletes, so it is anchored at
    $EDGESWEEP_RESULTS_BASE (default: the home directory) instead, and said so."""
    resolve_root(storage)  # refuses what the storage layer does not (s3:/x, ~nouser/…), naming it
    if "://" in storage:
        return storage  # a URI (s3://, gs://, file://) the storage layer accepted
    path = Path(os.path.expanduser(storage))
    if path.is_absolute():
        return str(path)
    if _inside_ray_job_package():
        base = Path(os.environ.get("EDGESWEEP_RESULTS_BASE", Path.home()))
        anchored = (base / path).resolve()
        _log(f"storage {storage!r} is relative and this is a Ray job working dir (deleted after "
             f"the job); writing to {anchored} instead (set EDGESWEEP_RESULTS_BASE or an absolute path)")
        return str(anchored)
    return str(path.resolve())


def check_storage_root(spec: SweepSpec, storage: str) -> None:
    """SpecError when ``storage`` is a sweep's folder or lies inside one (the new sweep would sit
    beside or among its tables, and readers would find that folder ambiguous — its tables
    hiding the new sweep or the reverse), or is a file; before anything is created. A sweep's
    folder is one holding tables or the driver's files (``_driver.json``, ``_spec.json``,
    ``_tune``): a folder merely named ``runs`` or ``trials`` is not one."""
    try:
        root = resolve_root(storage)
        kind = root.info(root.base).type
        if kind not in (pafs.FileType.Directory, pafs.FileType.NotFound):
            raise SpecError(f"{spec.source}: storage: {storage} is a file, not a folder")
        if kind == pafs.FileType.Directory and _is_sweep_folder(root, root.base):
            raise SpecError(f"{spec.source}: storage: {storage} is itself a sweep's folder (it holds tables or "
                            "a driver's state); give the folder that holds the sweep folders (its parent, for this one)")
        parts = root.base.rstrip("/").split("/")
        for depth in range(len(parts) - 1, 0, -1):  # every folder above it
            folder = "/".join(parts[:depth]) or "/"
            if root.is_dir(folder) and _is_sweep_folder(root, folder):
                raise SpecError(f"{spec.source}: storage: {storage} lies inside the sweep folder "
                                f"{root.display(folder)}; give the folder that holds the sweep folders (a storage root)")
    except StorageError as exc:
        raise SpecError(f"{spec.source}: storage: {exc}") from None


def _is_sweep_folder(root, folder: str) -> bool:
    return holds_a_table(root, folder) or any(root.exists(f"{folder.rstrip('/')}/{n}") for n in DRIVER_FILES)


def stored_tables(root, name: str) -> list[str]:
    """The raw tables a sweep folder ``name`` already holds (another run's rows, or a copy's)."""
    return [t for t in ("trials", "features", "evals") if root.exists(root.path(name, t))]


def stored_sweep_note(spec: SweepSpec, storage: str) -> str | None:
    """What `run` would find at ``storage/<name>`` — this sweep's Tune state, or another run's
    tables — said before it is tried; None when the folder is new or empty."""
    root = resolve_root(storage)
    where = f"{storage}/{spec.name}"
    exp_path = root.path(spec.name, TUNE_DIR)
    if root.exists(exp_path):
        if not has_experiment_state(root, exp_path):
            return (f"{where}/{TUNE_DIR} holds no experiment state (its driver stopped before Tune saved any): "
                    "`run` and `run --resume` refuse it, saying what can be done")
        if (problem := tune_state_problem(root, exp_path)) is not None:
            return (f"{where} already holds this sweep's state, but {root.display(problem.path)} {problem.why}: "
                    "`run --resume` refuses it, saying what can still be done")
        return (f"{where} already holds this sweep's state: `run` refuses to start it again; `run --resume` "
                "continues it")
    tables = stored_tables(root, spec.name)
    if tables:
        return (f"{where} already holds tables ({', '.join(tables)}) but no sweep state: `run` refuses to mix "
                "its trials with them; use another name or storage")
    return None


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


def check_ray_address(addr: str, timeout_s: float = 10.0) -> None:
    """A host:port given as the cluster (--address, RAY_ADDRESS) that nothing answers on fails
    here, in seconds, with one line: ray.init keeps retrying its connection for minutes and
    prints only its own warnings. ``auto``, ``local`` and ``ray://`` addresses are Ray's to resolve."""
    if addr in ("auto", "local") or "://" in addr:
        return
    host, sep, port = addr.rpartition(":")
    if not sep or not port.isdigit() or not host:
        return  # Ray names a malformed address itself
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s):
            pass
    except OSError as exc:
        raise ConnectionError(f"Ray at {addr}: nothing answers there ({exc.strerror or exc}); start the cluster's "
                              "head (`ray start --head`) or give its address: host:port of its GCS, port 6379 "
                              "by default") from None


def connect_ray(address: str | None):
    import ray
    if ray.is_initialized():
        return ray
    addr = address or os.environ.get("RAY_ADDRESS")
    if addr:
        _log(f"connecting to Ray at {addr}")
        check_ray_address(addr)
        ray.init(address=addr)
    else:
        # "local" never attaches to a stale cluster recorded in /tmp/ray.
        _log("no Ray cluster given (--address / RAY_ADDRESS): starting a local one")
        ray.init(address="local", include_dashboard=False)
    res = ray.cluster_resources()
    _log(f"cluster: {len(ray.nodes())} node(s), {res.get('CPU', 0):g} CPU, {res.get('GPU', 0):g} GPU")
    return ray


def _progress_callback(total: int, every_s: float, heartbeat=None):
    from ray import tune

    class ProgressView(tune.Callback):
        """One readable line per event and a periodic summary, instead of Tune's tables; and
        the driver's heartbeat (``heartbeat()``, throttled by its caller) on every loop step."""

        def __init__(self):
            self.last = {}
            self.status = {}
            self.t_print = 0.0
            self.t_start = time.time()
            self.seeded = False

        def on_step_end(self, iteration, trials, **info):
            if heartbeat is not None:
                heartbeat()
            if not self.seeded:  # a resumed run's trials that finished before it: counted as done
                self.seeded = True
                for trial in trials:
                    if trial.status == "TERMINATED":
                        self.status.setdefault(self._id(trial), "done")

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


def live_driver(sp: SweepPath) -> DriverRecord | None:
    """The record of a driver that may still be running this sweep (storage/liveness.py), or None."""
    rec = read_driver_record(sp)
    return rec if rec is not None and driver_gone(rec) is None else None


def another_driver(spec: SweepSpec, sp: SweepPath, rec: DriverRecord, resume: bool) -> SpecError:
    """Why this driver may not run the sweep: another one is (two drivers train the same trials
    into the same files: corrupt parts, trials failing on each other's checkpoints)."""
    remote = rec.hostname != socket.gethostname()
    return SpecError(
        f"{spec.source}: storage: {sp.uri} is being run by another driver (pid {rec.pid} on {rec.hostname}, "
        f"started {rec.started_at}, last heartbeat {rec.heartbeat_at}); {'resuming' if resume else 'starting'} "
        f"it as well would train the same trials into the same files. Wait for it to end (`edgesweep status "
        f"{shlex.quote(sp.text)} --watch`), or stop it and then run with --resume"
        + (f" (a driver on another host counts as gone {STALE_HEARTBEATS * float(rec.heartbeat_s):g} s after "
           "its last heartbeat)" if remote else ""))


class _Heartbeat:
    """The driver record (storage/liveness.py): claimed at start, refreshed at most every
    ``heartbeat_s`` from Tune's loop, closed with the outcome. A failed refresh is logged,
    never fatal: the record only tells readers whether this driver still lives.

    Claiming it is what keeps a second driver off the sweep: refused while another driver's
    record says it may be alive; then written, read back after :data:`CLAIM_SETTLE_S`, and
    refused if another driver's write replaced it meanwhile."""

    def __init__(self, sp: SweepPath, spec: SweepSpec, resume: bool):
        self.sp, self.rec = sp, DriverRecord.start()
        if (other := live_driver(sp)) is not None:
            raise another_driver(spec, sp, other, resume)
        write_driver_record(sp, self.rec)
        time.sleep(CLAIM_SETTLE_S)
        now = read_driver_record(sp)
        if now is None or asdict(now) != asdict(self.rec):
            raise another_driver(spec, sp, now or self.rec, resume)
        self.t_last = time.monotonic()

    def __call__(self) -> None:
        if time.monotonic() - self.t_last < self.rec.heartbeat_s:
            return
        self.t_last = time.monotonic()
        self.rec.beat()
        try:
            write_driver_record(self.sp, self.rec)
        except StorageError as exc:
            _log(f"WARNING: driver heartbeat not written: {exc}")

    def end(self, outcome: str, counts: dict) -> None:
        """Close the record with the outcome. A failed write is logged, not raised: it comes at
        the end of a run whose storage just failed (a full disk), and raising it here cost the
        run its summary, its failures and its resume command (and, on error, its own exception)."""
        self.rec.end(outcome, counts)
        try:
            write_driver_record(self.sp, self.rec)
        except (StorageError, OSError) as exc:
            _log(f"WARNING: the driver record could not be closed ({exc}); `edgesweep status` calls this "
                 "driver gone once its last heartbeat is old")


def resume_command(spec_source: str | os.PathLike, storage: str | None) -> str:
    """The command that continues this sweep: the same spec and the same ``--storage`` override."""
    cmd = f"edgesweep run {shlex.quote(str(spec_source))} --resume"
    return cmd + (f" --storage {shlex.quote(storage)}" if storage else "")


def _sigterm_as_ctrl_c(signum, frame) -> None:
    _log("SIGTERM received: stopping the sweep as on Ctrl-C (a second one stops at once)")
    signal.raise_signal(signal.SIGINT)


def _check_resumed_spec(spec: SweepSpec, sp: SweepPath) -> None:
    """A resume runs the trials the sweep was started with (Tune restores its own copies), so
    a spec that differs from ``_spec.json`` is refused, naming what changed. A sweep started
    before the record existed cannot be compared: said, not refused."""
    try:
        recorded = read_spec_record(sp)
    except (StorageError, OSError, ValueError) as exc:
        _log(f"WARNING: {sp.uri}/{SPEC_RECORD} is unreadable ({exc}); the spec is not compared with the "
             "one the sweep was started with, and Tune continues the trials it was started with")
        return
    if recorded is None:
        _log(f"WARNING: no {SPEC_RECORD} in {sp.uri} (a sweep started before edgesweep recorded it): the "
             "spec is not compared; Tune continues the trials the sweep was started with")
        return
    changes = spec_changes(recorded, spec)
    if changes:
        raise SpecError(f"{spec.source}: --resume: the trials differ from those sweep {spec.name!r} was started "
                        f"with ({sp.uri}/{SPEC_RECORD}), and a resume can only continue those: "
                        + "; ".join(changes) + ". Resume with the original spec, or run the changed one "
                        "under another name or storage")


def record_failures(spec: SweepSpec, storage_uri: str, errors: list[tuple[TrialSpec, str]]) -> list[tuple[str, str]]:
    """Mark each trial of ``errors`` failed in the trials table, with its error; returns (trial
    id, the error's last line) for the log. A trial the table records as finished is left as it
    is: its error is from an earlier attempt (Tune's error.txt keeps every failure, also of a
    trial that then finished on a retry). A write that fails is a warning: one trial's
    bookkeeping must not cost the others their outcome, aggregation and report."""
    import polars as pl

    from ..storage import next_attempt, recorded_trial, write_table
    from ..storage.schema import FINISHED
    from .trainable import trial_row

    failed = []
    for trial, error in errors:
        # Python's caret lines (`^^^^`, `~~~^~~`) point into source the reader does not have
        text = [ln for ln in error.strip().splitlines() if ln.strip(" ^~")]
        try:
            recorded = recorded_trial(storage_uri, spec.name, trial.trial_id, trial.partition)
            if recorded is not None and recorded["status"] in FINISHED:
                continue
            failed.append((trial.trial_id, text[-1] if text else repr(error)))
            # Keep what the trial recorded (start time, node, pid); mark it failed with the error.
            row = recorded or trial_row(
                trial, spec.name, next_attempt(storage_uri, spec.name, trial.trial_id, trial.partition), "failed")
            row.update(status="failed", error="\n".join(text[-20:])[:4000])
            write_table(storage_uri, spec.name, "trials", pl.DataFrame([row]))
        except (StorageError, OSError, ValueError) as exc:
            _log(f"WARNING: trial {trial.trial_id}: its failure could not be recorded in the trials table "
                 f"({type(exc).__name__}: {exc})")
    return failed


def check_tune_state(spec: SweepSpec, root: Root, exp_path: str) -> None:
    """Refuse a resume whose Tune state is damaged or was written by other code
    (:mod:`.tune_state`) before a cluster starts, naming the file and what can still be done."""
    problem = tune_state_problem(root, exp_path)
    if problem is None:
        return
    advice = "Resume it with the edgesweep and Ray that started it. " if problem.foreign else ""
    if not problem.foreign and not root.is_object_store and fnmatch.fnmatch(problem.path.rpartition("/")[2], TUNE_STATE):
        copies = local_state_copies(problem.path.rpartition("/")[2])
        if copies:  # Tune's own copy in the Ray session folder, whole where the stored one was cut
            advice = (f"An intact copy Tune kept on this machine: {copies[0]}; `cp {shlex.quote(copies[0])} "
                      f"{shlex.quote(root.display(problem.path))}`, then --resume again, continues it. ")
    raise SpecError(f"{spec.source}: --resume: Tune's state {root.display(problem.path)} {problem.why}, so this "
                    f"sweep cannot be resumed from it. {advice}Its stored rows are intact (`edgesweep verify` checks them, "
                    "`edgesweep aggregate` summarises what finished; `edgesweep status` lists the unfinished "
                    "trials, which a new sweep under another name can run)")


def run_sweep(spec_path: str, storage: str | None = None, resume: bool = False,
              address: str | None = None, aggregate: bool = True,
              max_trials: int = DEFAULT_MAX_TRIALS, resource_timeout: float | None = None) -> int:
    spec = load_spec(spec_path, storage=storage, max_trials=max_trials)
    try:
        storage_uri = resolve_storage(spec.storage)
    except StorageError as exc:
        raise SpecError(f"{spec.source}: storage: {exc}") from None
    check_storage_root(spec, storage_uri)
    root = resolve_root(storage_uri)
    exp_path = root.path(spec.name, TUNE_DIR)
    _log(f"sweep {spec.name!r}: {len(spec.trials)} trials → {storage_uri}/{spec.name}")
    for note in spec.notes:
        _log(f"note: {note}")
    if (low := root.low_space()) is not None:
        _log(f"warning: {low}; a trial that cannot store its rows fails (`edgesweep status` says so)")

    sweep_path = SweepPath.parse(f"{storage_uri}/{spec.name}")
    if (other := live_driver(sweep_path)) is not None:  # before "use --resume": that is no answer now
        raise another_driver(spec, sweep_path, other, resume)
    exists = root.exists(exp_path)
    if exists and not has_experiment_state(root, exp_path):
        tables = stored_tables(root, spec.name)
        raise SpecError(f"{spec.source}: storage: {storage_uri}/{spec.name}/{TUNE_DIR} holds no experiment state "
                        "(its driver stopped before Tune saved any), so there is nothing to resume: " + (
                            f"the rows it stored ({', '.join(tables)}) stay there (`edgesweep aggregate` "
                            "summarises them); run the sweep again under another name or storage"
                            if tables else "remove that folder and run again without --resume"))
    fs = root.fs if root.is_s3 else None  # the same S3 client settings as our tables
    if not resume:  # (a resume's refusals below come first: they must leave no folder behind)
        check_storage_writable(spec, storage_uri)
    # User errors first: nothing below may start a cluster before these are settled.
    from ray import tune  # importing Tune starts nothing
    if resume and (not exists or not tune.Tuner.can_restore(exp_path, storage_filesystem=fs)):
        raise SpecError(f"{spec.source}: --resume: no sweep state at {storage_uri}/{spec.name}/{TUNE_DIR} "
                        "to resume (run without --resume to start it)")
    if not resume and exists:
        raise SpecError(f"{spec.source}: storage: {storage_uri}/{spec.name} already holds this sweep's "
                        "state; use --resume to continue it, `edgesweep aggregate` to re-aggregate, "
                        "or another name/storage to start afresh")
    if not resume:
        tables = stored_tables(root, spec.name)
        if tables:  # stored rows but no Tune state: another run's data, or a copy of one
            raise SpecError(f"{spec.source}: storage: {storage_uri}/{spec.name} already holds tables "
                            f"({', '.join(tables)}) but no sweep state to resume; this run would mix its trials "
                            "with them. Use another name/storage, or `edgesweep aggregate` to summarise them")
    else:
        check_tune_state(spec, root, exp_path)
        _check_resumed_spec(spec, sweep_path)
        check_storage_writable(spec, storage_uri)

    # Settings from the environment, checked before a cluster starts (a NaN would wait forever).
    if resource_timeout is None:
        resource_timeout = env_seconds(RESOURCE_TIMEOUT_ENV, None)
    env_seconds("EDGESWEEP_STORAGE_RETRY_S", None)

    from .trackers import tracker_callbacks, tracker_failures  # `loggers:`; a missing package fails here
    trackers = tracker_callbacks(spec, storage_uri)

    # Our progress view replaces Tune's tables and its checkpoint-sync chatter.
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    # Tune's automatic per-trial loggers (progress.csv, result.json, TensorBoard events) write
    # every result of every trial a second time; the Parquet tables are the record and the
    # `loggers:` trackers are explicit callbacks (not affected). Off unless the user sets it.
    os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
    if os.environ["TUNE_DISABLE_AUTO_CALLBACK_LOGGERS"] == "1":
        # The result grid then finds no result.json to read metrics from and warns once per
        # trial; the driver reads only errors and configs from it (the tables hold the rest).
        import logging
        logging.getLogger("ray.tune.analysis.experiment_analysis").setLevel(logging.ERROR)
    install_tune_log_filters()
    ray = connect_ray(address)
    check_trial_resources(ray, spec, resource_timeout, log=_log)  # never wait on the impossible
    if not root.is_s3 and len(ray.nodes()) > 1:
        _log(f"WARNING: storage {storage_uri} is a local path and the cluster has {len(ray.nodes())} "
             "nodes; every node must see it as the same shared filesystem, otherwise use s3://")

    from .trainable import run_trial

    trainable = tune.with_resources(run_trial, {"cpu": spec.trial_resources["cpu"],
                                                "gpu": spec.trial_resources["gpu"]})
    heartbeat = _Heartbeat(sweep_path, spec, resume)  # refuses if another driver runs it
    # From the claim on, a failure closes the record with it (a damaged state Tune cannot
    # unpickle, a storage error): left open, it names this driver until its pid is gone.
    try:
        if not resume:  # what a later --resume compares its spec with (spec_record.py)
            sweep_path.write_bytes(SPEC_RECORD, spec_record(spec))
        callbacks = [_progress_callback(len(spec.trials), every_s=30.0, heartbeat=heartbeat)] + trackers
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
            alive = sum(1 for n in ray.nodes() if n.get("Alive"))
            reuse = reuse_workers(alive, looks_autoscaling(), os.environ.get("EDGESWEEP_REUSE_WORKERS"))
            param_space = {"trial": tune.grid_search([t.as_dict() for t in spec.trials]),
                           "sweep": {"name": spec.name, "storage": storage_uri,
                                     "cpus_per_trial": spec.trial_resources["cpu"]}}
            tuner = tune.Tuner(trainable, param_space=param_space, run_config=run_config,
                               tune_config=tune.TuneConfig(
                                   trial_name_creator=lambda t: t.config["trial"]["trial_id"],
                                   trial_dirname_creator=lambda t: t.config["trial"]["trial_id"],
                                   # On one node a finished trial's worker runs the next one: no
                                   # process start and no torch import per trial (seconds each on a
                                   # busy CPU); each trial sets its own seeds and threads
                                   # (trainable.run_trial). Off on clusters (resources.reuse_workers).
                                   reuse_actors=reuse))
    except BaseException as exc:
        heartbeat.end(f"error: {type(exc).__name__}", {})
        raise
    keep_credentials_out_of_runtime_envs()  # Tune would write them into Ray's logs (secrets.py)
    t0 = time.time()
    # SIGTERM (`ray job stop`, a scheduler, `kill`) stops the sweep as Ctrl-C does: Tune's
    # graceful stop, the outcome counted from storage, the record closed, the resume command.
    # Ray's own handler would exit mid-loop with a native stack dump and no summary.
    main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _sigterm_as_ctrl_c) if main else None
    fit_error = None
    try:
        grid = tuner.fit()  # Tune turns the first Ctrl-C into a graceful stop and returns
        errors = [(TrialSpec.from_dict(r.config["trial"]), str(r.error)) for r in grid if r.error is not None]
    except KeyboardInterrupt:  # a second Ctrl-C
        errors = []
    except Exception as exc:  # noqa: BLE001 — Tune's own failure: what is stored still says what ran
        # E.g. on a full disk: Tune wrote empty error.pkl files and fails reading them back
        # while building its result grid (EOFError), after every trial ended. The outcome
        # below is read from storage and the trials' errors from their error.txt files.
        fit_error = exc
        _log(f"ERROR: Tune stopped with {type(exc).__name__}: {(str(exc).strip().splitlines() or [''])[-1][:300]}; "
             "the outcome below is read from storage")
        written = trial_errors_from_tune(root, exp_path, [t.trial_id for t in spec.trials])
        errors = [(t, written[t.trial_id]) for t in spec.trials if t.trial_id in written]
    except BaseException as exc:
        heartbeat.end(f"error: {type(exc).__name__}", {})
        raise
    finally:
        if main:
            signal.signal(signal.SIGTERM, previous)
    wall = time.time() - t0

    failed = record_failures(spec, storage_uri, errors)
    # What is stored, not what Tune's grid implies: after Ctrl-C unstarted trials have no error.
    outcome = sweep_outcome(spec, storage_uri)
    heartbeat.end(outcome.verdict, outcome.counts())
    _log(f"training {'finished' if outcome.complete else 'stopped'} after {wall:,.0f}s: {outcome.sentence()}")
    for tid, err in failed:
        _log(f"  failed: {tid}: {err}")
    for line in tracker_failures(trackers):
        _log(line)
    if (low := root.low_space()) is not None and (failed or fit_error or not outcome.complete):
        _log(f"storage: {low} — the likely cause; free space before resuming")
    if not outcome.complete:
        _log(f"the sweep did not finish: {len(outcome.interrupted)} trial(s) stopped midway "
             f"({', '.join(outcome.interrupted[:5]) or 'none'}) and {len(outcome.never_started)} never "
             f"started; `{resume_command(spec.source, storage)}` continues it, "
             f"`edgesweep aggregate {shlex.quote(f'{storage_uri}/{spec.name}')}` summarises what is stored")
        return 1 if fit_error is not None else 130

    if aggregate:
        from ..storage import scan
        from .aggregate import aggregate_sweep
        from .report import delayed_sentence, precedence_sentence, precedence_text
        out = aggregate_sweep(f"{storage_uri}/{spec.name}")
        summary = scan(out, "summary").collect()
        print(precedence_text(summary), flush=True)
        _log(precedence_sentence(summary))
        if delayed := delayed_sentence(scan(out, "runs").collect()):
            _log(delayed)
        _log(f"aggregated: {out}/runs, {out}/summary, {out}/scorecard.json; report: {out}/report.md")
    _log(f"results: {storage_uri}/{spec.name}  (query: python -m edgesweep query {shlex.quote(f'{storage_uri}/{spec.name}')} "
         "\"SELECT * FROM runs\")")
    return 1 if outcome.failed or fit_error is not None else 0
