"""Writer processes for the crash test (tests/test_storage_crash.py).

Run as ``python tests/storage_crash_child.py``: a *zygote* that imports edgesweep.storage once,
prints ``READY``, then for each line on stdin::

    ROOT SWEEP TRIAL ATTEMPT START END EVERY FLUSH_ROWS COMPACT

forks a writer process (so the test does not pay an interpreter start-up per kill), prints
``PID <pid>``, waits for it and prints ``EXIT <pid> <status>`` (negative: killed by that signal).
An empty line ends the zygote. The zygote never uses Polars or pyarrow's thread pools itself, so
forking it is safe.

A writer runs one attempt of one trial: feature rows for steps START, START+EVERY, … < END (and
an eval row every 5th snapshot), a flush every FLUSH_ROWS feature rows, a final flush, then
``compact()`` when COMPACT is 1. Values are a function of (step, attempt), so the test can tell
which attempt a row it reads came from. Side channel, one flushed stdout line each:
``SEALED <table> <lo> <hi>`` after ``flush()`` *returned*, for each part it sealed;
``COMPACTED`` after ``compact()`` returned; ``DONE`` at the end. The test SIGKILLs the writer
at a random moment, so any line may be the last.
"""

import os
import sys

import pyarrow as pa

from edgesweep.storage import TrialWriter

PARTITION = {"workload": "mod_add", "optimizer": "adamw", "weight_decay": 1.0}


def say(line: str) -> None:
    """One line, in one write(2): a writer SIGKILLed mid-line must not leave half a line for
    the zygote's next one to be glued to (print() makes two writes when PYTHONUNBUFFERED is
    set)."""
    os.write(1, (line + "\n").encode())


def value(step: int, attempt: int) -> float:
    return step * 1000.0 + attempt


def write_attempt(argv):
    root, sweep, trial = argv[0], argv[1], argv[2]
    attempt, start, end, every, flush_rows, compact = map(int, argv[3:9])
    w = TrialWriter(root, sweep, trial, attempt, PARTITION)
    n = 0
    for step in range(start, end, every):
        w.add("features", {"step": step, "g23": value(step, attempt), "gap_ratio": 1.5,
                           "sigma": [float(j) for j in range(10, 0, -1)], "k_star": 2,
                           "lr": 1e-3, "nonfinite": False})
        if n % 5 == 0:
            w.add("evals", {"step": step, "test_acc": value(step, attempt), "train_acc": 0.5})
        n += 1
        if n % flush_rows == 0:
            report(w, w.flush())
    report(w, w.flush())
    if compact:
        w.compact()
        say("COMPACTED")
    say("DONE")


def report(w: TrialWriter, paths):
    for table, lo, hi, _ in w.sealed[len(w.sealed) - len(paths):]:
        say(f"SEALED {table} {lo} {hi}")


def zygote():
    # pyarrow imports pandas on its first array conversion (~0.4 s); do it once here.
    pa.array([0.0])
    say("READY")
    for line in sys.stdin:
        argv = line.split()
        if not argv:
            break
        pid = os.fork()
        if pid == 0:
            status = 0
            try:
                write_attempt(argv)
            except BaseException as exc:  # report, never fall back into the zygote loop
                say(f"ERROR {type(exc).__name__}: {exc}")
                status = 1
            finally:
                sys.stdout.flush()
                os._exit(status)
        say(f"PID {pid}")
        _, wstatus = os.waitpid(pid, 0)
        say(f"EXIT {pid} {os.waitstatus_to_exitcode(wstatus)}")


if __name__ == "__main__":
    zygote()
