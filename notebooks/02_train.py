# %% [markdown]
# # 02 · Train the multi-task model
# [![Open in Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/OWNER/REPO/blob/main/notebooks/02_train.ipynb)
#
# One ResNet18 encoder, shared by a U-Net decoder that draws the lesion mask and a head that
# names the diagnosis (MEL, NV, BCC, AKIEC, BKL, DF, VASC). The loss is
# `seg_weight · BCE(mask) + cls_weight · CE(diagnosis)`. Training uses the lesion-level split in
# `split_path`, keeps the checkpoint with the best validation score, then fits on the validation
# split the temperature, the melanoma threshold and the referral threshold that 03 and 04 use.
# Every run gets its own folder, `<reports_dir>/runs/<run_name>/`, never overwritten silently
# (`resume=True` continues a run, `overwrite=True` replaces it).
#
# The work is one call, `train(cfg)`: the same recipe as `python -m skin_utils.train` and
# `torchrun`. The parameters below are the knobs a reader turns; every other field of
# `skin_utils.config.TrainConfig` can be set with `-p` too, or in `overrides`
# (`papermill notebooks/02_train.ipynb out.ipynb -p epochs 5 -p lr 1e-3`, or for the minutes you
# have instead of a number of epochs `-p time_budget 15`). With no HAM10000 in `data/` it trains
# on the synthetic demo (every figure says so).

# %% tags=["parameters"]
from typing import Optional

data_dir: str = "data"                   # the data set (data/README.md); "data" falls back to the synthetic demo when empty
image_size: int = 96                     # training size in pixels (square); 96 won on validation at 10 and 15 CPU minutes, 128 at 45
epochs: int = 3                          # training epochs; ignored when time_budget is set
time_budget: Optional[float] = None      # minutes for training, validation and calibration: the epochs are fitted to it
batch_size: int = 16                     # images per step
lr: float = 2e-3                         # peak learning rate of the schedule (AdamW)
seg_weight: float = 1.0                  # weight of the mask loss (BCE); 0 leaves the decoder untrained
cls_weight: float = 1.0                  # weight of the diagnosis loss (cross-entropy); 0 leaves the head untrained
augment: str = "camera"                  # "none", "flips", "standard", "strong" or "camera"
seed: int = 0                            # training randomness: initialisation, shuffling, augmentation
max_samples: Optional[int] = None        # use at most this many images (whole lesions); None: all
split_path: str = "reports/split.csv"    # the lesion-level split file (made on first use, shared by the notebooks)
run_name: Optional[str] = None           # the run's folder; None: date, time and the main knobs
resume: bool = False                     # continue the run from its last.pt
overwrite: bool = False                  # replace the results of an earlier run of the same name
reports_dir: str = "reports"             # runs go to <reports_dir>/runs/<run_name>/
overrides: dict = {}                     # any other TrainConfig field, e.g. {"ema_decay": 0.999, "class_balance": "sampler"}
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
from skin_utils.config import TrainConfig
from skin_utils.train import train

cfg = TrainConfig.from_notebook(globals(), overrides)  # checked: a misspelt name stops here with the nearest one
result = train(cfg)  # the recipe: data, model, budget, training, calibration, train.json, figure, report

# %% [markdown]
# ## Learning curves
# *Reading the figure:* losses (training solid, validation dashed), the validation segmentation
# and classification scores, and the learning rate, per epoch; the dotted line marks the epoch
# whose checkpoint was kept. Validation loss rising while training loss falls means overfitting;
# scores still climbing at the last epoch mean more epochs would help. A head the run does not
# train has no scores.

# %%
result.show("curves")

# %% [markdown]
# ## The kept checkpoint and its calibration
# *Reading the table:* validation at the best epoch (at the model's resolution; 03_evaluate scores
# the test split at each image's size), then what was fitted on the validation split and stored
# in `best.pt`: the temperature, the P(MEL) threshold that reaches `target_sensitivity` on the
# validation melanomas (the melanoma flag) and the uncertainty threshold that keeps
# `target_coverage` of the validation images (the rest is referred). A model trained before
# calibration existed: `python -m skin_utils.trust <run>`.

# %%
result.show("checkpoint")

# %% [markdown]
# ## Conclusion
# *Reading it:* one sentence computed from the history: where the kept epoch fell, and whether
# more epochs would likely help.

# %%
result.show("conclusion")

# %% [markdown]
# ## Next: evaluate and predict (on Colab, in this runtime)
# Open `03_evaluate` and then `04_inference`: with their default `run="latest"` they read the
# checkpoint written here.
#
# **On Colab** each notebook gets a runtime of its own that cannot see this one's files, so the
# cell below runs both notebooks here, on the checkpoint just trained (with papermill; the
# executed copies go to the run folder's `notebooks/`, the report to `reports/REPORT.md`). Elsewhere
# it does nothing. This is the way to train, evaluate and predict in one Colab runtime.

# %%
from IPython.display import Image, display

from skin_utils import sweep

if "google.colab" in sys.modules and not os.environ.get(sweep.RUNNER_ENV):  # not when run by the runner
    if sweep.run_all({"data_dir": cfg.data_dir, "reports_dir": cfg.reports_dir, "run_name": result.run.name},
                     only=["03_evaluate", "04_inference"]) == 0:
        for figure in ("evaluate_confusion_matrix", "inference_examples"):
            display(Image(filename=str(result.run.figures / f"{figure}.png")))
