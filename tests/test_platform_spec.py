"""Sweep specs: bad specs fail with one clear line (file, key path, line, what is allowed) and
exit code ≠ 0 before Ray is imported; good ones expand into the trials they describe."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from edgesweep.platform.plan import plan_text
from edgesweep.platform.spec import SpecError, load_spec, parse_spec

REPO = Path(__file__).resolve().parents[1]
HEAD = "name: bad\nstorage: {storage}\n"
ADD = "grid:\n  workload: [mod_add]\n"
TINY = "train: {preset: tiny, max_steps: 10}\n"
BOMB = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{c}: &{c} [{', '.join(['*' + p] * 9)}]\n" for p, c in zip("abcdefgh", "bcdefghi")) + "grid: {workload: [mod_add]}\n"

# case → (YAML body after name/storage, key path in the message, words in the message)
BAD_SPECS = {
    "unknown workload": ("grid:\n  workload: [mod_div]\n", "grid.workload[0] (line 4)", "must be one of 'mod_add', 'mod_sub'"),
    "unknown optimizer": (ADD + "  optimizer: [adam]\n", "grid.optimizer[0] (line 5)", "must be one of 'adamw', 'muon', 'sgd'; got 'adam'"),
    "typo'd key": (ADD + "monitr: {window: 3}\n", "monitr (line 5)", "unknown key; allowed: name, description"),
    "typo'd nested key": (ADD + "monitor: {windw: 3}\n", "monitor.windw (line 5)", "unknown key; allowed: window, every"),
    "negative weight decay": ("grid:\n  workload: [mod_add]\n  weight_decay: [1.0, -0.5]\n",
                              "grid.weight_decay[1]", "must be ≥ 0"),
    "zero budget": (ADD + "train: {max_steps: 0}\n", "train.max_steps", "must be ≥ 1"),
    "equal grid values": (ADD + "  weight_decay: [1, 1.0]\n", "grid", "two grid points give the same trial: mod_add-adamw-wd1.0-s42"),
    "unknown model key": (ADD + "train: {model: {d_modl: 32}}\n", "train.model", "unknown key(s) ['d_modl'] for workload 'mod_add'; allowed: ['d_ff'"),
    "momentum out of range": (ADD + "optimizer: {momentum: 1.5}\n", "optimizer.momentum", "must be < 1"),
    "bad per-workload override": ("grid:\n  workload: [dyck]\nper_workload:\n  dyck: {monitor: {window: 1}}\n",
                                  "per_workload.dyck.monitor.window", "must be ≥ 2"),
    "model width is not a number": (ADD + "train: {model: {d_model: big}}\n", "train.model.d_model",
                                    "ModArithConfig.d_model: got 'big'; allowed: an integer"),
    "negative modulus": (ADD + "train: {task: {p: -7}}\n", "train.task.p", "allowed: an integer in [2, 8192]"),
    "modulus too large to materialise": (ADD + "train: {task: {p: 1000003}}\n", "train.task.p",
                                         "allowed: an integer in [2, 8192]"),
    "no training pair": (ADD + "train: {task: {train_frac: 1.0e-9}}\n", "train.task.train_frac",
                         "leaves no training pair of the 3,422 (p = 59)"),
    "window 1e9": (ADD + "monitor: {window: 1e9}\n", "monitor.window", "must be ≤ 1000; got 1000000000"),
    "seed 2**70": ("grid:\n  workload: [mod_add]\n  seed: [2**70]\n", "grid.seed[0] (line 5)", "must be an integer, got '2**70'"),
    "huge seed": ("grid:\n  workload: [mod_add]\n  seed: [1180591620717411303424]\n", "grid.seed[0]",
                  "must be ≤ 9223372036854775807"),
    "cuda without a GPU": (ADD + "train: {device: cuda}\n", "train.device", "allowed here: auto, cpu"),
    "amp as a number": (ADD + "train: {amp: 1}\n", "train.amp", "must be true or false; got 1"),
    "selector matches nothing": (ADD + TINY + "monitor: {params: 'q_prj'}\n", "monitor.params",
                                 "matches no parameter of the mod_add model; closest names:"),
    "bad regex": (ADD + "monitor: {params: '(['}\n", "monitor", "not a valid regex"),
    "unknown preset": (ADD + "train: {preset: huge}\n", "train.preset", "must be one of 'laptop', 'paper', 'tiny'"),
    "unknown axis": (ADD + "  bogus.x: [1]\n", "grid.bogus.x", "unknown axis; allowed: workload, optimizer"),
    "random without samples": ("method: random\n" + ADD, "method", "random needs samples"),
    "samples with grid": ("samples: 3\n" + ADD, "samples", "is only for method: random"),
    "distribution under grid": (ADD + "  optimizer.lr: {log_uniform: [1.0e-4, 1.0e-2]}\n", "grid.optimizer.lr",
                                "a distribution needs method: random"),
    "scalar grid axis": ("grid:\n  workload: mod_add\n", "grid.workload",
                         "is one value ('mod_add'); a grid axis is a list: [mod_add]"),
    "section is not a mapping": (ADD + "train: 5\n", "train", "must be a mapping of keys (key: value lines under it); got 5"),
    "bad distribution": ("method: random\nsamples: 3\n" + ADD + "  optimizer.lr: {log_uniform: [0, 1]}\n",
                         "grid.optimizer.lr", "needs low < high and low > 0"),
    "int_uniform beyond 64 bits": ("method: random\nsamples: 3\n" + ADD + "  seed: {int_uniform: [0, 36893488147419103232]}\n",
                                   "grid.seed", "int_uniform needs bounds within ±9.2e18 (64-bit integers)"),
    "uniform wider than a float": ("method: random\nsamples: 3\n" + ADD + "  weight_decay: {uniform: [-1.7e308, 1.7e308]}\n",
                                   "grid.weight_decay", "uniform needs high − low to be a finite number"),
    "unknown distribution": ("method: random\nsamples: 3\n" + ADD + "  optimizer.lr: {normal: [0, 1]}\n",
                             "grid.optimizer.lr", "one of choice, uniform, log_uniform, int_uniform"),
    "non-string top-level key": (ADD + "1: a\n", "[1] (line 5)", "Keys should be strings"),
    "non-string nested key": (ADD + "train: {1: 2}\n", "train[1] (line 5)", "Keys should be strings"),
    "null key": (ADD + "null: a\n", "None (line 5)", "Keys should be strings"),
    "non-string key in a block": (ADD + "blocks:\n  - name: x\n    train: {1: 2}\n", "blocks[0].train[1] (line 7)",
                                  "must be a string"),
    "unknown resource": (ADD + "trial_resources: {tpu: 1}\n", "trial_resources.tpu", "unknown key; allowed: cpu, gpu"),
    "unknown block key": (ADD + "blocks:\n  - name: x\n    method: random\n", "blocks[0].method (line 7)",
                          "unknown key; allowed: name, samples, grid, train, optimizer, monitor, stop, per_workload"),
    "option of a logger that takes none": (ADD + "loggers: {tensorboard: {logdir: x}}\n", "loggers.tensorboard.logdir",
                                           "unknown key; allowed: none (it takes no options"),
    "no resources": (ADD + "trial_resources: {cpu: 0, gpu: 0}\n", "trial_resources", "a trial needs some cpu or gpu"),
    "bad grok threshold": (ADD + "stop: {grok_threshold: 1.5}\n", "stop.grok_threshold", "must be ≤ 1"),
    "no grid": ("train: {max_steps: 10}\n", "grid", "is required"),
    "no workload axis": ("grid:\n  seed: [1]\n", "grid.workload", "is required"),
    "override of an unknown workload": (ADD + "per_workload:\n  mod_div: {monitor: {window: 3}}\n",
                                        "per_workload.mod_div", "must be one of 'mod_add'"),
    "override of an unknown section": (ADD + "per_workload:\n  mod_add: {monitr: {window: 3}}\n",
                                       "per_workload.mod_add.monitr", "must be one of 'train', 'optimizer'"),
    "negative learning rate": (ADD + "optimizer: {lr: -1.0e-3}\n", "optimizer.lr", "must be > 0"),
    "bad grid value on a key path": (ADD + "  train.task.train_frac: [0.5, 1.5]\n", "grid.train.task.train_frac[1]",
                                     "ModularTaskConfig.train_frac: got 1.5; allowed: a number in (0, 1)"),
    "heads do not divide the width": (ADD + "train: {model: {d_model: 30, n_heads: 4}}\n", "train.model.d_model",
                                      "allowed: a multiple of n_heads"),
    "unknown decay mode": (ADD + "optimizer: {decay: some}\n", "optimizer.decay", "must be one of 'all', 'matrices'"),
    "max_failures below -1": (ADD + "max_failures: -2\n", "max_failures", "must be ≥ -1"),
    "fractional eval interval": (ADD + "train: {eval_every: 0.5}\n", "train.eval_every", "must be an integer, got 0.5"),
    "duplicate key": (ADD + "train: {max_steps: 10}\ntrain: {max_steps: 20}\n", "line 6", "train: duplicate key"),
    "alias bomb": (BOMB, "sweep.yaml", "expands to more than 200,000 nodes"),
    "reserved sweep name": (ADD, "name", "sweep name 'features' is reserved"),
    "http storage root": (ADD + TINY, "storage", "unsupported storage root"),
    "upper-case scheme": (ADD + TINY, "storage", "URI schemes are lower-case; accepted: a local path, file://"),
    "collapsed s3 URI": (ADD + TINY, "storage", "s3:/bucket/x: malformed s3 URI"),
    "home of no such user": (ADD + TINY, "storage", "cannot expand '~no-such-user-edgesweep'"),
    "trial id too long for a file name": (
        "grid:\n  workload: [mod_add]\n  seed: [9223372036854775807]\n  optimizer.lr: [0.0012345678901234567]\n"
        "  optimizer.grad_clip: [0.12345678901234567]\n  optimizer.momentum: [0.12345678901234567]\n"
        "  train.task.train_frac: [0.42345678901234567]\n  train.data_seed: [9223372036854775807]\n"
        "  monitor.sketch_seed: [9223372036854775807]\n  optimizer.warmup_steps: [123456789]\n",
        "grid", "characters; at most 201 fit in the file names made from it"),
    "too many trials": ("grid:\n  workload: [mod_add]\n  seed: [" + ", ".join(map(str, range(10001))) + "]\n",
                        "grid", "10,001 trials exceed the limit of 10,000; pass --max-trials 10001"),
}


def run_cli_cases(tmp_path: Path, cases: dict[str, str]) -> dict[str, dict]:
    """Run ``edgesweep run FILE`` on every case in ONE fresh interpreter (one import of the
    package for 40 cases), recording exit code, stderr and whether Ray was imported."""
    files = {}
    for i, (case, text) in enumerate(cases.items()):
        d = tmp_path / f"c{i}"
        d.mkdir()
        f = d / "sweep.yaml"
        f.write_text(text.replace("{storage}", str(d / "results")))
        files[case] = str(f)
    code = textwrap.dedent("""\
        import contextlib, io, json, sys
        from edgesweep.cli import main
        out = {}
        for case, path in json.loads(sys.argv[1]).items():
            err = io.StringIO()
            with contextlib.redirect_stderr(err):
                rc = main(["run", path])
            out[case] = {"rc": rc, "err": err.getvalue(), "ray": "ray" in sys.modules}
        print(json.dumps(out))
        """)
    env = dict(os.environ, RAY_ADDRESS="127.0.0.1:1")  # would fail loudly if ever dialled
    proc = subprocess.run([sys.executable, "-c", code, json.dumps(files)], capture_output=True, text=True,
                          cwd=REPO, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr
    results = json.loads(proc.stdout.strip().splitlines()[-1])
    for case, r in results.items():
        r["file"] = files[case]
    return results


HEADS = {"reserved sweep name": "name: features\nstorage: {storage}\n",
         "http storage root": "name: bad\nstorage: http://example.invalid/x\n",
         "upper-case scheme": "name: bad\nstorage: S3://bucket/x\n",
         "collapsed s3 URI": "name: bad\nstorage: s3:/bucket/x\n",
         "home of no such user": "name: bad\nstorage: ~no-such-user-edgesweep/x\n"}


@pytest.fixture(scope="module")
def bad_results(tmp_path_factory):
    return run_cli_cases(tmp_path_factory.mktemp("bad"),
                         {c: HEADS.get(c, HEAD) + body for c, (body, _, _) in BAD_SPECS.items()})


def test_at_least_30_malformed_specs():
    assert len(BAD_SPECS) >= 30


@pytest.mark.parametrize("case", sorted(BAD_SPECS))
def test_bad_spec_is_one_clear_message_and_no_ray(case, bad_results):
    _, key, words = BAD_SPECS[case]
    r = bad_results[case]
    assert r["rc"] == 2, r
    err = r["err"].strip()
    assert len(err.splitlines()) == 1, err  # one line, no traceback
    assert r["file"] in err and key in err and words in err, err
    assert "Traceback" not in err and not r["ray"]


def test_unwritable_storage_root_is_rejected_before_ray(tmp_path):
    blocker = tmp_path / "file-not-dir"
    blocker.write_text("x")
    r = run_cli_cases(tmp_path, {"blocked": HEAD.replace("{storage}", str(blocker / "sub")) + ADD + TINY})["blocked"]
    assert r["rc"] == 2 and "storage: cannot write to" in r["err"] and str(blocker) in r["err"]
    assert not r["ray"]


def test_missing_file_and_bad_yaml(tmp_path):
    with pytest.raises(SpecError, match="not found"):
        load_spec(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [unclosed\n")
    with pytest.raises(SpecError, match=f"{bad} \\(line 2\\): not valid YAML"):
        load_spec(bad)


def test_yaml_1_1_numbers_read_as_meant(tmp_path):
    f = tmp_path / "s.yaml"
    f.write_text("name: n\n" + ADD + "  optimizer.lr: [1e-3, 3E-3]\n" + TINY + "optimizer: {grad_clip: 1e0}\n")
    spec = load_spec(f)
    assert [t.optim["lr"] for t in spec.trials] == [0.001, 0.003]
    assert spec.trials[0].optim["grad_clip"] == 1.0


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


def test_any_key_path_is_an_axis_and_axis_values_win():
    spec = parse_spec({"name": "g", "grid": {"workload": ["mod_add"], "optimizer.lr": [1e-3, 3e-3],
                                             "train.task.train_frac": [0.3, 0.5], "monitor.window": [4]},
                       "train": {"preset": "tiny", "task": {"p": 13}},
                       "per_workload": {"mod_add": {"monitor": {"window": 6}}}})
    assert [t.trial_id for t in spec.trials] == [
        "mod_add-adamw-wd1.0-s42-lr0.001-train_frac0.3-window4",
        "mod_add-adamw-wd1.0-s42-lr0.001-train_frac0.5-window4",
        "mod_add-adamw-wd1.0-s42-lr0.003-train_frac0.3-window4",
        "mod_add-adamw-wd1.0-s42-lr0.003-train_frac0.5-window4"]
    t = spec.trials[1]
    assert t.train["task"] == {"p": 13, "train_frac": 0.5}  # the section's other keys stay
    assert t.optim["lr"] == 0.001 and t.monitor["window"] == 4  # axis > per_workload > section
    assert t.axes == {"optimizer.lr": 0.001, "train.task.train_frac": 0.5, "monitor.window": 4}
    assert t.train_config().task_overrides == {"p": 13, "train_frac": 0.5}


def test_per_workload_model_and_task_merge_key_by_key_like_a_block():
    """A workload's ``train.model`` / ``train.task`` override changes the keys it names and keeps
    the section's others (it used to replace the whole mapping, silently training another
    model); per_workload wins over a block's own sections; an axis wins over both."""
    raw = {"name": "m", "grid": {"workload": ["mod_add", "mod_sub"]},
           "train": {"preset": "tiny", "model": {"d_model": 32, "d_ff": 64}, "task": {"p": 23, "train_frac": 0.5}},
           "per_workload": {"mod_add": {"train": {"model": {"n_layers": 1}, "task": {"train_frac": 0.4}},
                                        "monitor": {"window": 3}}}}
    add, sub = parse_spec(raw).trials
    assert add.train["model"] == {"d_model": 32, "d_ff": 64, "n_layers": 1}
    assert add.train["task"] == {"p": 23, "train_frac": 0.4}
    assert sub.train["model"] == {"d_model": 32, "d_ff": 64} and sub.train["task"] == {"p": 23, "train_frac": 0.5}
    assert add.train_config().task_overrides == {"p": 23, "train_frac": 0.4}
    blocks = parse_spec(dict(raw, blocks=[{"name": "b", "monitor": {"window": 7}, "train": {"model": {"d_ff": 48}},
                                           "grid": {"train.task.p": [29]}}])).trials
    add = next(t for t in blocks if t.workload == "mod_add")
    assert add.monitor["window"] == 3  # per_workload > the block's sections (SPEC.md's precedence)
    assert add.train["model"] == {"d_model": 32, "d_ff": 48, "n_layers": 1}
    assert add.train["task"] == {"p": 29, "train_frac": 0.4}  # the axis > per_workload
    # A block's own per_workload entry changes only the keys it names: the top level's
    # max_steps and model key for mod_add survive it (it used to replace the whole entry).
    raw_steps = dict(raw, per_workload={"mod_add": {"train": {"max_steps": 300, "model": {"n_layers": 1}}}})
    blocks = parse_spec(dict(raw_steps, blocks=[{"name": "b", "per_workload": {
        "mod_add": {"monitor": {"window": 5}, "train": {"model": {"d_ff": 48}}}}}])).trials
    add = next(t for t in blocks if t.workload == "mod_add")
    assert (add.train["max_steps"], add.monitor["window"]) == (300, 5)
    assert add.train["model"] == {"d_model": 32, "d_ff": 48, "n_layers": 1}
    # an error in a merged key is located where the value came from
    bad = dict(raw, per_workload={"mod_add": {"train": {"model": {"n_layers": 0}}}})
    with pytest.raises(SpecError, match=r"per_workload\.mod_add\.train\.model\.n_layers"):
        parse_spec(bad)
    bad = dict(raw, train={**raw["train"], "model": {"d_model": 33, "d_ff": 64}},
               per_workload={"mod_add": {"train": {"model": {"n_layers": 1}}}})
    with pytest.raises(SpecError, match=r": train\.model\.d_model: .*33 is not divisible"):
        parse_spec(bad)


