# %% [markdown]
# # 02 · Train the multi-task model
# [![Open in Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/OWNER/REPO/blob/main/notebooks/02_train.ipynb)
#
# One ResNet18 encoder, shared by a U-Net decoder that draws the lesion mask and a head that
# names the diagnosis (MEL, NV, BCC, AKIEC, BKL, DF, VASC). The loss is
# `seg_weight · BCE(mask) + cls_weight · CE(diagnosis)`, the cross-entropy optionally weighted
# against HAM10000's class imbalance. Training uses the lesion-level split in `split_path`
# (made here on first use, reused by every notebook), keeps the checkpoint with the best
# validation score. Every run gets its own folder, `<reports_dir>/runs/<run_name>/` (checkpoints,
# learning curves, `metrics/train.json`, report), and is never overwritten silently: starting a
# run whose folder holds results needs `resume=True` or `overwrite=True`. `reports/REPORT.md`
# shows the latest run.
#
# With no HAM10000 in `data/` it trains on the synthetic demo data (every figure says so).
# Run with other values: `papermill notebooks/02_train.ipynb out.ipynb -p epochs 5`, or for the
# minutes you have instead of a number of epochs: `-p time_budget 15`.

# %% tags=["parameters"]
from typing import Optional

data_dir: str = "data"                   # HAM10000 layout (see data/README.md); the synthetic demo if empty
image_size: int = 96                     # training size in pixels (square); 96 won on validation at 10 and 15 CPU minutes, 128 at 45 (README › Results)
epochs: int = 3                          # ignored when time_budget is set
time_budget: Optional[float] = None      # minutes for training, validation and calibration: the epochs are fitted to it; None: train `epochs`
batch_size: int = 16
lr: float = 2e-3                         # peak learning rate of the one-cycle schedule (AdamW)
weight_decay: float = 1e-4
lr_schedule: str = "onecycle"            # "onecycle", "cosine" or "constant"
seg_weight: float = 1.0                  # weight of the mask loss (BCE)
cls_weight: float = 1.0                  # weight of the diagnosis loss (cross-entropy)
class_balance: str = "weighted_loss"     # "none", "weighted_loss", "sampler", "both" or "logit_adjusted"
balance_power: float = 0.4               # strength: 0 none, 1 full correction of the class prior
label_smoothing: float = 0.1
ema_decay: Optional[float] = None        # keep a moving average of the weights over ~1/(1 - decay) steps (e.g. 0.999) and validate, keep and calibrate it; None: off
augment: str = "camera"                  # "none", "flips", "standard" (flips, 90-degree turns, mild colour), "strong" or "camera" (standard + casts, blur, resolution, vignette, hair)
colour_constancy: str = "shades_of_gray" # or "none": applied the same way in training, evaluation and inference (stored in the checkpoint)
encoder_weights: Optional[str] = "auto"  # "imagenet", "auto" (ImageNet if obtainable), None, or a .pth path
selection: str = "balanced_accuracy+dice"  # validation score that picks the best checkpoint
patience: Optional[int] = None           # early stopping after this many epochs without improvement
seed: int = 0                            # training randomness: initialisation, shuffling, augmentation
split_seed: int = 0                      # which lesions go to train/val/test (and max_samples' subset): fixed across seeds
device: str = "auto"                     # "auto", "cpu", "cuda", "cuda:1", ...
amp: str = "auto"                        # mixed precision: "auto", "bf16", "fp16" or "off"
compile: bool = False                    # torch.compile the model (slower first epoch; pays off on some GPUs)
num_workers: Optional[int] = None        # DataLoader workers; None picks for the device
max_samples: Optional[int] = None        # use at most this many images (whole lesions); None: all
split_fractions: list[float] = [0.7, 0.15, 0.15]  # train, val, test shares of the lesions
split_path: str = "reports/split.csv"    # the lesion-level split (made by 01_eda, or here on first use)
on_bad_data: str = "raise"               # "raise": stop on bad files with a report; "skip": leave them out
calibrate_tta: bool = True               # fit the temperature on 8-view TTA outputs (as 03/04 predict by default) and on plain ones
target_sensitivity: float = 0.9          # melanoma sensitivity the P(MEL) flag threshold reaches on validation
target_coverage: float = 0.8             # share of validation images decided automatically; the most uncertain rest is referred
run_name: Optional[str] = None           # the run's folder under <reports_dir>/runs; None: date, time and the main knobs
resume: bool = False                     # continue the run from its checkpoints/last.pt
overwrite: bool = False                  # replace the results of an earlier run of the same name
cache_dir: Optional[str] = None          # preprocessed-array cache; None: $SKIN_UTILS_CACHE or ~/.cache/skin_utils
reports_dir: str = "reports"              # runs go to <reports_dir>/runs/<run_name>/
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
import time

