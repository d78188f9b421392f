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
# Writes `inference/predictions.csv`, one mask and one overlay PNG per image, summary figures,
# and with `-p isic True` the ISIC 2018 submission files (Task 1 masks, Task 3 CSV). The same
# outside a notebook: `python -m skin_utils.predict <folder> --run <run> --out <dir>`.
#
# How far to trust each prediction: the probabilities calibrated with the temperature stored in
# the checkpoint (fitted on the validation split by `02_train` or `python -m skin_utils.trust`),
# the entropy and the disagreement of the test-time views, the mask's uncertainty along its
# border, a **refer** flag (uncertainty above the threshold chosen on validation), a
# **melanoma flag** (calibrated P(MEL) at the operating point chosen on validation), an
# **unfamiliar** flag (features farther from the validation images' than 95% of those are: another
# dermoscope or clinic, where the probabilities and flags may not hold) and a Grad-CAM heat map of
# where the classifier looked. A checkpoint without calibration gives
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
isic: bool = False                       # also write ISIC 2018 submission files: Task 1 masks and the Task 3 CSV (inference/isic/)
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
from skin_utils.config import InferConfig
from skin_utils.inference import infer

cfg = InferConfig.from_notebook(globals())  # checked: a wrong value or a misspelt name stops here
result = infer(cfg)  # predicts the folder; writes inference/predictions.csv, skipped.csv, masks/, overlays/, figures, the report section
result.table

# %% [markdown]
# Files that were skipped, with the reason (not an image, corrupt, too small):

# %%
result.failures

# %% [markdown]
# ## Overlays (predicted lesion border in magenta)
# *Reading the figure:* each new image with the predicted lesion border and the predicted
# diagnosis with its probability. There is no truth here: look for borders that miss the lesion
# and for low probabilities, which mean the model is unsure.

# %%
result.show("overlays")

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
result.show("trust")

# %% [markdown]
# ## Latency of a single image (preprocessing included)
# *Reading it:* the median time of one image on this device, from the file to the flags, without
# the Grad-CAM; the first call is left out (it warms the model up).

# %%
result.show("latency")

# %% [markdown]
# ## Conclusion
# *Reading it:* computed from the predictions above: classes, uncertain ones, flags, skipped files.

# %%
result.show("conclusion")

# %% [markdown]
# ## Try an image of your own
# Upload a dermoscopy image: the mask, the seven calibrated probabilities, the flags beside the
# thresholds they come from, and the Grad-CAM, the same panel as the web demo
# (`pip install -e ".[demo]"`, then `python -m skin_utils.app --run latest`).
# *Research software, not a medical device.*

# %%
from skin_utils.app import upload_panel

upload_panel(result.predictor)
