"""The trial's composition (workload + monitor + writer) without Ray: exact resume, idempotence."""


import polars as pl
import pytest

from edgesweep.platform.spec import parse_spec
from edgesweep.platform.trainable import execute_trial
from edgesweep.storage import scan


def tiny_trial(max_steps=60, after_grok=None):
    spec = parse_spec({
        "name": "unit", "grid": {"workload": ["mod_add"], "weight_decay": [1.0]},
        "train": {"preset": "tiny", "max_steps": max_steps, "eval_every": 10, "checkpoint_every": 20},
        "monitor": {"window": 4, "every": 5, "params": "all"},
        "stop": {"after_grok": after_grok},
    })
    return spec.trials[0]


def killed_after_checkpoint(trial, storage, step):
    """Run ``trial`` until its checkpoint at ``step``, then die as a worker would right after
    it (rows up to ``step`` sealed); returns the states it checkpointed, by step."""
    states = {}

    class Killed(Exception):
        pass

    def save(at, state, metrics):
        states[at] = state
        if at == step:
            raise Killed

    with pytest.raises(Killed):
        execute_trial(trial, "unit", storage, save_checkpoint=save)
    return states


def test_trial_writes_every_snapshot_and_eval_once(tmp_path):
    trial = tiny_trial()
    checkpoints, reports = [], []
    result = execute_trial(trial, "unit", str(tmp_path), report=reports.append,
                           save_checkpoint=lambda step, state, m: checkpoints.append(step))
    assert result.status == "completed" and result.steps == 60
    feats = scan(tmp_path / "unit", "features").collect().sort("step")
    evals = scan(tmp_path / "unit", "evals").collect().sort("step")
    trials = scan(tmp_path / "unit", "trials").collect()
    assert feats["step"].to_list() == list(range(10, 61, 5))  # first row once 2 deltas exist
    assert evals["step"].to_list() == list(range(0, 61, 10))
    assert checkpoints == [20, 40, 60]  # every checkpoint_every steps; the final one is not doubled
    assert trials["status"].to_list() == ["completed"] and trials["steps"][0] == 60
    # the loss recorded with a snapshot is the training loss of that step (finite after step 0)
    assert feats["loss"].is_nan().sum() == 0 and feats["grad_norm"].min() > 0
    assert reports[-1]["done_status"] == "completed"


@pytest.mark.parametrize("max_steps", [7, 10, 63])
def test_a_real_trial_of_any_length_verifies_and_aggregates_complete(tmp_path, max_steps):
    """The completeness rule (storage/completeness.py) against a real trial: one that ends
    before its first features row (7 steps, every 5: the first row needs 2 updates), at it, and
    between snapshots is whole — verify OK, and aggregate does not call it incomplete."""
    from edgesweep.platform.aggregate import aggregate_sweep
    from edgesweep.storage import verify

    result = execute_trial(tiny_trial(max_steps=max_steps), "unit", str(tmp_path))
    assert result.status == "completed" and result.steps == max_steps
    report = verify(str(tmp_path / "unit"))
    assert report.ok and not report.problems, report.problems
    aggregate_sweep(str(tmp_path / "unit"), use_ray=False, report=False)
    assert scan(tmp_path / "unit", "runs").collect()["status"].to_list() == ["completed"]


def test_the_trials_row_says_where_the_trial_ran(tmp_path):
    """`compute`: processor, kernels and thread count — what two reruns must share for identical
    rows (README, reproducibility) — read back from the trials table."""
    import torch

    from edgesweep.storage import scan

    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        execute_trial(tiny_trial(max_steps=50), "unit", str(tmp_path))
    finally:
        torch.set_num_threads(threads)
    compute = scan(tmp_path / "unit", "trials").collect()["compute"][0]
    with open("/proc/cpuinfo") as f:
        model = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), None)
    assert compute.startswith("cpu: ") and compute.endswith(", 1 thread"), compute
    assert f"ATen {torch.backends.cpu.get_cpu_capability()} kernels" in compute
    if model:
        assert model in compute


