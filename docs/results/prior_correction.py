"""Moving the decision instead of the training: argmax(log p - tau * log prior) on the calibrated
probabilities a run stored for each image (``p_cal_*`` of ``metrics/evaluate_val_per_image.csv`` and
``evaluate_per_image.csv``), where prior is the training split's class frequencies. Prints balanced
accuracy and accuracy for tau 0 to 1.5 (mean over the runs), then seed-averaged paired lesion-bootstrap
differences (tau minus 0) for the given --tau values.

Usage: PYTHONPATH=<clone> python docs/results/prior_correction.py --split <split.csv> --tau 0.5 <run> [<run> ...]"""
import argparse

import numpy as np
import pandas as pd
from sklearn.metrics import accuracy_score, balanced_accuracy_score

from skin_utils.labels import CLASS_NAMES as C
from skin_utils.metrics import paired_bootstrap, read_per_image

FILES = {"val": "evaluate_val", "test": "evaluate"}
parser = argparse.ArgumentParser()
parser.add_argument("runs", nargs="+")
parser.add_argument("--split", required=True, help="the split CSV the runs trained on (columns dx, split)")
parser.add_argument("--tau", type=float, action="append", default=[])
args = parser.parse_args()

split = pd.read_csv(args.split)
counts = split[split["split"] == "train"]["dx"].str.upper().value_counts().reindex(C).fillna(0).to_numpy()
log_prior = np.log(np.maximum(counts, 1) / counts.sum())


def adjusted(table: pd.DataFrame, tau: float) -> pd.DataFrame:
    z = np.log(table[[f"p_cal_{c}" for c in C]].to_numpy() + 1e-12) - tau * log_prior
    q = np.exp(z - z.max(1, keepdims=True))
    q /= q.sum(1, keepdims=True)
    out = table.copy()
    for i, c in enumerate(C):
        out[f"p_{c}"] = out[f"p_cal_{c}"] = q[:, i]
    out["pred"] = [C[k] for k in z.argmax(1)]
    return out


tables = {part: [read_per_image(f"{run}/metrics/{name}_per_image.csv") for run in args.runs]
          for part, name in FILES.items()}
rows = []
for part, ts in tables.items():
    for tau in np.round(np.arange(0, 1.51, 0.1), 2):
        for t in ts:
            a = adjusted(t, tau)
            rows.append({"split": part, "tau": tau, "balanced_accuracy": balanced_accuracy_score(a["true"], a["pred"]),
                         "accuracy": accuracy_score(a["true"], a["pred"])})
print(pd.DataFrame(rows).groupby(["tau", "split"]).mean().unstack("split").round(3).to_string(), "\n")
for tau in args.tau:
    for part, ts in tables.items():
        d = paired_bootstrap(ts, [adjusted(t, tau) for t in ts], n_resamples=1000, seed=0,
                             tasks=("classification",))
        print(f"tau {tau}, {part} ({len(ts)} runs): tau minus 0\n"
              + d.round(3).drop(columns=["runs_a", "runs_b"]).to_string() + "\n")
