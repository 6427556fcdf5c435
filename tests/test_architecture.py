"""The package's shape: the analysis and spec layers import neither torch nor Ray, and the
module import graph of edgesweep/ (built from the source, imports inside functions included)
has no cycle and keeps the design's dependency direction."""

import ast
import subprocess
import sys
from pathlib import Path

PKG = Path(__file__).resolve().parents[1] / "edgesweep"


def import_graph() -> dict[str, set[str]]:
    mods = {}
    for path in PKG.rglob("*.py"):
        name = ".".join(path.relative_to(PKG.parent).with_suffix("").parts)
        mods[name.removesuffix(".__init__")] = path
    graph = {m: set() for m in mods}
    for mod, path in mods.items():
        is_pkg = path.name == "__init__.py"
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parts = mod.split(".")[: len(mod.split(".")) - node.level + (1 if is_pkg else 0)]
                    base = ".".join(parts + ([node.module] if node.module else []))
                targets = [base] + [f"{base}.{a.name}" for a in node.names]
            else:
                continue
            for t in targets:
                while t and t not in mods:
                    t = t.rpartition(".")[0]
                # a package importing its own submodules (or a module its package) is no cycle
                if t and t != mod and not mod.startswith(t + ".") and not t.startswith(mod + "."):
                    graph[mod].add(t)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (iterative Tarjan)."""
    index, low, on, stack, out, counter = {}, {}, set(), [], [], [0]
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter[0]
        counter[0] += 1
        stack.append(root)
        on.add(root)
        while work:
            v, it = work[-1]
            w = next(it, None)
            if w is not None:
                if w not in index:
                    index[w] = low[w] = counter[0]
                    counter[0] += 1
                    stack.append(w)
                    on.add(w)
                    work.append((w, iter(sorted(graph[w]))))
                elif w in on:
                    low[v] = min(low[v], index[w])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[v])
            if low[v] == index[v]:
                comp = []
                while True:
                    w = stack.pop()
                    on.discard(w)
                    comp.append(w)
                    if w == v:
                        break
                if len(comp) > 1:
                    out.append(sorted(comp))
    return out


def test_cycle_finder_finds_a_planted_cycle():
    g = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(g) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycle_in_edgesweep():
    graph = import_graph()
    assert len(graph) > 40  # the walker found the package
    assert cycles(graph) == []


def test_dependency_direction():
    graph = import_graph()
    layer = lambda m: m.split(".")[1] if m.count(".") else m  # noqa: E731
    for mod, deps in graph.items():
        for d in deps:
            src, dst = layer(mod), layer(d)
            assert dst != "platform" or src in ("platform", "cli", "__main__"), (mod, d)
            if src == "analysis":
                assert dst in ("analysis", "storage"), (mod, d)
            if src in ("spectral", "storage", "workloads"):
                assert dst == src, (mod, d)


def loaded_by(imports: str, modules: tuple[str, ...]) -> list[str]:
    """Which of ``modules`` a fresh interpreter has loaded after running ``imports``."""
    code = f"import sys; {imports}; print(sorted(m for m in {modules!r} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return ast.literal_eval(out.stdout.strip())


def test_analysis_and_spec_import_neither_torch_nor_ray():
    assert loaded_by("import edgesweep.analysis, edgesweep.platform.spec, edgesweep.workloads, edgesweep.spectral;"
                     "from edgesweep.analysis import scorecard, record, runs", ("torch", "ray")) == []


def test_the_cli_starts_without_scipy():
    """Every `edgesweep` command imports the spec and the analysis; scipy (~1.3 s of a 2.8 s
    start on this machine) is imported only by the statistics that use it, so a mistyped
    argument or `edgesweep status` answers without waiting for it."""
    assert loaded_by("import edgesweep.cli, edgesweep.platform.status, edgesweep.storage.query;"
                     "from edgesweep.analysis import scorecard, stats", ("scipy", "torch", "ray")) == []
