# %% [markdown]
# # 03 · Evaluate a trained model
# [![Open in Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/OWNER/REPO/blob/main/notebooks/03_evaluate.ipynb)
#
# *On Colab, a notebook opened on its own gets a runtime of its own, without a checkpoint: open
# `02_train` instead, which trains and whose last cell then runs this notebook in the same runtime.*
#
# Scores a trained run (by default the latest; or any `checkpoint`) with the ISIC 2018
# definitions on lesions it never saw: by default the **test** split of the lesion-level split
# made for training; `split="val"` scores the validation split (where choices are made); with
# `split="all"` and another `data_dir`, every image of an **external** data set. That folder may
# have masks and diagnoses (everything is scored), masks only (segmentation only), or diagnoses
# only (classification only); its diagnosis names are mapped onto ours by common synonyms or a
# `label_map` (e.g. `-p label_map '{"common nevus": "NV", "atypical nevus": "NV"}'`), and the label
# CSV's columns are detected or named (`id_column`, `label_column`). An external set is put side by
# side with the training data's test split (the domain shift).
# Every headline number comes with a 95% confidence interval from a bootstrap over **lesions**
# (all images of a lesion stay together), and per subgroup of the metadata (sex, age, site).
# Results go to the run's folder: `metrics/evaluate.json` for the test split,
# `metrics/evaluate_<split>.json` for another split, `metrics/evaluate_external_<folder>.json` for
# an external set (figures named likewise), so that no evaluation overwrites another.
#
# * Segmentation (Task 1), per image at the image's **original size**, then averaged: Dice,
#   Jaccard, thresholded Jaccard (0 when Jaccard < 0.65), pixel sensitivity and specificity.
# * Classification (Task 3): **balanced accuracy** (mean per-class recall, the headline),
#   accuracy, per-class sensitivity, specificity, AUC and average precision, macro AUC, the
#   confusion matrix and ROC curves, always beside chance and always answering the set's most
#   frequent class. On a set with fewer than seven classes they average over the classes present
#   (`classes_present` in the metrics file).
# * **Melanoma versus the rest**: AUC of the calibrated P(MEL), and sensitivity and specificity at
#   the P(MEL) threshold chosen on the training data's validation split (stored in the checkpoint).
# * One rule for the class scores: every classification number here (AUCs, the per-class rows,
#   melanoma versus the rest, subgroups, the per-image table that paired comparisons read) uses
#   the **calibrated** probabilities, the ones the melanoma threshold applies to.
# * Trust in each prediction: calibration (ECE, NLL, Brier) before and after the temperature
#   fitted on validation, the risk–coverage curve of referring the most uncertain images, the
#   melanoma operating point chosen on validation, and Grad-CAM heat maps checked against the
#   lesion masks.

# %% tags=["parameters"]
from typing import Optional, Union

run: str = "latest"                      # a run name under <reports_dir>/runs, a run folder, or "latest"
checkpoint: Optional[str] = None         # a checkpoint file instead of a run (its results go to a run folder named after it)
data_dir: Optional[str] = None           # None: the data the run was trained on; or another folder with masks and/or diagnoses (with split "all")
split: str = "test"                      # "test", "val", "train" or "all"
split_path: Optional[str] = None         # None: the split the run was trained with
label_map: Optional[Union[str, dict]] = None  # the set's diagnosis names -> ours, a dict (-y) or JSON text (-p); common synonyms need none
label_column: Optional[str] = None       # the diagnosis column of the set's label CSV; None: detected
id_column: Optional[str] = None          # the image-id column of the set's label CSV; None: detected
batch_size: int = 32
threshold: float = 0.5                   # mask probability threshold
tta: bool = True                         # average each prediction over the 8 flips and 90-degree turns of the image
n_examples: int = 4                      # best and worst cases shown (and Grad-CAM examples)
recalibrate: bool = False                # fit temperature and thresholds on the validation split now, into the checkpoint (for models trained before calibration existed)
cam_max_images: Optional[int] = None     # Grad-CAM check on at most this many images of the split; None: all
n_bootstrap: int = 1000                  # lesion-level bootstrap resamples for the 95% intervals
bootstrap_seed: int = 0                  # seed of the resampling
device: str = "auto"                     # "auto", "cpu", "cuda", "cuda:1", ...
amp: str = "auto"                        # mixed precision: "auto", "bf16", "fp16" or "off"
on_bad_data: str = "raise"               # "raise": stop on bad files with a report; "skip": leave them out
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
from skin_utils.config import EvaluateConfig
from skin_utils.evaluate import evaluate

