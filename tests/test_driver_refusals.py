"""What `edgesweep run` refuses before it starts anything (no Ray cluster is started here):
a second run into a sweep folder that holds state or tables, a resume with nothing to resume,
and (spec_record.py) a resume whose spec differs from the one the sweep was started with. The
last one needs a real sweep's Tune state: tests/test_platform_s3.py runs it end to end."""

from __future__ import annotations

import json

import pytest

from edgesweep.platform.driver import run_sweep
from edgesweep.platform.spec import SpecError, load_spec
from edgesweep.platform.spec_record import spec_changes, spec_record
from edgesweep.storage import StorageError
from edgesweep.storage.fs import env_seconds

SPEC = """\
name: {name}
storage: {storage}
grid:
  workload: [mod_add]
  weight_decay: [1.0, 0.0]
train: {{preset: tiny, max_steps: {steps}, eval_every: 10, checkpoint_every: 20}}
monitor: {{window: 4, every: 5, params: all}}
"""


def _spec(tmp_path, name="synth", steps=60) -> str:
    path = tmp_path / f"{name}-{steps}.yaml"
    path.write_text(SPEC.format(name=name, storage=tmp_path / "results", steps=steps))
    return str(path)


def test_a_run_into_a_folder_holding_another_runs_tables_is_refused(tmp_path, synth):
    """Tables but no Tune state (another run's data, or a copy of one): a fresh run would
    aggregate its trials together with them."""
    synth.build_sweep(tmp_path / "results", [synth.BY_ID["A_add_wd1_s42"]])
    with pytest.raises(SpecError, match=r"already holds tables \(trials, features, evals\) but no sweep state"):
        run_sweep(_spec(tmp_path))
    assert not (tmp_path / "results" / "synth" / "_spec.json").exists()


def test_a_run_into_a_started_sweep_and_a_resume_of_nothing_are_refused(tmp_path):
    spec = _spec(tmp_path)
    with pytest.raises(SpecError, match="--resume: no sweep state at .* to resume"):
        run_sweep(spec, resume=True)
    assert not (tmp_path / "results").exists()  # a refusal leaves no folder behind
    tune = tmp_path / "results" / "synth" / "_tune"
    tune.mkdir(parents=True)
    (tune / "experiment_state-2026-12-07_16-59-01.json").write_text('{"trial_data": []}')
    with pytest.raises(SpecError, match="already holds this sweep's state; use --resume"):
        run_sweep(spec)


@pytest.mark.parametrize("resume", [False, True], ids=["run", "resume"])
def test_a_tune_folder_without_an_experiment_state_is_no_sweep_to_resume(tmp_path, synth, resume):
    """Tune writes tuner.pkl, then its experiment state seconds later. A driver stopped in between
    left a folder that Tune "can restore": the resume then died on a KeyError in the trial names,
    and a plain run said "use --resume". Both now say what it is, and what to do."""
    spec = _spec(tmp_path)
    tune = tmp_path / "results" / "synth" / "_tune"
    tune.mkdir(parents=True)
    (tune / "tuner.pkl").write_bytes(b"\x80\x05N.")
    with pytest.raises(SpecError, match=r"synth/_tune holds no experiment state \(its driver stopped before Tune "
                                        r"saved any\), so there is nothing to resume: remove that folder and run "
                                        r"again without --resume$"):
        run_sweep(spec, resume=resume)
    synth.build_sweep(tmp_path / "results", [synth.BY_ID["A_add_wd1_s42"]])  # rows stored before the stop
    with pytest.raises(SpecError, match=r"nothing to resume: the rows it stored \(trials, features, evals\) stay there "
                                        r"\(`edgesweep aggregate` summarises them\); run the sweep again under another "
                                        r"name or storage$"):
        run_sweep(spec, resume=resume)


