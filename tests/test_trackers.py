"""Experiment trackers chosen in the spec (`loggers:`), through Ray Tune's own callbacks, on a
real local Ray cluster, read back with each tracker's own reader: MLflow's ``search_runs`` and
metric history, TensorBoard's event reader, and W&B's offline transaction log. Every value a
tracker holds is checked against the Parquet tables (the source of truth) at the same step."""

import glob
import math
from pathlib import Path

import polars as pl
import pytest

from edgesweep.platform import trackers
from edgesweep.platform.driver import run_sweep
from edgesweep.platform.spec import SpecError, parse_spec
from edgesweep.storage import scan

import wandb_log

# Two tiny trials (both weight-decay arms), evaluations every 10 steps, a window every 5.
SPEC = """\
name: {name}
storage: {storage}
max_failures: 0
grid:
  workload: [mod_add]
  weight_decay: [1.0, 0.0]
train: {{preset: tiny, max_steps: 40, eval_every: 10, checkpoint_every: 20}}
monitor: {{window: 4, every: 5, params: all}}
loggers:
{loggers}
"""

BASE = {"name": "x", "grid": {"workload": ["mod_add"]}, "train": {"preset": "tiny", "max_steps": 40}}


def write_spec(tmp_path, name, loggers, wds=(1.0, 0.0)):
    spec = tmp_path / f"{name}.yaml"
    text = SPEC.format(name=name, storage=tmp_path / "results", loggers=loggers)
    spec.write_text(text.replace("[1.0, 0.0]", str(list(wds))))
    return spec


def tables(sweep_dir):
    evals = scan(sweep_dir, "evals").select("trial_id", "step", "grok_acc", "memo_acc").collect()
    feats = scan(sweep_dir, "features").select("trial_id", "step", "g23", "gap_ratio").collect()
    trial_ids = sorted(scan(sweep_dir, "trials").collect()["trial_id"].to_list())
    return trial_ids, evals, feats


def by_step(df, tid, col):
    d = df.filter(pl.col("trial_id") == tid).sort("step")
    return dict(zip(d["step"].to_list(), d[col].to_list()))


# ------------------------------------------------------------------------------ the spec


def test_loggers_spec_forms_and_errors():
    as_list = parse_spec(dict(BASE, loggers=["mlflow", {"wandb": {"mode": "offline", "project": "p"}}]))
    assert set(as_list.loggers) == {"mlflow", "wandb"}
    assert as_list.loggers["wandb"]["mode"] == "offline" and as_list.loggers["wandb"]["project"] == "p"
    as_map = parse_spec(dict(BASE, loggers={"tensorboard": None, "mlflow": {"tracking_uri": "http://h:5000"}}))
    assert as_map.loggers == {"mlflow": {"tracking_uri": "http://h:5000", "experiment_name": None, "tags": {}},
                              "tensorboard": {}}
    assert parse_spec(BASE).loggers == {}
    for bad, message in ((["mlflo"], "loggers.mlflo: unknown key; allowed: mlflow, tensorboard, wandb"),
                         ({"wandb": {"mode": "off"}}, "loggers.wandb.mode: must be one of"),
                         ({"mlflow": {"tracking_token": "x"}}, "loggers.mlflow.tracking_token: unknown key; "
                                                               "allowed: tracking_uri, experiment_name, tags"),
                         (["mlflow", "mlflow"], "logger 'mlflow' is listed twice")):
        with pytest.raises(SpecError, match=message.replace("(", r"\(")):
            parse_spec(dict(BASE, loggers=bad), "s.yaml")


def test_tracker_setup_errors_come_before_any_cluster(monkeypatch, tmp_path):
    spec = parse_spec(dict(BASE, loggers=["wandb"]), "s.yaml")
    monkeypatch.setitem(trackers._PACKAGES, "wandb", "no_such_module_edgesweep")
    with pytest.raises(SpecError, match=r"loggers: wandb not installed \(pip install 'edgesweep\[trackers\]'"):
        trackers.tracker_callbacks(spec, str(tmp_path))
    s3 = parse_spec(dict(BASE, loggers=["mlflow"]), "s.yaml")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    with pytest.raises(SpecError, match="tracking_uri: needed when the storage is s3://"):
        trackers.tracker_callbacks(s3, "s3://bucket/prefix")
    creds = parse_spec(dict(BASE, loggers={"mlflow": {"tracking_uri": "https://me:secret@mlflow.example"}}), "s.yaml")
    with pytest.raises(SpecError, match="carries credentials"):
        trackers.tracker_callbacks(creds, str(tmp_path))


