"""The same recipe at two budgets (or any two cells of two experiments scored on the same split):
seed-averaged paired differences with a lesion-level bootstrap 95% CI, on val and test.

Usage: PYTHONPATH=<clone> python docs/results/budget_compare.py <experiment A> <cell A> <experiment B> <cell B>
(an experiment is a folder such as reports/experiments/budget10; a cell is a run-folder name without _seedK).
`difference` is B - A, over the seeds both have."""
import argparse
from pathlib import Path

import pandas as pd

from skin_utils.metrics import paired_bootstrap, read_per_image

METRICS = ["dice", "thresholded_jaccard", "accuracy", "balanced_accuracy", "macro_auc", "mel_auc"]
FILES = {"val": "evaluate_val", "test": "evaluate", "shifted val": "evaluate_external_shifted_val"}


def seeds_of(folder: Path, cell: str) -> dict:
    out = {}
    for run in (folder / "runs").glob(f"{cell}_seed*"):
        seed = run.name.rsplit("_seed", 1)[1]
        if seed.isdigit():
            out[int(seed)] = run
    return out


parser = argparse.ArgumentParser()
for side in ("a", "b"):
    parser.add_argument(f"folder_{side}", type=Path)
    parser.add_argument(f"cell_{side}")
args = parser.parse_args()
a, b = seeds_of(args.folder_a, args.cell_a), seeds_of(args.folder_b, args.cell_b)
for split, name in FILES.items():
    seeds = sorted(s for s in set(a) & set(b) if (a[s] / "metrics" / f"{name}_per_image.csv").exists()
                   and (b[s] / "metrics" / f"{name}_per_image.csv").exists())
    if not seeds:
        continue
    ta = [read_per_image(a[s] / "metrics" / f"{name}_per_image.csv") for s in seeds]
    tb = [read_per_image(b[s] / "metrics" / f"{name}_per_image.csv") for s in seeds]
    d = paired_bootstrap(ta, tb, n_resamples=1000, seed=0)
    d = d[d.index.isin(METRICS)]
    print(f"## {split}: {args.folder_b.name}/{args.cell_b} minus {args.folder_a.name}/{args.cell_a}, seeds {seeds}\n")
    print("```\n" + d.round(3).drop(columns=["runs_a", "runs_b"]).to_string() + "\n```\n")