def test_finished_trial_is_not_trained_again(tmp_path):
    trial = tiny_trial()
    execute_trial(trial, "unit", str(tmp_path))
    before = scan(tmp_path / "unit", "trials").collect()
    reports = []
    assert execute_trial(trial, "unit", str(tmp_path), report=reports.append) is None
    after = scan(tmp_path / "unit", "trials").collect()
    assert after.equals(before)
    assert reports and reports[0]["already_finished"] is True


def test_resume_from_checkpoint_replays_exactly(tmp_path):
    """A trial killed after its checkpoint at step 40 resumes under a higher attempt and the
    dataset equals an uninterrupted run's (rows 45..60 come from attempt 1)."""
    trial = tiny_trial()
    execute_trial(trial, "unit", str(tmp_path / "ref"))
    states = killed_after_checkpoint(trial, str(tmp_path / "run"), 40)
    execute_trial(trial, "unit", str(tmp_path / "run"), resume_state=states[40])

    def table(root, name):
        df = scan(root / "unit", name).collect()
        return df.drop([c for c in ("attempt", "gram_ms", "sweep") if c in df.columns]).sort("step")

    for name in ("features", "evals"):
        assert table(tmp_path / "run", name).equals(table(tmp_path / "ref", name)), name
    attempts = scan(tmp_path / "run" / "unit", "features").collect()
    assert attempts.filter(pl.col("step") > 40)["attempt"].unique().to_list() == [1]
    assert attempts.filter(pl.col("step") <= 40)["attempt"].unique().to_list() == [0]


def test_online_alarm_equals_the_offline_replay(tmp_path, monkeypatch):
    """The detector the trial runs live and the one the aggregation replays over the stored rows
    alarm at the same step (a sensitive configuration, so that it does alarm)."""
    import edgesweep.platform.trainable as trainable
    from edgesweep.analysis import AnalysisConfig
    from edgesweep.platform.aggregate import AggregateConfig, aggregate_sweep

    sensitive = {"decline_factor": 1.05, "warmup_windows": 1, "persistence": 1, "stability_windows": 1,
                 "max_rel_std": float("inf")}
    real = trainable.make_detector
    monkeypatch.setattr(trainable, "make_detector", lambda window=None, context=None: real(params=sensitive, window=window, context=context))
    execute_trial(tiny_trial(max_steps=200), "unit", str(tmp_path))
    online = scan(tmp_path / "unit", "trials").collect()["alarm_step"][0]
    aggregate_sweep(tmp_path / "unit", use_ray=False, report=False,
                    config=AggregateConfig(analysis=AnalysisConfig(detector_params=sensitive)))
    offline = scan(tmp_path / "unit", "runs").collect()["alarm_step"][0]
    assert online is not None and online == offline


def test_an_unreadable_checkpoint_starts_the_trial_again_instead_of_failing(tmp_path):
    """Tune can hand a resumed trial a checkpoint whose directory it already deleted (a driver
    killed between pruning and its next state save): the trial restarts from step 0 and ends
    with the same rows as an uninterrupted run."""
    import torch

    from edgesweep.platform.trainable import load_resume_state

    # Only tune.Checkpoint is needed, no cluster; skipped only where Ray is not installed at
    # all (the GPU image), never in CI, which installs it.
    tune = pytest.importorskip("ray.tune")

    good = tmp_path / "ckpt_good"
    good.mkdir()
    torch.save({"step": 40}, good / "state.pt")
    assert load_resume_state(tune.Checkpoint.from_directory(str(good)), "t") == {"step": 40}

    gone, damaged = tmp_path / "ckpt_gone", tmp_path / "ckpt_damaged"
    damaged.mkdir()
    (damaged / "state.pt").write_bytes(b"not a torch file")
    for path in (gone, damaged):
        said = []
        assert load_resume_state(tune.Checkpoint.from_directory(str(path)), "t", log=said.append) is None
        assert len(said) == 1 and "trial t: checkpoint" in said[0] and "starting it again from step 0" in said[0]
    assert load_resume_state(None, "t") is None

    # starting again over the rows of an earlier attempt reproduces the uninterrupted run
    trial = tiny_trial()
    execute_trial(trial, "unit", str(tmp_path / "ref"))

    killed_after_checkpoint(trial, str(tmp_path / "run"), 40)
    execute_trial(trial, "unit", str(tmp_path / "run"), resume_state=None)
    for name in ("features", "evals"):
        got, want = (scan(r / "unit", name).collect().drop("attempt", "gram_ms", "sweep", strict=False).sort("step")
                     for r in (tmp_path / "run", tmp_path / "ref"))
        assert got.equals(want), name