def test_settings_that_do_nothing_are_noted():
    """Valid, but silently without effect: an override for a workload no trial trains, and a
    snapshot interval so long that a trial never completes a window (no features rows at all)."""
    spec = parse_spec({"name": "n", "grid": {"workload": ["mod_add"], "train.max_steps": [100, 300]},
                       "train": {"preset": "tiny"}, "monitor": {"every": 60},
                       "per_workload": {"dyck": {"monitor": {"window": 3}}, "mod_add": {"monitor": {"window": 4}}}})
    assert spec.notes == ("per_workload.dyck: no trial trains dyck, so this override is unused",
                          "1 trial(s) will write no features rows: monitor.every = 60 with train.max_steps = 100 "
                          "(the first window ends at step 2·every = 120)")
    assert load_spec(REPO / "sweeps" / "grokking.yaml").notes == ()


def test_a_text_corpus_path_is_checked_where_it_can_be(tmp_path):
    """A trial reads its corpus in its own working directory (Tune changes into it), so a
    relative path is an error naming its key; an absolute path missing here is a note (the
    training node may have it); one that exists here gives no note."""
    def spec(corpus, where="per_workload"):
        raw = {"name": "c", "grid": {"workload": ["tinystories", "mod_add"]}, "train": {"preset": "tiny"}}
        if where == "per_workload":
            raw["per_workload"] = {"tinystories": {"train": {"task": {"corpus": corpus}}}}
        else:
            raw["grid"]["train.task.corpus"] = [corpus]
            raw["grid"]["workload"] = ["tinystories"]
        return parse_spec(raw, "c.yaml")

    with pytest.raises(SpecError, match=r"^c\.yaml: per_workload\.tinystories\.train\.task\.corpus: 'data/x\.txt' is "
                                        r"a relative path; a trial runs in its own working directory"):
        spec("data/x.txt")
    with pytest.raises(SpecError, match=r"^c\.yaml: grid\.train\.task\.corpus\[0\]: 'x\.txt' is a relative path"):
        spec("x.txt", where="grid")
    # set inside a block: located there, with its line
    in_block = tmp_path / "b.yaml"
    in_block.write_text("name: m\ngrid: {workload: [mod_add]}\ntrain: {preset: tiny}\nblocks:\n  - name: a\n"
                        "  - name: b\n    grid: {workload: [tinystories]}\n    per_workload:\n      tinystories:\n"
                        "        train: {task: {corpus: data/x.txt}}\n")
    with pytest.raises(SpecError, match=r"b\.yaml: blocks\[1\]\.per_workload\.tinystories\.train\.task\.corpus "
                                        r"\(line 10\): 'data/x\.txt' is a relative path"):
        load_spec(in_block)
    missing = str(tmp_path / "absent.txt")
    assert spec(missing).notes == (f"train.task.corpus: {missing} is not a file on this machine; trials of "
                                   "tinystories fail unless it exists on the node that trains them",)
    (tmp_path / "absent.txt").write_text("Once upon a time. " * 100)
    assert spec(missing).notes == ()