cfg = EvaluateConfig.from_notebook(globals())  # checked: a wrong value or a misspelt name stops here
result = evaluate(cfg)  # scores the split; writes metrics/<tag>.json, the per-image CSV, the figures and the report section

# %% [markdown]
# ## Headline numbers with 95% intervals, beside chance and the majority class
# *Reading the table:* each score of the model, its 95% confidence interval from resampling
# lesions, what chance scores, and the same score of always answering the set's most frequent
# class. Only the margin counts: accuracy can look high while the model misses most of the rare
# classes, which balanced accuracy (the mean of the per-class sensitivities) shows. The `mel_`
# rows are melanoma versus the rest: the AUC of the calibrated P(MEL), and sensitivity and
# specificity at the threshold chosen on the training data's validation split. Two models whose
# intervals overlap widely cannot be told apart on this split; `skin_utils.metrics.paired_bootstrap`
# compares two runs on the same images. A head that was not trained (loss weight 0) shows "n/a";
# a set without masks (or without diagnoses) has no segmentation (classification) rows.

# %%
result.show("headline")

# %% [markdown]
# ## Domain shift: the training data's test split beside this set
# *Reading the figure and the table:* for an external set, each metric on the training data's
# test split (grey, from this run's `metrics/evaluate.json`) and on this set (orange), each with
# its 95% interval, with the same mask threshold and the same P(MEL) threshold. When this set has
# fewer classes, the test split's classification numbers are recomputed over those classes, so
# both average over the same ones. A drop whose intervals do not overlap is a real loss on this
# set's clinics and cameras; segmentation often holds while the diagnosis does not.

# %%
result.show("domain_shift")

# %% [markdown]
# ## Familiarity: how far these images lie from the training data
# *Reading the figure and the table:* each image's distance from the validation images in the
# features the classifier reads (a Mahalanobis distance of the encoder's pooled map, of order 1 for
# images like the training data). Beyond the dashed line an image is *unfamiliar*: farther than 95%
# of the validation images (each scored by a fit without it). Many unfamiliar images mean another
# clinic, camera or kind of lesion: the stored temperature and thresholds were fitted on other
# images, and the referral table below refers the unfamiliar ones.

# %%
result.show("familiarity")

# %% [markdown]
# ## Per class
# *Reading the figure:* one group of bars per diagnosis (its number of images under the
# name): sensitivity is the share of that class found, precision the share of its predictions
# that are right. Bars from few images (small support) are noisy; a class absent from this set
# has no sensitivity or AUC.

# %%
result.show("per_class")

# %% [markdown]
# ## Confusion matrix and ROC curves
# *Reading the figures:* in the confusion matrix each row is a true diagnosis and each column a
# predicted one; the diagonal of the normalised matrix is each class's sensitivity, and a bright
# cell off it names the confusion (MEL taken for NV is the costly one). Each ROC curve shows a
# class against all others at every threshold: the closer to the top-left corner the better, the
# diagonal is chance (AUC 0.5).

# %%
result.show("confusion")

# %% [markdown]
# ## Where the model is weak: subgroups
# *Reading the tables:* the headline metrics for each sex, age band and body site with at least
# 10 lesions, each with its lesion-level 95% interval. A subgroup whose interval lies below the
# others' is one the model serves worse; wide intervals mean too few lesions to say.

