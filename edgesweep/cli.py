"""`python -m edgesweep …` / `edgesweep …` — the command line (DESIGN.md §3.1).

Sub-commands import their packages lazily so that `edgesweep query` does not pay for
torch and Ray, and a bad spec is reported before Ray is even imported.
"""

from __future__ import annotations

import argparse
import os
import sys

from .platform.spec import DEFAULT_MAX_TRIALS  # torch- and Ray-free
from .storage.arguments import path_argument as _path
from .storage.query import DESCRIPTION as QUERY_DESCRIPTION, add_query_arguments


def _run(args) -> int:
    from .platform.driver import run_sweep
    return run_sweep(args.spec, storage=args.storage, resume=args.resume, address=args.address,
                     aggregate=not args.no_aggregate, max_trials=args.max_trials,
                     resource_timeout=args.resource_timeout)


def _plan(args) -> int:
    from .platform.plan import plan_main
    return plan_main(args.spec, storage=args.storage, max_trials=args.max_trials)


def _submit(args) -> int:
    from .platform.submit import submit_sweep
    return submit_sweep(args.spec, address=args.address, wait=not args.no_wait,
                        storage=args.storage, extra_pip=args.pip, resume=args.resume,
                        max_trials=args.max_trials, aggregate=not args.no_aggregate,
                        resource_timeout=args.resource_timeout)


def _aggregate(args) -> int:
    from .platform.aggregate import aggregate_main
    return aggregate_main(args.path, use_ray=not args.no_ray, report=not args.no_report)


def _detect(args) -> int:
    from .platform.detect import detect_main
    return detect_main(args.path, detector=args.detector, config=args.config, cv=args.cv, delta=args.delta)


def _report(args) -> int:
    from .platform.report import report_main
    return report_main(args.path, trial_figures=args.trial_figures)


def _status(args) -> int:
    from .platform.status import status_main
    return status_main(args.path, watch=args.watch, interval=args.interval, plain=args.plain)


def _query(args) -> int:
    from .storage.query import query_command
    return query_command(args, args.usage_error)


def _verify(args) -> int:
    from .storage import verify_main
    return verify_main([args.root] + (["--quick"] if args.quick else []) + (["--quiet"] if args.quiet else []))


def _workloads(args) -> int:
    from .workloads import describe_table
    print(describe_table())
    return 0


def _spectral_demo(args) -> int:
    from .platform.demo import spectral_demo
    return spectral_demo(steps=args.steps, every=args.every, window=args.window, seed=args.seed)


def _number(kind, low: float, *, strict: bool = False, high: float | None = None):
    """An argparse type: a ``kind`` number ≥ ``low`` (> with ``strict``, ≤ ``high``), refused
    with a message that names the value (argparse adds the flag)."""
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {'an integer' if kind is int else 'a number'}") from None
        ok = (value > low if strict else value >= low) and (high is None or value <= high)
        if not ok or value != value:  # NaN fails every comparison but the last one
            bound = f"> {low}" if strict else f"≥ {low}"
            raise argparse.ArgumentTypeError(f"{text} is out of range (must be {bound}"
                                             + (f" and ≤ {high:,})" if high is not None else ")"))
        return value
    return parse