def test_a_storage_root_that_is_a_sweep_or_lies_in_one_is_refused_by_run_and_plan(tmp_path, synth, capsys):
    """A sweep folder given as the storage root would get the new sweep beside its tables (and
    make it unreadable: "ambiguous root"); a root inside a table folder puts a sweep among its
    partitions. `run` refuses both before it creates anything, and `plan` says the same; a file
    is no root either. `plan` also notes what `run` would refuse in the sweep folder itself."""
    from edgesweep.platform.plan import plan_main
    from edgesweep.storage import verify

    sweep = synth.build_sweep(tmp_path / "results", [synth.BY_ID["A_add_wd1_s42"]])
    started = tmp_path / "started"  # a sweep whose driver has started, nothing stored yet
    (started / "_tune").mkdir(parents=True)
    (tmp_path / "notes.txt").write_text("x")
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    for storage, says in ((sweep, "is itself a sweep's folder (it holds tables or a driver's state)"),
                          (started, "is itself a sweep's folder"),
                          (f"{sweep}/features/x", f"lies inside the sweep folder {sweep}"),
                          (f"{sweep}/_sealed", f"lies inside the sweep folder {sweep}"),
                          (tmp_path / "notes.txt", "is a file, not a folder")):
        with pytest.raises(SpecError, match=f"storage: {storage} {says}".replace("(", r"\(").replace(")", r"\)")):
            run_sweep(_spec(tmp_path, name="fresh"), storage=str(storage))
        with pytest.raises(SpecError, match=says.replace("(", r"\(").replace(")", r"\)")):
            plan_main(_spec(tmp_path, name="fresh"), storage=str(storage))
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*") if not p.name.endswith(".yaml")) == before
    assert verify(sweep).ok
    # the sweep folder itself: another run's tables (run refuses, above); this sweep's state
    capsys.readouterr()
    assert plan_main(_spec(tmp_path)) == 0
    assert (f"note: {tmp_path / 'results' / 'synth'} already holds tables (trials, features, evals) but no sweep "
            "state: `run` refuses to mix its trials with them") in capsys.readouterr().out
    tune = tmp_path / "results" / "fresh" / "_tune"
    tune.mkdir(parents=True)
    assert plan_main(_spec(tmp_path, name="fresh")) == 0
    assert "fresh/_tune holds no experiment state (its driver stopped before Tune saved any): `run` and " \
        "`run --resume` refuse it, saying what can be done" in capsys.readouterr().out
    state = tune / "experiment_state-2026-12-07_16-59-01.json"
    state.write_text('{"trial_data": [')  # cut short by a full disk
    assert plan_main(_spec(tmp_path, name="fresh")) == 0
    assert f"already holds this sweep's state, but {state} is damaged (JSONDecodeError" in capsys.readouterr().out
    state.write_text('{"trial_data": []}')
    assert plan_main(_spec(tmp_path, name="fresh")) == 0
    assert "already holds this sweep's state: `run` refuses to start it again; `run --resume` continues it" in \
        capsys.readouterr().out
    assert plan_main(_spec(tmp_path, name="other")) == 0 and "note:" not in capsys.readouterr().out
    # a folder that is merely named like a table is no sweep: a root may lie in it
    assert plan_main(_spec(tmp_path, name="other"), storage=str(tmp_path / "runs" / "2026")) == 0


def test_plan_does_not_list_the_folders_above_its_storage_root(tmp_path, capsys):
    """Whether a folder above the storage root is a sweep's is asked table by table: a listing of
    it would read every name there, and one name that is not UTF-8 (or thousands of entries,
    as in /tmp) stopped `plan` and `run` with an error about something unrelated."""
    import os

    from edgesweep.platform.plan import plan_main

    os.mkdir(os.path.join(os.fsencode(tmp_path), b"\xffelsewhere"))
    assert plan_main(_spec(tmp_path)) == 0, capsys.readouterr()


def test_spec_changes_names_added_removed_and_changed_trials(tmp_path):
    started = load_spec(_spec(tmp_path))
    recorded = json.loads(spec_record(started))
    assert spec_changes(recorded, started) == []
    assert spec_changes(recorded, load_spec(_spec(tmp_path, steps=80))) == [
        "train.max_steps: 60 → 80 in 2 trial(s) (mod_add-adamw-wd1.0-s42, …)"]
    more = tmp_path / "more.yaml"
    more.write_text(SPEC.format(name="synth", storage=tmp_path / "results", steps=60)
                    .replace("weight_decay: [1.0, 0.0]", "weight_decay: [1.0, 0.5]"))
    assert spec_changes(recorded, load_spec(str(more))) == [
        "1 trial(s) added (mod_add-adamw-wd0.5-s42)", "1 trial(s) removed (mod_add-adamw-wd0.0-s42)"]


