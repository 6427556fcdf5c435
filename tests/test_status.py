"""`edgesweep status`: the live view of a sweep, from storage alone.

The running sweep is written step by step with the real storage writer (the hand-built trials of
tests/conftest.py, whose events are known by construction) while the real command watches it as
a subprocess; the test waits on what the command prints — never on a clock — before writing the
next rows. On a finished sweep the command prints the final table and exits 0."""

from __future__ import annotations

import io
import json
import os
import pty
import queue
import re
import select
import subprocess
import sys
import threading
import time

import pytest

from edgesweep.platform.status import COLUMNS, status_main
from edgesweep.storage import SweepPath

from raycluster import REPO

ANSI = re.compile(rb"\x1b\[[0-9;?]*[A-Za-z]")
TIMEOUT = 90  # seconds for the command to show a state the test has written (a loaded 2-core box)


def _command(path, *extra):
    return [sys.executable, "-m", "edgesweep", "status", str(path), *extra]


def parse_rows(text: str, ids) -> dict[str, dict]:
    """The last row shown for each trial id: {trial: {column: cell}} (cells never hold spaces)."""
    out = {}
    for line in text.splitlines():
        tokens = line.split()
        if tokens and tokens[0] in ids:
            out[tokens[0]] = dict(zip(COLUMNS, tokens))
    return out


class Lines:
    """A subprocess's stdout, read by a thread; ``wait_for`` blocks until a predicate holds."""

    def __init__(self, proc):
        self.proc, self.q, self.seen = proc, queue.Queue(), []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.proc.stdout:
            self.q.put(line)
        self.q.put(None)

    def wait_for(self, pred, what: str):
        deadline = time.monotonic() + TIMEOUT
        while time.monotonic() < deadline:
            try:
                line = self.q.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                break
            if line is None:
                break
            self.seen.append(line)
            if pred(line):
                return line
        pytest.fail(f"`edgesweep status` never showed {what}; it printed:\n{''.join(self.seen)[-4000:]}")

    def rest(self) -> str:
        """Everything printed, once the process has closed its output."""
        while (line := self.q.get(timeout=TIMEOUT)) is not None:
            self.seen.append(line)
        return "".join(self.seen)


def row_of(line: str, tid: str) -> dict | None:
    return parse_rows(line, {tid}).get(tid)


