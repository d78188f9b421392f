# %% [markdown]
# # 03 · Evaluate a trained model
# [![Open in Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/OWNER/REPO/blob/main/notebooks/03_evaluate.ipynb)
#
# *On Colab, a notebook opened on its own gets a runtime of its own, without a checkpoint: open
# `02_train` instead, which trains and whose last cell then runs this notebook in the same runtime.*
#
# Scores a checkpoint with the ISIC 2018 definitions on lesions it never saw: by default the
# **test** split of the lesion-level split made for training; with `split="all"`, every image
# of any other labelled folder in the same layout (an external test set).
#
# * Segmentation (Task 1), per image at the image's **original size**, then averaged: Dice,
#   Jaccard, thresholded Jaccard (0 when Jaccard < 0.65), pixel sensitivity and specificity.
# * Classification (Task 3): **balanced accuracy** (mean per-class recall, the headline),
#   accuracy, per-class sensitivity, specificity, AUC and average precision, macro AUC, the
#   confusion matrix and ROC curves, always beside the always-NV baseline.

# %% tags=["parameters"]
from typing import Optional

checkpoint: str = "checkpoints/best.pt"
data_dir: str = "data"                   # the training data (for split test) or any labelled folder (split all)
split: str = "test"                      # "test", "val", "train" or "all"
split_path: str = "reports/split.csv"    # the split written by 02_train
batch_size: int = 32
threshold: float = 0.5                   # mask probability threshold
tta: bool = True                         # average each prediction over the 8 flips and 90-degree turns of the image
n_examples: int = 4                      # best and worst cases shown
device: str = "auto"                     # "auto", "cpu", "cuda", "cuda:1", ...
amp: str = "auto"                        # mixed precision: "auto", "bf16", "fp16" or "off"
on_bad_data: str = "raise"               # "raise": stop on bad files with a report; "skip": leave them out
reports_dir: str = "reports"
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
from skin_utils import viz
from skin_utils.nb import conclusions, report
from skin_utils.checkpoint import load_model
from skin_utils.engine import resolve_device
from skin_utils.evaluation import best_and_worst, evaluate_original_size, headline_table, per_class_table
from skin_utils.nb.params import check_params
from skin_utils.nb.paths import resolve
from skin_utils.data.loading import load_data

params = check_params(dict(checkpoint=checkpoint, data_dir=data_dir, split=split, split_path=split_path,
                           batch_size=batch_size, threshold=threshold, tta=tta, n_examples=n_examples, device=device,
                           amp=amp, on_bad_data=on_bad_data, reports_dir=reports_dir), must_exist=("checkpoint",))
reports, figures = resolve(reports_dir), resolve(reports_dir) / "figures"
device = resolve_device(device)
model, ckpt = load_model(resolve(checkpoint), map_location=device)
model.to(device)
class_names = ckpt.class_names
trained = ckpt.params
print(f"checkpoint: epoch {ckpt.epoch + 1}, trained at {ckpt.image_size[0]}x{ckpt.image_size[1]} px on {ckpt.data['data_dir']}")

# %%
data = load_data(data_dir, ckpt.image_size, split_path=split_path,
                 split_fractions=trained.get("split_fractions", (0.7, 0.15, 0.15)), seed=trained.get("seed", 0),
                 max_samples=trained.get("max_samples") if split != "all" else None,
                 on_bad_data=on_bad_data, need_split=split != "all")
if split != "all" and data.index.attrs["fingerprint"] != ckpt.data["fingerprint"]:
    raise ValueError(f"{data.data_dir} is not the data this model was trained on; its '{split}' split would "
                     "not be held out. Evaluate an external data set with split='all'.")
title = f"{split} split · {data.name}"
evaluation = evaluate_original_size(model, data, split, device, class_names, batch_size=batch_size,
                                           amp=amp, threshold=threshold, tta=tta)
result, per_image = evaluation.report, evaluation.per_image

# %% [markdown]
# ## Headline numbers, beside always answering NV
# *Reading the table:* each score of the model beside the same score of always answering NV. Only
# the margin counts: accuracy can look high while the model misses most of the rare classes,
# which balanced accuracy (the mean of the per-class sensitivities) shows.

# %%
headline = headline_table(result)
headline

# %% [markdown]
# ## Per class
# *Reading the figure:* one group of bars per diagnosis (its number of test images under the
# name): sensitivity is the share of that class found, precision the share of its predictions
# that are right. Bars from few images (small support) are noisy.

# %%
per_class = per_class_table(result)
fig = viz.plot_per_class_metrics(result, title=f"Per-class performance · {title}")
viz.publish(fig, figures / "evaluate_per_class.png")
per_class

# %% [markdown]
# ## Confusion matrix and ROC curves
# *Reading the figures:* in the confusion matrix each row is a true diagnosis and each column a
# predicted one; the diagonal of the normalised matrix is each class's sensitivity, and a bright
# cell off it names the confusion (MEL taken for NV is the costly one). Each ROC curve shows a
# class against all others at every threshold: the closer to the top-left corner the better, the
# diagonal is chance (AUC 0.5).

# %%
fig = viz.plot_confusion_matrix(result, title=f"Confusion matrix · {title}")
viz.publish(fig, figures / "evaluate_confusion_matrix.png")
fig = viz.plot_roc_curves(result["roc_curves"], title=f"ROC curves · {title}")
viz.publish(fig, figures / "evaluate_roc_curves.png")

# %% [markdown]
# ## Best and worst cases (by Dice)
# *Reading the figure:* the images with the highest and the lowest Dice, the expert border and
# the predicted one drawn on each, with true and predicted diagnosis. The worst rows show what
# fails: faint borders, hairs, lesions touching the image edge, or very small lesions.

# %%
examples = best_and_worst(data, evaluation, n_examples)
fig = viz.plot_overlay_grid(**examples, title=f"Best and worst masks · {title}")
viz.publish(fig, figures / "evaluate_best_worst.png")

# %% [markdown]
# ## Conclusion
# Computed from the numbers above (`skin_utils.nb.conclusions.evaluation_conclusion`).

# %%
from IPython.display import Markdown

conclusion = conclusions.evaluation_conclusion(result, per_image["jaccard"].tolist(), synthetic=data.synthetic)
Markdown(conclusion)

# %%
report.write_json(reports / "metrics" / "evaluate.json",
                  {**{k: v for k, v in result.items() if k != "roc_curves"}, "checkpoint": str(resolve(checkpoint)),
                   "checkpoint_epoch": ckpt.epoch + 1, "data": data.describe(), "params": params})
per_image.to_csv(reports / "metrics" / "evaluate_per_image.csv", index=False)
base = result["majority_baseline"]
report.write_section(reports, "03_evaluate", "Evaluation", f"""
Checkpoint `{checkpoint}` (epoch {ckpt.epoch + 1}, {ckpt.image_size[0]}x{ckpt.image_size[1]} px) on the **{split}** split of
**{data.name}**: {result['n_images']} images of {result['n_lesions']} lesions. Masks scored at each image's
original size{' (averaged over the 8 flips and turns)' if tta else ''}. Always answering {base['majority']} would score accuracy {base['accuracy']:.3f} and balanced
accuracy {base['balanced_accuracy']:.3f}.

{report.markdown_table(headline)}

{report.markdown_table(per_class)}

![per class](figures/evaluate_per_class.png)
![confusion matrix](figures/evaluate_confusion_matrix.png)
![ROC](figures/evaluate_roc_curves.png)
![best and worst](figures/evaluate_best_worst.png)

**Conclusion.** {conclusion}
""", params=params, data=data.describe())
