"""The reference pages against the code they describe, both ways.

docs/TABLES.md lists every column of every table; docs/SPEC.md every key a sweep spec accepts,
with its default. A column or key added to the code without its line here fails, and so does a
line here that the code no longer has, or a default the models do not give."""

from __future__ import annotations

import re
import typing
from pathlib import Path

import polars as pl
import pyarrow as pa
import pytest
from pydantic import BaseModel

from edgesweep.analysis.detection import score_alarms
from edgesweep.analysis.runs import RUNS_SCHEMA, SUMMARY_SCHEMA
from edgesweep.platform import spec
from edgesweep.storage import schema
from edgesweep.workloads import catalog

DOCS = Path(__file__).resolve().parents[1] / "docs"
ROW = re.compile(r"^\| `([^`]+)` \| ([^|]+?) \|")


def _sections(page: str) -> dict[str, list[tuple[str, str]]]:
    """`## name` heading → its table rows (first cell in backticks, second cell)."""
    out: dict[str, list[tuple[str, str]]] = {}
    current = None
    for line in (DOCS / page).read_text(encoding="utf-8").splitlines():
        if line.startswith("## "):
            current = line[3:].strip().strip("`")
            out[current] = []
        elif current is not None and (m := ROW.match(line)):
            out[current].append((m.group(1), m.group(2).strip()))
    return out


# -- tables ----------------------------------------------------------------------------------

def _arrow_kind(t: pa.DataType) -> str:
    if pa.types.is_list(t):
        return f"list[{_arrow_kind(t.value_type)}]"
    if pa.types.is_timestamp(t):
        return "timestamp (UTC)"
    return {"string": "string", "double": "float", "int64": "int", "int32": "int", "bool": "bool"}[str(t)]


def _polars_kind(t: pl.DataType) -> str:
    return {pl.String: "string", pl.Float64: "float", pl.Int64: "int", pl.Boolean: "bool"}[t]


def _code_columns() -> dict[str, dict[str, str | None]]:
    declared = {name: {f.name: _arrow_kind(f.type) for f in s} for name, s in schema.DECLARED.items()}
    detection = dict.fromkeys(score_alarms([], "g23_collapse", {}, "in-sample").row())
    return {**declared,
            "runs": {k: _polars_kind(v) for k, v in RUNS_SCHEMA.items()},
            "summary": {k: _polars_kind(v) for k, v in SUMMARY_SCHEMA.items()},
            "detection": detection}


def test_every_table_column_is_documented_with_its_type_and_nothing_else():
    documented = _sections("TABLES.md")
    code = _code_columns()
    assert set(code) == set(schema.TABLES)
    for table, columns in code.items():
        rows = documented.get(table)
        assert rows, f"docs/TABLES.md has no section for {table}"
        names = [name for name, _ in rows]
        assert len(names) == len(set(names)), f"{table}: a column is listed twice"
        assert set(names) == set(columns), (
            f"{table}: undocumented {sorted(set(columns) - set(names))}, "
            f"documented but not written {sorted(set(names) - set(columns))}")
        for name, kind in rows:
            if columns[name] is not None:
                assert kind == columns[name], f"{table}.{name}: documented as {kind}, written as {columns[name]}"


# -- sweep spec ------------------------------------------------------------------------------

def _section_model(annotation) -> type[BaseModel] | None:
    for a in (annotation, *typing.get_args(annotation)):
        if isinstance(a, type) and issubclass(a, BaseModel):
            return a
    return None


def _spec_keys(model: type[BaseModel], prefix: str = "") -> dict[str, object]:
    """Every key path the models accept → its default (None for a section)."""
    out: dict[str, object] = {}
    for name, f in model.model_fields.items():
        sub = _section_model(f.annotation)
        path = prefix + name
        if name == "blocks":
            out[path] = None
            out |= _spec_keys(spec.Block, "blocks[].")
        elif sub is not None:
            out[path] = None
            out |= _spec_keys(sub, path + ".")
        else:
            out[path] = "required" if f.is_required() else f.get_default(call_default_factory=True)
    return out


def _as_written(value) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if value == {}:
        return "{}"
    if value == []:
        return "[]"
    return str(value)


def test_every_spec_key_is_documented_with_its_default_and_nothing_else():
    rows = [r for section in _sections("SPEC.md").values() for r in section
            if not r[0].startswith("{")]  # the distributions table
    documented = dict(rows)
    assert len(documented) == len(rows), "docs/SPEC.md lists a key twice"
    code = _spec_keys(spec.SweepDoc)
    assert set(documented) == set(code), (
        f"undocumented keys {sorted(set(code) - set(documented))}, "
        f"documented keys the spec refuses {sorted(set(documented) - set(code))}")
    for key, default in code.items():
        if default is None and _section_model(_field(key)) is not None or key == "blocks":
            continue  # a section: its keys carry the defaults
        assert documented[key].strip("`") == _as_written(default), (
            f"{key}: docs/SPEC.md says {documented[key]}, the spec's default is {_as_written(default)}")


def test_the_documented_identity_axis_defaults_are_the_specs():
    """SPEC.md's *Axes*: an identity axis left out of the grid takes the default it names."""
    text = (DOCS / "SPEC.md").read_text(encoding="utf-8")
    said = dict(re.findall(r"`(optimizer|weight_decay|seed)` \([^)]*default `\[([^\]]+)\]`\)", text))
    assert set(said) == {"optimizer", "weight_decay", "seed"}, said
    trial = spec.parse_spec({"name": "x", "storage": "/tmp/unused", "grid": {"workload": ["mod_add"]}}).trials[0]
    assert {k: str(getattr(trial, k)) for k in said} == said