def test_random_search_is_deterministic_and_draws_from_the_distributions():
    raw = {"name": "r", "method": "random", "samples": 40, "seed": 7, "train": {"preset": "tiny"},
           "grid": {"workload": ["mod_add", "mod_sub"],
                    "weight_decay": {"log_uniform": [0.01, 3.0], "p_zero": 0.25},
                    "optimizer.lr": {"log_uniform": [1e-4, 1e-2]},
                    "train.task.train_frac": {"uniform": [0.3, 0.7]},
                    "seed": {"int_uniform": [0, 1000]}}}
    a, b = parse_spec(raw), parse_spec(raw)
    assert [t.trial_id for t in a.trials] == [t.trial_id for t in b.trials]
    assert len(a.trials) == 40 and len({t.trial_id for t in a.trials}) == 40
    c = parse_spec(dict(raw, seed=8))
    assert [t.trial_id for t in c.trials] != [t.trial_id for t in a.trials]
    wds = [t.weight_decay for t in a.trials]
    assert all(w == 0.0 or 0.01 <= w <= 3.0 for w in wds) and 0 < wds.count(0.0) < 40
    assert all(1e-4 <= t.optim["lr"] <= 1e-2 for t in a.trials)
    assert all(0.3 <= t.train["task"]["train_frac"] <= 0.7 for t in a.trials)
    assert {t.workload for t in a.trials} == {"mod_add", "mod_sub"}
    assert all(0 <= t.seed <= 1000 for t in a.trials)
    # values are rounded to 3 significant digits, so the id shows exactly the value used
    t = a.trials[0]
    assert f"lr{t.optim['lr']!r}" in t.trial_id and len(repr(t.optim["lr"]).replace("0.", "").lstrip("0")) <= 5


