"""``report.html``: the sweep report as one self-contained, interactive page, beside report.md.

One file that opens offline — from a laptop, a bucket, an e-mail attachment — with no CDN and no
server: plotly.js (from the ``plotly`` Python package, which ships it) and the curve data are
inlined as gzip + base64 blocks that the browser unpacks with its own ``DecompressionStream``
(Chrome/Edge 80+, Firefox 113+, Safari 16.4+; elsewhere the tables still read and a sentence
says why the curves do not), and the little page logic is inlined too. Contents:

* the report's tables — trial statuses, the precedence table, the prospective detector, the
  early-warning benchmark and the scorecard — converted from report.md's own sections, so the
  two reports cannot disagree;
* interactive per-trial curves against the optimizer step: test and train accuracy, g23 (log
  axis) and the gap ratio R, with grok (green), alarm (red) and memorisation (grey) marked;
  selectors for workload, weight decay and seed (and optimizer when there are several) narrow
  the trials, a trial selector picks one or overlays every matching trial (up to
  :data:`MAX_OVERLAY`), hover reads values, drag zooms (all three panels share the step axis);
  the selection is kept in the URL (``report.html#workload=mod_add&wd=1&seed=42``) to share a
  view; below it, the events of the matching runs; a click on one shows its curves.

Why Plotly: hover, zoom, log axes and linked subplots out of the box, and its JavaScript ships
inside the PyPI wheel, so inlining needs neither a network nor another tool (Vega-Lite would
need vl-convert's bundler; uPlot is not packaged for Python). Its cost is a fixed 4.6 MiB of
JavaScript, 1.9 MiB packed. The data grow with the trials and are kept small three ways: every
curve is downsampled to at most :data:`MAX_POINTS` points with min/max buckets (a spike in g23
survives; a stride would drop it), numbers keep 4 significant digits, and the block is packed.
benchmarks/report_html_size.py measured 3.14 MiB at 1,000 trials (1.87 MiB plotly.js + 1.26 MiB
data, 4.34 MiB unpacked); 30 real trials make 1.9 MiB.

Presentation only, like report.md: it reads what :func:`.report.write_report` loaded and
computes no event of its own (grok, alarm and memorisation steps come from the ``runs`` table).
"""

from __future__ import annotations

import base64
import functools
import gzip
import html
import json
import math
import re
import sys
from datetime import datetime, timezone
from typing import Any

import polars as pl

__all__ = ["write_report_html", "render_html", "markdown_to_html", "decimate", "MAX_POINTS", "MAX_OVERLAY"]

MAX_POINTS = 200        # per curve (a 20k-step run evaluated every 100 steps keeps every point)
MAX_OVERLAY = 12        # trials drawn at once when "all matching" is chosen
#: report.md sections shown in report.html (by their heading), in report.md's order.
SECTIONS = ("## Trials and wall time", "## Grokking precedence", "## Prospective detector",
            "## Early-warning benchmark", "## Scorecard")


# ------------------------------------------------------------------------------------------
# Data
# ------------------------------------------------------------------------------------------


