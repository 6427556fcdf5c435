"""Experiment trackers — MLflow, TensorBoard, Weights & Biases — through Ray Tune's own logger
callbacks, chosen in the sweep spec::

    loggers: [mlflow, tensorboard, wandb]            # defaults
    loggers:                                         # or with options
      mlflow: {tracking_uri: http://mlflow:5000, experiment_name: grokking}
      wandb: {project: grokking, mode: offline}
      tensorboard: {}

Each tracker is the Ray integration itself (``MLflowLoggerCallback``, ``TBXLoggerCallback``,
``WandbLoggerCallback``), running on the driver, so it works the same on a laptop and on a
cluster. What each gets:

* one run per trial, named by the trial id, with the resolved config (Tune's ``trial.config``:
  ``{"trial": TrialSpec.as_dict(), "sweep": {...}}``) as parameters — flattened as
  ``trial/optimizer_settings/lr`` … by MLflow and TensorBoard's hparams, nested in W&B's config;
* at every report of the trainable (every evaluation and every checkpoint) the metrics in
  :data:`TRACKED` — the latest eval, the latest spectral scalars, and the grok / alarm events
  both as steps (−1 until they happen) and as 0/1 series. MLflow and TensorBoard put them at
  the training step (``timesteps_total``; Ray falls back to the report count for step 0);
  Ray's W&B actor logs at the report count, so choose ``step`` as the x-axis there.

Where the data go by default: MLflow → a SQLite store ``<sweep>/_mlflow/mlflow.db`` when the
storage is local (MLflow's file store now refuses to start unless ``MLFLOW_ALLOW_FILE_STORE``
is set; ``tracking_uri: file:…`` still works when it is), else ``$MLFLOW_TRACKING_URI``;
TensorBoard → ``<sweep>/_tune/<trial_id>/events.out.tfevents.*`` (Tune's trial folders:
``tensorboard --logdir <sweep>/_tune``); W&B → ``<sweep>/_wandb/wandb/`` (its run folders; in
offline mode ``wandb sync`` them later).

Failure policy: the Parquet tables are the source of truth, a tracker is a view. A tracker
whose hook raises (server down, disk full, a bad URI) is reported once in the driver log,
disabled for the rest of the sweep, and listed again when the sweep ends — it never fails a
trial nor the sweep (Tune runs callbacks inside its control loop, where an exception would
end the whole experiment). A tracker asked for but not installed is a spec error before any
cluster starts. Credentials are never spec keys: W&B and MLflow read theirs from their own
environment variables or login files, so none lands in a file the sweep or Tune writes.
"""

from __future__ import annotations

import importlib.util
import os
import time
from urllib.parse import urlsplit

import pyarrow.fs as pafs

from .spec import SpecError, SweepSpec

__all__ = ["TRACKED", "check_trackers", "trackers_not_installed", "tracker_callbacks", "tracker_failures"]

#: The keys of the trainable's reports that trackers get (everything else Tune adds — pid,
#: hostname, config, timings — stays out of the charts).
TRACKED = ("step", "steps_per_s", "attempt", "test_acc", "train_acc", "test_loss", "train_loss",
           "feature_step", "g23", "gap_ratio", "k_star", "adiabatic", "update_norm",
           "grok_step", "alarm_step", "grokked", "alarmed")
#: What Ray's loggers read the x-axis from (``timesteps_total``, else ``training_iteration``).
_AXES = ("timesteps_total", "training_iteration")

#: The module each tracker needs, and the extra that installs it.
_PACKAGES = {"mlflow": "mlflow", "tensorboard": "tensorboardX", "wandb": "wandb"}

_HOOKS = ("setup", "on_step_begin", "on_step_end", "on_trial_start", "on_trial_restore",
          "on_trial_save", "on_trial_result", "on_trial_complete", "on_trial_recover",
          "on_trial_error", "on_checkpoint", "on_experiment_end", "get_state", "set_state")