def _field(key: str):
    model: type[BaseModel] = spec.SweepDoc
    parts = key.split(".")
    for part in parts[:-1]:
        model = spec.Block if part == "blocks[]" else _section_model(model.model_fields[part].annotation)
    return model.model_fields[parts[-1]].annotation


def test_documented_model_and_task_keys_are_the_config_classes_fields():
    text = (DOCS / "SPEC.md").read_text(encoding="utf-8")
    rows = [r for r in re.findall(r"^\| (\w+) \| ([\w, ]+) \| ([\w, ]+) \| ([\w, ]+) \|$", text, re.M)
            if r[0] != "key"]  # other tables' headers
    families: dict[str, list[str]] = {}
    for w in catalog.WORKLOADS:
        families.setdefault(catalog.get_workload(w).family, []).append(w)
    assert {r[0] for r in rows} == set(families)
    for family, workloads, model_keys, task_keys in rows:
        assert workloads.split(", ") == families[family]
        assert model_keys.split(", ") == sorted(catalog.model_keys(families[family][0]))
        assert task_keys.split(", ") == sorted(catalog.task_keys(families[family][0]))


@pytest.mark.parametrize("page", ["TABLES.md", "SPEC.md"])
def test_the_pages_are_linked_from_the_readme(page):
    assert f"docs/{page}" in (DOCS.parent / "README.md").read_text(encoding="utf-8")


def test_the_results_pages_untabled_numbers_come_from_the_committed_script():
    """docs/RESULTS.md quotes numbers of the laptop sweep that no table holds; they come from
    docs/results/grokking-laptop/untabled_numbers.py, run here over the committed tables. Its
    output must be the committed untabled_numbers.txt, its controls' median over full windows
    must equal the one `aggregate` wrote into the summary table (an independent path to it), and
    every number RESULTS.md takes from it must be in it."""
    import subprocess
    import sys

    from edgesweep.storage import query

    here = DOCS / "results" / "grokking-laptop"
    out = subprocess.run([sys.executable, str(here / "untabled_numbers.py")], capture_output=True, text=True,
                         cwd=DOCS.parent, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout == (here / "untabled_numbers.txt").read_text(encoding="utf-8")
    summary = query(here, "SELECT decline_peak_to_final_median AS m FROM summary "
                          "WHERE scope = 'all' AND weight_decay = 0").item()
    assert f"controls (all, wd 0, n=15): median peak-to-final g23 decline over full windows: {summary:.0f}x" \
        in out.stdout
    results = (DOCS / "RESULTS.md").read_text(encoding="utf-8")
    for quoted, printed in (("**649×** over all windows", "over every window: 649x"),
                            ("518× and 475×", "over every window: 518x"),
                            ("518× and 475×", "(modular, wd 0, n=12): median peak-to-final g23 decline over full "
                                              "windows: 475x"),
                            ("step 500 in 17 of the 24\nmodular runs, 550 in the other 7", "{500: 17, 550: 7}"),
                            ("61 % of full windows", "= 61 %"),
                            ("holds in 733 of this sweep's 2,822 feature rows", "2822; lambda_W < lambda_(W-1)/2 in 733"),
                            ("differs\nin 177", "definition in 177"),
                            ("0.0668 → 0.0449", "alpha_sub_all_windows 0.0449"),
                            ("21.9–112× on full windows against 26.9–137×", "21.9-112x on full windows, 26.9-137x")):
        assert quoted in results, quoted
        assert printed in out.stdout, printed


def _sci(text: str) -> float:
    """'1.1 × 10⁻⁵' or '0.10' as a float."""
    sup = str.maketrans("⁻⁰¹²³⁴⁵⁶⁷⁸⁹", "-0123456789")
    mantissa, _, exponent = text.partition(" × 10")
    return float(mantissa) * (10 ** int(exponent.translate(sup)) if exponent else 1)


def test_the_results_pages_headline_table_is_the_committed_summary():
    """The headline table of docs/RESULTS.md, row by row, against the summary table `aggregate`
    wrote for the committed laptop sweep: counts exact, intervals and p to the digits shown."""
    from edgesweep.storage import query

    summary = {(r["scope"], r["weight_decay"]): r for r in query(
        DOCS / "results" / "grokking-laptop", "SELECT * FROM summary").iter_rows(named=True)}
    text = (DOCS / "RESULTS.md").read_text(encoding="utf-8")
    table = text[text.index("| scope | wd | runs | grokked | preceded | 95 % CI | Fisher p vs wd 0 |"):]
    rows = [ln.strip("|").split("|") for ln in table.split("\n\n")[0].splitlines()[2:]]
    assert len(rows) == 6 == len(summary)
    for cells in rows:
        scope, wd, n, grokked, preceded, ci, p = (c.strip() for c in cells)
        r = summary[({"Dyck-1": "dyck"}.get(scope, scope), float(wd))]
        assert (int(n), int(grokked)) == (r["n_runs"], r["n_grokked"]), cells
        assert preceded.strip("*") == f"{r['n_preceded']}/{r['n_runs']}", cells
        assert ci == f"[{r['preceded_lo']:.2f}, {r['preceded_hi']:.2f}]", cells
        if p == "—":
            assert r["fisher_p_preceded"] is None, cells
        else:
            digits = len(p.partition(" ")[0].replace(".", "").lstrip("0"))
            assert float(f"{r['fisher_p_preceded']:.{digits}g}") == pytest.approx(_sci(p)), cells