# %%
result.show("subgroups")

# %% [markdown]
# ## Best and worst cases
# *Reading the figure:* the images with the highest and the lowest Dice (on a set without masks:
# the highest and lowest probability given to the true diagnosis), with the expert border (when
# there is one) and the predicted one drawn on each, and the true (when known) and predicted
# diagnosis. The worst rows show what fails: faint borders, hairs, lesions touching the image
# edge, very small lesions, or on an external set its colours and framing.

# %%
result.show("cases")

# %% [markdown]
# ## Calibration: do the probabilities mean what they say?
# *Reading the figure:* images are binned by their top-label probability (confidence); each bar
# is the share of the bin that is correct, the hatched part the gap to the bin's mean
# confidence, and the dashed diagonal is perfect calibration: bars below it mean
# over-confidence. The grey histogram shows how many images fall in each bin (bins with few
# images are noisy). Left, the raw probabilities; right, after the temperature fitted on the
# validation split (absent when the checkpoint has none). ECE is the count-weighted mean gap
# over 15 bins; the table adds class-wise ECE, NLL and Brier score (lower is better for all).

# %%
result.show("calibration")

# %% [markdown]
# ## Referral: what if the most uncertain images go to a dermatologist?
# *Reading the figure:* images are kept from the most certain down; at each coverage (share
# kept) the curve shows the error rate of the kept images. A curve falling to the left means the
# uncertainty finds the errors; the dotted line is referring at random, the dashed one an oracle
# that refers every error first. AURC, the area under the curve, is lower when better. The
# uncertainty is the entropy of the calibrated probabilities (and, with TTA, the disagreement of
# the 8 views). The table shows what referring the most uncertain 10/20/30% does to the kept
# images' balanced accuracy and to melanoma sensitivity (a referred melanoma counts as caught).

# %%
result.show("referral")

# %% [markdown]
# ## The melanoma operating point
# *Reading the table:* the melanoma flag is raised when the calibrated P(MEL) reaches a
# threshold chosen on the validation split for a target sensitivity (stored in the checkpoint).
# The rows give sensitivity (melanomas flagged), specificity (other lesions not flagged) and
# PPV (flags that are melanomas) on the validation split, on this split at that threshold, and
# for calling melanoma only when it is the most probable class. A lower threshold buys
# sensitivity with specificity.

# %%
result.show("operating_point")

# %% [markdown]
# ## Grad-CAM: where does the classifier look?
# *Reading the figure:* the heat map (bright = the regions that raised the score of the
# predicted class named in the caption most, from the last encoder block) over examples of
# each class, the expert lesion border in green (when the set has masks) and the predicted one
# in magenta. A map on the lesion is reassuring; a map on rulers, hairs, ink or the dark corners
# of the dermatoscope means the class may come from an artefact. The maps are computed at the
# model's resolution and enlarged.

# %%
result.show("grad_cam")

# %% [markdown]
# ## Is the heat map on the lesion? The check against the masks
# *Reading the figure and the table:* for every image with a diagnosis and a mask, the share of
# the heat map's energy inside the true lesion mask (and inside the predicted one), per true class
# and overall, beside the share of the image the lesion covers, which is what a uniform map would
# score. Lift is their ratio (1 = no better than uniform); "above uniform" is the share of images
# whose map beats that baseline, "mostly outside" the share with less than half of the energy
# inside. The figure shows the maps that fall most outside the lesion, lowest share first. A set
# without masks is checked against the predicted lesion instead, which trusts the mask head.

# %%
result.show("cam_check")

# %% [markdown]
# ## Conclusion
# *Reading it:* a few sentences computed from the numbers above: the margin over chance and the
# majority class, Dice, the shift from the training data's test split, how far to trust them.

# %%
result.show("conclusion")
