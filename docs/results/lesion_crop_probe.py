"""A training-free probe: does the classifier do better on the lesion than on the whole frame? For each image the
model's own predicted mask gives a bounding box; the box widened by a margin on each side is cut out of the
original image and classified again by the same model. Full frame vs crop, melanoma AUC and the rest, on the
choice half of the external set (UDA-1) and HAM10000's validation split, 3 seeds of two recipes (standard;
camera + Shades of Gray), paired lesion bootstrap. The report half is not read."""
import argparse, time
from pathlib import Path
import numpy as np
import pandas as pd
import torch
from skin_utils.inference import Predictor
from skin_utils.layout import load_index, read_image
from skin_utils.labels import CLASS_NAMES
from skin_utils.metrics import paired_bootstrap

MARGINS = (0.1, 0.3)  # the box widened by this share of its height and width on each side; fixed beforehand


def parse():
    p = argparse.ArgumentParser(description=__doc__.split("?")[0] + "?")
    p.add_argument("--external", required=True, help="the external set's choice half, in the layout")
    p.add_argument("--ham", required=True, help="the HAM10000 data folder the runs were trained on")
    p.add_argument("--split-path", required=True, help="the runs' split.csv (its val rows are scored)")
    p.add_argument("--runs", nargs="+", required=True, metavar="RECIPE=RUN",
                   help="e.g. standard=reports/runs/a_seed0 (the same recipe name once per seed)")
    p.add_argument("--out", default=".", help="where runs.csv and paired.csv go")
    return p.parse_args()


def sets(args):
    ext = load_index(args.external, decode=False, partial=True)  # images without a mask: the probe is about the diagnosis
    ham = load_index(args.ham, decode=False)
    split = pd.read_csv(args.split_path, dtype=str)
    ham = ham[ham["image_id"].isin(split.loc[split["split"] == "val", "image_id"])]
    return {"ext_choice": ext, "ham_val": ham}


def crop_box(mask, margin):
    ys, xs = np.nonzero(mask)
    if len(ys) == 0:
        return None
    h, w = mask.shape
    y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    dy, dx = int(round((y1 - y0) * margin)), int(round((x1 - x0) * margin))
    return max(0, y0 - dy), min(h, y1 + dy), max(0, x0 - dx), min(w, x1 + dx)


def table(index, probs):
    return pd.DataFrame({"image_id": index["image_id"].to_numpy(), "lesion_id": index["lesion_id"].to_numpy(),
                         "true": index["dx"].to_numpy(), **{f"p_{c}": probs[:, k] for k, c in enumerate(CLASS_NAMES)}})


def main():
    args = parse()
    RUNS, OUT = {}, Path(args.out)
    for item in args.runs:
        recipe, run = item.split("=", 1)
        RUNS.setdefault(recipe, []).append(Path(run))
    data, tables, rows = sets(args), {}, []
    for recipe, runs in RUNS.items():
        for seed, run in enumerate(runs):
            pred = Predictor(run / "checkpoints" / "best.pt", device="cpu")
            for set_name, index in data.items():
                t0 = time.time()
                full, crops = [], {m: [] for m in MARGINS}
                n_empty, shares = 0, []
                for path in index["image_path"]:
                    image = read_image(path)
                    p = pred.predict_image(image)
                    full.append([p.probs[c] for c in CLASS_NAMES])
                    shares.append(p.lesion_fraction)
                    for m in MARGINS:
                        box = crop_box(p.mask, m)
                        if box is None or min(box[1] - box[0], box[3] - box[2]) < 16:
                            n_empty += m == MARGINS[0]
                            crops[m].append(full[-1])
                            continue
                        q = pred.predict_image(np.ascontiguousarray(image[box[0]:box[1], box[2]:box[3]]))
                        crops[m].append([q.probs[c] for c in CLASS_NAMES])
                tables[(recipe, seed, set_name, "full")] = table(index, np.array(full))
                for m in MARGINS:
                    tables[(recipe, seed, set_name, f"crop{m}")] = table(index, np.array(crops[m]))
                rows.append({"recipe": recipe, "seed": seed, "set": set_name, "n": len(index), "no_box": n_empty,
                             "median_lesion_share": float(np.median(shares)), "seconds": round(time.time() - t0, 1)})
                print(rows[-1], flush=True)
    pd.DataFrame(rows).to_csv(OUT / "runs.csv", index=False)
    out = {}
    for recipe in RUNS:
        for set_name in data:
            seeds = range(len(RUNS[recipe]))
            a = [tables[(recipe, s, set_name, "full")] for s in seeds]
            for m in MARGINS:
                b = [tables[(recipe, s, set_name, f"crop{m}")] for s in seeds]
                d = paired_bootstrap(a, b, n_resamples=1000, tasks=("classification",))
                out[f"{set_name} {recipe}: crop{m} - full"] = d
                print(f"\n== {set_name} {recipe}: crop (margin {m}) - full frame ({len(seeds)} seeds)\n",
                      d[["a", "b", "difference", "ci_low", "ci_high"]].round(3).to_string(), flush=True)
    pd.concat(out, names=["comparison"]).to_csv(OUT / "paired.csv")


if __name__ == "__main__":
    main()