def test_shipped_sweeps_validate_and_are_executable():
    for path in sorted((REPO / "sweeps").glob("*.yaml")):
        spec = load_spec(path)
        assert spec.trials, path
        assert path.read_text().startswith("#!/usr/bin/env -S python -m edgesweep run\n"), path
        assert os.access(path, os.X_OK), path
        if path.name == "grokking.yaml":
            assert len(spec.trials) == 48
            assert sum(t.weight_decay > 0 for t in spec.trials) == 24


def test_plan_lists_the_trials_and_starts_nothing(tmp_path):
    for name in ("grid-lr-trainfrac.yaml", "random-small.yaml"):
        out = subprocess.run([sys.executable, "-c", "import sys; from edgesweep.cli import main; rc = main(['plan', "
                              f"'sweeps/{name}']); print('RAY_IMPORTED=' + str('ray' in sys.modules)); sys.exit(rc)"],
                             capture_output=True, text=True, cwd=REPO, timeout=300)
        assert out.returncode == 0, out.stderr
        spec = load_spec(REPO / "sweeps" / name)
        for t in spec.trials:
            assert t.trial_id in out.stdout
        assert f"{len(spec.trials)} trials;" in out.stdout and "of one CPU thread" in out.stdout
        assert "RAY_IMPORTED=False" in out.stdout
    text = plan_text(load_spec(REPO / "sweeps" / "grid-lr-trainfrac.yaml"))
    assert "optimizer.lr=0.001, train.task.train_frac=0.3" in text


