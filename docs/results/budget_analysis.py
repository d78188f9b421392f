"""Tables for a budget sweep: validation (for choosing), shifted copies, test (reported once).

Usage: PYTHONPATH=<clone> python docs/results/budget_analysis.py <experiment folder> [--reference CELL]
           [--pair A:B ...] > out.md
Every other cell is compared with the reference (default: the first cell in name order); --pair adds
comparisons. Shifted splits are used where their evaluations exist."""
import argparse
import json
from pathlib import Path

import numpy as np

from skin_utils.metrics import mean_sd, paired_bootstrap, read_per_image

parser = argparse.ArgumentParser()
parser.add_argument("folder", type=Path)
parser.add_argument("--reference", help="the cell (run-folder name without _seedK) the others are compared with")
parser.add_argument("--pair", action="append", default=[], help="A:B, also compare cell B with cell A")
parser.add_argument("--headline-only", action="store_true", help="only the headline tables (no bootstrap)")
args = parser.parse_args()
folder = args.folder
METRICS = ["dice", "thresholded_jaccard", "balanced_accuracy", "macro_auc", "mel_auc", "mel_sensitivity",
           "mel_specificity"]
FILES = {"val": "evaluate_val", "test": "evaluate", "shifted val": "evaluate_external_shifted_val",
         "shifted test": "evaluate_external_shifted_test"}


def runs():
    out = {}
    for run in sorted((folder / "runs").iterdir()):
        status = json.loads((run / "status.json").read_text()).get("status") if (run / "status.json").exists() else None
        if status != "finished":
            continue
        cell, seed = run.name.rsplit("_seed", 1)
        out.setdefault(cell, {})[int(seed)] = run
    return out


def result(run, split):
    p = run / "metrics" / f"{FILES[split]}.json"
    return json.loads(p.read_text()) if p.exists() else None


def per_image(run, split):
    p = run / "metrics" / f"{FILES[split]}_per_image.csv"
    return read_per_image(p) if p.exists() else None


def fmt(values):
    m, sd, n = mean_sd([v for v in values if v is not None and not (isinstance(v, float) and np.isnan(v))])
    return f"{m:.3f} ± {sd:.3f}" if n > 1 else (f"{m:.3f}" if n == 1 else "–")


def headline(cells, split):
    """One row per cell: mean ± sd over seeds (the lowest seed's lesion-level 95% interval)."""
    cols = ["dice", "thresholded_jaccard", "accuracy", "balanced_accuracy", "macro_auc", "mel_sensitivity",
            "mel_specificity"]
    print(f"## {split}, headline: mean ± sd over seeds (lowest seed's lesion-level 95% CI)\n")
    print("| cell | seeds | epochs bought | minutes used | " + " | ".join(cols) + " |")
    print("|---|---|---|---|" + "---|" * len(cols))
    for cell, seeds in cells.items():
        res = {s: result(r, split) for s, r in sorted(seeds.items())}
        res = {s: r for s, r in res.items() if r}
        if not res:
            continue
        train = [json.loads((seeds[s] / "metrics" / "train.json").read_text()) for s in res]
        epochs = ",".join(str((t.get("budget_plan") or {}).get("epochs", t.get("epochs_run"))) for t in train)
        minutes = [t["minutes_taken"] for t in train if t.get("minutes_taken") is not None]
        used = f"{min(minutes):.1f}–{max(minutes):.1f}" if minutes else "–"
        first = res[min(res)]
        cells_text = []
        for m in cols:
            ci = (first.get("ci95") or {}).get(m)
            cells_text.append(fmt([r.get(m) for r in res.values()])
                              + (f" ({ci[0]:.3f}–{ci[1]:.3f})" if ci and None not in ci else ""))
        print(f"| {cell} | {len(res)} | {epochs} | {used} | " + " | ".join(cells_text) + " |")
    base = next(iter(res.values())).get("majority_baseline") if res else None
    if base:
        print(f"| always answering {base['majority']} | – | – | – | – | – | {base['accuracy']:.3f} | "
              f"{base['balanced_accuracy']:.3f} | 0.5 | 0 | 1 |")
    print()


cells = runs()
print(f"# {folder.name}: {sum(len(s) for s in cells.values())} finished runs\n")
for split in ("val", "test"):
    headline(cells, split)
if args.headline_only:
    raise SystemExit(0)
for split in FILES:
    print(f"## {split}: mean ± sd over seeds\n")
    print("| cell | seeds | epochs bought | " + " | ".join(METRICS) + " |")
    print("|---|---|---|" + "---|" * len(METRICS))
    for cell, seeds in cells.items():
        res = {s: result(r, split) for s, r in seeds.items()}
        res = {s: r for s, r in res.items() if r}
        if not res:
            continue
        epochs = [json.loads((seeds[s] / "metrics" / "budget.json").read_text())["epochs"] for s in res
                  if (seeds[s] / "metrics" / "budget.json").exists()]
        print(f"| {cell} | {len(res)} | {','.join(map(str, epochs))} | "
              + " | ".join(fmt([r.get(m) for r in res.values()]) for m in METRICS) + " |")
    print()

ref = args.reference or next(iter(cells))
if ref not in cells:
    raise SystemExit(f"--reference {ref!r} is not a finished cell; cells: {list(cells)}")
pairs = [(ref, c) for c in cells if c != ref] + [tuple(p.split(":", 1)) for p in args.pair]
for split in ("val", "shifted val", "test", "shifted test"):
    print(f"## {split}: paired differences (seed-averaged, lesion bootstrap 95% CI)\n")
    for a, b in pairs:
        if a not in cells or b not in cells:
            continue
        seeds = sorted(set(cells[a]) & set(cells[b]))
        ta = [per_image(cells[a][s], split) for s in seeds]
        tb = [per_image(cells[b][s], split) for s in seeds]
        if not seeds or any(t is None for t in ta + tb):
            continue
        d = paired_bootstrap(ta, tb, n_resamples=1000, seed=0)
        d = d[d.index.isin(METRICS)]
        print(f"**{b} minus {a}** ({len(seeds)} seeds)\n")
        print("```\n" + d.round(3).drop(columns=["runs_a", "runs_b"]).to_string() + "\n```")
        print()

print("## Drop from the original split to its shifted copy (shifted minus original, same images)\n")
for part in ("val", "test"):
    for cell, seeds in cells.items():
        ss = sorted(s for s in seeds if per_image(seeds[s], part) is not None
                    and per_image(seeds[s], f"shifted {part}") is not None)
        if not ss:
            continue
        orig = [per_image(seeds[s], part) for s in ss]
        shifted = [per_image(seeds[s], f"shifted {part}") for s in ss]
        d = paired_bootstrap(orig, shifted, n_resamples=1000, seed=0)
        d = d[d.index.isin(METRICS)]
        print(f"**{part}, {cell}** ({len(ss)} seeds)\n")
        print("```\n" + d.round(3).drop(columns=["runs_a", "runs_b"]).to_string() + "\n```")
        print()
