"""The final reading: the chosen recipe's runs on HAM10000's test split and on an external set's report half, as
mean ± sd over the runs and, in brackets, the first run's lesion-level 95% interval (the README's format).
Reads what `03_evaluate` wrote in each run folder (``-p split test`` and ``-p data_dir <report half> -p split all``).

    python docs/results/uda1_report.py --runs-dir reports/runs --external uda1_report_layout \
        --runs camera45_s0,camera45_s1,camera45_s2
"""
import argparse
import json
from pathlib import Path

import numpy as np

from skin_utils.evaluate import result_tag

COLUMNS = {  # column -> where it is in evaluate*.json (a column no run has is left out)
    "Dice": ("dice",), "balanced accuracy": ("balanced_accuracy",), "macro AUC": ("macro_auc",),
    "melanoma AUC": ("mel_auc",), "melanoma sensitivity": ("mel_sensitivity",),
    "melanoma specificity": ("mel_specificity",), "ECE before": ("trust", "calibration", "before", "ece"),
    "ECE after": ("trust", "calibration", "after", "ece"), "unfamiliar": ("familiarity", "unfamiliar"),
    "Grad-CAM energy in lesion": ("cam", "true_mask", "overall", "energy_inside"),
    "lesion area share": ("cam", "true_mask", "overall", "area_share"),
}


def get(d: dict, path: tuple):
    for k in path:
        d = d.get(k) if isinstance(d, dict) else None
    return np.nan if d is None else float(d)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs-dir", type=Path, default=Path("reports/runs"))
    p.add_argument("--external", required=True, help="the report half's folder name as 03 was given it")
    p.add_argument("--runs", required=True, help="RUN,RUN,...: the first one's intervals are printed")
    args = p.parse_args()
    runs = args.runs.split(",")
    for name, tag in (("HAM10000 test", result_tag("test")),
                      (args.external, result_tag("all", args.external, external=True))):
        found = [json.loads((args.runs_dir / r / "metrics" / f"{tag}.json").read_text()) for r in runs]
        print(f"\n{name}: {len(found)} runs ({', '.join(runs)}), {found[0]['n_images']} images")
        for col, path in COLUMNS.items():
            v = np.array([get(d, path) for d in found])
            if np.isnan(v).all():
                continue
            ci = found[0].get("ci95", {}).get(path[0]) if len(path) == 1 else None
            ci = f" ({ci[0]:.3f}–{ci[1]:.3f})" if ci else ""
            print(f"  {col:28s} {v.mean():.3f} ± {v.std(ddof=1):.3f}{ci}   runs: {' '.join(f'{x:.3f}' for x in v)}")


if __name__ == "__main__":
    main()
