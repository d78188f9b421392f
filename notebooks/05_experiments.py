# %% [markdown]
# # 05 · Experiments: a grid of parameters over seeds, with confidence intervals
# [![Open in Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/OWNER/REPO/blob/main/notebooks/05_experiments.ipynb)
#
# One run of a recipe is one draw: another seed, or another set of test lesions, gives another
# number. This notebook trains every cell of `grid` with every seed in `seeds` (executing
# `02_train` with papermill, each run in its own folder), scores each run with `03_evaluate` on
# the **validation** and the **test** split (lesion-level bootstrap intervals), and gathers one
# tidy table. Choices are made on the validation rows; the test rows are reported, not chosen on.
#
# The built-in question is the multi-task ablation: does one encoder shared by both heads help
# segmentation, classification, both or neither? A loss weight of 0 leaves that head untrained,
# and its metrics are shown as not applicable. Finished runs are skipped, so an interrupted
# experiment continues where it stopped; a failed run is reported and the others go on. Each run
# records every parameter it was trained and scored with: rerunning an experiment with other
# `fixed`, `grid` values or `eval_params` stops before anything runs and names the differences.
#
# With papermill (lists and dicts go in `-y`):
# `papermill notebooks/05_experiments.ipynb reports/05_experiments.ipynb -p name lr -y '{grid: {lr: [0.001, 0.003]}}'`
# or `python -m skin_utils.sweep experiment --name ablation --preset ablation --seeds 0 1 2`.

# %% tags=["parameters"]
from typing import Optional, Union

name: str = "demo"                       # the experiment's folder under experiments_dir, and its table's name
grid: Union[dict, list] = {"cls_weight": [1.0, 0.0]}  # 02_train parameter -> values (every combination), or a list of cells
seeds: list[int] = [0]                   # each cell is trained once per seed
fixed: dict = {"epochs": 1, "image_size": 64, "max_samples": 120}  # 02_train parameters every run gets (data_dir, ...)
time_budget: Optional[float] = None      # minutes per training run (02_train's time_budget, instead of epochs); None: as in fixed
eval_params: dict = {"tta": False, "n_bootstrap": 200}  # 03_evaluate parameters every evaluation gets
reference: Optional[dict] = None         # the cell the others are compared with (paired bootstrap); None: the first that trains both heads
metrics: list[str] = ["dice", "balanced_accuracy", "macro_auc"]  # shown in the figure
n_bootstrap: int = 1000                  # resamples of the paired comparison
experiments_dir: str = "reports/experiments"
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
from IPython.display import Markdown

from skin_utils import plots, report, sweep
from skin_utils.config import ExperimentConfig, resolve, slug

cfg = ExperimentConfig.from_notebook(globals())  # checked: grid, fixed and eval_params names too
fixed = {**cfg.fixed, **({"time_budget": cfg.time_budget} if cfg.time_budget is not None else {})}
cells = sweep.expand_grid(cfg.grid)
reference = sweep.reference_cell(cfg.reference, cells, fixed)  # checked against the grid before any run starts
folder = resolve(cfg.experiments_dir) / slug(cfg.name)
print(f"{len(cells)} cell(s) x {len(cfg.seeds)} seed(s) = {len(cells) * len(cfg.seeds)} runs into {folder}")

# %% [markdown]
# ## Train and evaluate every run
# Each run is `02_train` then `03_evaluate` on the validation and the test split, executed with
# papermill into `runs/<cell>_seed<k>/notebooks/`. A run already finished is skipped.

# %%
status = sweep.run_experiment(cfg.name, cells, cfg.seeds, fixed, experiments_dir=cfg.experiments_dir,
                              eval_params=cfg.eval_params)
status

# %% [markdown]
# ## One tidy table
# One row per run, split and metric, with the run's own lesion-level 95% interval
# (`ci_low`, `ci_high`). Written to `<experiments_dir>/<name>.csv`.

# %%
table = sweep.gather(cfg.name, cfg.experiments_dir)
table

# %% [markdown]
# ## Every seed, every cell
# *Reading the figure:* one panel per metric on the validation split; each dot is one seed's run,
# the bar its mean and the whisker ± 1 sd over seeds. "not applicable" marks a head that the cell
# did not train. Differences smaller than the spread of the dots are not differences.

# %%
fig = plots.plot_experiment(table, cfg.metrics, split="val", title=f"Experiment {cfg.name}")
plots.publish(fig, folder / "figures" / "experiment_val.png")

# %% [markdown]
# ## Paired comparison with the reference cell
# Every cell minus `reference`, on the same validation images, averaged over the seeds both
# finished, with a 95% interval from resampling lesions (the same resamples for both sides).
# *Reading the figure:* a dark dot's interval excludes 0: a difference the data supports.

# %%
diff = sweep.compare(cfg.name, reference, "val", cfg.experiments_dir, n_resamples=cfg.n_bootstrap)
diff_test = sweep.compare(cfg.name, reference, "test", cfg.experiments_dir, n_resamples=cfg.n_bootstrap)
if not diff.empty:
    fig = plots.plot_paired_differences(diff, title=f"{cfg.name}: cell − reference (validation)")
    plots.publish(fig, folder / "figures" / "experiment_differences_val.png")
diff

# %% [markdown]
# ## Conclusion
# Stated from the paired intervals on validation; the same comparison on the test split follows,
# as the check that was not used to choose anything.

# %%
if not diff.empty:
    verdict = sweep.multitask_verdict(diff)
    verdict_test = sweep.multitask_verdict(diff_test) if not diff_test.empty else []
else:
    verdict, verdict_test = ["No comparison: no other cell finished beside the reference."], []
failed = status[status["status"] != "finished"]
if len(failed):
    verdict.append(f"{len(failed)} run(s) failed: {', '.join(failed['run'])} (see their status.json).")
conclusion = "\n".join(f"- {line}" for line in verdict)
Markdown(conclusion + ("\n\nOn the test split:\n" + "\n".join(f"- {line}" for line in verdict_test) if verdict_test else ""))

# %% [markdown]
# ## Report

# %%
report.write_section(folder, "05_experiments", f"Experiment {cfg.name}", f"""
Every run trained with `02_train` and scored with `03_evaluate` on the validation and test splits. Table:
`{folder.parent / (slug(cfg.name) + '.csv')}`.

{sweep.summary_markdown(cfg.name, experiments_dir=cfg.experiments_dir)}

![every run](figures/experiment_val.png)
{'![differences](figures/experiment_differences_val.png)' if not diff.empty else ''}

**Conclusion (validation).**

{conclusion}

{('**The same comparison on the test split.**' + chr(10) + chr(10) + chr(10).join('- ' + line for line in verdict_test)) if verdict_test else ''}
""", params=cfg.to_dict())