def test_existing_spec_files_keep_their_trial_ids():
    # ids of the committed reproduction are what its tables hold: the spec change keeps them
    from edgesweep.storage import scan

    spec = load_spec(REPO / "docs" / "results" / "grokking-laptop" / "sweep.yaml")
    stored = set(scan(REPO / "docs" / "results" / "grokking-laptop", "trials").collect()["trial_id"])
    assert {t.trial_id for t in spec.trials} == stored


def test_blocks_are_sub_spaces_with_their_own_draws_and_settings(tmp_path):
    f = tmp_path / "b.yaml"
    f.write_text(textwrap.dedent("""\
        name: b
        method: random
        seed: 3
        grid:
          workload: [mod_add]
          optimizer.lr: {log_uniform: [1.0e-3, 3.0e-3]}
        train: {preset: tiny, max_steps: 100, task: {p: 13}}
        blocks:
          - name: pos
            samples: 3
            grid: {weight_decay: {log_uniform: [0.3, 1.0]}}
          - name: neg
            samples: 2
            grid: {weight_decay: [0.0]}
            train: {max_steps: 300, task: {train_frac: 0.3}}
        """))
    spec = load_spec(f)
    assert [t.block for t in spec.trials] == ["pos"] * 3 + ["neg"] * 2
    pos, neg = spec.trials[0], spec.trials[-1]
    assert pos.train["max_steps"] == 100 and pos.train["task"] == {"p": 13} and 0.3 <= pos.weight_decay <= 1
    assert neg.train["max_steps"] == 300 and neg.train["task"] == {"p": 13, "train_frac": 0.3}
    assert neg.weight_decay == 0.0
    # a block's draws do not depend on the blocks before it
    text = f.read_text()
    g = tmp_path / "b2.yaml"
    g.write_text(text.replace("samples: 3", "samples: 4"))
    assert [t.trial_id for t in load_spec(g).trials if t.block == "neg"] == [t.trial_id for t in spec.trials[-2:]]
    # an error in a block names the block's key and line
    g.write_text(text.replace("max_steps: 300", "max_steps: 0"))
    with pytest.raises(SpecError, match=r"blocks\[1\]\.train\.max_steps \(line 15\): must be ≥ 1"):
        load_spec(g)