@pytest.mark.parametrize("doc", ['[1, 2]', '{"format": 1, "trials": "nope"}', '{"trials": [{"id": "x"}]}',
                                 '{"trials": [3]}', '"text"'])
def test_a_spec_record_of_the_wrong_shape_is_unreadable_with_a_warning_not_a_traceback(tmp_path, capsys, doc):
    """JSON that parses but is not a spec record (a list, trials without ids) gets what JSON
    that does not parse gets: a warning naming _spec.json, and the resume goes on uncompared."""
    from edgesweep.platform.driver import _check_resumed_spec
    from edgesweep.storage import SweepPath

    spec = load_spec(_spec(tmp_path))
    folder = tmp_path / "results" / "synth"
    folder.mkdir(parents=True)
    (folder / "_spec.json").write_text(doc)
    _check_resumed_spec(spec, SweepPath.parse(folder))
    out = capsys.readouterr().out
    assert f"WARNING: {folder}/_spec.json is unreadable (" in out and "the spec is not compared" in out, out


@pytest.mark.parametrize("value", ["nan", "abc", "-1", "inf"])
def test_garbage_in_a_seconds_variable_is_refused_naming_it_before_a_cluster_starts(tmp_path, monkeypatch, value):
    """A NaN timeout made a deadline that never came (the resource wait, the S3 retries looped
    forever); text gave a bare ValueError after the local cluster had started."""
    monkeypatch.setenv("EDGESWEEP_RESOURCE_TIMEOUT_S", value)
    with pytest.raises(StorageError, match=f"EDGESWEEP_RESOURCE_TIMEOUT_S='{value}': expected a number of seconds"):
        run_sweep(_spec(tmp_path))
    monkeypatch.delenv("EDGESWEEP_RESOURCE_TIMEOUT_S")
    monkeypatch.setenv("EDGESWEEP_STORAGE_RETRY_S", value)
    with pytest.raises(StorageError, match=f"EDGESWEEP_STORAGE_RETRY_S='{value}'"):
        run_sweep(_spec(tmp_path))
    assert not (tmp_path / "results" / "synth" / "_spec.json").exists()
    monkeypatch.setenv("EDGESWEEP_STORAGE_RETRY_S", " 30 ")
    assert env_seconds("EDGESWEEP_STORAGE_RETRY_S", 120.0) == 30.0
    monkeypatch.setenv("EDGESWEEP_STORAGE_RETRY_S", "")
    assert env_seconds("EDGESWEEP_STORAGE_RETRY_S", 120.0) == 120.0


def _live_record(tmp_path, sweep: str):
    """A driver record of a real, running process on this host (a `sleep`), as a driver that
    is still running the sweep leaves it."""
    import subprocess
    import time

    from edgesweep.storage.liveness import DriverRecord, process_identity, write_driver_record
    from edgesweep.storage.sweep import SweepPath

    proc = subprocess.Popen(["sleep", "120"])
    time.sleep(0.2)
    rec = DriverRecord.start()
    rec.pid, rec.pid_start = proc.pid, process_identity(proc.pid)
    sp = SweepPath.parse(str(tmp_path / "results" / sweep))
    write_driver_record(sp, rec)
    return proc, sp


