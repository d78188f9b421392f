# %% [markdown]
# # 03 · Evaluate a trained model
# [![Open in Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/OWNER/REPO/blob/main/notebooks/03_evaluate.ipynb)
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
checkpoint = "checkpoints/best.pt"
data_dir = "data"                  # the training data (for split test) or any labelled folder (split all)
split = "test"                     # "test", "val", "train" or "all"
split_path = "reports/split.csv"   # the split written by 02_train
batch_size = 32
threshold = 0.5                    # mask probability threshold
tta = True                         # average each prediction over the 8 flips and 90-degree turns of the image
n_examples = 4                     # best and worst cases shown
device = "auto"
amp = "auto"
on_bad_data = "raise"
reports_dir = "reports"
repo_url = "https://github.com/OWNER/REPO"  # cloned on Colab to install skin_utils

# %%
import subprocess, sys, os  # noqa: E401
if "google.colab" in sys.modules and not os.path.isdir("/content/repo"):
    subprocess.check_call(["git", "clone", "--depth", "1", repo_url, "/content/repo"])
    subprocess.check_call([sys.executable, "-m", "pip", "install", "-q", "-e", "/content/repo"])
    sys.path.insert(0, "/content/repo")
    os.chdir("/content/repo")

# %%
from skin_utils import viz
from skin_utils.nb import report
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
class_names = ckpt["class_names"]
trained = ckpt["config"]
print(f"checkpoint: epoch {ckpt['epoch'] + 1}, trained at {trained['image_size']} px on {ckpt['data']['data_dir']}")

# %%
data = load_data(data_dir, trained["image_size"], split_path=split_path,
                 split_fractions=trained.get("split_fractions", (0.7, 0.15, 0.15)), seed=trained.get("seed", 0),
                 max_samples=trained.get("max_samples") if split != "all" else None,
                 on_bad_data=on_bad_data, need_split=split != "all")
if split != "all" and data.index.attrs["fingerprint"] != ckpt["data"]["fingerprint"]:
    raise ValueError(f"{data.data_dir} is not the data this model was trained on; its '{split}' split would "
                     "not be held out. Evaluate an external data set with split='all'.")
title = f"{split} split · {data.name}"
evaluation = evaluate_original_size(model, data, split, device, class_names, batch_size=batch_size,
                                           amp=amp, threshold=threshold, tta=tta)
result, per_image = evaluation.report, evaluation.per_image

# %% [markdown]
# ## Headline numbers, beside always answering NV

# %%
headline = headline_table(result)
headline

# %% [markdown]
# ## Per class

# %%
per_class = per_class_table(result)
fig = viz.plot_per_class_metrics(result["per_class"], title=f"Per-class performance · {title}")
viz.publish(fig, figures / "evaluate_per_class.png")
per_class

# %%
fig = viz.plot_confusion_matrix(result["confusion_matrix"], class_names, title=f"Confusion matrix · {title}")
viz.publish(fig, figures / "evaluate_confusion_matrix.png")
fig = viz.plot_roc_curves({k: (v["fpr"], v["tpr"], v["auc"]) for k, v in result["roc_curves"].items()},
                            title=f"ROC curves · {title}")
viz.publish(fig, figures / "evaluate_roc_curves.png")

# %% [markdown]
# ## Best and worst cases (by Dice)

# %%
examples = best_and_worst(data, evaluation, n_examples)
fig = viz.plot_overlay_grid(**examples, class_names=class_names, title=f"Best and worst masks · {title}")
viz.publish(fig, figures / "evaluate_best_worst.png")

# %%
report.write_json(reports / "metrics" / "evaluate.json",
                  {**{k: v for k, v in result.items() if k != "roc_curves"}, "checkpoint": str(resolve(checkpoint)),
                   "checkpoint_epoch": ckpt["epoch"] + 1, "data": data.describe(), "params": params})
per_image.to_csv(reports / "metrics" / "evaluate_per_image.csv", index=False)
base = result["majority_baseline"]
report.write_section(reports, "03_evaluate", "Evaluation", f"""
Checkpoint `{checkpoint}` (epoch {ckpt['epoch'] + 1}, {trained['image_size']} px) on the **{split}** split of
**{data.name}**: {result['n_images']} images of {result['n_lesions']} lesions. Masks scored at each image's
original size{' (averaged over the 8 flips and turns)' if tta else ''}. Always answering {base['majority']} would score accuracy {base['accuracy']:.3f} and balanced
accuracy {base['balanced_accuracy']:.3f}.

{report.markdown_table(headline)}

{report.markdown_table(per_class)}

![per class](figures/evaluate_per_class.png)
![confusion matrix](figures/evaluate_confusion_matrix.png)
![ROC](figures/evaluate_roc_curves.png)
![best and worst](figures/evaluate_best_worst.png)
""", params=params, data=data.describe())