started_at = time.perf_counter()  # a time budget counts from here
import torch

from skin_utils import CLASS_NAMES, viz
from skin_utils.budget import budget_summary, plan_check, plan_training
from skin_utils.nb import conclusions, report
from skin_utils.engine import build_optimizer_and_schedule, fit, resolve_device, seed_everything, selection_metrics
from skin_utils.model import MultiTaskNet
from skin_utils.nb.params import check_params
from skin_utils.nb.paths import resolve
from skin_utils.data import check_trainable, load_data, train_class_counts, train_val_loaders
from skin_utils.transforms import normalization_config
from skin_utils.losses import build_loss, trained_tasks
from skin_utils.trust.calibrate import calibrate_checkpoint, summary_lines
from skin_utils.runs import set_latest, start_run

params = check_params(dict(
    data_dir=data_dir, image_size=image_size, epochs=epochs, time_budget=time_budget, batch_size=batch_size, lr=lr,
    weight_decay=weight_decay, lr_schedule=lr_schedule, seg_weight=seg_weight, cls_weight=cls_weight,
    class_balance=class_balance, balance_power=balance_power, label_smoothing=label_smoothing, ema_decay=ema_decay,
    augment=augment, colour_constancy=colour_constancy, encoder_weights=encoder_weights, selection=selection, patience=patience,
    seed=seed, split_seed=split_seed, device=device, amp=amp, compile=compile, num_workers=num_workers, max_samples=max_samples,
    split_fractions=split_fractions, split_path=split_path, on_bad_data=on_bad_data, resume=resume,
    cache_dir=cache_dir, reports_dir=reports_dir, run_name=run_name, overwrite=overwrite,
    calibrate_tta=calibrate_tta, target_sensitivity=target_sensitivity, target_coverage=target_coverage), namespace=globals(), notebook="02_train")
run = start_run(resolve(reports_dir) / "runs", run_name, params, resume=resume, overwrite=overwrite)
reports, checkpoints = run.root, run.checkpoints
print(f"Run folder: {run.root}")
device = resolve_device(device)
seed_everything(seed)
print(f"Training on {device}, {torch.get_num_threads()} CPU threads")

# %% [markdown]
# ## Data: validated, split by lesion, cached at the training size

# %%
data = load_data(data_dir, image_size, split_path=split_path, split_fractions=split_fractions,
                 seed=split_seed, max_samples=max_samples, on_bad_data=on_bad_data, cache_dir=cache_dir)
check_trainable(data, seg_weight, cls_weight)
data.describe()

# %% [markdown]
# ## Model, loss and data loaders

# %%
model = MultiTaskNet(num_classes=len(CLASS_NAMES), encoder_weights=encoder_weights)
counts = train_class_counts(data)
loss_fn = build_loss(counts, seg_weight, cls_weight, class_balance, balance_power, label_smoothing)
train_loader, val_loader, batch_transform = train_val_loaders(data, batch_size, device, augment=augment,
                                             class_balance=class_balance, balance_power=balance_power,
                                             seed=seed, num_workers=num_workers)