@pytest.mark.parametrize("resume", [False, True])
def test_a_sweep_that_another_driver_is_running_is_refused(tmp_path, resume):
    """A second driver on one sweep (a run started twice, or a --resume while the first still
    runs) trains the same trials into the same files: corrupt parts, trials failing on each
    other's checkpoints. Refused, naming the other driver, before a cluster starts; once that
    driver is gone the same command goes past this check."""
    proc, sp = _live_record(tmp_path, "synth")
    (tmp_path / "results" / "synth" / "_tune").mkdir()
    try:
        with pytest.raises(SpecError, match=rf"is being run by another driver \(pid {proc.pid} on .*"
                                            rf"{'resuming' if resume else 'starting'} it as well would train"):
            run_sweep(_spec(tmp_path), resume=resume)
    finally:
        proc.kill()
        proc.wait()
    # the driver is gone: what is left is the ordinary answer for this folder
    # (here a _tune folder Tune never saved an experiment state into)
    with pytest.raises(SpecError, match="holds no experiment state .* nothing to resume"):
        run_sweep(_spec(tmp_path), resume=resume)


def test_of_two_drivers_claiming_one_sweep_at_once_the_earlier_writer_gives_up(tmp_path, monkeypatch):
    """Both found no live driver; each writes its record, waits, reads it back. A real second
    writer replaces the record while the first waits: the first refuses."""
    import threading

    from edgesweep.platform import driver
    from edgesweep.storage.liveness import DriverRecord, process_identity, write_driver_record
    from edgesweep.storage.sweep import SweepPath

    spec = load_spec(_spec(tmp_path))
    sp = SweepPath.parse(str(tmp_path / "results" / "synth"))
    monkeypatch.setattr(driver, "CLAIM_SETTLE_S", 1.0)

    def second_driver():
        rec = DriverRecord.start()
        rec.pid_start = process_identity()
        rec.started_at = "2026-12-07T00:00:01+00:00"  # another process: another record
        write_driver_record(sp, rec)

    threading.Timer(0.3, second_driver).start()
    with pytest.raises(SpecError, match="is being run by another driver"):
        driver._Heartbeat(sp, spec, resume=False)
    # alone, the claim holds and the record read back is this driver's
    (tmp_path / "results" / "synth" / "_driver.json").unlink()
    hb = driver._Heartbeat(sp, spec, resume=False)
    assert json.loads((tmp_path / "results" / "synth" / "_driver.json").read_text())["started_at"] == hb.rec.started_at


def test_the_resume_command_keeps_the_storage_override():
    from edgesweep.platform.driver import resume_command
    assert resume_command("sweeps/demo.yaml", None) == "edgesweep run sweeps/demo.yaml --resume"
    assert resume_command("my sweep.yaml", "/data/r oot") == \
        "edgesweep run 'my sweep.yaml' --resume --storage '/data/r oot'"


@pytest.mark.parametrize("damaged", ["experiment_state-2026-12-07_16-59-32.json", "tuner.pkl",
                                     "basic-variant-state-2026-12-07_16-59-32.json"])