def test_readme_spec_example_is_the_shipped_grokking_sweep():
    """The README shows sweeps/grokking.yaml with comments; it must stay that file (it drifted
    once: other resources and SCAN cadence than the sweep it claimed to show)."""
    from edgesweep.platform.spec_yaml import load_yaml

    text = (REPO / "README.md").read_text()
    start = text.index("```yaml\n# sweeps/grokking.yaml") + len("```yaml\n")
    raw, lines = load_yaml(text[start:text.index("```", start)])
    shown, shipped = parse_spec(raw, "README.md", lines), load_spec(REPO / "sweeps" / "grokking.yaml")
    assert shown.trial_resources == shipped.trial_resources and shown.max_failures == shipped.max_failures
    assert [t.as_dict() for t in shown.trials] == [t.as_dict() for t in shipped.trials]


@pytest.mark.parametrize("argv, says", [
    (["plan", "sweeps/smoke.yaml", "--storage", "s3:/x"], "sweeps/smoke.yaml: storage: s3:/x: malformed s3 URI"),
    (["plan", "sweeps/smoke.yaml", "--storage", "http://example.invalid/x"], "storage: http://example.invalid/x: unsupported"),
    (["plan", "sweeps"], "sweeps: is a directory; give a sweep spec file"),
    (["plan", "sweeps/smoke.yaml", "--max-trials", "-1"], "argument --max-trials: -1 is out of range (must be ≥ 1)"),
    (["status", "docs/results/grokking-laptop", "--watch", "--interval", "0"], "argument --interval: 0 is out of range"),
    (["status", "docs/results/grokking-laptop", "--interval", "nan"], "argument --interval: nan is out of range"),
    (["detect", "docs/results/grokking-laptop", "--delta", "-5"], "argument --delta: -5 is out of range"),
    (["detect", "docs/results/grokking-laptop", "--config", "[1]"],
     "--config: must be a JSON object of detector parameters, got '[1]'"),
    (["detect", "docs/results/grokking-laptop", "--config", ""], "--config: Expecting value"),  # not "no config"
    (["detect", "docs/results/grokking-laptop", "--delta", "9223372036854775808"],
     "argument --delta: 9223372036854775808 is out of range (must be ≥ 1 and ≤ 1,000,000,000,000)"),
    (["spectral-demo", "--seed", "99999999999999999999"], "argument --seed: 99999999999999999999 is out of range"),
    (["spectral-demo", "--every", "x"], "argument --every: 'x' is not an integer"),
    (["spectral-demo", "--window", "1001"], "argument --window: 1001 is out of range (must be ≥ 2 and ≤ 1,000)"),
    # An unset shell variable is not the current folder, and SQL is not raw bytes.
    (["aggregate", ""], "argument path: '' is not a path: it is empty or blank"),
    (["verify", " "], "argument root: ' ' is not a path: it is empty or blank"),
    (["plan", "sweeps/smoke.yaml", "--storage", ""], "argument --storage: '' is not a path"),
    (["query", "docs/results/grokking-laptop", "SELECT 1", "-o", ""], "argument --output/-o: '' is not a path"),
    (["query", "docs/results/grokking-laptop", "SELECT \udcff FROM runs"],
     "argument SQL: the SQL is not UTF-8 text (byte 0xff at character 8)"),
    (["status", "docs/results/grokking-corpus"], "it holds detection, runs, summary: the aggregation's outputs, "
                                                 "without the raw tables"),
])
def test_cli_refuses_bad_arguments_in_one_line_before_doing_anything(argv, says):
    """Bad flag values and storage roots: one line naming the flag or key, exit 2 — before any
    sweep folder is read or written (these would otherwise loop, spin, or end in a traceback)."""
    proc = subprocess.run([sys.executable, "-m", "edgesweep", *argv], cwd=REPO, capture_output=True,
                          text=True, timeout=120)
    err = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and says in err[-1], proc.stderr
    assert "Traceback" not in proc.stderr and proc.stdout == ""