print("encoder weights:", model.encoder_weights_used)
print("training images per class:", dict(zip(CLASS_NAMES, counts.tolist())))
if loss_fn.class_weights is not None:
    print("cross-entropy class weights:", dict(zip(CLASS_NAMES, [round(w, 2) for w in loss_fn.class_weights.tolist()])))
if loss_fn.logit_adjustment is not None:
    print("logit adjustment:", dict(zip(CLASS_NAMES, [round(w, 2) for w in loss_fn.logit_adjustment.tolist()])))

# %% [markdown]
# ## Epochs, time budget and learning-rate schedule
# With `time_budget` (minutes, counted from the start of this notebook) a few training and
# validation batches are timed on a copy of the model, and the run gets as many epochs as fit in
# what is left after calibration (`skin_utils.budget`); the one-cycle schedule is then built for
# exactly those epochs. The plan is saved in the run (`metrics/budget.json`) and kept on resume.

# %%
plan = None
if time_budget is not None:
    plan = plan_training(time_budget, started_at, model, train_loader, val_loader, loss_fn, device,
                         calibrate="classification" in trained_tasks(seg_weight, cls_weight),
                         calibrate_tta=calibrate_tta, amp=amp, batch_transform=batch_transform,
                         normalization=normalization_config(colour_constancy), compile=compile,
                         saved=run.metrics / "budget.json", resume=resume, ema_decay=ema_decay)
    epochs = plan.epochs
    print(plan.describe())
optimizer, scheduler = build_optimizer_and_schedule(model, lr, weight_decay, epochs, len(train_loader), lr_schedule)

# %% [markdown]
# ## Train
# `checkpoints/last.pt` is written after every epoch (atomically), `checkpoints/best.pt` whenever
# the validation score improves, both in the run folder. Set `resume=True` (and the same
# `run_name`) to continue an interrupted run.

# %%
history = fit(model, train_loader, val_loader, loss_fn=loss_fn, optimizer=optimizer, scheduler=scheduler,
              epochs=epochs, device=device, checkpoint_dir=checkpoints, class_names=CLASS_NAMES,
              image_size=data.image_size, batch_transform=batch_transform,
              normalization=normalization_config(colour_constancy),
              params={**params, "epochs": epochs}, data=data.describe(), split_path=resolve(split_path),
              selection=selection, patience=patience, amp=amp, compile=compile, resume=resume, seed=seed,
              deadline=plan.deadline(started_at) if plan else None, ema_decay=ema_decay)
set_latest(run.root.parent, run)
if (check := plan_check(plan, history)) and check["warning"]:
    print("Warning:", check["warning"])

# %% [markdown]
# ## Calibration on the validation split
# The best checkpoint's probabilities are made honest, and two decisions are fixed, on the
# validation split (never the test split), and stored in `best.pt` for 03 and 04
# (`skin_utils.trust.calibrate`): a **temperature** (fitted on TTA-averaged outputs when
# `calibrate_tta`, and on plain ones), the **P(MEL) threshold** that reaches `target_sensitivity`
# on the validation melanomas (the melanoma flag), and the **uncertainty threshold** that keeps
# `target_coverage` of the validation images (the rest is referred). A model trained before this
# step existed: `python -m skin_utils.trust.calibrate <run>`.

# %%
if "classification" in trained_tasks(seg_weight, cls_weight):
    calibration = calibrate_checkpoint(checkpoints / "best.pt", data, tta=calibrate_tta, batch_size=batch_size,
                                       target_sensitivity=target_sensitivity, target_coverage=target_coverage,
                                       device=device, amp=amp)
    print("\n".join(summary_lines(calibration)))
else:
    calibration = {}
    print("The classification head was not trained (cls_weight=0): there is nothing to calibrate.")

# %% [markdown]
# ## Learning curves
# *Reading the figure:* losses (training solid, validation dashed), the validation segmentation
# and classification scores, and the learning rate, per epoch; the dotted line marks the epoch
# whose checkpoint was kept. Validation loss rising while training loss falls means overfitting;
# scores still climbing at the last epoch mean more epochs would help.

