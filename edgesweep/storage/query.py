"""SQL over the tables: :func:`query` and the ``edgesweep query`` command.

Each table is registered in a :class:`polars.SQLContext` under its own name (``trials``,
``evals``, ``features``, ``runs``, ``summary``, ``detection``: ``schema.TABLES``) as the
deduplicated LazyFrame of :func:`scan`, so the SQL sees what ``scan`` returns — with one
difference: an undefined float, stored as NaN (CONTRACTS.md), reads as NULL. Polars orders NaN
above every number, so on NaN ``WHERE g23_decline > 1.5`` kept every run that never grokked (30
of 30 runs of the laptop sweep, where 12 meet it) and ``COUNT``/``AVG`` counted them; NULL is
what SQL's comparisons and aggregates skip (``ORDER BY … DESC`` still lists NULLs first unless
``NULLS LAST``). Scalar float columns only (NaN inside a list stays), and not the partition
keys, so that a filter on ``weight_decay`` still skips other partitions' files;
``nan_as_null=False`` (``--keep-nan``) reads NaN as stored.

Only tables the SQL mentions are scanned (a table's scan lists its files and reads their
footers; a corrupt file in a table the query does not use must not fail it).

Command line (``python -m edgesweep query``, or ``python -m edgesweep.storage query``)::

    edgesweep query ROOT "SQL" [--format table|csv|parquet|json] [--output FILE] [--skip-bad-files]
                    [--keep-nan]
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import sys
import warnings

import polars as pl
import polars.selectors as cs

from .arguments import path_argument, utf8_argument
from .checks import holds_a_table, inspect_table, one_level_too_deep, sweep_dirs
from .errors import StorageError, StorageWarning
from .fs import resolve_root
from .scan import scan_inspected
from .schema import DERIVED, PARTITION_KEYS, RETIRED_COLUMNS, TABLES

FORMATS = ("table", "csv", "parquet", "json")
#: The format --output's extension implies when --format is not given.
SUFFIX_FORMATS = {".csv": "csv", ".parquet": "parquet", ".pq": "parquet", ".json": "json", ".txt": "table"}


def tables_in(sql: str) -> list[str]:
    """Table names the SQL text mentions as words (a superset of the ones it reads)."""
    words = set(re.findall(r"[A-Za-z_][A-Za-z0-9_]*", sql.lower()))
    return [t for t in TABLES if t in words]


_COMMENTS = re.compile(r"--[^\n]*|/\*.*?\*/", re.S)
#: A FROM or JOIN clause, up to the next keyword that ends it.
_FROM = re.compile(r"\b(?:from|join)\s+([A-Za-z_].*?)(?=\b(?:where|group|order|limit|having|union|except|intersect|join|"
                   r"on|using|inner|left|right|full|cross|natural|window|offset)\b|\)|;|$)", re.I | re.S)


def tables_read(sql: str) -> list[str]:
    """Table names the SQL reads — in a FROM or JOIN clause, comma lists included — not every
    word that happens to be one (``AS detection`` is an alias)."""
    names = set()
    for clause in _FROM.findall(_COMMENTS.sub(" ", sql)):
        for item in clause.split(","):
            m = re.match(r"\s*([A-Za-z_][A-Za-z0-9_]*)", item)
            if m:
                names.add(m.group(1).lower())
    return [t for t in TABLES if t in names]


#: First words of statements that would change a table: Polars runs some of them on its
#: in-memory copy and prints an empty result, which reads as if they had worked.
WRITING_STATEMENTS = ("delete", "insert", "update", "create", "drop", "truncate", "alter", "copy")


def nan_as_null_frame(lf: pl.LazyFrame) -> pl.LazyFrame:
    """``lf`` with every NaN of a scalar float column read as NULL — not in the partition keys
    (weight_decay is never NaN), so that a filter on one still reaches the Parquet reader and
    the files of other partitions are skipped unread."""
    return lf.with_columns((cs.float() - cs.by_name(*PARTITION_KEYS, require_all=False)).fill_nan(None))


def query(root, sql: str, *, on_error: str = "raise", verify_content: bool = True,
          nan_as_null: bool = True) -> pl.DataFrame:
    """Run `sql` over the tables under `root` (a root of sweeps or one sweep folder).

    ``nan_as_null``: a NaN in a scalar float column reads as NULL, so that comparisons and
    aggregates skip undefined values as SQL does (module docstring).

    A root under which no sweep holds any table is an error (most likely the wrong folder); a
    table the SQL names that no sweep holds yet is a :class:`StorageWarning` — for ``runs``,
    ``summary`` and ``detection`` naming the command that writes it — and, when the SQL then
    fails, the error. Bad files are reported as :func:`scan` reports them. Should reading fail
    after the scan checked the files (one changed in between), the error is a
    :class:`StorageError` naming the files that are bad now, found by checking the tables
    again (SQL errors stay what they are)."""
    if not _COMMENTS.sub(" ", sql).strip(" \t\r\n;"):
        raise StorageError("SQL: no statement (the SQL is empty or only comments)")
    first = re.match(r"\s*\(*\s*([A-Za-z]+)", _COMMENTS.sub(" ", sql))
    if first and first.group(1).lower() in WRITING_STATEMENTS:
        raise StorageError(f"{first.group(1).upper()}: edgesweep query only reads the tables (SELECT, WITH …)")
    r = resolve_root(root)
    sweeps = sweep_dirs(r)  # a missing root is an error even for SQL that names no table
    require_tables(r, sweeps, "; a sweep that has not sealed any rows yet has nothing to query")
    tables = tables_in(sql)
    read = tables_read(sql)
    held = tables_held(r, sweeps, read)
    absent = [t for t in read if t not in held]
    for t in absent:
        warnings.warn(absent_text(r, t, sweeps), StorageWarning, stacklevel=2)
    inspected = {t: inspect_table(r, t, sweeps, content=verify_content) for t in tables}
    frames = {t: scan_inspected(r, t, insp, on_error) for t, insp in inspected.items()}
    for note in column_notes(r, sweeps, sql, read, inspected):
        warnings.warn(note, StorageWarning, stacklevel=2)
    if nan_as_null:
        frames = {t: nan_as_null_frame(lf) for t, lf in frames.items()}
    try:
        with pl.SQLContext(frames=frames) as ctx:
            return ctx.execute(sql, eager=False).collect()
    except pl.exceptions.PolarsError as exc:
        if absent and not isinstance(exc, (pl.exceptions.SQLSyntaxError, pl.exceptions.SQLInterfaceError)):
            # An empty stand-in has no columns: the column error only repeats that the table is absent.
            raise StorageError(f"{absent_text(r, absent[0], sweeps)} ({type(exc).__name__}: "
                               f"{_without_plan(exc)})") from exc
        if not isinstance(exc, pl.exceptions.ComputeError):
            raise
        _raise_if_damaged(r, tables, sweeps, exc)
        raise
    except OSError as exc:
        _raise_if_damaged(r, tables, sweeps, exc)
        raise


def column_notes(r, sweeps, sql: str, read: list[str], inspected: dict) -> list[str]:
    """What a query over several sweeps would otherwise hide: a column the SQL names that some
    sweeps' files lack (written before it existed; it reads as null there), and sweeps whose
    rows of a table mean something else than now (:data:`.schema.RETIRED_COLUMNS`). Which
    columns the SQL names is read off its words, not parsed: a word in a string literal, or a
    column of another table of the same name, can bring a note that does not apply."""
    notes = []
    words = set(re.findall(r"[a-z_][a-z0-9_]*", _COMMENTS.sub(" ", sql).lower()))
    for table in read:
        have: dict[str, set[str]] = {}
        for f in inspected[table].files:
            for name in f.schema.names if f.schema is not None else ():
                have.setdefault(name, set()).add(f.sweep)
        in_table = {f.sweep for f in inspected[table].files}
        for name in sorted(words & set(have)):
            lacking = sorted(in_table - have[name])
            if lacking and name not in PARTITION_KEYS:
                notes.append(f"column {name!r} of table {table!r} is not in the files of sweep(s) "
                             f"{', '.join(lacking)} (written before it existed): it reads as null there")
    for (marker_table, column), (affected, meaning) in RETIRED_COLUMNS.items():
        if not set(affected) & set(read):
            continue
        files = (inspected[marker_table] if marker_table in inspected
                 else inspect_table(r, marker_table, sweeps, content=False)).files
        old = sorted({f.sweep for f in files if f.schema is not None and column in f.schema.names})
        if old:
            notes.append(f"sweep(s) {', '.join(old)}: {meaning}")
    return notes


def require_tables(r, sweeps, why: str = "") -> None:
    """StorageError unless some sweep under the root holds a table: a table folder or an
    unrelated folder given as the root would otherwise read as empty tables, without a word."""
    if not any(holds_a_table(r, d) for _, d in sweeps):
        hint = one_level_too_deep(r)
        raise StorageError(f"{r.display(r.base)}: no edgesweep tables here (no sweep folder holding trials/, "
                           f"evals/, features/ …): give a storage root or one sweep's folder"
                           f"{hint or why}", r.display(r.base))


def tables_held(r, sweeps, tables=TABLES) -> list[str]:
    """Those of ``tables`` that some sweep under the root holds a folder of."""
    return [t for t in tables if any(r.exists(f"{d}/{t}") for _, d in sweeps)]


def outputs_only(held: list[str]) -> bool:
    """Whether the tables held are the aggregation's outputs alone: a results folder kept
    without the raw tables they were computed from (docs/results/grokking-corpus)."""
    return bool(held) and all(t in DERIVED for t in held)


def absent_text(r, table: str, sweeps) -> str:
    """Why ``table`` is missing under the root, and for a derived table the command that writes it."""
    where = r.display(r.base)
    if table in DERIVED:
        command = "detect" if table == "detection" else "aggregate"
        target = shlex.quote(r.display(sweeps[0][1])) if len(sweeps) == 1 else "ROOT/SWEEP"
        return (f"no {table!r} table under {where} yet: it is computed from the others, "
                f"`edgesweep {command} {target}` writes it")
    if outputs_only(held := tables_held(r, sweeps)):
        return (f"no {table!r} table under {where}: it holds {', '.join(held)} — an aggregation's outputs, "
                "kept without the raw tables they were computed from")
    return f"no {table!r} table under {where}: no sweep there has stored any of its rows yet"


def _raise_if_damaged(r, tables: list[str], sweeps, exc: Exception) -> None:
    bad = [p for t in tables for p in inspect_table(r, t, sweeps, deep=True).damage]
    if bad:
        shown = "\n".join(f"  {p.line()}" for p in bad[:20])
        raise StorageError(f"reading failed ({type(exc).__name__}: {exc}); bad files now:\n{shown}",
                           [p.path for p in bad]) from exc


#: Rows a table on stdout shows unless --max-rows says otherwise.
SCREEN_ROWS = 50


#: What ``edgesweep query --help`` says the command does (also the CLI's sub-command).
DESCRIPTION = ("Run SQL (Polars dialect) over an edgesweep storage root. Tables: " + ", ".join(TABLES)
               + "; every table has a 'sweep' column.")


def _parser() -> argparse.ArgumentParser:
    return add_query_arguments(argparse.ArgumentParser(prog="edgesweep query", description=DESCRIPTION))


def add_query_arguments(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The command's arguments, on ``p``: the one definition for ``edgesweep query`` and
    ``python -m edgesweep.storage query`` (it used to be written twice, and a flag added to one
    had to be forwarded by hand from the other)."""
    p.add_argument("root", metavar="ROOT", type=path_argument,
                   help="storage root (path, file://, s3:// or gs:// URI), or one sweep's folder")
    p.add_argument("sql", metavar="SQL", type=utf8_argument("SQL"),
                   help='e.g. "SELECT workload, count(*) FROM features GROUP BY 1"')
    p.add_argument("--format", choices=FORMATS, help="output format (default: from --output's extension "
                   "— " + ", ".join(SUFFIX_FORMATS) + " — else table); json writes ±inf and NaN as null")
    p.add_argument("--output", "-o", metavar="FILE", type=path_argument, help="write to FILE instead of stdout "
                   "(required for parquet)")
    p.add_argument("--skip-bad-files", action="store_true",
                   help="skip corrupt or foreign files with a warning instead of failing")
    p.add_argument("--keep-nan", action="store_true",
                   help="read NaN in float columns as stored (default: as NULL, which comparisons and "
                        "aggregates skip; NaN orders above every number)")
    p.add_argument("--max-rows", type=int, default=None,
                   help=f"rows shown by --format table (default {SCREEN_ROWS} on stdout, all in --output; -1 for all)")
    return p