def test_status_follows_a_running_sweep(tmp_path, synth):
    root = tmp_path / "results"
    a, e = synth.BY_ID["A_add_wd1_s42"], synth.BY_ID["E_add_wd0_s42"]
    synth.write_trials(root, [a, e], status="running", steps=0)
    writers = {s.trial_id: synth.write_trial(root, s, upto=1000, compact=False) for s in (a, e)}
    sweep = root / synth.SWEEP

    proc = subprocess.Popen(_command(sweep, "--watch", "--interval", "0.2"), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, cwd=REPO,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        out = Lines(proc)
        row = row_of(out.wait_for(lambda ln: (r := row_of(ln, a.trial_id)) and r["step"] == "1,000",
                                  "A at step 1,000"), a.trial_id)
        # by construction: memorised at 1000, not grokked, no alarm yet (it comes at 1700)
        assert (row["status"], row["memorised"], row["grok"], row["alarm"], row["test acc"]) == \
            ("running", "1000", "—", "—", "0.100")

        for s in (a, e):  # the next checkpoint of both trials
            synth.write_trial(root, s, upto=2000, start=1100, writer=writers[s.trial_id], compact=False)
        row = row_of(out.wait_for(lambda ln: (r := row_of(ln, a.trial_id)) and r["step"] == "2,000",
                                  "A advanced to step 2,000"), a.trial_id)
        assert (row["alarm"], row["grok"], row["g23"], row["R"]) == ("1700", "—", "5", "2")
        assert row["steps/s"] != "—"  # measured between the two seals it saw

        for s in (a, e):  # both finish: the rest of the rows, compaction, final trials rows
            synth.write_trial(root, s, start=2100, writer=writers[s.trial_id])
        synth.write_trials(root, [a, e])
        assert proc.wait(timeout=TIMEOUT) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    rest = out.rest()
    final = rest[rest.rindex(f"{synth.SWEEP}: 2/2 done"):]  # the final table, printed last
    rows = parse_rows(final, {a.trial_id, e.trial_id})
    assert rows[a.trial_id]["status"] == "completed" and rows[a.trial_id]["step"] == "4,000"
    assert (rows[a.trial_id]["grok"], rows[a.trial_id]["alarm"], rows[a.trial_id]["test acc"],
            rows[a.trial_id]["R"]) == ("3000", "1700", "0.970", "2.2")
    assert (rows[e.trial_id]["grok"], rows[e.trial_id]["alarm"]) == ("—", "1700")  # the caveat: a false alarm
    assert "groks 1, alarms 2 | finished" in final


def test_status_of_a_finished_sweep_prints_the_final_table(tmp_path, synth):
    done = [s for s in synth.SPEC if s.status != "running"]
    path = synth.build_sweep(tmp_path / "results", done)
    for args in ([], ["--watch"]):  # --watch on a finished sweep: the same table, at once
        res = subprocess.run(_command(path, *args), capture_output=True, text=True, cwd=REPO, timeout=TIMEOUT)
        assert res.returncode == 0, res.stderr
        rows = parse_rows(res.stdout, {s.trial_id for s in done})
        assert sorted(rows) == sorted(s.trial_id for s in done)
        assert all(r["status"] == "completed" for r in rows.values())
        # events by construction (tests/test_aggregate.py EXPECTED): grok, alarm
        want = {"A_add_wd1_s42": ("3000", "1700"), "B_sub_wd1_s137": ("2500", "1600"),
                "C_dyck_wd1_s42": ("2000", "2700"), "D_dyck_wd1_s137": ("2000", "—"),
                "E_add_wd0_s42": ("—", "1700"), "F_sub_wd0_s137": ("—", "—"), "G_dyck_wd0_s42": ("3000", "1600"),
                "H_dyck_wd0_s137": ("—", "—"), "J_add_wd1_s2024": ("2200", "1700")}
        assert {t: (r["grok"], r["alarm"]) for t, r in rows.items()} == want
        assert res.stdout.splitlines()[0] == f"{synth.SWEEP}: 9/9 done | 0 steps/s | groks 6, alarms 6 | finished"


def test_watch_stops_when_the_driver_is_gone_and_says_how_to_continue(tmp_path, synth):
    """A sweep whose driver died with trials unfinished cannot move on by itself: --watch shows
    the table, says why and what continues it, and exits 1 — instead of waiting forever. While
    the driver's record says it runs (alive, heart beating), the same watch keeps waiting."""
    from edgesweep.storage.liveness import DriverRecord, write_driver_record

    root = tmp_path / "results"
    a = synth.BY_ID["A_add_wd1_s42"]
    synth.write_trials(root, [a], status="running", steps=0)
    synth.write_trial(root, a, upto=1000, compact=False)
    sweep = root / synth.SWEEP
    sp = SweepPath.parse(str(sweep))
    alive = DriverRecord.start()  # this test process: alive, heartbeat now
    write_driver_record(sp, alive)
    proc = subprocess.Popen(_command(sweep, "--watch", "--interval", "0.2", "--plain"), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, cwd=REPO,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        out = Lines(proc)
        out.wait_for(lambda ln: a.trial_id in ln, "the running trial")
        time.sleep(2)
        assert proc.poll() is None  # still watching: the driver may move the sweep on
        alive.end("interrupted", {"finished": 0, "failed": 0, "interrupted": 1, "never_started": 0})
        write_driver_record(sp, alive)
        assert proc.wait(timeout=TIMEOUT) == 1
    finally:
        if proc.poll() is None:
            proc.kill()
    rest = out.rest()
    assert f"stopped watching: the driver ended at {alive.ended_at} (interrupted), and 1 trial(s) are not finished" in rest
    assert f"--resume --storage {root}` continues it" in rest
    # one look without --watch says the same (exit 0: it showed what it was asked to show)
    buf = io.StringIO()
    assert status_main(str(sweep), out=buf) == 0
    assert (f"note: the driver ended at {alive.ended_at} (interrupted), and 1 trial(s) are not finished: nothing "
            f"is running them; `edgesweep run SPEC.yaml --resume --storage {root}` continues it (SPEC.yaml: the spec "
            f"sweep '{synth.SWEEP}' was started with)") in buf.getvalue()


def test_watch_of_a_sweep_without_driver_record_stops_when_every_worker_is_gone(tmp_path, synth):
    """A copied sweep, or one from before the driver record, has no _driver.json: nothing says
    whether a driver lives. Once every unfinished trial's worker is known to be gone
    (interrupted), none will move it on: the watch stops with exit 1 and the resume hint, where
    it used to print the same line forever. A running trial on another host keeps it waiting."""
    import socket

    import polars as pl

    from edgesweep.platform.status import SweepWatcher
    from edgesweep.storage import write_table

    root = tmp_path / "results"
    a, b = synth.BY_ID["A_add_wd1_s42"], synth.BY_ID["B_sub_wd1_s137"]
    synth.write_trial(root, a, upto=1000, compact=False)
    synth.write_trial(root, b)
    dead = subprocess.Popen(["true"])
    dead.wait()  # its pid is now free: the worker of A "is not running"

    def trials(host):
        write_table(root, synth.SWEEP, "trials", pl.DataFrame([
            {**a.trial_row(status="running", steps=0), "pid": dead.pid, "hostname": host}, b.trial_row()]))

    sweep = root / synth.SWEEP
    trials("another-host.invalid")  # its worker may be alive there: wait
    view = SweepWatcher(str(sweep)).poll()
    assert [t.status for t in view.trials if not t.done] == ["running"] and not view.stalled
    trials(socket.gethostname())
    view = SweepWatcher(str(sweep)).poll()
    assert [t.status for t in view.trials if not t.done] == ["interrupted"] and view.stalled
    res = subprocess.run(_command(sweep, "--watch", "--interval", "0.2", "--plain"), capture_output=True,
                         text=True, cwd=REPO, timeout=TIMEOUT)
    assert res.returncode == 1, res.stdout + res.stderr
    assert ("stopped watching: the sweep has no driver record (_driver.json) and every unfinished trial's "
            f"worker is gone, and 1 trial(s) are not finished; `edgesweep run SPEC.yaml --resume --storage {root}` "
            "continues it" in res.stdout), res.stdout


def test_watch_of_rows_without_any_trials_row_or_driver_ends(tmp_path, synth):
    """A folder of rows written without the driver (no trials table, no _driver.json, no Tune
    state): every trial is unknown and nothing will change it; the watch printed "0/1 done,
    1 unknown" forever. It ends as a finished look does (exit 0), with a note, and no advice
    to resume a spec the folder never had."""
    synth.write_trial(str(tmp_path), synth.SPEC[0])
    sweep = tmp_path / synth.SWEEP
    res = subprocess.run(_command(sweep, "--watch", "--interval", "0.2", "--plain"), capture_output=True,
                         text=True, cwd=REPO, timeout=TIMEOUT)
    assert res.returncode == 0, res.stdout + res.stderr
    assert ("1 trial(s) of status unknown (stored rows without a trials row, or a trials row without a status) "
            "have no driver here to run them (no _driver.json, no Tune state): the watch does not wait for them"
            in res.stdout), res.stdout
    assert "--resume" not in res.stdout


def _write_tune_state(sweep, statuses: dict[str, str]) -> None:
    """A Tune experiment state with just what read_tune_state reads (its real format is
    checked on a real sweep in test_status_reads_tunes_plan_of_a_real_sweep)."""
    rows = [[json.dumps({"status": st, "config": {"trial": {"trial_id": tid}}}), json.dumps({"last_result": {}})]
            for tid, st in statuses.items()]
    (sweep / "_tune").mkdir(exist_ok=True)
    (sweep / "_tune" / "experiment_state-2026-12-07_00-00-00.json").write_text(json.dumps({"trial_data": rows}))


def test_watch_does_not_wait_for_an_unknown_trial_that_tune_does_not_run(tmp_path, synth):
    """A trial with stored rows but no trials row (status unknown: a stray part file, or a
    failed bookkeeping write) never changes by itself. While the driver lived, the watch used to
    wait for it, then call the sweep stalled once the driver ended. Tune's state tells whether
    the driver runs it: when not, the watch ends at once (exit 0) and shows it as unknown with a
    note; when Tune lists it as running, or there is no Tune state, the watch waits."""
    from edgesweep.platform.status import SweepWatcher
    from edgesweep.storage.liveness import DriverRecord, write_driver_record

    root = tmp_path / "results"
    a, x = synth.BY_ID["A_add_wd1_s42"], synth.BY_ID["E_add_wd0_s42"]
    synth.build_sweep(root, [a])
    synth.write_trial(root, x)  # rows, and no trials row
    sweep = root / synth.SWEEP
    write_driver_record(SweepPath.parse(str(sweep)), DriverRecord.start())  # alive, heartbeat now

    def look():
        view = SweepWatcher(str(sweep)).poll()
        return view, {t.trial_id: t for t in view.trials}

    view, by_id = look()  # no Tune state: x may be running; wait
    assert by_id[x.trial_id].status == "unknown" and not view.finished and not view.stalled

    _write_tune_state(sweep, {a.trial_id: "TERMINATED", x.trial_id: "RUNNING"})
    view, by_id = look()
    assert by_id[x.trial_id].status == "unknown" and not view.finished and not view.stalled

    for tune in ({a.trial_id: "TERMINATED"}, {a.trial_id: "TERMINATED", x.trial_id: "ERROR"}):
        _write_tune_state(sweep, tune)
        view, by_id = look()
        assert by_id[x.trial_id].status == "unknown" and by_id[x.trial_id].settled and view.finished, tune
        assert any("1 trial(s) of status unknown (stored rows without a trials row" in n for n in view.notes)

    res = subprocess.run(_command(sweep, "--watch", "--interval", "0.2", "--plain"), capture_output=True,
                         text=True, cwd=REPO, timeout=TIMEOUT)
    assert res.returncode == 0, res.stdout + res.stderr
    rows = parse_rows(res.stdout, {a.trial_id, x.trial_id})
    assert (rows[a.trial_id]["status"], rows[x.trial_id]["status"]) == ("completed", "unknown")
    assert "the watch does not wait for them" in res.stdout and "stopped watching" not in res.stdout


def test_status_reads_on_past_a_damaged_part_and_names_it(tmp_path, synth):
    """A part whose bytes differ from its seal is skipped (the rest of the sweep is shown), and
    the note names the file, as aggregate does; its finished trial shows as `incomplete`, as
    the runs table has it (it showed `completed`, with blanks where the damaged rows were)."""
    path = synth.build_sweep(tmp_path / "results", [synth.BY_ID["A_add_wd1_s42"], synth.BY_ID["B_sub_wd1_s137"]])
    part = sorted((tmp_path / "results").rglob("features/**/B_sub_wd1_s137*.parquet"))[0]
    data = bytearray(part.read_bytes())
    data[len(data) // 2] ^= 0xFF
    part.write_bytes(bytes(data))
    buf = io.StringIO()
    assert status_main(path, out=buf) == 0
    notes = [ln for ln in buf.getvalue().splitlines() if ln.startswith("note: 1 unreadable file(s) skipped")]
    assert len(notes) == 1 and str(part) in notes[0] and "sha256 mismatch" in notes[0], buf.getvalue()
    rows = parse_rows(buf.getvalue(), {"A_add_wd1_s42", "B_sub_wd1_s137"})
    assert rows["A_add_wd1_s42"]["grok"] == "3000" and rows["A_add_wd1_s42"]["status"] == "completed"
    assert rows["B_sub_wd1_s137"]["status"] == "incomplete", buf.getvalue()
    assert buf.getvalue().startswith(f"{synth.SWEEP}: 2/2 done (1 incomplete)"), buf.getvalue()


def test_status_shows_what_aggregate_counts_for_rows_it_cannot_use(tmp_path, synth):
    """Bookkeeping that no writer leaves, as aggregate handles it, instead of a traceback or a
    `completed` row with blanks: a finished trial whose features went with their seal record,
    or whose trials row's config is not JSON, is `incomplete` with the reason in a note; a
    trials row without a status is `unknown` (it was a TypeError)."""
    import polars as pl

    from edgesweep.storage import write_table

    ids = ["A_add_wd1_s42", "B_sub_wd1_s137", "C_dyck_wd1_s42", "D_dyck_wd1_s137"]
    root = tmp_path / "results"
    for tid in ids:
        synth.write_trial(root, synth.BY_ID[tid])
    rows = [synth.BY_ID[tid].trial_row() for tid in ids]
    rows[2]["config"] = rows[2]["config"][:-1]  # C: one closing brace short
    rows[3]["status"] = None                    # D
    write_table(root, synth.SWEEP, "trials", pl.DataFrame(rows))
    for gone in (root / synth.SWEEP / "features").rglob("B_sub_wd1_s137*"):
        gone.unlink()  # the part and its seal record: only the trials row says rows are missing
    buf = io.StringIO()
    assert status_main(str(root / synth.SWEEP), out=buf) == 0
    text = buf.getvalue()
    got = parse_rows(text, set(ids))
    assert {tid: got[tid]["status"] for tid in ids} == {
        "A_add_wd1_s42": "completed", "B_sub_wd1_s137": "incomplete", "C_dyck_wd1_s42": "incomplete",
        "D_dyck_wd1_s137": "unknown"}, text
    [note] = [ln for ln in text.splitlines() if "left out of the counts" in ln]
    assert note.startswith("note: 2 trial(s) left out of the counts, as `aggregate` leaves them out: B_sub_wd1_s137: ")
    assert "no features rows" in note and "(and 1 more)" in note, note


def test_status_names_records_it_cannot_use_and_counts_every_trial_it_shows(tmp_path, synth):
    """A `_spec.json` copied from another sweep's folder listed that sweep's trials as pending
    here ("9/1 done"); its name is checked, and the note says why its trials are not shown."""
    sweep = synth.build_sweep(tmp_path / "results", [synth.BY_ID["A_add_wd1_s42"]])
    (tmp_path / "results" / synth.SWEEP / "_spec.json").write_text(
        json.dumps({"format": 1, "name": "other", "source": "o.yaml", "trials": [{"trial_id": "zzz"}]}))
    buf = io.StringIO()
    assert status_main(sweep, out=buf) == 0
    text = buf.getvalue()
    assert "zzz" not in text and text.startswith(f"{synth.SWEEP}: 1/1 done"), text
    assert "note: _spec.json is unreadable (it records sweep 'other', not 'synth'" in text, text
    # a record of this sweep listing a trial that has no rows, but not the one that has: both
    # are shown, and the count is of both ("1/1 done, 1 pending" read as more done than planned)
    (tmp_path / "results" / synth.SWEEP / "_spec.json").write_text(
        json.dumps({"format": 1, "name": synth.SWEEP, "source": "s.yaml", "trials": [{"trial_id": "zzz"}]}))
    buf = io.StringIO()
    assert status_main(sweep, out=buf) == 0
    assert buf.getvalue().startswith(f"{synth.SWEEP}: 1/2 done, 1 pending"), buf.getvalue()
    # a Tune state that cannot be read is named too ("not written yet, or not kept" was wrong)
    (tmp_path / "results" / synth.SWEEP / "_tune").mkdir()
    state = tmp_path / "results" / synth.SWEEP / "_tune" / "experiment_state-2026-12-08_00-00-00.json"
    state.write_text("{trunc")
    buf = io.StringIO()
    assert status_main(sweep, out=buf) == 0  # just written: Tune may be copying it in (no note yet)
    assert "is unreadable (JSONDecodeError" not in buf.getvalue()
    os.utime(state, (time.time() - 60, time.time() - 60))
    buf = io.StringIO()
    assert status_main(sweep, out=buf) == 0
    assert "note: _tune/experiment_state-2026-12-08_00-00-00.json is unreadable (JSONDecodeError: " in buf.getvalue()
    assert "not written yet, or not kept" not in buf.getvalue()
    # a driver record that cannot be read is named, not silently ignored
    (tmp_path / "results" / synth.SWEEP / "_driver.json").write_text("{garbage")
    buf = io.StringIO()
    assert status_main(sweep, out=buf) == 0
    assert ("note: _driver.json is unreadable or malformed: whether a driver runs the sweep is judged from its "
            "trials' workers alone") in buf.getvalue(), buf.getvalue()


def test_status_errors_name_the_path(tmp_path, capsys, synth):
    missing = tmp_path / "results" / "nothing"
    assert status_main(str(missing), out=io.StringIO()) == 2
    assert f"no sweep at {missing}" in capsys.readouterr().err
    # a folder inside a sweep: give the sweep's folder (it said to rename the folder, which
    # for features/ would break the sweep); a renamed copy still gets the rename advice
    sweep = synth.build_sweep(tmp_path / "results", [synth.BY_ID["A_add_wd1_s42"]])
    for inside in ("features", "_sealed"):
        (tmp_path / "results" / synth.SWEEP / inside).mkdir(exist_ok=True)
        assert status_main(f"{sweep}/{inside}", out=io.StringIO()) == 2
        assert f"it is the {inside!r} folder inside sweep {sweep}: give that sweep's folder" in capsys.readouterr().err
    (tmp_path / "copy" / "_old").mkdir(parents=True)
    assert status_main(str(tmp_path / "copy" / "_old"), out=io.StringIO()) == 2
    assert "copy or rename the folder to a valid one" in capsys.readouterr().err


def test_status_of_a_sweep_whose_driver_started_but_stored_nothing_yet(tmp_path, capsys):
    """The first seconds of a sweep: the driver's record, no table. Not "no sweep at" (exit 2),
    which sent users looking for a wrong path: the driver, and that nothing is stored yet."""
    from edgesweep.storage.liveness import DriverRecord, write_driver_record

    sp = SweepPath.parse(str(tmp_path / "results" / "early"))
    rec = DriverRecord.start()
    write_driver_record(sp, rec)
    buf = io.StringIO()
    assert status_main(sp.text, out=buf) == 0
    assert buf.getvalue().strip() == (f"sweep early at {sp.uri}: its driver (pid {os.getpid()} on {rec.hostname}) "
                                      f"started {rec.started_at}; no trial has stored a row yet (`--watch` waits for them)")
    rec.end("interrupted", {})
    write_driver_record(sp, rec)
    buf = io.StringIO()
    assert status_main(sp.text, out=buf) == 0
    assert f"the driver ended at {rec.ended_at} (interrupted), before any trial stored a row" in buf.getvalue()


def test_status_refreshes_in_place_on_a_terminal(tmp_path, synth):
    """On a terminal (a real pty), rich redraws the table in place: cursor-up / erase-line
    sequences between frames instead of new lines; the frames show the trial advancing."""
    root = tmp_path / "results"
    a = synth.BY_ID["B_sub_wd1_s137"]
    synth.write_trials(root, [a], status="running", steps=0)
    w = synth.write_trial(root, a, upto=500, compact=False)
    master, slave = pty.openpty()
    proc = subprocess.Popen(_command(root / synth.SWEEP, "--watch", "--interval", "0.2"), stdin=slave,
                            stdout=slave, stderr=slave, cwd=REPO, close_fds=True,
                            env={**os.environ, "COLUMNS": "200", "LINES": "40", "TERM": "xterm-256color"})
    os.close(slave)
    buf = b""

    def read_until(pattern: bytes, what: str):
        nonlocal buf
        deadline = time.monotonic() + TIMEOUT
        while time.monotonic() < deadline:
            if re.search(pattern, ANSI.sub(b"", buf)):
                return
            ready, _, _ = select.select([master], [], [], 0.5)
            if ready:
                try:
                    buf += os.read(master, 65536)
                except OSError:  # the child closed the terminal
                    break
        pytest.fail(f"the terminal never showed {what}:\n{buf[-3000:].decode(errors='replace')}")

    try:
        read_until("running\\s*│\\s*500\\s*│".encode(), "step 500")
        synth.write_trial(root, a, upto=1500, start=600, writer=w, compact=False)
        read_until("running\\s*│\\s*1,500\\s*│".encode(), "step 1,500")
        frames = buf.decode(errors="replace")
        assert "\x1b[2K" in frames and re.search(r"\x1b\[\d*A", frames)  # erase line, cursor up: in place
        assert "┃" in frames or "│" in frames                              # rich's table, not plain lines
        synth.write_trial(root, a, start=1600, writer=w)
        synth.write_trials(root, [a])
        # keep reading while it finishes: a full pty buffer would block the child's next frame
        read_until(rb"1/1 done \| [^|]* \| groks 1, alarms 1 \| finished", "the final table")
        assert proc.wait(timeout=TIMEOUT) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        os.close(master)


@pytest.mark.ray
def test_status_reads_tunes_plan_of_a_real_sweep(local_ray, tmp_path):
    """Tune's experiment state (Ray's internal format, read only as an addition) gives the plan:
    checked on a real sweep so that a Ray upgrade that changes it fails here, not silently."""
    from edgesweep.platform.driver import run_sweep
    from edgesweep.platform.status import SweepWatcher, read_tune_state

    spec = tmp_path / "st.yaml"
    spec.write_text(f"""\
name: st
storage: {tmp_path / 'results'}
grid: {{workload: [mod_add], weight_decay: [1.0, 0.0]}}
train: {{preset: tiny, max_steps: 40, eval_every: 10, checkpoint_every: 20}}
monitor: {{window: 4, every: 5, params: all}}
""")
    assert run_sweep(str(spec), aggregate=False) == 0
    sweep = tmp_path / "results" / "st"
    watcher = SweepWatcher(str(sweep))
    tune = read_tune_state(watcher.sp)
    assert tune is not None and sorted(tune) == ["mod_add-adamw-wd0.0-s42", "mod_add-adamw-wd1.0-s42"]
    assert {t["status"] for t in tune.values()} == {"TERMINATED"}
    assert {t["config"]["train"]["max_steps"] for t in tune.values()} == {40}
    assert {t["step"] for t in tune.values()} == {40}  # the trainer's last report
    view = watcher.poll()
    assert view.planned == 2 and view.finished and not view.notes
    assert [(t.status, t.step, t.max_steps) for t in view.trials] == [("completed", 40, 40)] * 2
    buf = io.StringIO()
    assert status_main(str(sweep), watch=True, out=buf) == 0
    assert buf.getvalue().startswith("st: 2/2 done")


def test_a_reader_that_goes_away_is_not_an_error(tmp_path, synth):
    """`edgesweep status … | head -1`: the reader closes the pipe. That ended with
    "edgesweep status: error: BrokenPipeError" on stderr; now it is quiet, with the status a
    shell shows for a tool SIGPIPE stopped."""
    path = synth.build_sweep(tmp_path / "results", synth.SPEC)
    proc = subprocess.Popen(_command(path, "--plain"), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            cwd=REPO, bufsize=0)
    proc.stdout.close()  # the reader is gone before anything is written (the interpreter starts)
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 141, err
    assert err == "", err


def test_a_finished_sweep_kept_without_tunes_state_gets_no_note_about_unstarted_trials(tmp_path, synth, capsys):
    """Without Tune's state, status cannot list trials that have not started, and says so. A
    sweep whose driver record says it finished has none left: the note would only alarm."""
    from edgesweep.storage.liveness import DriverRecord, write_driver_record

    done = [s for s in synth.SPEC if s.status != "running"]
    path = synth.build_sweep(tmp_path / "results", done)
    assert status_main(path, plain=True) == 0
    assert "note: no readable Tune state in _tune/ (not written yet, or not kept)" in capsys.readouterr().out
    record = DriverRecord.start()
    record.end("finished", {"finished": len(done), "failed": 0, "interrupted": 0, "never_started": 0})
    write_driver_record(SweepPath.parse(path), record)
    assert status_main(path, plain=True) == 0
    assert "no readable Tune state" not in capsys.readouterr().out
    # nor with the driver's _spec.json beside it, which lists only trials that have rows here
    (tmp_path / "results" / synth.SWEEP / "_spec.json").write_text(json.dumps(
        {"format": 1, "name": synth.SWEEP, "source": "x.yaml", "trials": [{"trial_id": s.trial_id} for s in done]}))
    assert status_main(path, plain=True) == 0
    assert "note:" not in capsys.readouterr().out


FULL_DISK_TRIAL = r"""
import os, sys
from edgesweep.platform.spec import parse_spec
from edgesweep.platform.trainable import execute_trial
from edgesweep.storage import StorageError

root = sys.argv[1]
spec = parse_spec({"name": "unit", "grid": {"workload": ["mod_add"], "weight_decay": [1.0]},
                   "train": {"preset": "tiny", "max_steps": 400, "eval_every": 10, "checkpoint_every": 20},
                   "monitor": {"window": 4, "every": 5, "params": "all"}})
st = os.statvfs(root)
with open(os.path.join(root, "filler"), "wb") as f:  # leave room for the first checkpoint's rows only
    f.write(b"\0" * (st.f_bavail * st.f_frsize - 60_000))
try:
    execute_trial(spec.trials[0], "unit", root)
except StorageError as exc:
    print("TRIAL ERROR:", exc)
    sys.exit(3)
"""


def test_status_of_a_trial_stopped_by_a_full_disk_names_the_full_disk(tmp_path):
    """A real trial on a 4 MiB tmpfs (private mount namespace) that fills up: the trial fails
    naming the file it could not write, its trials row still says running (that write failed
    too), and status, once the worker is gone, shows it interrupted — and says the disk is
    full, the cause nothing in storage could record."""
    import shutil
    if not (shutil.which("unshare") and shutil.which("mount")):
        pytest.skip("no unshare/mount here to make a small file system")
    disk = tmp_path / "disk"
    disk.mkdir()
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    script = ('mount -t tmpfs -o size=4m tmpfs "$1" || exit 97; "$2" -c "$3" "$1"; echo "TRIAL RC $?"; '
              'exec "$2" -m edgesweep status "$1/unit"')
    out = subprocess.run(["unshare", "-m" if os.geteuid() == 0 else "-rm", "sh", "-c", script, "sh",
                          str(disk), sys.executable, FULL_DISK_TRIAL],
                         capture_output=True, text=True, env=env, cwd=REPO, timeout=180)
    if "unshare failed" in out.stderr or "TRIAL RC" not in out.stdout:
        pytest.skip(f"cannot mount a small tmpfs here: {out.stderr.strip()[-300:]}")
    assert out.returncode == 0, out.stdout + out.stderr[-3000:]
    text = out.stdout
    assert "TRIAL RC 3" in text, text
    error = next(ln for ln in text.splitlines() if ln.startswith("TRIAL ERROR:"))
    assert f"{disk}/unit/" in error and "No space left on device" in error
    rows = parse_rows(text, ["mod_add-adamw-wd1.0-s42"])
    assert rows["mod_add-adamw-wd1.0-s42"]["status"] == "interrupted"
    note = next(ln for ln in text.splitlines() if "free on its disk" in ln)
    assert note.startswith(f"note: {disk}: only ") and "free space, then resume" in note, note


def test_without_tunes_state_the_spec_record_lists_the_trials_without_rows_and_a_cut_state_is_named(
        tmp_path, synth, capsys):
    """A full disk can cut Tune's experiment state: the trials that never stored a row then went
    unlisted (2 of 4 shown as the whole sweep), and the hint said `--resume` would continue a
    sweep that resume refuses. The driver's _spec.json lists them as pending; the hint names the
    cut file, and says the resume command says what can still be done."""
    import polars as pl

    from edgesweep.platform.spec_record import SPEC_RECORD
    from edgesweep.storage import write_table

    root = tmp_path / "results"
    a, b = synth.BY_ID["A_add_wd1_s42"], synth.BY_ID["B_sub_wd1_s137"]
    synth.write_trial(root, a, upto=1000, compact=False)
    dead = subprocess.Popen(["true"])
    dead.wait()  # the worker of A is gone
    import socket
    write_table(root, synth.SWEEP, "trials", pl.DataFrame([
        {**a.trial_row(status="running", steps=0), "pid": dead.pid, "hostname": socket.gethostname()}]))
    sweep = root / synth.SWEEP
    planned = [{"trial_id": s.trial_id, "workload": s.workload, "weight_decay": s.weight_decay, "seed": s.seed,
                "train": {"max_steps": 3000}} for s in (a, b)]
    (sweep / SPEC_RECORD).write_text(json.dumps({"format": 1, "name": synth.SWEEP, "source": "x.yaml",
                                                 "trials": planned}))
    (sweep / "_tune").mkdir()
    (sweep / "_tune" / "experiment_state-2026-12-07_00-00-00.json").write_text('{"trial_data": [["{\\"sta')
    from edgesweep.storage import SweepPath
    from edgesweep.storage.liveness import DriverRecord, write_driver_record
    record = DriverRecord.start()  # left open by a driver that died (its close failed on the full disk)
    record.pid, record.pid_start = dead.pid, "gone"
    write_driver_record(SweepPath.parse(str(sweep)), record)
    assert status_main(str(sweep), plain=True) == 0
    out = capsys.readouterr().out
    rows = parse_rows(out, [a.trial_id, b.trial_id])
    assert (rows[a.trial_id]["status"], rows[b.trial_id]["status"]) == ("interrupted", "pending"), out
    assert "note: no readable Tune state in _tune/: the trials without rows are listed from _spec.json as pending" in out
    assert "is not running, and 2 trial(s) are not finished" in out, out
    assert (f"but Tune's state {sweep}/_tune/experiment_state-2026-12-07_00-00-00.json is damaged (JSONDecodeError: "
            in out and "`edgesweep run SPEC.yaml --resume --storage " in out
            and "cannot continue it as it is, and says what can still be done" in out), out
    (sweep / "_tune" / "experiment_state-2026-12-07_00-00-00.json").unlink()  # a driver stopped before Tune saved it
    assert status_main(str(sweep), plain=True) == 0
    assert (f"but {sweep}/_tune holds no experiment state: `edgesweep run SPEC.yaml --resume --storage "
            in capsys.readouterr().out)