# %%
fig = viz.plot_learning_curves(history, title=f"Learning curves · {data.name}")
viz.publish(fig, reports / "figures" / "train_learning_curves.png")
best = max(history, key=lambda row: row["score"])
selected_by = "+".join(selection_metrics(selection, trained_tasks(seg_weight, cls_weight)))  # the trained heads' metrics only
summary = {"best_epoch": best["epoch"], "selection": selection, "selection_used": selected_by, "best_val": {k[4:]: v for k, v in best.items() if k.startswith("val_")},
           "epochs_run": len(history), "checkpoint": str(checkpoints / "best.pt"),
           "encoder_weights_used": model.encoder_weights_used,
           "class_weights": None if loss_fn.class_weights is None else loss_fn.class_weights.tolist(),
           "logit_adjustment": None if loss_fn.logit_adjustment is None else loss_fn.logit_adjustment.tolist(),
           "history": history, "calibration": calibration, "data": data.describe(), "params": params,
           "time_budget_min": time_budget, "budget_plan": plan and plan.as_dict(),
           "budget_check": plan_check(plan, history), "minutes_taken": (time.perf_counter() - started_at) / 60}
report.write_json(reports / "metrics" / "train.json", summary)
summary["best_val"]

# %% [markdown]
# ## Conclusion
# Computed from the history above (`skin_utils.nb.conclusions.training_conclusion`).

# %%
from IPython.display import Markdown

conclusion = conclusions.training_conclusion(history, selected_by, len(CLASS_NAMES), synthetic=data.synthetic)
Markdown(conclusion)

# %% [markdown]
# ## Report section

# %%
report.write_section(reports, "02_train", "Training", f"""
Trained on **{data.name}** ({len(data.rows['train'])} training / {len(data.rows['val'])} validation images,
split by lesion) for {len(history)} epoch(s) at {image_size}x{image_size} px on `{device}`; encoder weights: {model.encoder_weights_used};
class balance: `{class_balance}` (power {balance_power}); {'weights: the raw ones' if ema_decay is None else f'weights: their moving average (decay {ema_decay})'}. Best epoch by `{selected_by}`: **{best['epoch']}**.
{budget_summary(plan, len(history), summary['minutes_taken'], history)}

Validation at the best epoch (model resolution; the test-set evaluation at original size is in section 03):

{report.markdown_table({k[4:]: v for k, v in best.items() if k.startswith('val_')})}

Calibration fitted on the validation split and stored in `best.pt`:
{chr(10).join('- ' + line for line in summary_lines(calibration)) or '- none (the classification head was not trained)'}

![learning curves](figures/train_learning_curves.png)

**Conclusion.** {conclusion}
""", params=params, data=data.describe())

# %% [markdown]
# ## Next: evaluate and predict (on Colab, in this runtime)
# Open `03_evaluate` and then `04_inference`: with their default `run="latest"` they read the
# checkpoint written here.
#
# **On Colab** each notebook gets a runtime of its own that cannot see this one's files, so the
# cell below runs both notebooks here, on the checkpoint just trained (with papermill; the
# executed copies go to the run folder's `notebooks/`, the report to `reports/REPORT.md`). Elsewhere it
# does nothing. This is the way to train, evaluate and predict in one Colab runtime.

# %%
from skin_utils import run_notebooks

if "google.colab" in sys.modules and not os.environ.get(run_notebooks.RUNNER_ENV):  # not when run by the runner
    from IPython.display import Image, display

    if run_notebooks.main(["--only", "03_evaluate", "04_inference", "--data-dir", str(data_dir),
                      "--reports-dir", str(reports_dir), "--run-name", run.name]) == 0:
        for section in ("03_evaluate", "04_inference"):
            lines = (reports / "sections" / f"{section}.md").read_text().splitlines()
            display(Markdown(f"`{section}` " + next(line for line in lines if line.startswith("**Conclusion.**"))))
        for figure in ("evaluate_confusion_matrix", "inference_examples"):
            display(Image(filename=str(reports / "figures" / f"{figure}.png")))