def test_checkpoint_scratch_of_a_killed_worker_is_removed_and_a_live_ones_kept(tmp_path):
    """A worker SIGKILLed while it hands a checkpoint to Tune leaves its scratch directory (a
    whole training state); the next trial start removes it — and nothing another live process
    holds, nothing of another host, nothing that is not a locked scratch directory."""
    import os
    import signal
    import socket
    import subprocess
    import sys

    from edgesweep.platform.trainable import CKPT_PREFIX, checkpoint_scratch, remove_orphaned_scratch

    child = subprocess.Popen(
        [sys.executable, "-c", "import sys, time\n"
         "from edgesweep.platform.trainable import checkpoint_scratch\n"
         f"with checkpoint_scratch({str(tmp_path)!r}) as d:\n"
         "    open(d + '/state.pt', 'wb').write(b'x' * 1000)\n"
         "    print(d, flush=True)\n"
         "    time.sleep(120)\n"], stdout=subprocess.PIPE, text=True)
    try:
        held = child.stdout.readline().strip()
        assert os.path.isfile(f"{held}/state.pt") and os.path.isfile(f"{held}.lock")
        other_host = tmp_path / f"{CKPT_PREFIX}{socket.gethostname()}-gpu@abc"  # our name is a prefix of it
        other_host.mkdir()
        (tmp_path / f"{other_host.name}.lock").touch()
        unlocked_no_lock = tmp_path / f"{CKPT_PREFIX}nolock"
        unlocked_no_lock.mkdir()
        with checkpoint_scratch(str(tmp_path)) as mine:
            assert remove_orphaned_scratch(str(tmp_path)) == []  # the child's and ours are held
            os.kill(child.pid, signal.SIGKILL)
            child.wait(30)
            assert remove_orphaned_scratch(str(tmp_path)) == [held]
            assert not os.path.exists(held) and not os.path.exists(f"{held}.lock")
            assert os.path.isdir(mine) and other_host.is_dir() and unlocked_no_lock.is_dir()
        assert not os.path.exists(mine) and not os.path.exists(f"{mine}.lock")  # its own cleanup
        assert remove_orphaned_scratch(str(tmp_path)) == []
        assert remove_orphaned_scratch(str(tmp_path / "missing")) == []
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()


def test_checkpoint_scratch_without_flock_leaves_no_lock_file_to_misread(tmp_path, monkeypatch):
    """Where flock is not supported (NFS mounted nolock, some FUSE file systems) the checkpoint
    still goes through, and without a lock file no remover can take it for an orphan."""
    import fcntl
    import os

    from edgesweep.platform import trainable

    def no_flock(fd, op):
        raise OSError(37, "No locks available")

    monkeypatch.setattr(fcntl, "flock", no_flock)
    with trainable.checkpoint_scratch(str(tmp_path)) as d:
        assert os.path.isdir(d) and sorted(os.listdir(tmp_path)) == [os.path.basename(d)]
        assert trainable.remove_orphaned_scratch(str(tmp_path)) == [] and os.path.isdir(d)
    assert os.listdir(tmp_path) == []


