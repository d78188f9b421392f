# %% [markdown]
# # 04 · Predict on new images
# [![Open in Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/OWNER/REPO/blob/main/notebooks/04_inference.ipynb)
#
# *On Colab, a notebook opened on its own gets a runtime of its own, without a checkpoint: open
# `02_train` instead, which trains and whose last cell then runs this notebook in the same runtime.*
#
# Runs a trained checkpoint on a folder of images that have no labels: the lesion mask at each
# image's own size, the predicted diagnosis and the probability of every class. Files that are
# not images, corrupt, or too small are listed with the reason instead of stopping the run.
# Writes `inference/predictions.csv`, one overlay PNG per image, and summary figures.
#
# How far to trust each prediction: the probabilities calibrated with the temperature stored in
# the checkpoint (fitted on the validation split by `02_train` or `python -m skin_utils.trust.calibrate`),
# the entropy and the disagreement of the test-time views, the mask's uncertainty along its
# border, a **refer** flag (uncertainty above the threshold chosen on validation), a
# **melanoma flag** (calibrated P(MEL) at the operating point chosen on validation) and a
# Grad-CAM heat map of where the classifier looked. A checkpoint without calibration gives
# uncalibrated probabilities and no flags, and says so.
#
# *These predictions are a research tool, not a diagnosis.*

# %% tags=["parameters"]
from typing import Optional

run: str = "latest"                      # a run name under <reports_dir>/runs, a run folder, or "latest"
checkpoint: Optional[str] = None         # a checkpoint file instead of a run (its results go to a run folder named after it)
input_dir: Optional[str] = None          # a folder of images; None: a few new synthetic demo images
n_demo_images: int = 6                   # how many demo images when input_dir is None
batch_size: int = 16
threshold: float = 0.5                   # mask probability threshold
tta: bool = True                         # average each prediction over the 8 flips and turns (8x the compute)
cam: bool = True                         # Grad-CAM heat map of the predicted class on each overlay
mc_samples: int = 0                      # Monte-Carlo dropout samples per image; 0: off
device: str = "auto"                     # "auto", "cpu", "cuda", "cuda:1", ...
amp: str = "auto"                        # mixed precision: "auto", "bf16", "fp16" or "off"
reports_dir: str = "reports"             # holds runs/ and the top-level REPORT.md
repo_url: str = "https://github.com/OWNER/REPO"  # cloned on Colab to install skin_utils

# %%
# Colab only (nothing happens elsewhere): clone this repository once, install it, and work inside it on every run
import os, subprocess, sys  # noqa: E401
if "google.colab" in sys.modules:
    if repo_url.rstrip("/").endswith("/OWNER/REPO"):
        sys.exit(f"repo_url is still the placeholder {repo_url!r}: set it in the first code cell to the GitHub "
                 "address of this repository (e.g. https://github.com/you/skin-lesions), or run "
                 "`python scripts/set_github_repo.py you/skin-lesions` in a clone and push.")
    if not os.path.isdir("/content/repo/.git"):
        subprocess.check_call(["git", "clone", "--depth", "1", repo_url, "/content/repo"])
    if subprocess.run([sys.executable, "-m", "pip", "show", "-q", "skin_utils"]).returncode != 0:
        subprocess.check_call([sys.executable, "-m", "pip", "install", "-q", "-e", "/content/repo"])
    if "/content/repo" not in sys.path:
        sys.path.insert(0, "/content/repo")
    os.chdir("/content/repo")

# %%
from skin_utils import plots
from skin_utils.nb import conclusions, report
from skin_utils.layout import read_image
from skin_utils.inference import (Predictor, flags_caption, predictions_table, save_overlays, time_single_image,
                                  write_demo_images)
from skin_utils.config import InferConfig, resolve
from skin_utils.demo import SYNTHETIC_NOTE
from skin_utils.runs import run_to_score

params = InferConfig.from_notebook(globals()).to_dict()  # checked: a wrong value or a misspelt name stops here
out, checkpoint_path = run_to_score(run, checkpoint and resolve(checkpoint), resolve(reports_dir) / "runs")
reports = out.root
out_dir = reports / "inference"
folder = resolve(input_dir) if input_dir else write_demo_images(out_dir / "demo_input", n_demo_images)
predictor = Predictor(checkpoint_path, device=device, amp=amp, threshold=threshold, tta=tta, cam=cam,
                      mc_samples=mc_samples)
print(f"{folder}: predicting at {predictor.image_size} px on {predictor.device}")
print(predictor.calibration.describe())