def test_spectral_demo_window_flag_has_the_monitors_bound():
    """The CLI writes the monitor's window bound out (so `--help` needs no torch): it must stay
    the monitor's, accepting MAX_WINDOW and refusing one more."""
    import argparse

    from edgesweep.cli import build_parser
    from edgesweep.spectral import MAX_WINDOW

    parser = build_parser()
    assert parser.parse_args(["spectral-demo", "--window", str(MAX_WINDOW)]).window == MAX_WINDOW
    window = next(a for a in parser._subparsers._group_actions[0].choices["spectral-demo"]._actions
                  if a.dest == "window")
    with pytest.raises(argparse.ArgumentTypeError):
        window.type(str(MAX_WINDOW + 1))


def test_submit_refuses_a_relative_spec_the_jobs_upload_would_not_hold(tmp_path):
    """The job runs `edgesweep run SPEC` in an upload of the submitting folder without EXCLUDES
    and without what git ignores: a relative path there, or out of the folder, names nothing
    on the cluster. Refused before any network call; an absolute path, or one that is uploaded,
    is not."""
    from edgesweep.platform.submit import left_out_of_the_upload

    work = tmp_path / "work"
    (work / "private").mkdir(parents=True)
    subprocess.run(["git", "init", "-q", str(work)], check=True)
    (work / ".gitignore").write_text("private/\n")
    assert "lies outside" in left_out_of_the_upload("../s.yaml", str(work))
    assert left_out_of_the_upload("results/s.yaml", str(work)) == \
        f"it lies in results/, and the upload of {work} leaves out every folder named 'results'"
    assert left_out_of_the_upload("docs/results/x/sweep.yaml", str(work)).startswith("it lies in docs/results/, ")
    assert left_out_of_the_upload("a/__pycache__/s.yaml", str(work)).startswith("it lies in a/__pycache__/, ")
    assert left_out_of_the_upload("x.egg-info/s.yaml", str(work)).endswith("every folder matching '*.egg-info'")
    assert "git ignores it" in left_out_of_the_upload("private/s.yaml", str(work))
    for fine in ("sweeps/s.yaml", "s.yaml", str(tmp_path / "elsewhere" / "s.yaml"), "./sub/../s.yaml"):
        assert left_out_of_the_upload(fine, str(work)) is None, fine

    cmd = [sys.executable, "-m", "edgesweep", "submit", "docs/results/grokking-laptop/sweep.yaml",
           "--address", "http://127.0.0.1:9", "--no-wait"]
    refused = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert refused.returncode == 2, refused.stdout + refused.stderr
    assert refused.stderr.startswith("edgesweep submit: error: docs/results/grokking-laptop/sweep.yaml: the job "
                                     "could not read this spec: it lies in docs/results/, and the upload of "), refused.stderr
    assert "127.0.0.1:9" not in refused.stderr