def test_a_resume_whose_tune_state_is_damaged_is_refused_naming_the_file(tmp_path, damaged):
    """A disk that filled while Tune wrote its state leaves the newest file cut short. A cut
    experiment state made Tune *restart the experiment* (every trial anew beside the stored
    rows) and the driver fail with a KeyError in its trial names; a cut pickle (the Tuner, the
    grid's search state) ended in Tune's unpickling traceback. Refused before any cluster
    starts, naming the file; intact older files beside it do not hide a damaged newest one."""
    import fnmatch
    import pickle

    from ray.tune.execution.tune_controller import TuneController
    from ray.tune.search.basic_variant import BasicVariantGenerator

    from edgesweep.platform.driver import check_tune_state
    from edgesweep.platform.tune_state import TUNE_PICKLES, TUNE_STATE
    from edgesweep.storage.fs import resolve_root

    assert fnmatch.fnmatch(TuneController.CKPT_FILE_TMPL.format("2026-12-07_16-59-32"), TUNE_STATE)
    assert fnmatch.fnmatch(BasicVariantGenerator.CKPT_FILE_TMPL.format("2026-12-07_16-59-32"), TUNE_PICKLES[1])
    spec = _spec(tmp_path)
    tune_dir = tmp_path / "results" / "synth" / "_tune"
    tune_dir.mkdir(parents=True)
    state, pickled = json.dumps({"trial_data": [["{}", "{}"]]}).encode(), pickle.dumps({"trials": list(range(50))})
    files = {"tuner.pkl": pickled}
    for stamp in ("2026-12-07_16-59-01", "2026-12-07_16-59-32"):
        files[f"experiment_state-{stamp}.json"] = state
        files[f"basic-variant-state-{stamp}.json"] = pickled
    for name, data in files.items():
        (tune_dir / name).write_bytes(data[: len(data) // 2] if name == damaged else data)
    with pytest.raises(SpecError, match=f"--resume: Tune's state {tune_dir / damaged} is damaged "
                                        r"\((JSONDecodeError|ValueError): .*so this sweep cannot be resumed"):
        run_sweep(spec, resume=True)
    (tune_dir / damaged).write_bytes(files[damaged])  # whole again: nothing to refuse
    root = resolve_root(str(tmp_path / "results"))
    check_tune_state(load_spec(spec), root, root.path("synth", "_tune"))


class _Recording:
    """An Unpickler that records every find_class call while it really loads the pickle: the
    oracle for what pickle_globals reads off the opcodes."""

    @staticmethod
    def looked_up(data: bytes) -> list[tuple[str, str]]:
        import io
        import pickle

        calls = []

        class Unpickler(pickle.Unpickler):
            def find_class(self, module, name):
                calls.append((module, name))
                return super().find_class(module, name)

        Unpickler(io.BytesIO(data)).load()
        return calls


def test_the_names_a_pickle_looks_up_are_read_off_its_opcodes_as_unpickling_finds_them():
    """pickle_globals models the stack and memo to recover STACK_GLOBAL's operands. Checked
    against unpickling itself: a Tune RunConfig holding a callback class and a cloudpickled
    function, pickled the way Tune pickles its Tuner (ray.cloudpickle), in protocols 2–5, and
    plain objects in protocols 0–1."""
    import collections
    import pickle

    from ray import cloudpickle, tune

    from edgesweep.platform.tune_state import pickle_globals

    obj = {"config": tune.RunConfig(name="x", callbacks=[tune.Callback()]),
           "again": tune.RunConfig(name="y"),  # memoised strings fetched again
           "ordered": collections.OrderedDict(a=1), "fn": lambda v: v + 1}
    for protocol in (2, 3, 4, 5):
        data = cloudpickle.dumps(obj, protocol=protocol)
        assert pickle_globals(data) == _Recording.looked_up(data) != [], protocol
    plain = [collections.OrderedDict(a=1), {1, 2}, range(3), ValueError("v"), collections.Counter("ab")]
    for protocol in (0, 1):
        data = pickle.dumps(plain, protocol=protocol)
        assert pickle_globals(data) == _Recording.looked_up(data) != [], protocol


def test_a_frame_that_begins_between_a_globals_two_strings_hides_nothing():
    """From protocol 4 a pickle over 64 KiB is cut into frames, and a frame can begin between
    the module and the name STACK_GLOBAL takes (`BINGET 'collections'`, `FRAME`,
    `'Counter'`, `STACK_GLOBAL`); the FRAME opcode there pushes nothing. Over fillers that move
    the boundary across the globals, the names read off the opcodes are those unpickling looks
    up, and some pickles do have a frame between the two strings."""
    import collections
    import pickle
    import pickletools

    from ray import cloudpickle

    from edgesweep.platform.tune_state import pickle_globals

    split = 0
    for n in range(65400, 65600):
        obj = ["x" * n, collections.OrderedDict(a=1), collections.Counter("ab")]
        for data in (pickle.dumps(obj, protocol=5), cloudpickle.dumps(obj, protocol=5)):
            assert pickle_globals(data) == _Recording.looked_up(data), n
            ops = [op.name for op, _, _ in pickletools.genops(data)]
            split += any(a in ("BINGET", "SHORT_BINUNICODE") and b == "FRAME" and c == "SHORT_BINUNICODE"
                         for a, b, c in zip(ops, ops[1:], ops[2:]))
    assert split > 0  # the case this test is about did occur


def test_python_2_names_in_old_protocols_are_not_taken_for_missing_modules():
    """Below protocol 3 pickle writes Python 2 names (``__builtin__.set``,
    ``exceptions.ValueError``) and maps them back when it loads: so does the check."""
    import pickle

    from edgesweep.platform.tune_state import missing_global, pickle_globals

    for protocol in (0, 1, 2):
        data = pickle.dumps([{1, 2}, range(3), ValueError("v"), frozenset()], protocol=protocol)
        found = pickle_globals(data)
        assert any(m in ("__builtin__", "exceptions") for m, _ in found), (protocol, found)
        assert [missing_global(m, q, protocol) for m, q in found] == [None] * len(found), protocol
    assert missing_global("__builtin__", "set", 5) == "module '__builtin__' is not installed"


def _renamed(old: bytes, new: bytes) -> bytes:
    """An OrderedDict pickled (protocol 5) with one name replaced by another of the same length."""
    import collections
    import pickle

    data = pickle.dumps({"callbacks": collections.OrderedDict(a=1)}, protocol=5)
    assert data.count(old) == 1 and len(old) == len(new)  # same length: the opcodes stay whole
    return data.replace(old, new)


@pytest.mark.parametrize("old, new, named", [
    (b"collections", b"collectionz", "module 'collectionz' is not installed"),
    (b"OrderedDict", b"OrderedDicz", "collections has no 'OrderedDicz'"),
])
def test_a_resume_whose_tuner_pickle_names_code_this_installation_lacks_is_refused(tmp_path, old, new, named):
    """The Tuner pickle names the driver's callbacks and Ray's config classes by module and
    name; after an upgrade that moved one, Tune's restore died in ModuleNotFoundError or
    AttributeError with the cluster already up. Refused before, naming the file and the name."""
    import re

    tune_dir = tmp_path / "results" / "synth" / "_tune"
    tune_dir.mkdir(parents=True)
    (tune_dir / "experiment_state-2026-12-07_16-59-01.json").write_text(json.dumps({"trial_data": []}))
    (tune_dir / "tuner.pkl").write_bytes(_renamed(old, new))
    with pytest.raises(SpecError, match=rf"--resume: Tune's state {re.escape(str(tune_dir / 'tuner.pkl'))} was "
                                        rf"written by other code: it needs collection.\.OrderedDic.*{named}.*"
                                        "Resume it with the edgesweep and Ray that started it"):
        run_sweep(_spec(tmp_path), resume=True)


def test_a_resume_whose_experiment_state_embeds_a_pickle_naming_missing_code_is_refused(tmp_path):
    """Tune's experiment state JSON holds, per trial, hex cloudpickles of objects JSON cannot
    (the trial's storage context, its name creators: Ray's private classes, the likeliest to
    move in an upgrade). Their names are checked too; the file named is the state file."""
    import re

    tune_dir = tmp_path / "results" / "synth" / "_tune"
    tune_dir.mkdir(parents=True)
    payload = {"_type": "CLOUDPICKLE_FALLBACK", "value": _renamed(b"collections", b"collectionz").hex()}
    state = {"trial_data": [[json.dumps({"config": {}, "storage": payload}), json.dumps({})]]}
    (tune_dir / "experiment_state-2026-12-07_16-59-01.json").write_text(json.dumps(state))
    (tune_dir / "tuner.pkl").write_bytes(_renamed(b"collections", b"collections"))  # whole, and resolvable
    with pytest.raises(SpecError, match=rf"Tune's state {re.escape(str(tune_dir))}/experiment_state-\S+\.json was "
                                        "written by other code: it needs collectionz.OrderedDict, and here "
                                        "module 'collectionz' is not installed"):
        run_sweep(_spec(tmp_path), resume=True)


def test_a_resume_whose_trial_state_pickles_a_moved_ray_class_is_refused(tmp_path):
    """A state Ray writes itself (Trial.get_json_state, what the experiment state's trial_data
    holds): the trial's placement-group factory — a private Ray class — is a bare hex
    cloudpickle, without the CLOUDPICKLE_FALLBACK marker. As written, the check passes; with
    that class's module renamed inside that one field (as a Ray upgrade that moved it would
    leave it), the resume is refused naming it."""
    import re

    from ray.tune.execution.placement_groups import PlacementGroupFactory
    from ray.tune.experiment import Trial

    from edgesweep.platform.driver import check_tune_state
    from edgesweep.storage.fs import resolve_root

    trial_json, metadata_json = Trial("x", stub=True, placement_group_factory=PlacementGroupFactory(
        [{"CPU": 1}])).get_json_state()
    trial = json.loads(trial_json)
    FIELD = "_default_placement_group_factory"  # in Trial._nonjson_fields: written as bare hex, no marker
    assert FIELD in Trial._nonjson_fields and isinstance(trial[FIELD], str)
    pgf = bytes.fromhex(trial[FIELD])
    assert b"ray.tune.execution.placement_groups" in pgf
    tune_dir = tmp_path / "results" / "synth" / "_tune"
    tune_dir.mkdir(parents=True)
    (tune_dir / "tuner.pkl").write_bytes(_renamed(b"collections", b"collections"))  # whole, and resolvable
    state = tune_dir / "experiment_state-2026-12-07_16-59-01.json"
    state.write_text(json.dumps({"trial_data": [[trial_json, metadata_json]]}))
    root = resolve_root(str(tmp_path / "results"))
    spec = load_spec(_spec(tmp_path))
    check_tune_state(spec, root, root.path("synth", "_tune"))  # Ray's own state: nothing to refuse
    trial[FIELD] = pgf.replace(b"placement_groups", b"placement_groupz").hex()
    state.write_text(json.dumps({"trial_data": [[json.dumps(trial), metadata_json]]}))
    with pytest.raises(SpecError, match=rf"Tune's state {re.escape(str(state))} was written by other code: it "
                                        r"needs ray\.tune\.execution\.placement_groupz\.PlacementGroupFactory, "
                                        "and here module 'ray.tune.execution.placement_groupz' is not installed"):
        check_tune_state(spec, root, root.path("synth", "_tune"))


def test_an_address_nothing_answers_on_fails_in_seconds_naming_it(tmp_path):
    """`run --address HOST:PORT` with no Ray head there: one line naming the address, exit 2,
    before Ray is started or joined (ray.init kept retrying for minutes, with only its own
    warnings: an operations probe gave up on it after 90 s)."""
    import os
    import subprocess
    import sys
    import time

    from netports import free_port

    from edgesweep.platform.driver import check_ray_address

    addr = f"127.0.0.1:{free_port()}"
    t0 = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "edgesweep", "run", _spec(tmp_path), "--address", addr],
                          capture_output=True, text=True, timeout=120,
                          env={**os.environ, "RAY_AUTH_MODE": "disabled"})
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith(
        f"edgesweep run: error: ConnectionError: Ray at {addr}: nothing answers there"), proc.stderr
    assert "Traceback" not in proc.stderr and time.monotonic() - t0 < 60
    for left_to_ray in ("auto", "local", "ray://127.0.0.1:1", "no-port-here"):
        check_ray_address(left_to_ray)  # not ours to judge: no error here