def test_plan_and_submit_refuse_what_run_refuses_in_loggers(monkeypatch, tmp_path, capsys):
    """`plan` validates the spec as `run` does, `loggers:` included (it used to list the trials
    of a spec whose tracking URI carries a password, which `run` refuses); a tracker not
    installed here is a note in `plan` (it may run elsewhere) and no concern of `submit`'s (the
    cluster installs it). Neither imports Ray for this."""
    from edgesweep.platform.plan import plan_main
    from edgesweep.platform.submit import submit_sweep

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    creds = tmp_path / "creds.yaml"
    creds.write_text(f"name: c\nstorage: {tmp_path / 'r'}\ngrid: {{workload: [mod_add]}}\ntrain: {{preset: tiny}}\n"
                     "loggers: {mlflow: {tracking_uri: 'http://u:pw@h:5000'}}\n")
    for call in (lambda: plan_main(str(creds)), lambda: submit_sweep(str(creds), "http://127.0.0.1:9")):
        with pytest.raises(SpecError, match=r"creds\.yaml: loggers\.mlflow\.tracking_uri: carries credentials"):
            call()
    on_gs = tmp_path / "gs.yaml"
    on_gs.write_text("name: g\nstorage: gs://bucket/prefix\ngrid: {workload: [mod_add]}\ntrain: {preset: tiny}\n"
                     "loggers: [mlflow]\n")
    with pytest.raises(SpecError, match=r"tracking_uri: needed when the storage is s3:// or gs://"):
        plan_main(str(on_gs))
    # ... but `submit` leaves that to the job: the cluster's MLFLOW_TRACKING_URI is the one it
    # will use, not this machine's (it got as far as the cluster's address, here closed).
    with pytest.raises(ConnectionError, match=r"Failed to connect to Ray at address: http://127\.0\.0\.1:9"):
        submit_sweep(str(on_gs), "http://127.0.0.1:9")
    fine = tmp_path / "fine.yaml"
    fine.write_text(f"name: f\nstorage: file://{tmp_path / 'r'}\ngrid: {{workload: [mod_add]}}\n"
                    "train: {preset: tiny}\nloggers: [mlflow, wandb]\n")
    monkeypatch.setitem(trackers._PACKAGES, "wandb", "no_such_module_edgesweep")
    assert plan_main(str(fine)) == 0
    out = capsys.readouterr().out
    assert out.startswith("sweep 'f' (grid): 1 trials → file://")
    assert "note: " in out and "loggers: wandb not installed" in out and "`run` refuses to start" in out
    # a file:// root keeps MLflow's default store in the sweep's folder, as a local path does
    uri, artifacts = trackers._mlflow_store({}, parse_spec(dict(BASE, loggers=["mlflow"])), f"file://{tmp_path}")
    assert uri == f"sqlite:///{tmp_path}/x/_mlflow/mlflow.db" and artifacts == f"{tmp_path}/x/_mlflow/artifacts"


# ------------------------------------------------------------------------------ real sweeps