def test_submit_passes_the_driver_options_on_to_the_jobs_run(tmp_path):
    """`submit` takes `run`'s driver options and hands them to the job's `edgesweep run`: the
    job's command, parsed by the real `run` parser, carries the same values. A sweep over the
    default trial limit passes the local spec check with --max-trials (and then fails only on
    the unreachable address), where without it the check refuses it naming the flag."""
    from edgesweep.cli import build_parser
    from edgesweep.platform.submit import job_entrypoint

    argv = ["submit", "s.yaml", "--address", "http://h:8265", "--storage", "s3://b/p", "--resume",
            "--max-trials", "20000", "--no-aggregate", "--resource-timeout", "90"]
    given = build_parser().parse_args(argv)
    entry = job_entrypoint(given.spec, storage=given.storage, resume=given.resume, max_trials=given.max_trials,
                           aggregate=not given.no_aggregate, resource_timeout=given.resource_timeout)
    assert entry[:3] == ["python", "-m", "edgesweep"]
    job = build_parser().parse_args(entry[3:])
    assert job.command == "run"
    assert {k: getattr(job, k) for k in ("spec", "storage", "resume", "max_trials", "no_aggregate",
                                         "resource_timeout")} == \
        {"spec": "s.yaml", "storage": "s3://b/p", "resume": True, "max_trials": 20000, "no_aggregate": True,
         "resource_timeout": 90.0}
    plain = build_parser().parse_args(job_entrypoint("s.yaml")[3:])
    assert (plain.resume, plain.no_aggregate, plain.resource_timeout, plain.storage) == (False, False, None, None)

    big = tmp_path / "big.yaml"
    big.write_text(f"name: big\nstorage: {tmp_path / 'results'}\ngrid:\n  workload: [mod_add]\n  seed: ["
                   + ", ".join(map(str, range(10001))) + "]\n")
    cmd = [sys.executable, "-m", "edgesweep", "submit", str(big), "--address", "http://127.0.0.1:9", "--no-wait"]
    refused = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert refused.returncode != 0 and "pass --max-trials 10001" in refused.stderr, refused.stderr
    passed = subprocess.run(cmd + ["--max-trials", "10001"], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert passed.returncode != 0 and "max-trials" not in passed.stderr, passed.stderr
    assert "127.0.0.1:9" in passed.stderr and "Traceback" not in passed.stderr, passed.stderr
