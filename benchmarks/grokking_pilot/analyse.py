"""Summarise results.jsonl (next to this file) as a markdown table (one row per run): python analyse.py [D]."""
import os
import json
import sys

D = int(sys.argv[1]) if len(sys.argv) > 1 else 500
rows = [json.loads(l) for l in open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "results.jsonl")) if l.strip()]


def first(ev, col, thr):
    for e in ev:
        if e[col] >= thr:
            return e[0]
    return None


def label(r):
    c = r["cond"]
    t, m = c.get("task", {}), c.get("model", {})
    if c["workload"] == "dyck":
        return f"dyck n_train{t.get('n_train', 50)} lr{c['lr']} wd{c['weight_decay']}"
    return (f"{c['workload'].replace('mod_', '')} p{t['p']} tf{t['train_frac']} d{m['d_model']} L{m['n_layers']} "
            f"lr{c['lr']:g} wd{c['weight_decay']:g} bs{c['batch_size']}")


def outcome(r):
    ev = r["evals"]
    if r["status"] == "diverged":
        return "diverged"
    m99, g95 = first(ev, 1, 0.99), first(ev, 2, 0.95)
    if g95 is None:
        if m99 is None:
            return f"none by {r['steps']} (no memo)"
        return f"none by {r['steps']}"
    if m99 is None or g95 - m99 < D:
        return "immediate"
    return "delayed"


print(f"| # | condition | seed/ds | memo90 | memo95 | memo99 | test@memo99 | g90 | g95 | g99 | gap(g95−memo99) | best test | ms/step | outcome (D={D}) |")
print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
for i, r in enumerate(rows):
    ev = r["evals"]
    m90, m95, m99 = first(ev, 1, 0.90), first(ev, 1, 0.95), first(ev, 1, 0.99)
    tam = next((e[2] for e in ev if e[0] == m99), None)
    tams = '–' if tam is None else f'{tam:.2f}'
    g = [first(ev, 2, x) for x in (0.9, 0.95, 0.99)]
    gap = (g[1] - m99) if (g[1] is not None and m99 is not None) else None
    f = lambda x: "–" if x is None else str(x)
    print(f"| {i} | {label(r)} | {r['cond']['seed']}/{r['cond'].get('data_seed', 0)} | {f(m90)} | {f(m95)} | {f(m99)} | {tams} | "
          f"{f(g[0])} | {f(g[1])} | {f(g[2])} | {f(gap)} | {r['best_test']:.3f} | {r['ms_step']} | {outcome(r)} |")