_EXPRESSION = "This error occurred in the following expression:"


def _without_plan(exc: Exception) -> str:
    """One line from a Polars error. Polars appends paragraphs to the first one, which names
    the column or file: the SQL statement again (from 2.2), its query plan (dozens of lines
    naming every column and file), the failing expression and, for an object store, the
    causes. Kept, shortened: the expression (which comparison or cast of a long query failed)
    and the causes (often the only words that say what the store answered)."""
    paragraphs = [p.strip() for p in str(exc).split("\n\n") if p.strip()]
    if not paragraphs:
        return type(exc).__name__
    line = " ".join(paragraphs[0].split())
    for prefix, label in ((_EXPRESSION, "in"), ("Caused by:", "caused by:")):
        kept = next((p[len(prefix):] for p in paragraphs[1:] if p.startswith(prefix)), None)
        if kept and (kept := " ".join(kept.split())):
            line += f" ({label} {kept[:200]}{'…' if len(kept) > 200 else ''})"
    return line


def _string_width(df: pl.DataFrame, least: int = 60, most: int = 120) -> int:
    """Characters the table view shows of a string: the longest string column's longest value
    within [least, most] — a trial id names its axes and runs past 60 characters in a sweep of
    many (82 in the development corpus), and a cut id cannot be pasted back into a query.
    $POLARS_FMT_STR_LEN, when set, decides."""
    text = os.environ.get("POLARS_FMT_STR_LEN", "").strip()
    if text.isdigit() and int(text) > 0:
        return int(text)
    widths = [df[c].str.len_chars().max() or 0 for c, t in df.schema.items() if t == pl.String]
    return max(least, min(most, max(widths, default=0)))