# %%
predictions, failures = predictor.predict_folder(folder, batch_size=batch_size)
overlay_paths = save_overlays(predictions, out_dir / "overlays")
table = predictions_table(predictions, overlay_paths)
out_dir.mkdir(parents=True, exist_ok=True)
table.to_csv(out_dir / "predictions.csv", index=False)
failures.to_csv(out_dir / "skipped.csv", index=False)
print(f"{len(predictions)} images predicted, {len(failures)} skipped")
table

# %%
failures

# %% [markdown]
# ## Overlays (predicted lesion border in magenta)
# *Reading the figure:* each new image with the predicted lesion border and the predicted
# diagnosis with its probability. There is no truth here: look for borders that miss the lesion
# and for low probabilities, which mean the model is unsure.

# %%
shown = predictions[:8]
fig = plots.plot_cases(images=[read_image(p.path) for p in shown], true_masks=None,
                       pred_masks=[p.mask for p in shown], true_labels=None,
                       pred_labels=[p.pred for p in shown], pred_probs=[p.prob for p in shown],
                       row_titles=[p.image_id for p in shown],
                       title=f"Predictions · {folder.name}" + ("" if input_dir else f" · {SYNTHETIC_NOTE}"))
plots.publish(fig, reports / "figures" / "inference_examples.png")

# %% [markdown]
# ## How far to trust each prediction: heat map, flags and uncertainty
# *Reading the figure:* each image with the Grad-CAM heat map of its predicted class (bright =
# what raised that class's score most) and the predicted lesion border in magenta. Above it:
# the class with its calibrated probability, the normalised entropy (0 = certain, 1 = no idea)
# and the flags: REFER when the uncertainty is above the threshold chosen on validation, the
# MELANOMA FLAG when calibrated P(MEL) reaches the operating point chosen on validation. A map
# away from the lesion, a high entropy or a REFER flag all mean: have a dermatologist look. The
# same panel is saved per image in `inference/overlays/` (the `overlay` column of the table).

# %%
if cam and shown:
    fig = plots.plot_cam_grid([read_image(p.path) for p in shown], [p.cam for p in shown],
                              pred_masks=[p.mask for p in shown], captions=[flags_caption(p) for p in shown],
                              title=f"Heat maps and flags · {folder.name}" + ("" if input_dir else f" · {SYNTHETIC_NOTE}"))
    plots.publish(fig, reports / "figures" / "inference_trust.png")
else:
    print("Grad-CAM is off (cam=False)." if not cam else "No image was predicted.")

# %% [markdown]
# ## Latency of a single image (preprocessing included)

# %%
latency = time_single_image(predictor, read_image(predictions[0].path)) if predictions else float("nan")
print(f"single-image latency: {latency * 1000:.1f} ms (median of 10, {predictor.device})")

# %% [markdown]
# ## Conclusion
# Computed from the predictions above (`skin_utils.nb.conclusions.inference_conclusion`).

# %%
from IPython.display import Markdown

conclusion = conclusions.inference_conclusion([p.pred for p in predictions], [p.prob_calibrated for p in predictions],
                                              len(failures), demo=input_dir is None,
                                              refer=[p.refer for p in predictions],
                                              mel_flags=[p.mel_flag for p in predictions])
Markdown(conclusion)

# %%
report.write_json(reports / "metrics" / "inference.json",
                  {"input_dir": str(folder), "n_predicted": len(predictions), "n_skipped": len(failures),
                   "single_image_latency_s": latency, "class_counts": table["pred"].value_counts().to_dict() if len(table) else {},
                   "calibration_used": predictor.calibration.as_dict(),
                   "n_referred": int(sum(bool(p.refer) for p in predictions)),
                   "n_melanoma_flags": int(sum(bool(p.mel_flag) for p in predictions)), "params": params})
report.write_section(reports, "04_inference", "Inference", f"""
`{checkpoint_path.name}` of run `{out.name}` on `{folder}`: {len(predictions)} images predicted, {len(failures)} skipped
(listed in `inference/skipped.csv`). Predictions: `inference/predictions.csv`; overlays: `inference/overlays/`.
Single-image latency {latency * 1000:.1f} ms on `{predictor.device}` (median of 10, preprocessing included, Grad-CAM not).

{predictor.calibration.describe()}

{report.markdown_table(table[[c for c in ("image_id", "pred", "prob", "prob_calibrated", "p_cal_MEL", "entropy",
                                          "tta_disagreement", "mask_uncertainty", "refer", "mel_flag") if c in table]]
                       .astype(object).fillna("–").set_index("image_id").head(20)) if len(table) else "(no predictions)"}

![examples](figures/inference_examples.png)
{"![heat maps and flags](figures/inference_trust.png)" if cam and predictions else ""}

**Conclusion.** {conclusion}
""", params=params)