def test_a_resumed_trial_does_not_keep_its_checkpoint_alive(tmp_path):
    """Once restored, the checkpoint handed to execute_trial is freed (it is a whole training
    state; with the monitor ring of a large preset, gigabytes held for the rest of the trial)."""
    import gc
    import weakref

    import torch

    trial = tiny_trial()
    state = killed_after_checkpoint(trial, str(tmp_path / "run"), 40)[40]  # the only reference
    monitor = state["callbacks"][0]["monitor"]
    held = [*state["model"].values(), monitor["prev"], monitor["ring"]]
    assert len(held) > 3 and all(isinstance(t, torch.Tensor) for t in held)
    refs = [weakref.ref(t) for t in held]
    del held, monitor
    alive = {}

    def report(metrics):
        gc.collect()
        alive[metrics["step"]] = sum(r() is not None for r in refs)

    handover = [state]
    del state  # as run_trial does: the caller keeps no reference of its own
    execute_trial(trial, "unit", str(tmp_path / "run"), resume_state=handover.pop(), report=report)
    assert min(alive) == 50 and set(alive.values()) == {0}, alive


def test_rows_an_abandoned_attempt_sealed_past_the_trials_end_are_dropped(tmp_path):
    """Attempt 0 seals rows up to step 60 and dies before its checkpoint there counts; the
    trial restarts from step 40 and this time ends at step 50 (here a lower max_steps; on a GPU,
    non-deterministic kernels moving the grok and its early stop). When it finishes, its
    tables hold no row past step 50 — equal to a run that ended there — and no file does."""
    long, short = tiny_trial(max_steps=60), tiny_trial(max_steps=50)
    assert long.trial_id == short.trial_id
    execute_trial(short, "unit", str(tmp_path / "ref"))
    # rows to 60 are sealed; the checkpoint at 60 never reaches Tune
    states = killed_after_checkpoint(long, str(tmp_path / "run"), 60)
    assert scan(tmp_path / "run" / "unit", "features").collect()["step"].max() == 60
    execute_trial(short, "unit", str(tmp_path / "run"), resume_state=states[40])

    for name in ("features", "evals"):
        got, want = (scan(r / "unit", name).collect().drop("attempt", "gram_ms", "sweep", strict=False).sort("step")
                     for r in (tmp_path / "run", tmp_path / "ref"))
        assert got["step"].max() == 50 and got.equals(want), name
        raw = pl.read_parquet(tmp_path / "run" / "unit" / name / "**" / "*.parquet", hive_partitioning=False)
        assert raw["step"].max() == 50, name  # the stale parts are gone, not just hidden
    trials = scan(tmp_path / "run" / "unit", "trials").collect()
    assert trials["steps"].to_list() == [50] and trials["status"].to_list() == ["completed"]


def test_a_failure_is_recorded_over_a_started_trial_but_never_over_a_finished_one(tmp_path):
    """The driver marks the trials Tune reports failed. When Tune's result grid cannot be built
    (a full disk) their errors come from Tune's error.txt, which keeps the failures of a trial
    that then finished on a retry: a trial the table records as finished stays finished."""
    from edgesweep.platform.driver import record_failures
    from edgesweep.storage import write_table
    from edgesweep.platform.trainable import trial_row

    spec = parse_spec({
        "name": "unit", "grid": {"workload": ["mod_add"], "weight_decay": [1.0, 0.0]},
        "train": {"preset": "tiny", "max_steps": 40, "eval_every": 10, "checkpoint_every": 20},
        "monitor": {"window": 4, "every": 5, "params": "all"},
    })
    done, started = spec.trials
    execute_trial(done, "unit", str(tmp_path))  # finished on its retry
    write_table(str(tmp_path), "unit", "trials", pl.DataFrame([trial_row(started, "unit", 0, "running")]))
    error = "Traceback (most recent call last):\n  File \"x.py\", line 1\n    ^^^^\nValueError: boom"
    failed = record_failures(spec, str(tmp_path), [(done, error), (started, error)])
    assert failed == [(started.trial_id, "ValueError: boom")]
    rows = {r["trial_id"]: r for r in scan(tmp_path, "trials").collect().iter_rows(named=True)}
    assert rows[done.trial_id]["status"] == "completed" and rows[done.trial_id]["error"] is None
    assert rows[started.trial_id]["status"] == "failed"
    assert rows[started.trial_id]["error"] == "Traceback (most recent call last):\n  File \"x.py\", line 1\nValueError: boom"