def _log(msg: str) -> None:
    print(f"[edgesweep {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def _tracked(result: dict) -> dict:
    return {k: result[k] for k in TRACKED + _AXES if k in result}


# ------------------------------------------------------------------------------------------
# The guard: a tracker never takes a trial down
# ------------------------------------------------------------------------------------------


class _Guarded:
    """Mixin placed before a Tune callback class: every hook Tune calls runs inside a
    try/except; the first exception disables the tracker (later hooks are skipped: a tracker
    whose server is down would otherwise stall the driver with retries at every result)."""

    tracker_name = "tracker"
    tracker_error: str | None = None

    def _disable(self, hook: str, exc: BaseException) -> None:
        self.tracker_error = f"{type(exc).__name__}: {exc}".strip().splitlines()[0][:400]
        _log(f"LOGGER {self.tracker_name} failed in {hook} ({self.tracker_error}); disabled for the "
             "rest of the sweep — trials go on, the Parquet tables are unaffected")


def _guard(hook: str):
    def method(self, *args, **kwargs):
        if self.tracker_error is not None:
            return None
        try:
            return getattr(super(_Guarded, self), hook)(*args, **kwargs)
        except Exception as exc:  # noqa: BLE001 — any tracker failure; see the module docstring
            self._disable(hook, exc)
            return None
    method.__name__ = hook
    return method


for _hook in _HOOKS:
    setattr(_Guarded, _hook, _guard(_hook))


def _guarded(cls: type, name: str) -> type:
    """``cls`` with every hook guarded; still an instance of the Ray class (Tune checks
    ``isinstance(c, TBXLoggerCallback)`` before adding its own TensorBoard logger)."""
    return type(f"Guarded{cls.__name__}", (_Guarded, cls), {"tracker_name": name})


# ------------------------------------------------------------------------------------------
# The three trackers
# ------------------------------------------------------------------------------------------


def _local_sweep_dir(storage_uri: str, sweep: str) -> str | None:
    """The sweep's folder as a local path (a ``file://`` root's too); None on an object store."""
    from ..storage.fs import resolve_root

    root = resolve_root(storage_uri)
    return os.path.join(root.base, sweep) if isinstance(root.fs, pafs.LocalFileSystem) else None


def _mlflow_store(opts: dict, spec: SweepSpec, storage_uri: str) -> tuple[str, str | None]:
    """(tracking URI, artifact folder of our default store or None); SpecError for a URI that
    cannot work or would write a credential into Tune's files."""
    sweep_dir = _local_sweep_dir(storage_uri, spec.name)
    uri = opts.get("tracking_uri") or os.environ.get("MLFLOW_TRACKING_URI")
    artifacts = None
    if not uri:
        if sweep_dir is None:
            raise SpecError(f"{spec.source}: loggers.mlflow.tracking_uri: needed when the storage is "
                            "s3:// or gs:// (or set MLFLOW_TRACKING_URI); a local default store would stay on the "
                            "driver")
        store = os.path.join(sweep_dir, "_mlflow")
        uri, artifacts = f"sqlite:///{os.path.join(store, 'mlflow.db')}", os.path.join(store, "artifacts")
    _refuse_credentials(uri, spec)
    return uri, artifacts


def _refuse_credentials(uri: str, spec: SweepSpec) -> None:
    parts = urlsplit(uri)
    if parts.username or parts.password:
        raise SpecError(f"{spec.source}: loggers.mlflow.tracking_uri: carries credentials; give them as "
                        "MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD (or MLFLOW_TRACKING_TOKEN) "
                        "instead, so they never land in a file Tune writes")


def _mlflow(opts: dict, spec: SweepSpec, storage_uri: str):
    from ray.air.integrations.mlflow import MLflowLoggerCallback

    uri, artifacts = _mlflow_store(opts, spec, storage_uri)
    experiment = opts.get("experiment_name") or spec.name

    class MLflowTracker(MLflowLoggerCallback):
        def setup(self, *args, **kwargs):
            if artifacts is not None:
                # Our default store: create the experiment with its artifacts beside the
                # database (MLflow would put them under the driver's working directory).
                import mlflow
                os.makedirs(os.path.dirname(artifacts), exist_ok=True)
                client = mlflow.MlflowClient(tracking_uri=uri)
                if client.get_experiment_by_name(experiment) is None:
                    client.create_experiment(experiment, artifact_location=artifacts)
            super().setup(*args, **kwargs)

        def log_trial_result(self, iteration, trial, result):
            super().log_trial_result(iteration, trial, _tracked(result))

    tags = {"edgesweep.sweep": spec.name, "edgesweep.storage": storage_uri, **opts.get("tags", {})}
    cb = _guarded(MLflowTracker, "mlflow")(tracking_uri=uri, experiment_name=experiment, tags=tags)
    return cb, f"mlflow → {uri} (experiment {experiment!r})"


def _tensorboard(opts: dict, spec: SweepSpec, storage_uri: str):
    from ray.tune.logger import TBXLoggerCallback

    class TensorBoardTracker(TBXLoggerCallback):
        def log_trial_result(self, iteration, trial, result):
            super().log_trial_result(iteration, trial, _tracked(result))

    where = f"{storage_uri}/{spec.name}/_tune"
    return _guarded(TensorBoardTracker, "tensorboard")(), f"tensorboard → {where} (tensorboard --logdir {where})"


def _wandb(opts: dict, spec: SweepSpec, storage_uri: str):
    from ray.air.integrations.wandb import WandbLoggerCallback, _WandbLoggingActor

    class ClosingActor(_WandbLoggingActor):
        """Ray's per-trial W&B actor, which returns only once W&B's service has closed the
        run's files. ``wandb.finish()`` returns before the service (wandb-core, a child of
        the actor's process) has written and closed the transaction log, and Ray kills the
        actor — and with it that child — as soon as ``run()`` returns: a log could be left
        without its run record, for good. ``wandb.teardown()`` waits until the service has
        closed every stream and exited (read in Ray 2.60's and wandb 0.31's sources; measured here
        without Ray, an offline log read right after finish() was cut in 1 of 8 runs, right
        after teardown in 0 of 8, and with wandb-core SIGKILLed after teardown 0 of 15)."""

        def run(self):
            try:
                super().run()
            finally:
                try:
                    self._wandb.teardown()
                except BaseException as exc:  # noqa: BLE001 — it may sys.exit with the service's code
                    if not (isinstance(exc, SystemExit) and exc.code in (0, None)):
                        _log(f"wandb teardown of trial {self._trial_name} failed ({type(exc).__name__}: "
                             f"{exc}); its offline log may be incomplete")

    class WandbTracker(WandbLoggerCallback):
        _logger_actor_cls = ClosingActor

        def log_trial_result(self, iteration, trial, result):
            super().log_trial_result(iteration, trial, _tracked(result))

    sweep_dir = _local_sweep_dir(storage_uri, spec.name)
    # Not Ray's default (the trial's staging folder): W&B's logging actor finishes after Tune's
    # last sync of that folder, so its final records would stay behind in /tmp.
    run_dir = opts.get("dir") or (os.path.join(sweep_dir, "_wandb") if sweep_dir else None)
    init = {k: opts[k] for k in ("entity", "mode") if opts.get(k)}
    if opts.get("tags"):
        init["tags"] = list(opts["tags"])
    if run_dir:
        os.makedirs(run_dir, exist_ok=True)
        init["dir"] = run_dir
    project = opts.get("project") or spec.name
    cb = _guarded(WandbTracker, "wandb")(project=project, group=opts.get("group") or spec.name, **init)
    mode = opts.get("mode") or os.environ.get("WANDB_MODE") or "online"
    return cb, f"wandb → project {project!r}, {mode}" + (f", files in {run_dir}" if run_dir else "")


_BUILDERS = {"mlflow": _mlflow, "tensorboard": _tensorboard, "wandb": _wandb}


def trackers_not_installed(spec: SweepSpec) -> str | None:
    """What ``spec.loggers`` needs that this Python cannot import, as the error's text; None
    when every chosen tracker is installed."""
    missing = [n for n in spec.loggers if importlib.util.find_spec(_PACKAGES[n]) is None]
    if not missing:
        return None
    return (f"{spec.source}: loggers: {', '.join(missing)} not installed "
            f"(pip install 'edgesweep[trackers]', or {' '.join(_PACKAGES[n] for n in missing)})")


def check_trackers(spec: SweepSpec, storage_uri: str, here: bool = True) -> None:
    """The checks of ``spec.loggers`` that need neither the tracker's package nor Ray (for
    ``plan`` and ``submit``, which import neither): :class:`SpecError` for a configuration
    ``run`` would refuse. ``here=False`` (``submit``): the job runs on the cluster, with the
    cluster's environment (``MLFLOW_TRACKING_URI``) and home folders, so only what the spec
    itself says is checked — a tracking URI written in it."""
    if "mlflow" in spec.loggers:
        opts = spec.loggers["mlflow"]
        if here:
            _mlflow_store(opts, spec, storage_uri)
        elif opts.get("tracking_uri"):
            _refuse_credentials(opts["tracking_uri"], spec)


def tracker_callbacks(spec: SweepSpec, storage_uri: str) -> list:
    """The guarded Tune callbacks of ``spec.loggers`` (empty when none are chosen). Raises
    :class:`SpecError` for a tracker that is not installed or cannot be configured — before
    any cluster starts."""
    missing = trackers_not_installed(spec)
    if missing:
        raise SpecError(missing)
    check_trackers(spec, storage_uri)
    out = []
    for name, opts in spec.loggers.items():
        cb, where = _BUILDERS[name](opts, spec, storage_uri)
        _log(f"logger {where}")
        out.append(cb)
    return out


def tracker_failures(callbacks) -> list[str]:
    """One line per tracker that was disabled by an error, for the end-of-sweep summary."""
    return [f"logger {cb.tracker_name} was disabled after an error: {cb.tracker_error}"
            for cb in callbacks if isinstance(cb, _Guarded) and cb.tracker_error is not None]