def query_main(argv: list[str] | None = None) -> int:
    """``edgesweep query``; returns the exit status (0 ok, 2 usage/data error)."""
    parser = _parser()
    return query_command(parser.parse_args(argv), parser.error)


def query_command(args: argparse.Namespace, error) -> int:
    """Run the command for parsed ``args`` (:func:`add_query_arguments`); ``error(message)`` is
    the parser's, for a usage error it exits with."""
    if args.output:
        args.output = os.path.expanduser(args.output)  # quoted '~/x.csv' reaches us unexpanded
    if args.format is None:
        # The screen table written into data.csv or data.parquet would be a file no reader takes.
        args.format = SUFFIX_FORMATS.get(os.path.splitext(args.output)[1].lower()) if args.output else "table"
        if args.format is None:
            error(f"--output {args.output}: its extension does not say the format "
                  f"({', '.join(SUFFIX_FORMATS)}); give --format {'|'.join(FORMATS)}")
    if args.format == "parquet" and not args.output:
        error("--format parquet needs --output FILE")
    if args.output and _clobbers_storage(args.output, args.root):
        error(f"--output {args.output}: inside the tables or outputs of a sweep (of {args.root} or "
              f"another), where it could replace or shadow the sweep's own files — write it elsewhere")
    if args.max_rows is None:
        # A screen shows a sample; a file asked for by name is the result, not a sample of it.
        args.max_rows = -1 if args.output else SCREEN_ROWS
    if args.max_rows < -1:
        error(f"--max-rows {args.max_rows}: a row count, or -1 for all")
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", StorageWarning)
            df = query(args.root, args.sql, on_error="skip" if args.skip_bad_files else "raise",
                       nan_as_null=not args.keep_nan)
        for w in caught:
            print(f"edgesweep query: warning: {w.message}", file=sys.stderr)
    except StorageError as exc:
        print(f"edgesweep query: error: {exc}", file=sys.stderr)
        return 2
    except (pl.exceptions.SQLInterfaceError, pl.exceptions.SQLSyntaxError) as exc:
        text = _without_plan(exc)
        if re.search(r"relation '[^']*' was not found", text):
            text += f" (the tables: {', '.join(TABLES)})"
        print(f"edgesweep query: error in SQL: {text}", file=sys.stderr)
        return 2
    except (pl.exceptions.PolarsError, OSError) as exc:  # unknown column, bad cast, a file
        # compacted away since it was listed (re-run), an unreadable data page…
        print(f"edgesweep query: error: {type(exc).__name__}: {_without_plan(exc)}", file=sys.stderr)
        return 2

    try:
        if args.format == "table":
            # Rows never wrap or cut (a cut trial id reads as another one); the terminal may fold them.
            with pl.Config(tbl_rows=args.max_rows, fmt_str_lengths=_string_width(df), tbl_width_chars=10_000):
                text = str(df) + "\n"
            return _emit(text, args.output)
        if args.format == "csv":
            return _emit(_csv(df), args.output)
        if args.format == "json":
            return _emit(df.write_json() + "\n", args.output)
        df.write_parquet(args.output)
        return 0
    except OSError as exc:  # the disk filled, the folder went away while the query ran
        if not args.output:
            raise  # stdout: a closed pipe is the CLI's to end quietly (exit 141)
        print(f"edgesweep query: error: --output {args.output}: cannot write: {exc.strerror or exc}", file=sys.stderr)
        return 2