@pytest.mark.ray
def test_mlflow_tensorboard_wandb_get_every_trial(monkeypatch, tmp_path, capsys, request):
    monkeypatch.setenv("WANDB_MODE", "offline")          # before Ray starts: its workers inherit it
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    request.getfixturevalue("local_ray")
    spec = write_spec(tmp_path, "trk", "  mlflow:\n  tensorboard:\n  wandb: {mode: offline}")
    assert run_sweep(str(spec)) == 0
    out = capsys.readouterr().out
    assert "LOGGER" not in out                          # no tracker failed
    sweep = tmp_path / "results" / "trk"
    trial_ids, evals, feats = tables(sweep)
    assert len(trial_ids) == 2

    # MLflow: the default store in the sweep folder; one run per trial, named by its id, with
    # the resolved config as parameters and every tracked metric.
    import mlflow
    uri = f"sqlite:///{sweep / '_mlflow' / 'mlflow.db'}"
    mlflow.set_tracking_uri(uri)
    runs = mlflow.search_runs(experiment_names=["trk"])
    assert sorted(runs["tags.mlflow.runName"]) == trial_ids
    assert (runs["status"] == "FINISHED").all()
    for col in ("params.trial/trial_id", "params.trial/weight_decay", "params.trial/optimizer_settings/lr",
                "params.trial/monitor/window", "params.trial/train/max_steps"):
        assert runs[col].notna().all(), col
    assert sorted(runs["params.trial/trial_id"]) == trial_ids
    assert set(runs["params.trial/weight_decay"]) == {"1.0", "0.0"}
    for key in trackers.TRACKED:
        assert f"metrics.{key}" in runs.columns, key
    client = mlflow.MlflowClient(tracking_uri=uri)
    for row in runs.to_dict("records"):
        tid, run_id = row["tags.mlflow.runName"], row["run_id"]
        want = by_step(evals, tid, "grok_acc")
        # step 0's report sits at x = 1 (Ray's loggers fall back to the report count for a 0)
        hist = {m.step: m.value for m in client.get_metric_history(run_id, "test_acc") if m.step > 1}
        assert hist and set(hist) <= set(want)
        assert all(math.isclose(v, want[s]) for s, v in hist.items())
        g23 = [m.value for m in client.get_metric_history(run_id, "g23") if math.isfinite(m.value)]
        stored = {round(v, 12) for v in by_step(feats, tid, "g23").values() if v is not None and math.isfinite(v)}
        assert g23 and {round(v, 12) for v in g23} <= stored
        assert client.get_run(run_id).data.metrics["step"] == 40

    # TensorBoard: event files in each trial's Tune folder, read with tensorboard's reader.
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    dirs = sorted(Path(p).parent.name for p in glob.glob(str(sweep / "_tune" / "*" / "events.out.tfevents.*")))
    assert dirs == trial_ids
    for tid in trial_ids:
        acc = EventAccumulator(str(sweep / "_tune" / tid))
        acc.Reload()
        tags = set(acc.Tags()["scalars"])
        assert {f"ray/tune/{k}" for k in ("test_acc", "g23", "gap_ratio", "k_star", "grok_step", "alarmed")} <= tags
        want = by_step(evals, tid, "grok_acc")
        got = {e.step: e.value for e in acc.Scalars("ray/tune/test_acc") if e.step > 1}
        assert got and all(math.isclose(v, want[s], rel_tol=1e-6) for s, v in got.items())  # float32 events

    # W&B offline: one run folder per trial, named by its id, config and metrics inside.
    logs = sorted(glob.glob(str(sweep / "_wandb" / "wandb" / "offline-run-*" / "run-*.wandb")))
    assert len(logs) == 2
    # Read once, at once: the sweep returns only after W&B's service closed every log
    # (trackers.ClosingActor; before it, a log could still lack its run record here).
    read = {}
    for path in logs:
        r = wandb_log.read_run(path)
        assert "name" in r, f"{path}: no run record when the sweep returned"
        read[r["name"]] = r
    assert sorted(read) == trial_ids
    for tid, r in read.items():
        assert r["project"] == "trk" and r["config"]["trial"]["trial_id"] == tid
        want = by_step(evals, tid, "grok_acc")
        hist = [h for h in r["history"] if "test_acc" in h]
        assert {h["step"] for h in hist} >= {10, 20, 30, 40}
        assert all(math.isclose(h["test_acc"], want[h["step"]]) for h in hist)
        assert all(set(trackers.TRACKED) <= set(h) for h in hist)
        stored = {round(v, 12) for v in by_step(feats, tid, "g23").values() if v is not None and math.isfinite(v)}
        g23 = {round(h["g23"], 12) for h in hist if math.isfinite(h["g23"])}
        assert g23 and g23 <= stored


@pytest.mark.ray
def test_a_failing_tracker_is_reported_and_never_fails_a_trial(monkeypatch, tmp_path, capsys, request):
    request.getfixturevalue("local_ray")
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the MLflow store's folder should be")
    spec = write_spec(tmp_path, "trkfail", f"  mlflow: {{tracking_uri: 'sqlite:///{blocker}/mlflow.db'}}\n"
                                           "  tensorboard:", wds=(1.0,))
    assert run_sweep(str(spec)) == 0
    out = capsys.readouterr().out
    assert "LOGGER mlflow failed in setup" in out
    assert "logger mlflow was disabled after an error" in out       # repeated in the end summary
    sweep = tmp_path / "results" / "trkfail"
    trials = scan(sweep, "trials").collect()
    assert trials["status"].to_list() == ["completed"] and trials["steps"].to_list() == [40]
    # the other tracker carried on
    assert glob.glob(str(sweep / "_tune" / trials["trial_id"][0] / "events.out.tfevents.*"))