def test_a_driver_record_that_cannot_be_closed_is_a_warning_not_the_runs_last_word(tmp_path, monkeypatch, capsys):
    """At the end of a run whose storage failed (a full disk), closing the driver record fails
    too: that was raised, and the run's summary, failures and resume command were never printed
    (an operations probe). Here a real failed write: a folder stands where the record goes."""
    import shutil

    from edgesweep.platform import driver
    from edgesweep.storage.sweep import SweepPath

    monkeypatch.setattr(driver, "CLAIM_SETTLE_S", 0.0)
    (tmp_path / "results" / "synth").mkdir(parents=True)
    spec, sp = load_spec(_spec(tmp_path)), SweepPath.parse(str(tmp_path / "results" / "synth"))
    heartbeat = driver._Heartbeat(sp, spec, resume=False)
    record = tmp_path / "results" / "synth" / "_driver.json"
    assert json.loads(record.read_text())["ended_at"] is None
    record.unlink()
    (record / "in-the-way").mkdir(parents=True)
    heartbeat.end("finished", {"finished": 2})
    assert "WARNING: the driver record could not be closed" in capsys.readouterr().out
    shutil.rmtree(record)
    heartbeat.end("finished", {"finished": 2})  # and once storage works again, it is closed
    assert json.loads(record.read_text())["outcome"] == "finished"


