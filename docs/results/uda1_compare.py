"""Two recipes, several seeds each, on HAM10000's validation split and an external set's choice half: per-run
figures, paired differences (lesion bootstrap, all seeds of a side averaged), the share of the Grad-CAM energy inside
the lesion (the true mask on HAM10000, the predicted one on an external set without masks; runs scored before 03 did
that are left out of it), and how well the familiarity signal (`skin_utils.trust.feature_distance`, stored at
calibration) tells the external images from HAM10000's test images.
Reads what `03_evaluate` wrote in each run folder (``-p split val``, ``-p split test`` and ``-p data_dir <external>
-p split all``); the report half is not read.

    python docs/results/uda1_compare.py --runs-dir reports/runs --external uda1_choice_layout \
        --a standard=joint_seed0,joint_seed1,joint_seed2 --b zoom=zoom_seed0,zoom_seed1,zoom_seed2
"""
import argparse
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score

from skin_utils.evaluate import result_tag
from skin_utils.metrics import _clusters, lesion_resamples, paired_bootstrap, scores

METRICS = ("mel_auc", "macro_auc", "balanced_accuracy", "dice")


def side(text: str) -> tuple[str, list[str]]:
    name, runs = text.split("=", 1)
    return name, runs.split(",")


def tables(runs_dir: Path, run: str, external: str) -> dict[str, pd.DataFrame]:
    tags = {"HAM10000 val": result_tag("val"), "HAM10000 test": result_tag("test"),
            "external": result_tag("all", external, external=True)}
    paths = {k: runs_dir / run / "metrics" / f"{tag}_per_image.csv" for k, tag in tags.items()}
    missing = [str(p) for k, p in paths.items() if not p.is_file() and k != "HAM10000 test"]
    if missing:
        raise SystemExit(f"{run}: not scored yet ({', '.join(missing)}); run 03_evaluate on it first.")
    return {k: pd.read_csv(p) for k, p in paths.items() if p.is_file()}  # the test split only for familiarity


def familiarity(t: dict[str, pd.DataFrame], rng: np.random.Generator, n: int = 1000) -> dict:
    """AUROC of the feature distance for external (1) against HAM10000 test (0), with an image bootstrap
    interval; shares unfamiliar; melanoma AUC on the external images kept when the unfamiliar are referred."""
    test, ext = t["HAM10000 test"], t["external"]
    d = np.r_[test["feature_distance"], ext["feature_distance"]]
    y = np.r_[np.zeros(len(test)), np.ones(len(ext))]
    boot = []
    for _ in range(n):
        i, j = rng.integers(0, len(test), len(test)), len(test) + rng.integers(0, len(ext), len(ext))
        idx = np.r_[i, j]
        boot.append(roc_auc_score(y[idx], d[idx]))
    kept = ext[~ext["unfamiliar"].astype(bool)]
    return {"ood_auroc": roc_auc_score(y, d), "ood_lo": np.quantile(boot, 0.025), "ood_hi": np.quantile(boot, 0.975),
            "unfamiliar_test": test["unfamiliar"].mean(), "unfamiliar_ext": ext["unfamiliar"].mean(),
            "ext_kept": len(kept), "ext_mel_auc_kept": scores(kept).get("mel_auc", np.nan)
            if kept["true"].nunique() == 2 else np.nan}


def cam_energy(sides: dict[str, list[dict[str, pd.DataFrame]]], where: str, n: int) -> str | None:
    """Mean share of the Grad-CAM energy inside the lesion per side (its runs averaged), and b - a with a paired
    lesion-bootstrap interval; None when a side has no run with the column."""
    tables = {k: [t[where] for t in runs] for k, runs in sides.items()}
    col = next((c for c in ("cam_energy_true", "cam_energy_pred")
                if all(any(c in t for t in ts) for ts in tables.values())), None)
    if col is None:
        return None
    mean = {k: pd.concat([t.set_index("image_id")[col] for t in ts if col in t], axis=1).mean(axis=1)
            for k, ts in tables.items()}
    (a, ea), (b, eb) = mean.items()
    common = ea.index.intersection(eb.index)
    d = (eb.loc[common] - ea.loc[common]).to_numpy()
    lesions = _clusters(tables[a][0].set_index("image_id").loc[common].reset_index())
    lo, hi = np.nanquantile([np.nanmean(d[i]) for i in lesion_resamples(lesions, n, 0)], [0.025, 0.975])
    runs = {k: sum(col in t for t in ts) for k, ts in tables.items()}
    return (f"Grad-CAM energy inside the lesion on {where} ({col}, {runs[a]} + {runs[b]} runs, {len(common)} images): "
            f"{a} {np.nanmean(ea.loc[common]):.3f}, {b} {np.nanmean(eb.loc[common]):.3f}; {b} − {a} "
            f"{np.nanmean(d):+.3f} [{lo:+.3f}, {hi:+.3f}]")


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs-dir", type=Path, default=Path("reports/runs"))
    p.add_argument("--external", required=True, help="the external folder's name as 03 was given it")
    p.add_argument("--a", type=side, required=True, metavar="NAME=RUN,RUN,...")
    p.add_argument("--b", type=side, required=True, metavar="NAME=RUN,RUN,...")
    p.add_argument("--n-resamples", type=int, default=1000)
    args = p.parse_args()
    rng = np.random.default_rng(0)
    per_run, sides = [], {}
    for name, runs in (args.a, args.b):
        sides[name] = [tables(args.runs_dir, r, args.external) for r in runs]
        for r, t in zip(runs, sides[name]):
            row = {"recipe": name, "run": r}
            for where in ("HAM10000 val", "external"):
                s = scores(t[where])
                row.update({f"{where}: {m}": s.get(m, np.nan) for m in METRICS})
            per_run.append({**row, **(familiarity(t, rng) if "HAM10000 test" in t else {})})
    per_run = pd.DataFrame(per_run)
    pd.set_option("display.width", 250, "display.max_columns", 40, "display.precision", 3)
    print(per_run.to_string(index=False))
    print("\nmean ± sd over seeds")
    print(per_run.drop(columns="run").groupby("recipe").agg(["mean", "std"]).T.to_string())
    (a_name, _), (b_name, _) = args.a, args.b
    for where in ("HAM10000 val", "external"):
        diff = paired_bootstrap([t[where] for t in sides[a_name]], [t[where] for t in sides[b_name]],
                                n_resamples=args.n_resamples)
        diff = diff.loc[[m for m in METRICS if m in diff.index]]
        print(f"\n{b_name} − {a_name} on {where} (paired, {len(sides[a_name])} + {len(sides[b_name])} runs):")
        print(diff.to_string())
        print(cam_energy(sides, where, args.n_resamples) or f"Grad-CAM energy on {where}: not scored for every side")


if __name__ == "__main__":
    main()