def _driver_options(p: argparse.ArgumentParser) -> None:
    """The driver's options: `run` takes them, `submit` passes them on to the job's `run`."""
    p.add_argument("--resume", action="store_true", help="continue an interrupted sweep; finished trials are not rerun")
    p.add_argument("--no-aggregate", action="store_true", help="only train; skip aggregation and report")
    p.add_argument("--max-trials", type=_number(int, 1), default=DEFAULT_MAX_TRIALS,
                   help=f"refuse sweeps with more trials than this (default {DEFAULT_MAX_TRIALS:,})")
    p.add_argument("--resource-timeout", type=_number(float, 0), default=None, metavar="SECONDS",
                   help="wait this long for a node that can hold one trial's trial_resources before "
                        "failing (default: fail at once, or 600 s on a cluster-launcher autoscaling cluster)")


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="edgesweep", description=(
        "Sweeps on Ray that track the spectral edge of the rolling-window Gram matrix of "
        "parameter updates, and test whether it precedes grokking."))
    sub = ap.add_subparsers(dest="command", required=True)

    p = sub.add_parser("run", help="run a sweep (the Ray job driver), then aggregate and report")
    p.add_argument("spec", type=_path, help="sweep YAML, e.g. sweeps/demo.yaml")
    p.add_argument("--storage", type=_path, help="override the spec's storage root (path or s3://bucket/prefix)")
    p.add_argument("--address", help="Ray cluster address (default: the cluster this job runs on, else a new local one)")
    _driver_options(p)
    p.set_defaults(func=_run)

    p = sub.add_parser("plan", help="print the trials a sweep spec expands to and a rough CPU-time estimate; starts nothing")
    p.add_argument("spec", type=_path)
    p.add_argument("--storage", type=_path, help="override the spec's storage root")
    p.add_argument("--max-trials", type=_number(int, 1), default=DEFAULT_MAX_TRIALS)
    p.set_defaults(func=_plan)

    p = sub.add_parser("submit", help="submit `run SPEC` as a Ray job with this folder as working dir")
    p.add_argument("spec", type=_path)
    p.add_argument("--address", required=True, help="Ray dashboard/job address, e.g. http://127.0.0.1:8265")
    p.add_argument("--storage", type=_path, help="override the spec's storage root")
    p.add_argument("--no-wait", action="store_true", help="print the job id and return")
    p.add_argument("--pip", action="append", default=[], help="extra pip requirement for the job's runtime env")
    _driver_options(p)
    p.set_defaults(func=_submit)

    p = sub.add_parser("aggregate", help="recompute events, precedence table and scorecard for ROOT/SWEEP")
    p.add_argument("path", type=_path, help="a sweep folder: ROOT/SWEEP (local or s3://)")
    p.add_argument("--no-ray", action="store_true", help="aggregate in this process instead of Ray tasks")
    p.add_argument("--no-report", action="store_true", help="write runs, summary and scorecard.json only; leave "
                   "report.md and figures/ as they are")
    p.set_defaults(func=_aggregate)

    p = sub.add_parser("detect", help="the early-warning benchmark: a detector and the baselines over ROOT/SWEEP")
    p.add_argument("path", type=_path, help="a sweep folder: ROOT/SWEEP (local or s3://)")
    p.add_argument("--detector", default="g23_collapse", help="detector name (edgesweep.analysis.detectors)")
    p.add_argument("--config", help='its parameters as JSON, e.g. \'{"decline_factor": 3}\'')
    p.add_argument("--cv", default="workload", help="leave-one-out grouping: workload | family | block")
    p.add_argument("--delta", type=_number(int, 1, high=10**12), default=2000, help="Δ of P(grok within Δ steps | alarm)")
    p.set_defaults(func=_detect)

    p = sub.add_parser("report", help="regenerate report.md and figures for ROOT/SWEEP")
    p.add_argument("path", type=_path, help="a sweep folder: ROOT/SWEEP (local or s3://), already aggregated")
    p.add_argument("--trial-figures", action=argparse.BooleanOptionalAction, default=None,
                   help="one PNG per trial in figures/trials/ (default: only for sweeps of at most "
                        "100 trials; --no-trial-figures: never)")
    p.set_defaults(func=_report)

    p = sub.add_parser("status", help="live view of a sweep from its storage alone: trials, steps/s, "
                                      "accuracy, g23, R, groks, alarms, ETA")
    p.add_argument("path", type=_path, help="a sweep folder: ROOT/SWEEP (local or s3://)")
    p.add_argument("--watch", "-w", action="store_true", help="refresh in place until the sweep has finished")
    p.add_argument("--interval", type=_number(float, 0, strict=True, high=86400), default=5.0,
                   help="seconds between refreshes (default 5)")
    p.add_argument("--plain", action="store_true", help="plain lines even on a terminal")
    p.set_defaults(func=_status)

    p = sub.add_parser("query", help="run SQL over the tables (trials, evals, features, runs, summary, detection)",
                       description=QUERY_DESCRIPTION)
    add_query_arguments(p)  # the storage command's own arguments: one definition
    p.set_defaults(func=_query, usage_error=p.error)

    p = sub.add_parser("verify", help="check every stored file of a root against its seal records; exit 1 on damage")
    p.add_argument("root", type=_path, help="a storage root or one sweep folder (local or s3://)")
    p.add_argument("--quick", action="store_true", help="records, sizes and hashes only (no page decoding)")
    p.add_argument("--quiet", "-q", action="store_true", help="print only problems and the summary")
    p.set_defaults(func=_verify)

    p = sub.add_parser("workloads", help="list workloads, presets, parameter counts and defaults")
    p.set_defaults(func=_workloads)

    p = sub.add_parser("spectral-demo", help="one real modular-addition run, printing spectral-edge rows live")
    p.add_argument("--steps", type=_number(int, 1), default=3000, help="optimizer steps (default 3000)")
    p.add_argument("--every", type=_number(int, 1), default=50, help="steps between snapshots (default 50)")
    # The monitor's own bound (spectral.MAX_WINDOW, checked equal in the tests), written out so
    # that `--help` does not import torch.
    p.add_argument("--window", type=_number(int, 2, high=1000), default=10, help="W, rows of the window (default 10)")
    p.add_argument("--seed", type=_number(int, 0, high=2**63 - 1), default=42, help="training seed (default 42)")
    p.set_defaults(func=_spectral_demo)
    return ap


def _one_line_warnings(command: str) -> None:
    """edgesweep's own warnings (a skipped damaged file, a trial that could not be evaluated)
    as one line each, ``edgesweep CMD: warning: …``, instead of Python's two lines with a
    source line of ours; other packages' warnings are shown as Python shows them."""
    import warnings

    show = warnings.showwarning
    package = os.path.dirname(os.path.abspath(__file__))

    def one_line(message, category, filename, lineno, file=None, line=None):
        if os.path.abspath(filename).startswith(package + os.sep):
            text = str(message).removeprefix(f"{command}: ")  # the prefix is already there
            print(f"edgesweep {command}: warning: {text}", file=file or sys.stderr)
        else:
            show(message, category, filename, lineno, file, line)

    warnings.showwarning = one_line


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from .platform.spec import SpecError
    from .storage.errors import StorageError
    _one_line_warnings(args.command)
    try:
        return int(args.func(args) or 0)
    except BrokenPipeError:
        # The reader went away (`edgesweep status | head -1`): nothing to report, as for any
        # Unix tool. Point stdout at /dev/null so the interpreter's final flush stays quiet.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141  # 128 + SIGPIPE, what a shell shows for a tool the signal stopped
    except (SpecError, StorageError) as exc:
        # Expected, user-caused failures: one clear line, no traceback.
        print(f"edgesweep {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except (ValueError, OSError, ConnectionError) as exc:
        # Bad arguments, unreachable addresses, unwritable outputs: one line as well, unless
        # EDGESWEEP_DEBUG asks for the traceback.
        if os.environ.get("EDGESWEEP_DEBUG"):
            raise
        print(f"edgesweep {args.command}: error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