def test_a_cut_experiment_state_names_the_intact_copy_in_rays_session_folder(tmp_path, monkeypatch):
    """Tune writes its experiment state in the driver's Ray session folder and copies it into
    storage in place: a disk that fills during the copy cuts the stored file while the session's
    copy is whole (seen on a full tmpfs). The refusal names that copy and the `cp` that lets the
    resume continue; once copied, the check passes."""
    import shlex
    import shutil

    from edgesweep.platform.driver import check_tune_state
    from edgesweep.storage.fs import resolve_root

    name = "experiment_state-2026-12-07_16-59-32.json"
    state = json.dumps({"trial_data": [["{}", "{}"]]}).encode()
    monkeypatch.setenv("RAY_TMPDIR", str(tmp_path / "raytmp"))
    copy = tmp_path / "raytmp" / "ray" / "session_2026-12-07_16-59-30_1_1" / "artifacts" / "2026-12-07_16-59-31" / \
        "_tune" / "driver_artifacts" / name
    copy.parent.mkdir(parents=True)
    copy.write_bytes(state)
    spec = _spec(tmp_path)
    stored = tmp_path / "results" / "synth" / "_tune" / name
    stored.parent.mkdir(parents=True)
    stored.write_bytes(state[:20])
    (stored.parent / "tuner.pkl").write_bytes(b"\x80\x05N.")  # whole (None): Tune "can restore"
    with pytest.raises(SpecError) as refused:
        run_sweep(spec, resume=True)
    assert f"An intact copy Tune kept on this machine: {copy}; `cp {shlex.quote(str(copy))} {stored}`, then " \
           "--resume again, continues it." in str(refused.value)
    shutil.copy(copy, stored)
    root = resolve_root(str(tmp_path / "results"))
    check_tune_state(load_spec(spec), root, root.path("synth", "_tune"))