def decimate(df: pl.DataFrame, ycols: list[str], max_points: int = MAX_POINTS, by: str = "trial_id") -> pl.DataFrame:
    """At most ~``max_points`` rows per ``by`` group, sorted by step: the first and last row of
    each group, and in each of ``max_points / (2·len(ycols))`` equal-count buckets the rows
    holding each column's minimum and maximum. Groups with fewer rows are kept whole."""
    if df.height == 0:
        return df
    buckets = max(1, max_points // (2 * max(1, len(ycols))))
    df = df.sort(by, "step").with_columns(_i=pl.int_range(pl.len()).over(by), _n=pl.len().over(by))
    df = df.with_columns(_b=(pl.col("_i") * buckets // pl.col("_n")))
    df = df.with_columns(_j=pl.int_range(pl.len()).over(by, "_b"))
    keep = (pl.col("_n") <= max_points) | (pl.col("_i") == 0) | (pl.col("_i") == pl.col("_n") - 1)
    for y in ycols:
        v = pl.col(y).cast(pl.Float64).fill_nan(None)
        keep = keep | (pl.col("_j") == v.arg_min().over(by, "_b")) | (pl.col("_j") == v.arg_max().over(by, "_b"))
    return df.filter(keep).drop("_i", "_n", "_b", "_j")


def _r4(x: Any) -> float | None:
    """4 significant digits as the shortest JSON number; NaN/inf → null."""
    if x is None:
        return None
    x = float(x)
    return float(f"{x:.4g}") if math.isfinite(x) else None


def _col(df: pl.DataFrame, name: str, positive: bool = False) -> list:
    if name not in df.columns:
        return [None] * df.height
    vals = [_r4(v) for v in df[name].to_list()]
    return [v if v is None or not positive or v > 0 else None for v in vals]  # log axis: > 0 only


def curve_data(runs: pl.DataFrame, features: pl.DataFrame, evals: pl.DataFrame) -> list[dict]:
    """One compact record per run: identity, events, and downsampled curves (e/ta/tr: eval
    steps, test and train accuracy; f/g/r: feature steps, g23 and gap ratio)."""
    f = decimate(features.select([c for c in ("trial_id", "step", "g23", "gap_ratio") if c in features.columns]),
                 ["g23", "gap_ratio"])
    e = decimate(evals.select([c for c in ("trial_id", "step", "grok_acc", "memo_acc") if c in evals.columns]),
                 ["grok_acc", "memo_acc"])
    f_by = {k[0]: v for k, v in f.partition_by("trial_id", as_dict=True).items()} if f.height else {}
    e_by = {k[0]: v for k, v in e.partition_by("trial_id", as_dict=True).items()} if e.height else {}
    out = []
    for r in runs.sort("trial_id").iter_rows(named=True):
        tid = r["trial_id"]
        fr, er = f_by.get(tid, f.clear()), e_by.get(tid, e.clear())
        out.append({
            "id": tid, "workload": r.get("workload"), "optimizer": r.get("optimizer"),
            "wd": r.get("weight_decay"), "seed": r.get("seed"), "status": r.get("status"),
            "grok": r.get("grok_step"), "alarm": r.get("alarm_step"), "memo": r.get("memorization_step"),
            "lead": r.get("lead_steps"), "outcome": r.get("detector_outcome"), "preceded": r.get("preceded"),
            "decline": _r4(r.get("g23_decline")), "thr": _r4(r.get("grok_threshold")),
            "e": er["step"].to_list() if er.height else [], "ta": _col(er, "grok_acc"), "tr": _col(er, "memo_acc"),
            "f": fr["step"].to_list() if fr.height else [], "g": _col(fr, "g23", positive=True),
            "r": _col(fr, "gap_ratio"),
        })
    return out


# ------------------------------------------------------------------------------------------
# report.md's sections → HTML (the subset of Markdown that report.md uses)
# ------------------------------------------------------------------------------------------

_INLINE = [(re.compile(r"\*\*(.+?)\*\*"), r"<strong>\1</strong>"),
           (re.compile(r"`([^`]+)`"), r"<code>\1</code>"),
           (re.compile(r"\[([^\]]+)\]\([^)]*\)"), r"\1")]   # links point at report.md's PNGs: text only


def _inline(text: str) -> str:
    out = html.escape(text, quote=False)
    for pat, rep in _INLINE:
        out = pat.sub(rep, out)
    return out


def _cells(line: str) -> list[str]:
    # split on | that report.md did not escape as \|
    return [c.strip().replace("\\|", "|") for c in re.split(r"(?<!\\)\|", line.strip().strip("|"))]


def markdown_to_html(md: str) -> str:
    """Headings, paragraphs, bullet lists and pipe tables; image lines are dropped (report.md's
    figures are separate PNG files, and this page stays one file)."""
    out, lines, i = [], md.splitlines(), 0
    while i < len(lines):
        line = lines[i].rstrip()
        if not line or line.lstrip().startswith("!["):
            i += 1
        elif line.startswith("#"):
            level = min(len(line) - len(line.lstrip("#")), 6)
            out.append(f"<h{level}>{_inline(line.lstrip('#').strip())}</h{level}>")
            i += 1
        elif line.startswith("|"):
            block = []
            while i < len(lines) and lines[i].startswith("|"):
                block.append(lines[i])
                i += 1
            head, body = _cells(block[0]), [_cells(b) for b in block[2:]]
            out.append("<div class=\"tw\"><table><thead><tr>" + "".join(f"<th>{_inline(c)}</th>" for c in head)
                       + "</tr></thead><tbody>" + "".join(
                           "<tr>" + "".join(f"<td>{_inline(c)}</td>" for c in row) + "</tr>" for row in body)
                       + "</tbody></table></div>")
        elif line.startswith(("* ", "- ")):
            items = []
            while i < len(lines) and lines[i].startswith(("* ", "- ")):
                items.append(f"<li>{_inline(lines[i][2:])}</li>")
                i += 1
            out.append("<ul>" + "".join(items) + "</ul>")
        else:
            para = []
            while i < len(lines) and lines[i].strip() and not lines[i].startswith(("#", "|", "* ", "- ", "![")):
                para.append(lines[i].strip())
                i += 1
            out.append(f"<p>{_inline(' '.join(para))}</p>")
    return "\n".join(out)


def report_sections(parts: list[str]) -> str:
    """The :data:`SECTIONS` of report.md (its ``parts``), as HTML."""
    chosen = [p for p in parts if isinstance(p, str) and p.startswith(SECTIONS)]
    chosen.sort(key=lambda p: next(i for i, s in enumerate(SECTIONS) if p.startswith(s)))
    return "\n".join(f"<section>{markdown_to_html(p)}</section>" for p in chosen)


# ------------------------------------------------------------------------------------------
# The page
# ------------------------------------------------------------------------------------------

CSS = """
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0 auto;max-width:1280px;padding:0 18px 40px;color:#222}
h1{font-size:22px;margin:18px 0 4px}h2{font-size:18px;margin:26px 0 8px;border-bottom:1px solid #ddd;padding-bottom:3px}
code{background:#f3f3f3;padding:0 3px;border-radius:3px;font-size:90%}
.tw{overflow-x:auto}table{border-collapse:collapse;margin:6px 0 12px;font-size:12.5px}
th,td{border:1px solid #ddd;padding:3px 7px;text-align:left;vertical-align:top}th{background:#f6f6f6}
.controls{display:flex;flex-wrap:wrap;gap:14px;align-items:center;margin:8px 0}
.controls label{font-weight:600}select{font:inherit;padding:2px 4px;max-width:520px}
#plot{height:800px}#shown{color:#555;margin:4px 0}
#runs tbody tr{cursor:pointer}#runs tbody tr:hover{background:#eef4ff}#runs tr.sel{background:#dde8ff}
.note{color:#666;font-size:12.5px}
"""

APP = r"""
function edgesweepReport(D) {
  "use strict";
  const RUNS = D.runs, MAX = D.max_overlay;
  const COLORS = ["#1f77b4","#ff7f0e","#2ca02c","#d62728","#9467bd","#8c564b","#e377c2","#7f7f7f","#bcbd22","#17becf"];
  const EV = {grok: "#2ca02c", alarm: "#d62728", memo: "#7f7f7f"};
  const ALL = "__all__";
  const FILTERS = [["workload", "workload"], ["wd", "weight decay"], ["seed", "seed"], ["optimizer", "optimizer"]];
  const sel = {};
  const key = v => (v === null || v === undefined) ? "—" : String(v);

  function options(el, values, withAll) {
    el.innerHTML = "";
    if (withAll) el.add(new Option(withAll, ALL));
    values.forEach(v => el.add(new Option(v[1], v[0])));
  }
  function distinct(field) {
    const vals = [...new Set(RUNS.map(r => key(r[field])))];
    return vals.sort((a, b) => (isNaN(+a) || isNaN(+b)) ? a.localeCompare(b) : (+a - +b));
  }
  function matching() {
    return RUNS.filter(r => FILTERS.every(([f]) => !sel[f] || sel[f].value === ALL || key(r[f]) === sel[f].value));
  }
  function fillTrials(keep) {
    const m = matching(), t = document.getElementById("sel-trial");
    options(t, m.map(r => [r.id, r.id + "  (" + (r.status || "?") + (r.grok !== null ? ", grok " + r.grok : "") + ")"]),
            m.length > 1 ? "all matching (" + Math.min(m.length, MAX) + (m.length > MAX ? " of " + m.length : "") + ")" : null);
    if (keep && [...t.options].some(o => o.value === keep)) t.value = keep;
    return m;
  }
  function eventLines(r) {
    const out = [];
    [["memo", "dot"], ["grok", "solid"], ["alarm", "dash"]].forEach(([k, dash]) => {
      if (r[k] !== null && r[k] !== undefined)
        out.push({type: "line", xref: "x", yref: "paper", x0: r[k], x1: r[k], y0: 0, y1: 1,
                  line: {color: EV[k], width: 1.4, dash: dash}});
    });
    return out;
  }
  function at(xs, ys, x) {  // the y of the last point at or before x
    let y = null;
    for (let i = 0; i < xs.length && xs[i] <= x; i++) if (ys[i] !== null) y = ys[i];
    return y;
  }
  function traces(r, i, single) {
    // one colour per trial when overlaid; one per quantity when a single trial is shown
    const c = COLORS[i % COLORS.length], g = r.id, out = [];
    const cs = single ? ["#1f77b4", "#ff7f0e", "#444444", "#444444"] : [c, c, c, c];
    const name = single ? "" : r.id + " · ";
    out.push({x: r.e, y: r.ta, xaxis: "x", yaxis: "y", mode: "lines", name: name + "test acc", legendgroup: g,
              line: {color: cs[0], width: 1.8}, hovertemplate: "step %{x}<br>test acc %{y:.3f}<extra>" + r.id + "</extra>"});
    out.push({x: r.e, y: r.tr, xaxis: "x", yaxis: "y", mode: "lines", name: name + "train acc", legendgroup: g,
              showlegend: single, line: {color: cs[1], width: 1.2, dash: "dot"},
              hovertemplate: "step %{x}<br>train acc %{y:.3f}<extra>" + r.id + "</extra>"});
    out.push({x: r.f, y: r.g, xaxis: "x", yaxis: "y2", mode: "lines+markers", name: name + "g23", legendgroup: g,
              showlegend: single, marker: {size: 3}, line: {color: cs[2], width: 1.2}, connectgaps: false,
              hovertemplate: "step %{x}<br>g23 %{y:.4g}<extra>" + r.id + "</extra>"});
    out.push({x: r.f, y: r.r, xaxis: "x", yaxis: "y3", mode: "lines", name: name + "gap ratio R", legendgroup: g,
              showlegend: single, line: {color: cs[3], width: 1.2},
              hovertemplate: "step %{x}<br>R %{y:.4g}<extra>" + r.id + "</extra>"});
    if (r.grok !== null) out.push({x: [r.grok], y: [at(r.e, r.ta, r.grok)], xaxis: "x", yaxis: "y", mode: "markers",
        name: "grok " + r.grok, legendgroup: g, showlegend: false, marker: {symbol: "star", size: 12, color: EV.grok,
        line: {color: "#fff", width: 1}}, hovertemplate: "grok at step %{x}<extra>" + r.id + "</extra>"});
    if (r.alarm !== null) out.push({x: [r.alarm], y: [at(r.f, r.g, r.alarm)], xaxis: "x", yaxis: "y2", mode: "markers",
        name: "alarm " + r.alarm, legendgroup: g, showlegend: false, marker: {symbol: "x", size: 10, color: EV.alarm},
        hovertemplate: "alarm at step %{x}<extra>" + r.id + "</extra>"});
    return out;
  }
  function draw() {
    const t = document.getElementById("sel-trial"), m = matching();
    const shown = t.value === ALL ? m.slice(0, MAX) : m.filter(r => r.id === t.value);
    const single = shown.length === 1;
    const data = [].concat(...shown.map((r, i) => traces(r, i, single)));
    const shapes = single ? eventLines(shown[0]) : [];
    if (single && shown[0].thr !== null)
      shapes.push({type: "line", xref: "paper", yref: "y", x0: 0, x1: 1, y0: shown[0].thr, y1: shown[0].thr,
                   line: {color: "#1f77b4", width: 0.8, dash: "dot"}});
    const title = single ? shown[0].id + " — " + shown[0].workload + ", wd " + key(shown[0].wd) + ", seed " +
      key(shown[0].seed) + " · " + (shown[0].status || "") + (shown[0].grok !== null ? " · grok " + shown[0].grok : "") +
      (shown[0].alarm !== null ? " · alarm " + shown[0].alarm : "") : shown.length + " trials";
    const layout = {
      title: {text: title, font: {size: 14}}, hovermode: "closest", shapes: shapes,
      margin: {l: 70, r: 20, t: 50, b: 45}, legend: {orientation: "h", traceorder: "normal", y: -0.07},
      xaxis: {title: {text: "optimizer step"}, anchor: "y3"},
      yaxis: {title: {text: "accuracy"}, domain: [0.69, 1], range: [-0.02, 1.02]},
      yaxis2: {title: {text: "g23 = σ2² − σ3²"}, domain: [0.36, 0.64], type: "log"},
      yaxis3: {title: {text: "gap ratio R"}, domain: [0, 0.31]},
      annotations: [{text: "grok ★ / solid green · alarm ✕ / dashed red · memorised: dotted grey", showarrow: false,
                     xref: "paper", yref: "paper", x: 0, y: 1.045, xanchor: "left", font: {size: 11, color: "#666"}}]
    };
    Plotly.react("plot", data, layout, {responsive: true, displaylogo: false});
    document.getElementById("shown").textContent = m.length + " of " + RUNS.length + " trials match" +
      (t.value === ALL && m.length > MAX ? "; the first " + MAX + " are drawn — narrow the selection or pick one" : "");
    table(m, shown);
    const h = FILTERS.filter(([f]) => sel[f] && sel[f].value !== ALL).map(([f]) => f + "=" + encodeURIComponent(sel[f].value));
    if (t.value !== ALL) h.push("trial=" + encodeURIComponent(t.value));
    try { history.replaceState(null, "", "#" + h.join("&")); } catch (e) { /* a viewer without history: fine */ }
  }
  function table(m, shown) {
    const ids = new Set(shown.map(r => r.id)), tb = document.querySelector("#runs tbody");
    const cols = ["id", "workload", "optimizer", "wd", "seed", "status", "memo", "grok", "alarm", "lead", "outcome", "preceded", "decline"];
    tb.innerHTML = m.slice(0, 200).map(r => "<tr data-id=\"" + r.id + "\"" + (ids.has(r.id) ? " class=\"sel\"" : "") + ">" +
      cols.map(c => "<td>" + (c === "preceded" ? (r[c] ? "yes" : "no") : key(r[c])) + "</td>").join("") + "</tr>").join("");
    document.getElementById("runs-more").textContent = m.length > 200 ? (m.length - 200) + " more match: narrow the selection" : "";
  }
  function init() {
    const ctl = document.getElementById("controls");
    FILTERS.forEach(([f, label]) => {
      const vals = distinct(f);
      if (f === "optimizer" && vals.length < 2) return;
      const lab = document.createElement("label"), s = document.createElement("select");
      lab.textContent = label + " "; s.id = "sel-" + f;
      options(s, vals.map(v => [v, v]), "all");
      lab.appendChild(s); ctl.insertBefore(lab, ctl.lastElementChild); sel[f] = s;
      s.addEventListener("change", () => { fillTrials(); draw(); });
    });
    document.getElementById("sel-trial").addEventListener("change", draw);
    document.querySelector("#runs tbody").addEventListener("click", ev => {
      const tr = ev.target.closest("tr"); if (!tr) return;
      document.getElementById("sel-trial").value = tr.dataset.id; draw();
    });
    const want = Object.fromEntries(location.hash.slice(1).split("&").filter(Boolean).map(p => p.split("=").map(decodeURIComponent)));
    FILTERS.forEach(([f]) => { if (sel[f] && want[f] !== undefined && [...sel[f].options].some(o => o.value === want[f])) sel[f].value = want[f]; });
    // default view: the longest grokked run with weight decay (the interesting case), else the first
    const grokked = RUNS.filter(r => r.grok !== null && r.wd > 0);
    const first = grokked.reduce((a, r) => (!a || r.f.length > a.f.length) ? r : a, null) || RUNS[0];
    fillTrials(want.trial || (location.hash.length > 1 ? null : (first && first.id)));
    draw();
  }
  if (RUNS.length) init(); else document.getElementById("curves").innerHTML += "<p>No runs to show yet.</p>";
}
"""

#: Unpacks the two gzip payloads with the browser's own DecompressionStream (Chrome/Edge 80+,
#: Firefox 113+, Safari 16.4+), runs plotly.js, then the page. Without it: a sentence, no error.
LOADER = r"""
(async function () {
  "use strict";
  const note = t => document.getElementById("shown").textContent = t;
  if (typeof DecompressionStream === "undefined") {
    note("This browser cannot unpack the curves (it lacks DecompressionStream: use Chrome/Edge 80+, " +
         "Firefox 113+ or Safari 16.4+); the tables below are complete.");
    return;
  }
  async function inflate(id) {
    const b64 = document.getElementById(id).textContent;
    const bytes = Uint8Array.from(atob(b64), c => c.charCodeAt(0));
    const stream = new Blob([bytes]).stream().pipeThrough(new DecompressionStream("gzip"));
    return await new Response(stream).text();
  }
  note("unpacking…");
  const lib = document.createElement("script");
  lib.textContent = await inflate("plotly-js-gz");
  document.head.appendChild(lib);            // runs now: defines window.Plotly
  edgesweepReport(JSON.parse(await inflate("edgesweep-data-gz")));
})();
"""


def _gz64(text: str) -> str:
    """gzip (deterministic: no timestamp) + base64: safe inside <script>, ~3× smaller than the
    text for plotly.js and the curve data alike."""
    return base64.b64encode(gzip.compress(text.encode(), compresslevel=9, mtime=0)).decode("ascii")


@functools.lru_cache(maxsize=2)
def _plotly_gz64(js: str) -> str:  # the same 4.8 MB every report of a process: pack it once
    return _gz64(js)


def render_html(sweep: str, uri: str, runs: pl.DataFrame, features: pl.DataFrame, evals: pl.DataFrame,
                sections_html: str, plotly_js: str, plotly_version: str) -> str:
    data = {"sweep": sweep, "max_overlay": MAX_OVERLAY, "runs": curve_data(runs, features, evals)}
    now = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
    title = html.escape(f"edgesweep report — sweep {sweep}")
    run_cols = ["trial", "workload", "optimizer", "wd", "seed", "status", "memorised", "grok", "alarm", "lead",
                "detector", "preceded", "g23 decline"]
    return "\n".join([
        "<!DOCTYPE html>", "<html lang=\"en\"><head><meta charset=\"utf-8\">",
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">",
        f"<title>{title}</title>", f"<style>{CSS}</style>",
        f"<!-- plotly.js {html.escape(plotly_version)} (MIT), inlined gzip + base64: this file needs no network -->",
        f"<script type=\"application/gzip;base64\" id=\"plotly-js-gz\">{_plotly_gz64(plotly_js)}</script>",
        "</head><body>",
        f"<h1>{title}</h1>",
        f"<p class=\"note\">{runs.height} trials at <code>{html.escape(uri)}</code>; generated {now}. "
        "The same tables as report.md; the curves are downsampled to at most "
        f"{MAX_POINTS} points each (min/max per bucket, so spikes survive).</p>",
        "<section id=\"curves\"><h2>Per-trial curves</h2>",
        "<div class=\"controls\" id=\"controls\"><label>trial <select id=\"sel-trial\"></select></label></div>",
        "<div id=\"shown\"></div><div id=\"plot\"></div>",
        "<h3>Runs matching the selection</h3><p class=\"note\">Click a run to show its curves.</p>",
        "<div class=\"tw\"><table id=\"runs\"><thead><tr>" + "".join(f"<th>{c}</th>" for c in run_cols)
        + "</tr></thead><tbody></tbody></table></div><p class=\"note\" id=\"runs-more\"></p></section>",
        sections_html,
        "<script type=\"application/gzip;base64\" id=\"edgesweep-data-gz\">"
        + _gz64(json.dumps(data, separators=(",", ":"), allow_nan=False)) + "</script>",
        f"<script>{APP}\n{LOADER}</script>",
        "</body></html>",
    ]) + "\n"


def write_report_html(sp, d: dict, parts: list[str]) -> str | None:
    """Write ``report.html`` into the sweep folder ``sp`` from what write_report loaded (``d``:
    runs, features, evals) and report.md's section texts (``parts``); its URI, or None (with a
    note on stderr) when plotly is not installed."""
    try:
        from plotly.offline import get_plotlyjs, get_plotlyjs_version
    except ImportError:
        print("edgesweep report: report.html skipped: plotly is not installed "
              "(pip install 'edgesweep[report]')", file=sys.stderr)
        return None
    page = render_html(sp.sweep, sp.uri, d["runs"], d["features"], d["evals"], report_sections(parts),
                       get_plotlyjs(), get_plotlyjs_version())
    return sp.write_bytes("report.html", page.encode())
