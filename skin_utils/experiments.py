"""Experiments over a grid of notebook parameters and seeds, executed with papermill.

For each cell of the grid and each seed, ``02_train`` trains into its own run folder
(``<experiments_dir>/<name>/runs/<cell>_seed<k>/``) and ``03_evaluate`` scores it on the
validation split and on the test split, each with lesion-level bootstrap intervals. Finished runs
are skipped, an interrupted run resumes from its ``last.pt``, a failed run is recorded with its
error and the sweep goes on. `gather` collects one tidy table (one row per run, split and metric)
into ``<experiments_dir>/<name>.csv``; `compare` gives paired bootstrap differences against a
reference cell on the same images, averaged over the seeds they share.

Choices are made on the **validation** rows; the test rows are there to be reported once.

    python -m skin_utils.experiments --name ablation --preset ablation --seeds 0 1 2 \\
        --fixed '{"epochs": 4, "image_size": 96}'
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import time
import traceback
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from skin_utils.labels import CLASS_NAMES
from skin_utils.losses import trained_tasks
from skin_utils.runs import Run, slug
from skin_utils.metrics import HEADLINE_METRICS, mean_sd, paired_bootstrap, read_per_image

TASK_METRICS = {"segmentation": ("dice", "jaccard", "thresholded_jaccard"),
                "classification": ("accuracy", "balanced_accuracy", "macro_auc", "mel_auc", "mel_sensitivity",
                                   "mel_specificity")}
SPLITS = ("val", "test")
# The multi-task ablation: each head alone, both at equal weight, and two other ratios.
PRESETS = {
    "ablation": [
        {"seg_weight": 1.0, "cls_weight": 0.0},
        {"seg_weight": 0.0, "cls_weight": 1.0},
        {"seg_weight": 1.0, "cls_weight": 1.0},
        {"seg_weight": 1.0, "cls_weight": 0.3},
        {"seg_weight": 0.3, "cls_weight": 1.0},
    ],
}
STATUS = "status.json"


def expand_grid(grid) -> list[dict]:
    """A dict ``{param: [values]}`` gives every combination; a list of dicts gives those cells."""
    if isinstance(grid, dict):
        if not grid:
            return [{}]
        for key, values in grid.items():
            if not isinstance(values, (list, tuple)) or not values:
                raise ValueError(f"grid[{key!r}]={values!r}: expected a non-empty list of values.")
        keys = list(grid)
        return [dict(zip(keys, combo)) for combo in itertools.product(*(grid[k] for k in keys))]
    if isinstance(grid, (list, tuple)) and all(isinstance(c, dict) for c in grid) and grid:
        cells = [dict(c) for c in grid]
    else:
        raise ValueError(f"grid={grid!r}: expected a dict of parameter -> list of values, or a list of dicts.")
    names = [cell_name(c) for c in cells]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise ValueError(f"grid={grid!r} gives the same cell more than once ({', '.join(twice)}): each cell must "
                         "differ from the others, or its runs would be one folder.")
    return cells


def _value_text(value) -> str:
    """A grid value in a folder name: floats short (``1``, ``0.001``) unless that loses digits
    (``0.0010000004`` stays itself), so that two values never share a folder."""
    if isinstance(value, float):
        short = f"{value:g}"
        return short if float(short) == value else repr(value)
    return str(value)


def cell_name(cell: dict) -> str:
    """``seg_weight=1,cls_weight=0`` -> a folder-safe name; ``{}`` -> ``default``."""
    if not cell:
        return "default"
    return slug(",".join(f"{k}={_value_text(v)}" for k, v in cell.items()))


def reference_cell(reference: dict | None, cells: list[dict]) -> dict:
    """The cell the others are compared with: ``reference`` when it is one of ``cells`` (checked
    before any run starts), the first cell when None."""
    if reference is None:
        return cells[0]
    if reference not in cells:
        raise ValueError(f"reference={reference!r} is not a cell of the grid, so nothing could be compared with "
                         f"it; the cells are {cells}. Pass one of them, or none (the first cell is then the reference).")
    return reference


def run_name(cell: dict, seed: int) -> str:
    return f"{cell_name(cell)}_seed{seed}"


def tasks_of(params: dict) -> list[str]:
    """The heads a run with these 02_train parameters trains (`skin_utils.losses.trained_tasks`)."""
    return trained_tasks(params.get("seg_weight", 1.0), params.get("cls_weight", 1.0))


def execute_notebook(name: str, output: Path, params: dict, root: Path) -> None:
    """Execute the repository's ``notebooks/<name>.ipynb`` with papermill into ``output`` (kernel
    cwd: ``root``, where relative paths resolve; the notebooks themselves come from the checkout
    this ``skin_utils`` is installed from, also when ``$SKIN_UTILS_ROOT`` points elsewhere)."""
    import papermill

    from skin_utils.nb.paths import notebooks_dir

    output.parent.mkdir(parents=True, exist_ok=True)
    papermill.execute_notebook(str(notebooks_dir() / f"{name}.ipynb"), str(output), parameters=params,
                               cwd=str(root), kernel_name="python3", language="python", progress_bar=False)


def _plain(value):
    """``value`` as JSON gives it back (tuples as lists, paths as text): what a status.json holds."""
    return json.loads(json.dumps(value, default=str))


def config_differences(recorded: dict | None, wanted: dict) -> list[str]:
    """What differs between the configuration a run recorded and the one asked for now, one
    ``job parameter: old -> new`` per difference (a run that recorded none: one line saying so)."""
    if not recorded:
        return ["it recorded no parameters (made by an older skin_utils), so its results cannot be trusted to match"]
    out = []
    for job in sorted(set(recorded) | set(wanted)):
        old, new = recorded.get(job), wanted.get(job)
        if isinstance(old, dict) and isinstance(new, dict):
            for key in sorted(set(old) | set(new)):
                if old.get(key, "<unset>") != new.get(key, "<unset>"):
                    out.append(f"{job} {key}: {old.get(key, '<unset>')!r} -> {new.get(key, '<unset>')!r}")
        elif old != new:
            out.append(f"{job}: {old!r} -> {new!r}")
    return out


def _status(run: Run) -> dict:
    path = run.root / STATUS
    return json.loads(path.read_text()) if path.is_file() else {}


def _set_status(run: Run, **status) -> None:
    run.root.mkdir(parents=True, exist_ok=True)
    (run.root / STATUS).write_text(json.dumps(status, indent=2, default=str))


def run_experiment(name: str, grid, seeds=(0,), fixed: dict | None = None, *,
                   experiments_dir="reports/experiments", eval_params: dict | None = None,
                   splits=SPLITS, root=None, executor=execute_notebook, progress: bool = True) -> pd.DataFrame:
    """Train and evaluate every (cell, seed); return the status of each run.

    ``fixed`` parameters go to every ``02_train`` run (the budget, ``data_dir``, ...);
    ``eval_params`` to every ``03_evaluate`` run (e.g. ``{"tta": False}``); a name that is not a
    parameter of that notebook stops here, with the nearest one. Relative paths are resolved
    against the repository root, as in the notebooks.

    Each run records the full parameters it trains and is evaluated with (``status.json``); a
    finished run is skipped, an interrupted or failed one resumed, but only with the same
    parameters: when any existing run of the experiment was made with others, nothing runs and
    the error names each difference (never old numbers under new labels)."""
    from skin_utils.nb.params import check_names
    from skin_utils.nb.paths import project_root, resolve
    from skin_utils.run_notebooks import notebook_defaults

    root = Path(root) if root is not None else project_root()
    fixed, eval_params = dict(fixed or {}), dict(eval_params or {})
    clash = {"seed", "run_name", "reports_dir", "resume", "overwrite"} & set(fixed)
    if clash:
        raise ValueError(f"fixed sets {sorted(clash)}: the experiment sets these itself (seeds with `seeds`).")
    cells = expand_grid(grid)
    train_names, eval_names = notebook_defaults("02_train"), notebook_defaults("03_evaluate")
    check_names(fixed, train_names, "fixed (02_train parameters)")
    for cell in cells:
        check_names(cell, train_names, "grid (02_train parameters)")
    check_names(eval_params, eval_names, "eval_params (03_evaluate parameters)")
    folder = resolve(experiments_dir, root) / slug(name)
    runs_dir = folder / "runs"
    # The experiment's own lesion-level split unless one is given: it never replaces the split of
    # the user's main runs, and every run of the experiment shares it (paired comparisons).
    fixed.setdefault("split_path", str(folder / "split.csv"))
    plan = []
    for cell in cells:
        for seed in seeds:
            run = Run(runs_dir / run_name(cell, int(seed)))
            train = {**fixed, **cell, "seed": int(seed), "run_name": run.name, "reports_dir": str(folder)}
            config = _plain({"train": train, "evaluate": eval_params, "splits": list(splits)})
            plan.append((cell, int(seed), run, train, config))
    conflicts = []
    for _, _, run, _, config in plan:
        status = _status(run)
        if (status or run.results()) and status.get("config") != config:
            conflicts.append((run.name, config_differences(status.get("config"), config)))
    if conflicts:
        listed = "\n".join(f"  {name_}: " + "; ".join(diff) for name_, diff in conflicts[:10])
        more = f"\n  ... and {len(conflicts) - 10} more run(s)" if len(conflicts) > 10 else ""
        raise ValueError(
            f"Experiment {name!r} in {folder} already has {len(conflicts)} run(s) made with other parameters than "
            f"these, and its summary would show their numbers under the new ones:\n{listed}{more}\n"
            "Run the new configuration under another experiment name, or delete that folder to start again.")
    (folder / "experiment.json").parent.mkdir(parents=True, exist_ok=True)
    (folder / "experiment.json").write_text(json.dumps(
        {"name": name, "grid": grid, "cells": cells, "seeds": list(seeds), "fixed": fixed,
         "eval_params": eval_params, "splits": list(splits)}, indent=2, default=str))
    statuses = []
    bar = tqdm(plan, desc=f"experiment {name}", disable=not progress)
    for cell, seed, run, train, config in bar:
        bar.set_postfix_str(run.name)
        if _status(run).get("status") == "finished":
            statuses.append({"run": run.name, "status": "finished", "skipped": True, "seconds": 0.0, "error": None})
            continue
        t0 = time.perf_counter()
        _set_status(run, status="running", config=config, cell=cell, seed=seed)
        try:
            executor("02_train", run.notebooks / "02_train.ipynb", {**train, "resume": run.last.exists()}, root)
            for split in splits:
                executor("03_evaluate", run.notebooks / f"03_evaluate_{split}.ipynb",
                         {**eval_params, "run": str(run.root), "split": split}, root)
        except Exception as err:  # papermill.PapermillExecutionError and anything else: record, go on
            message = f"{type(err).__name__}: {str(err).strip().splitlines()[-1] if str(err).strip() else ''}"
            _set_status(run, status="failed", error=message, traceback=traceback.format_exc(limit=3),
                        config=config, cell=cell, seed=seed)
            print(f"run {run.name} failed: {message}\n  (the executed notebooks are in {run.notebooks})",
                  file=sys.stderr)
            statuses.append({"run": run.name, "status": "failed", "skipped": False,
                             "seconds": time.perf_counter() - t0, "error": message})
            continue
        seconds = time.perf_counter() - t0
        _set_status(run, status="finished", seconds=seconds, config=config, cell=cell, seed=seed)
        statuses.append({"run": run.name, "status": "finished", "skipped": False, "seconds": seconds, "error": None})
    return pd.DataFrame(statuses, columns=["run", "status", "skipped", "seconds", "error"])


def gather(name: str, experiments_dir="reports/experiments", root=None, write: bool = True) -> pd.DataFrame:
    """One row per run, split and metric: ``experiment, run, <grid parameters>, seed, split,
    metric, value, ci_low, ci_high, status``. Metrics of a head the run did not train are left
    out (not applicable, never a number). Written to ``<experiments_dir>/<name>.csv``."""
    from skin_utils.nb.paths import resolve

    folder = resolve(experiments_dir, root) / slug(name)
    meta = json.loads((folder / "experiment.json").read_text())
    keys = sorted({k for cell in meta["cells"] for k in cell})
    rows = []
    for cell in meta["cells"]:
        for seed in meta["seeds"]:
            run = Run(folder / "runs" / run_name(cell, seed))
            status = _status(run).get("status", "missing")
            base = {"experiment": name, "run": run.name, **{k: cell.get(k) for k in keys}, "seed": seed}
            if status != "finished":
                rows.append({**base, "split": None, "metric": None, "value": np.nan, "ci_low": np.nan,
                             "ci_high": np.nan, "status": status})
                continue
            for split in meta["splits"]:
                result = json.loads(run.evaluation(split).read_text())
                trained = result.get("tasks", list(TASK_METRICS))
                for task in trained:
                    for metric in TASK_METRICS[task]:
                        value = result.get(metric)
                        if value is None:
                            continue
                        lo, hi = result.get("ci95", {}).get(metric, [np.nan, np.nan])
                        rows.append({**base, "split": split, "metric": metric, "value": value,
                                     "ci_low": lo, "ci_high": hi, "status": status})
    table = pd.DataFrame(rows)
    if write:
        table.to_csv(folder.parent / f"{slug(name)}.csv", index=False)
    return table


def summarize(table: pd.DataFrame, metrics=HEADLINE_METRICS) -> pd.DataFrame:
    """Mean ± sd over seeds for each cell, split and metric (finished runs only)."""
    done = table[table["status"] == "finished"]
    params = [c for c in table.columns if c not in
              {"experiment", "run", "seed", "split", "metric", "value", "ci_low", "ci_high", "status"}]
    rows = []
    for key, group in done.groupby(params + ["split", "metric"], dropna=False, sort=False):
        if key[-1] not in metrics:
            continue
        mean, sd, n = mean_sd(group["value"])
        rows.append({**dict(zip(params + ["split", "metric"], key)), "mean": mean, "sd": sd, "seeds": n})
    return pd.DataFrame(rows)


def compare(name: str, reference: dict, split: str = "val", experiments_dir="reports/experiments", root=None,
            n_resamples: int = 1000, seed: int = 0) -> pd.DataFrame:
    """Every other cell against ``reference`` on ``split``: the difference of the seed-averaged
    metric (cell - reference) with a paired lesion-level bootstrap interval (the same lesion
    resamples for both, over the seeds both finished). Only metrics of heads both cells trained.
    Empty when the reference has no finished run."""
    from skin_utils.nb.paths import resolve

    folder = resolve(experiments_dir, root) / slug(name)
    meta = json.loads((folder / "experiment.json").read_text())

    def tables(cell):
        out = {}
        for s in meta["seeds"]:
            run = Run(folder / "runs" / run_name(cell, s))
            if _status(run).get("status") == "finished":
                out[s] = read_per_image(run.per_image(split))
        return out

    ref_tables = tables(reference)
    if not ref_tables:  # its runs failed: the status table says so; nothing to compare with
        return pd.DataFrame()
    frames = []
    for cell in meta["cells"]:
        if cell == reference:
            continue
        cell_tables = tables(cell)
        seeds = sorted(set(cell_tables) & set(ref_tables))
        if not seeds:
            continue
        tasks = [t for t in tasks_of(cell) if t in tasks_of(reference)]
        diff = paired_bootstrap([ref_tables[s] for s in seeds], [cell_tables[s] for s in seeds],
                                CLASS_NAMES, n_resamples=n_resamples, seed=seed, tasks=tasks)
        frames.append(diff.reset_index().assign(cell=cell_name(cell), reference=cell_name(reference),
                                                cell_tasks=",".join(tasks_of(cell)), split=split, seeds=len(seeds)))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def multitask_verdict(diff: pd.DataFrame) -> list[str]:
    """Does joint training help? ``diff`` is `compare`'s table with the joint cell as reference:
    for each cell that trains one head only, its headline metrics minus the joint model's. A
    difference whose 95% interval excludes 0 is stated as help or harm; otherwise as no
    detectable difference, with the interval, so the reader sees how large an effect is ruled out."""
    lines = []
    headline = {"segmentation": ("dice", "thresholded_jaccard"), "classification": ("balanced_accuracy", "macro_auc")}
    single = diff[~diff["cell_tasks"].str.contains(",")] if not diff.empty else diff
    for task, metrics in headline.items():
        rows = single[(single["cell_tasks"] == task) & single["metric"].isin(metrics)]
        if rows.empty:
            lines.append(f"{task.capitalize()}: no {task}-only run to compare with, so no verdict.")
            continue
        parts, verdicts = [], set()
        for _, r in rows.iterrows():
            # joint - single = -(single - joint)
            d, lo, hi = -r["difference"], -r["ci_high"], -r["ci_low"]
            verdicts.add("helps" if lo > 0 else "hurts" if hi < 0 else "unclear")
            parts.append(f"{r['metric']} joint − {task} only = {d:+.3f} (95% CI {lo:+.3f} to {hi:+.3f}, "
                         f"{int(r['seeds'])} seed(s), {r['split']} split)")
        word = {frozenset({"helps"}): "joint training **helps**", frozenset({"hurts"}): "joint training **hurts**",
                frozenset({"unclear"}): "**no detectable difference** between joint and single-task training"
                }.get(frozenset(verdicts), "**mixed** evidence")
        lines.append(f"{task.capitalize()}: {word}: " + "; ".join(parts) + ".")
    return lines


def summary_markdown(name: str, reference: dict | None = None, experiments_dir="reports/experiments", root=None,
                     n_resamples: int = 1000, metrics=HEADLINE_METRICS) -> str:
    """The experiment in Markdown, for a README or a closing note: per cell, each metric's mean ±
    sd over seeds on validation and on test (with the seeds' mean lesion-level interval), and,
    with a ``reference`` cell, the paired differences and the multi-task verdict."""
    from skin_utils.nb.paths import resolve

    table = gather(name, experiments_dir, root, write=False)
    done = table[table["status"] == "finished"]
    meta = json.loads((resolve(experiments_dir, root) / slug(name) / "experiment.json").read_text())
    lines = [f"Experiment `{name}`: {len(meta['cells'])} cell(s) × seeds {meta['seeds']}; fixed {meta['fixed']}; "
             f"evaluation {meta['eval_params']}. {done['run'].nunique()} run(s) finished"
             + (f", {table.loc[table['status'] != 'finished', 'run'].nunique()} not" if (table["status"] != "finished").any() else "")
             + ". Values: mean ± sd over seeds [mean of the runs' lesion-level 95% CIs]; n/a: head not trained.", ""]
    shown = [m for m in metrics if m in set(done["metric"])]
    for split in meta["splits"]:
        lines += [f"**{split} split**", "", "| cell | " + " | ".join(shown) + " |", "|---" * (len(shown) + 1) + "|"]
        for cell in meta["cells"]:
            rows = done[(done["run"].str.replace(r"_seed\d+$", "", regex=True) == cell_name(cell)) & (done["split"] == split)]
            cells = []
            for m in shown:
                r = rows[rows["metric"] == m]
                if r.empty:
                    cells.append("n/a")
                    continue
                mean, sd, n = mean_sd(r["value"])
                sd_text = f" ± {sd:.3f}" if n > 1 else ""
                lo, hi = r["ci_low"].mean(), r["ci_high"].mean()
                ci_text = f" [{lo:.3f}–{hi:.3f}]" if np.isfinite(lo) and np.isfinite(hi) else ""
                cells.append(f"{mean:.3f}{sd_text}{ci_text}")
            lines.append(f"| {cell_name(cell)} | " + " | ".join(cells) + " |")
        lines.append("")
    if reference is not None:
        for split in meta["splits"]:
            diff = compare(name, reference, split, experiments_dir, root, n_resamples=n_resamples)
            if diff.empty:
                continue
            lines += [f"**Paired differences against `{cell_name(reference)}`, {split} split** (seed-averaged, "
                      f"lesion-level paired bootstrap, {n_resamples} resamples)", "",
                      "| cell | metric | cell − reference | 95% CI | excludes 0 |", "|---|---|---|---|---|"]
            for _, r in diff.iterrows():
                lines.append(f"| {r['cell']} | {r['metric']} | {r['difference']:+.3f} | {r['ci_low']:+.3f} to "
                             f"{r['ci_high']:+.3f} | {'yes' if r['excludes_zero'] else 'no'} |")
            lines += ["", *[f"- {v}" for v in multitask_verdict(diff)], ""]
    return "\n".join(lines)


def _json_arg(text: str):
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise argparse.ArgumentTypeError(f"not valid JSON ({err}): {text!r}") from err


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--name", required=True, help="experiment name (folder under --experiments-dir)")
    grid = parser.add_mutually_exclusive_group(required=True)
    grid.add_argument("--grid", type=_json_arg, help='JSON: {"param": [values]} or [{"param": value}, ...]')
    grid.add_argument("--preset", choices=sorted(PRESETS), help="a built-in grid (ablation: the multi-task ablation)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--fixed", type=_json_arg, default={}, help="JSON: parameters every 02_train run gets")
    parser.add_argument("--eval", type=_json_arg, default={}, help="JSON: parameters every 03_evaluate run gets")
    parser.add_argument("--reference", type=_json_arg, default=None,
                        help="JSON: the cell the others are compared with (paired bootstrap on validation); "
                             "default: the joint cell of the ablation preset, else the first cell")
    parser.add_argument("--experiments-dir", default="reports/experiments")
    parser.add_argument("--markdown", default=None, help="also write the summary (tables, paired differences) to this file")
    args = parser.parse_args(argv)

    cells = PRESETS[args.preset] if args.preset else args.grid
    default = {"seg_weight": 1.0, "cls_weight": 1.0} if args.preset == "ablation" else None
    reference = reference_cell(args.reference or default, expand_grid(cells))  # checked before any run
    status = run_experiment(args.name, cells, args.seeds, args.fixed, experiments_dir=args.experiments_dir,
                            eval_params=args.eval)
    print(status.to_string(index=False))
    table = gather(args.name, args.experiments_dir)
    if not table.empty and (table["status"] == "finished").any():
        summary = summarize(table)
        print(summary.to_string(index=False))
        markdown = summary_markdown(args.name, reference, args.experiments_dir)
        print(markdown)
        if args.markdown:
            Path(args.markdown).parent.mkdir(parents=True, exist_ok=True)
            Path(args.markdown).write_text(markdown + "\n")
    return 0 if (status["status"] == "finished").all() else 1


if __name__ == "__main__":
    sys.exit(main())