def test_tunes_log_of_a_checkpoint_folder_gone_after_a_kill_becomes_one_line():
    """Seen in a double kill-and-resume: Tune logs ERROR "Error handling checkpoint" with a whole
    FileNotFoundError traceback and the trial goes on to finish. The driver's filter turns that
    record into one note; any other record, and this message with another error, pass unchanged."""
    import logging

    from edgesweep.platform.tune_logs import GoneCheckpointNote

    def record(exc, msg="Trial %s: Error handling checkpoint %s", args=("t1", "TrainingResult(…)")):
        try:
            raise exc
        except Exception:
            import sys
            return logging.LogRecord("ray.tune.execution.tune_controller", logging.ERROR, "x.py", 1, msg, args,
                                     sys.exc_info())

    gone = record(FileNotFoundError("Path not found: /r/_tune/t1/checkpoint_000000"))
    assert GoneCheckpointNote().filter(gone) and gone.exc_info is None
    assert logging.Formatter().format(gone) == (
        "note: Tune could not tidy the checkpoints of trial t1 (Path not found: /r/_tune/t1/checkpoint_000000: "
        "most likely an older checkpoint folder removed before the driver stopped); the trial goes on")
    for other in (record(PermissionError("denied")), record(FileNotFoundError("x"), "Trial %s failed", ("t1",)),
                  record(FileNotFoundError("Path not found: /r/_tune/t1/state.pt"))):
        text = logging.Formatter().format(other)
        assert GoneCheckpointNote().filter(other) and logging.Formatter().format(other) == text
        assert "Traceback" in text


def test_tunes_own_resume_advice_is_dropped_for_the_drivers_command():
    import logging

    from edgesweep.platform.tune_logs import TunesResumeAdvice

    def record(msg):
        return logging.LogRecord("ray.tune.tune", logging.WARNING, "tune.py", 1, msg, (), None)

    assert not TunesResumeAdvice().filter(record(
        "Experiment has been interrupted, but the most recent state was saved.\nResume experiment with: "
        "Tuner.restore(path=\"/r/sw/_tune\", trainable=...)"))
    assert TunesResumeAdvice().filter(record("Trials did not complete: [a, b]"))