#: Files of a sweep folder that aggregation, detection and the driver write (an --output there
#: replaces them), and the folders edgesweep and its trackers keep inside a sweep.
SWEEP_OUTPUTS = ("scorecard.json", "detection.json", "report.md", "report.html", "_driver.json", "_spec.json")
OWN_FOLDERS = ("_sealed", "_tune", "_wandb", "_mlflow", "figures")


def _clobbers_storage(output: str, root: str) -> bool:
    """Whether writing ``output`` could change stored data: a file inside a table folder (a
    reader would take it for a part, or it replaces one), inside edgesweep's or Tune's own
    folders (``_sealed``, ``_tune``, …), or over a sweep's aggregation outputs — of the queried
    root (a local one) or of any other sweep folder on this disk, reached through ``..`` or
    not. Elsewhere — ``results/summary.csv``, ``ROOT/_exports/…`` — is fine."""
    out = os.path.realpath(os.path.expanduser(output))
    base = _local_base(root)

    def holds_sweeps(folder: str) -> bool:
        # Under the queried root every folder counts, one with nothing stored yet included;
        # elsewhere a sweep folder is known by what edgesweep writes first.
        if base is not None and (folder + "/").startswith(base.rstrip("/") + "/"):
            return True
        return any(os.path.isdir(os.path.join(folder, d)) for d in ("_sealed", "trials", "features"))

    # Compared case-insensitively: on a case-insensitive file system Features/ is features/.
    if os.path.basename(out).lower() in SWEEP_OUTPUTS and holds_sweeps(os.path.dirname(out)):
        return True
    child, folder = os.path.dirname(out), os.path.dirname(os.path.dirname(out))
    while folder != child:  # every folder above the file, up to the file system's root
        name = os.path.basename(child).lower()
        if (name in TABLES or name in OWN_FOLDERS) and holds_sweeps(folder):
            return True
        child, folder = folder, os.path.dirname(folder)
    return False


def _local_base(root: str) -> str | None:
    """The real path of a local storage root; None for an object store or a bad root (query
    reports that itself)."""
    try:
        r = resolve_root(root)
    except StorageError:
        return None
    return None if r.is_object_store else os.path.realpath(r.base)


def _csv(df: pl.DataFrame) -> str:
    # CSV has no list type: show list columns as JSON-like text rather than failing.
    nested = {c: t for c, t in df.schema.items() if t.is_nested()}
    df = df.with_columns(
        pl.format("[{}]", pl.col(c).cast(pl.List(pl.String)).list.join(", "))
        if isinstance(t, pl.List) else pl.col(c).map_elements(str, return_dtype=pl.String)
        for c, t in nested.items())
    return df.write_csv()


def _emit(text: str, output: str | None) -> int:
    if output:
        with open(output, "w", encoding="utf-8") as f:
            f.write(text)
    else:
        sys.stdout.write(text)
    return 0
