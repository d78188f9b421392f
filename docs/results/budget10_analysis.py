"""Tables for the budget/robustness sweep: validation (for choosing), shifted copies, test (reported).
Usage: PYTHONPATH=<clone> python analyze.py <experiment folder> > out.md"""
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from skin_utils.stats import mean_sd, paired_bootstrap_seeds

folder = Path(sys.argv[1])
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
    return pd.read_csv(p) if p.exists() else None


def fmt(values):
    m, sd, n = mean_sd([v for v in values if v is not None and not (isinstance(v, float) and np.isnan(v))])
    return f"{m:.3f} ± {sd:.3f}" if n > 1 else (f"{m:.3f}" if n == 1 else "–")


cells = runs()
print(f"# {folder.name}: {sum(len(s) for s in cells.values())} finished runs\n")
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

ref = next((c for c in cells if c == "image_size=128"), None)
for split in ("val", "shifted val", "test", "shifted test"):
    print(f"## {split}: paired differences (seed-averaged, lesion bootstrap 95% CI)\n")
    pairs = [(ref, c) for c in cells if c != ref] + [("image_size=96", c) for c in cells if "augment=camera" in c]
    for a, b in pairs:
        seeds = sorted(set(cells[a]) & set(cells[b]))
        ta = [per_image(cells[a][s], split) for s in seeds]
        tb = [per_image(cells[b][s], split) for s in seeds]
        if not seeds or any(t is None for t in ta + tb):
            continue
        d = paired_bootstrap_seeds(ta, tb, n_resamples=1000, seed=0)
        d = d[d["metric"].isin(METRICS)] if "metric" in d.columns else d
        print(f"**{b} minus {a}** ({len(seeds)} seeds)\n")
        print("```\n" + d.round(3).to_string(index=False) + "\n```")
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
        d = paired_bootstrap_seeds(orig, shifted, n_resamples=1000, seed=0)
        d = d[d["metric"].isin(METRICS)] if "metric" in d.columns else d
        print(f"**{part}, {cell}** ({len(ss)} seeds)\n")
        print("```\n" + d.round(3).to_string(index=False) + "\n```")
        print()
