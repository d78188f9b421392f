"""The notebooks in order, and grids of runs over seeds: both executed with papermill.

``all`` (scripts/run_all.sh) runs notebooks 01-05 on one data folder, split, reports folder and run.
``experiment`` trains every cell of a grid with every seed (02_train into
``<experiments_dir>/<name>/runs/<cell>_seed<k>/``), scores each run with 03_evaluate on validation and
test, and compares every cell with a reference on the same lesions (paired bootstrap).

    python -m skin_utils.sweep all --epochs 5
    python -m skin_utils.sweep experiment --name ablation --preset ablation --seeds 0 1 2 --fixed '{"epochs": 4}'

Only the standard library and `skin_utils.config` load at import (``--help`` works before setup):
papermill, pandas and the metrics load inside the functions that need them.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import sys
import time
import traceback
from collections import Counter
from pathlib import Path
from unittest import mock

from skin_utils.config import (ExperimentConfig, TrainConfig, check_run_name, notebooks_dir, project_root, resolve,
                               slug, trained_tasks)
from skin_utils.runs import LATEST, Run, default_run_name, find_run

NOTEBOOKS = ("01_eda", "02_train", "03_evaluate", "04_inference", "05_experiments")
RUNNER_ENV = "SKIN_UTILS_RUNNER"  # set for the kernels the runner starts (02_train's Colab cell checks it)
TRAIN_OPTIONS = ("epochs", "time_budget", "image_size", "batch_size", "max_samples")  # `all` passes them to 02_train
RUNNER_OPTIONS = ("data_dir", *TRAIN_OPTIONS, "reports_dir", "run_name")  # `all`'s options: TrainConfig's fields
SPLITS = ("val", "test")
STATUS = "status.json"
# The multi-task ablation: each head alone, both at equal weight, and two other ratios.
PRESETS = {"ablation": [{"seg_weight": 1.0, "cls_weight": 0.0}, {"seg_weight": 0.0, "cls_weight": 1.0},
                        {"seg_weight": 1.0, "cls_weight": 1.0}, {"seg_weight": 1.0, "cls_weight": 0.3},
                        {"seg_weight": 0.3, "cls_weight": 1.0}]}


def execute(name: str, output: Path, params: dict, root: Path) -> None:
    """Execute ``notebooks/<name>.ipynb`` with papermill into ``output`` (kernel cwd: ``root``)."""
    import papermill

    output.parent.mkdir(parents=True, exist_ok=True)
    papermill.execute_notebook(str(notebooks_dir() / f"{name}.ipynb"), str(output), parameters=params, cwd=str(root),
                               kernel_name="python3", language="python", progress_bar=False)


# --------------------------------------------------------------------------------------- all notebooks
def notebook_params(options: dict, run_name: str) -> dict[str, dict]:
    """Each notebook's parameters: the options set (not None) where they apply, and the paths that tie them."""
    given = {k: v for k, v in options.items() if v is not None}
    reports = given.get("reports_dir", TrainConfig.reports_dir)
    data_dir = given.get("data_dir", TrainConfig.data_dir)
    ties = {"data_dir": data_dir, "split_path": str(Path(reports) / "split.csv"), "reports_dir": reports}
    fixed = {**ExperimentConfig().fixed, "data_dir": data_dir} if "data_dir" in given else None
    return {"01_eda": {**ties, **({"max_samples": given["max_samples"]} if "max_samples" in given else {})},
            "02_train": {**ties, **{k: v for k, v in given.items() if k in TRAIN_OPTIONS}, "run_name": run_name},
            "03_evaluate": {"reports_dir": reports, "run": run_name},  # 03 reads the data and split of the run
            "04_inference": {"reports_dir": reports, "run": run_name},
            "05_experiments": {"experiments_dir": str(Path(reports) / "experiments"),
                               **({"fixed": fixed} if fixed else {})}}


def run_all(options: dict, only=None) -> int:
    """Execute the notebooks (``only``: some of them) in order; 0 when all succeed."""
    check_run_name(options.get("run_name"))  # before anything runs: the one name 02, 03 and 04 use
    root, names = project_root(), only or NOTEBOOKS
    reports = resolve(options.get("reports_dir") or TrainConfig.reports_dir, root)
    run_name = options.get("run_name") or (
        default_run_name(TrainConfig.create({k: v for k, v in options.items() if v is not None}).to_dict())
        if "02_train" in names else find_run(LATEST, reports / "runs").name)
    plan = notebook_params(options, run_name)
    print(f"Data: {plan['02_train']['data_dir']}; run {reports / 'runs' / run_name}")
    with mock.patch.dict(os.environ, {RUNNER_ENV: "1"}):  # restored afterwards
        for name in names:
            folder = reports if name in ("01_eda", "05_experiments") else reports / "runs" / run_name
            out = folder / "notebooks" / f"{name}.ipynb"
            print(f"== {name} " + " ".join(f"{k}={v!r}" for k, v in plan[name].items()))
            t0 = time.perf_counter()
            try:
                execute(name, out, plan[name], root)
            except Exception as err:  # papermill.PapermillExecutionError and friends
                print(f"\n{name} failed: {err}\nThe executed notebook with the error is {out}.", file=sys.stderr)
                return 1
            print(f"   done in {time.perf_counter() - t0:.0f} s -> {out}")
    print(f"\nReport: {reports / 'REPORT.md'} (this run: {reports / 'runs' / run_name / 'REPORT.md'})")
    return 0


# --------------------------------------------------------------------------------------- experiments
def expand_grid(grid) -> list[dict]:
    """The cells of a grid: every combination of ``{param: [values]}``, or a list of dicts as it is."""
    if isinstance(grid, dict):
        for key, values in grid.items():
            if not isinstance(values, (list, tuple)) or not values:
                raise ValueError(f"grid[{key!r}]={values!r}: expected a non-empty list of values.")
        cells = [dict(zip(grid, combo)) for combo in itertools.product(*grid.values())]
    elif isinstance(grid, (list, tuple)) and grid and all(isinstance(c, dict) for c in grid):
        cells = [dict(c) for c in grid]
    else:
        raise ValueError(f"grid={grid!r}: expected a dict of parameter -> list of values, or a list of dicts.")
    if twice := sorted(n for n, count in Counter(map(cell_name, cells)).items() if count > 1):
        raise ValueError(f"grid={grid!r} gives the same cell more than once ({', '.join(twice)}): each cell must "
                         "differ from the others, or its runs would be one folder.")
    return cells


def cell_name(cell: dict) -> str:
    """``seg_weight=1,cls_weight=0``; floats short unless that loses digits (two values never share a folder)."""
    def text(v):
        return (f"{v:g}" if float(f"{v:g}") == v else repr(v)) if isinstance(v, float) else str(v)
    return slug(",".join(f"{k}={text(v)}" for k, v in cell.items())) if cell else "default"


def _run(folder: Path, cell: dict, seed: int) -> Run:
    return Run(folder / "runs" / f"{cell_name(cell)}_seed{seed}")


def reference_cell(reference: dict | None, cells: list[dict], fixed: dict | None = None) -> dict:
    """The cell the others are compared with, checked before any run starts; None: the first cell that trains both
    heads (with ``fixed``), so that the multi-task verdict compares it with the single-head cells, else the first."""
    if reference is None:
        return next((c for c in cells if len(tasks_of({**(fixed or {}), **c})) == 2), cells[0])
    if reference not in cells:
        raise ValueError(f"reference={reference!r} is not a cell of the grid, so nothing could be compared with "
                         f"it; the cells are {cells}. Pass one of them, or none (the first cell that trains both "
                         "heads is then the reference, else the first cell).")
    return reference


def tasks_of(params: dict) -> list[str]:
    """The heads a run with these 02_train parameters trains."""
    return trained_tasks(params.get("seg_weight", TrainConfig.seg_weight),
                         params.get("cls_weight", TrainConfig.cls_weight))


def _status(run: Run) -> dict:
    path = run.root / STATUS
    return json.loads(path.read_text()) if path.is_file() else {}


def config_differences(recorded: dict | None, wanted: dict) -> list[str]:
    """``job parameter: old -> new`` for each difference between what a run recorded and what is asked now."""
    if not recorded:
        return ["it recorded no parameters (made by an older skin_utils), so its results cannot be trusted to match"]
    out = []
    for job in sorted(set(recorded) | set(wanted)):
        old, new = recorded.get(job), wanted.get(job)
        if isinstance(old, dict) and isinstance(new, dict):
            out += [f"{job} {k}: {old.get(k, '<unset>')!r} -> {new.get(k, '<unset>')!r}"
                    for k in sorted(set(old) | set(new)) if old.get(k, "<unset>") != new.get(k, "<unset>")]
        elif old != new:
            out.append(f"{job}: {old!r} -> {new!r}")
    return out


def run_experiment(name: str, grid, seeds=(0,), fixed: dict | None = None, *, experiments_dir="reports/experiments",
                   eval_params: dict | None = None, root=None, executor=execute, progress: bool = True):
    """Train and evaluate every (cell, seed); return the status of each run (a DataFrame).

    ``fixed`` goes to every 02_train run, ``eval_params`` to every 03_evaluate run. A run records its
    parameters (``status.json``): a finished run is skipped, an unfinished one resumed, but only with
    the same parameters; when any existing run was made with others, nothing runs."""
    import pandas as pd
    from tqdm.auto import tqdm

    root = Path(root) if root is not None else project_root()
    fixed, eval_params = dict(fixed or {}), dict(eval_params or {})
    if clash := {"seed", "run_name", "reports_dir", "resume", "overwrite"} & set(fixed):
        raise ValueError(f"fixed sets {sorted(clash)}: the experiment sets these itself (seeds with `seeds`).")
    cells = expand_grid(grid)
    ExperimentConfig(grid=cells, fixed=fixed, eval_params=eval_params)  # every name checked, the nearest suggested
    folder = resolve(experiments_dir, root) / slug(name)
    # the experiment's own lesion-level split unless one is given: every run shares it (paired comparisons)
    fixed.setdefault("split_path", str(folder / "split.csv"))
    plan, conflicts = [], []
    for cell, seed in itertools.product(cells, map(int, seeds)):
        run = _run(folder, cell, seed)
        train = {**fixed, **cell, "seed": seed, "run_name": run.name, "reports_dir": str(folder)}
        config = json.loads(json.dumps({"train": train, "evaluate": eval_params, "splits": list(SPLITS)}, default=str))
        plan.append((cell, seed, run, train, config))
        recorded = _status(run)
        if (recorded or run.results()) and recorded.get("config") != config:
            conflicts.append(f"  {run.name}: " + "; ".join(config_differences(recorded.get("config"), config)))
    if conflicts:
        listed = "\n".join(conflicts[:10])
        raise ValueError(f"Experiment {name!r} in {folder} already has {len(conflicts)} run(s) made with other "
                         f"parameters than these, and its summary would show their numbers under the new ones:\n"
                         f"{listed}\nRun the new configuration under another experiment name, or delete that "
                         "folder to start again.")
    folder.mkdir(parents=True, exist_ok=True)
    meta = {"name": name, "grid": grid, "cells": cells, "seeds": list(seeds), "fixed": fixed,
            "eval_params": eval_params, "splits": list(SPLITS)}
    (folder / "experiment.json").write_text(json.dumps(meta, indent=2, default=str))
    statuses = []
    for cell, seed, run, train, config in tqdm(plan, desc=f"experiment {name}", disable=not progress):
        if _status(run).get("status") == "finished":
            statuses.append((run.name, "finished", True, 0.0, None))
            continue
        t0, record = time.perf_counter(), {"config": config, "cell": cell, "seed": seed}
        run.root.mkdir(parents=True, exist_ok=True)
        (run.root / STATUS).write_text(json.dumps({"status": "running", **record}, indent=2, default=str))
        try:
            executor("02_train", run.notebooks / "02_train.ipynb", {**train, "resume": run.last.exists()}, root)
            for split in SPLITS:
                executor("03_evaluate", run.notebooks / f"03_evaluate_{split}.ipynb",
                         {**eval_params, "run": str(run.root), "split": split}, root)
            status, error, trace = "finished", None, None
        except Exception as err:  # papermill.PapermillExecutionError and anything else: record, go on
            lines = str(err).strip().splitlines()
            status, error = "failed", f"{type(err).__name__}: {lines[-1] if lines else ''}"
            trace = traceback.format_exc(limit=3)
            print(f"run {run.name} failed: {error}\n  (the executed notebooks are in {run.notebooks})", file=sys.stderr)
        seconds = time.perf_counter() - t0
        (run.root / STATUS).write_text(json.dumps({"status": status, "seconds": seconds, "error": error, **record,
                                                   "traceback": trace}, indent=2, default=str))
        statuses.append((run.name, status, False, seconds, error))
    return pd.DataFrame(statuses, columns=["run", "status", "skipped", "seconds", "error"])


def _meta(name: str, experiments_dir, root) -> tuple[Path, dict]:
    folder = resolve(experiments_dir, root) / slug(name)
    return folder, json.loads((folder / "experiment.json").read_text())


def gather(name: str, experiments_dir="reports/experiments", root=None, write: bool = True):
    """One row per run, split and metric of a trained head, also written to ``<experiments_dir>/<name>.csv``."""
    import pandas as pd

    from skin_utils.metrics import HEADLINE_METRICS, SEGMENTATION_KEYS

    folder, meta = _meta(name, experiments_dir, root)
    keys = sorted({k for cell in meta["cells"] for k in cell})
    nan, rows = float("nan"), []
    for cell, seed in itertools.product(meta["cells"], meta["seeds"]):
        run = _run(folder, cell, seed)
        status = _status(run).get("status", "missing")
        base = {"experiment": name, "run": run.name, **{k: cell.get(k) for k in keys}, "seed": seed}
        if status != "finished":
            rows.append({**base, "split": None, "metric": None, "value": nan, "ci_low": nan, "ci_high": nan,
                         "status": status})
            continue
        for split in meta["splits"]:
            result = json.loads(run.evaluation(split).read_text())
            trained = result.get("tasks", ["segmentation", "classification"])  # an untrained head's metrics: none
            for metric in HEADLINE_METRICS:
                task = "segmentation" if metric in SEGMENTATION_KEYS else "classification"
                if task in trained and result.get(metric) is not None:
                    lo, hi = result.get("ci95", {}).get(metric, [nan, nan])
                    rows.append({**base, "split": split, "metric": metric, "value": result[metric],
                                 "ci_low": lo, "ci_high": hi, "status": status})
    table = pd.DataFrame(rows)
    if write:
        table.to_csv(folder.parent / f"{slug(name)}.csv", index=False)
    return table


def compare(name: str, reference: dict, split: str = "val", experiments_dir="reports/experiments", root=None,
            n_resamples: int = 1000):
    """Every other cell against ``reference`` on ``split``: the seed-averaged difference with a paired
    lesion-level bootstrap interval, over the seeds and heads both have. Empty without a finished reference."""
    import pandas as pd

    from skin_utils.labels import CLASS_NAMES
    from skin_utils.metrics import paired_bootstrap, read_per_image

    folder, meta = _meta(name, experiments_dir, root)

    def tables(cell):  # seed -> per-image table, for the finished runs of the cell
        runs = {s: _run(folder, cell, s) for s in meta["seeds"]}
        return {s: read_per_image(r.per_image(split)) for s, r in runs.items()
                if _status(r).get("status") == "finished"}

    def heads(cell):  # a head weight may be fixed rather than in the grid: --fixed '{"cls_weight": 0}'
        return tasks_of({**meta["fixed"], **cell})

    ref = tables(reference)
    frames = []
    for cell in (c for c in meta["cells"] if c != reference and ref):
        other = tables(cell)
        seeds = sorted(set(other) & set(ref))
        tasks = [t for t in heads(cell) if t in heads(reference)]
        if seeds and tasks:
            diff = paired_bootstrap([ref[s] for s in seeds], [other[s] for s in seeds], CLASS_NAMES,
                                    n_resamples=n_resamples, tasks=tasks)
            frames.append(diff.reset_index().assign(cell=cell_name(cell), reference=cell_name(reference),
                                                    cell_tasks=",".join(heads(cell)),
                                                    reference_tasks=",".join(heads(reference)), split=split,
                                                    seeds=len(seeds), resamples=n_resamples))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def multitask_verdict(diff) -> list[str]:
    """Does joint training help? ``diff``: `compare`'s table; its rows that pair a cell training both heads with
    one training a single head (either may be the reference) say help or harm when the 95% interval of
    joint - single-head excludes 0, else no detectable difference. One sentence when no row pairs them."""
    joint = "segmentation,classification"  # `cell_tasks` of a cell that trains both heads
    pairs = diff[(diff["cell_tasks"] == joint) != (diff["reference_tasks"] == joint)] if not diff.empty else diff
    if pairs.empty:
        return ["Multi-task: no verdict, as no cell that trains both heads is compared here with one that trains a "
                "single head (a loss weight of 0)."]
    lines = []
    headline = {"segmentation": ("dice", "thresholded_jaccard"), "classification": ("balanced_accuracy", "macro_auc")}
    for task, metrics in headline.items():
        single = (pairs["cell_tasks"] == task) | (pairs["reference_tasks"] == task)  # the other side: joint
        rows = pairs[pairs["metric"].isin(metrics) & single]
        if rows.empty:
            lines.append(f"{task.capitalize()}: no {task}-only run compared with a joint one, so no verdict.")
            continue
        parts, verdicts = [], set()
        for _, r in rows.iterrows():
            if r["cell_tasks"] == joint:  # cell - reference is joint - single
                d, lo, hi, names = r["difference"], r["ci_low"], r["ci_high"], (r["cell"], r["reference"])
            else:  # joint - single = -(single - joint); 0.0 - 0.0: no "-0.000"
                d, lo, hi = 0.0 - r["difference"], 0.0 - r["ci_high"], 0.0 - r["ci_low"]
                names = (r["reference"], r["cell"])
            cells = f" ({names[0]} − {names[1]})" if rows["cell"].nunique() > 1 else ""  # which pair, when several
            if math.isnan(lo) or math.isnan(hi):
                verdicts.add("no interval")
                ci = "no interval (n_bootstrap=0)" if r.get("resamples") == 0 else "no interval"
            else:
                verdicts.add("helps" if lo > 0 else "hurts" if hi < 0 else "unclear")
                ci = f"95% CI {lo:+.3f} to {hi:+.3f}"
            parts.append(f"{r['metric']} joint − {task} only{cells} = {d:+.3f} ({ci}, {int(r['seeds'])} seed(s), "
                         f"{r['split']} split)")
        word = {frozenset({"helps"}): "joint training **helps**", frozenset({"hurts"}): "joint training **hurts**",
                frozenset({"unclear"}): "**no detectable difference** between joint and single-task training",
                frozenset({"no interval"}): "**no verdict** without a bootstrap interval"
                }.get(frozenset(verdicts), "**mixed** evidence")
        lines.append(f"{task.capitalize()}: {word}: " + "; ".join(parts) + ".")
    return lines


def summary_markdown(name: str, reference: dict | None = None, experiments_dir="reports/experiments", root=None,
                     n_resamples: int = 1000) -> str:
    """The experiment in Markdown: per cell and split, each metric's mean ± sd over seeds [mean CI]; with
    a ``reference``, the paired differences and the multi-task verdict."""
    from skin_utils.metrics import HEADLINE_METRICS

    _, meta = _meta(name, experiments_dir, root)
    table = gather(name, experiments_dir, root, write=False)
    done = table[table["status"] == "finished"]
    failed = table.loc[table["status"] != "finished", "run"].nunique()
    lines = [f"Experiment `{name}`: {len(meta['cells'])} cell(s) × seeds {meta['seeds']}; fixed {meta['fixed']}; "
             f"evaluation {meta['eval_params']}. {done['run'].nunique()} run(s) finished"
             + (f", {failed} not" if failed else "") + ". Values: mean ± sd over seeds [mean of the runs' lesion-level "
             "95% CIs]; n/a: head not trained.", ""]
    shown = [m for m in HEADLINE_METRICS if m in set(done["metric"])]
    stats = done.assign(cell=done["run"].str.replace(r"_seed\d+$", "", regex=True)).groupby(
        ["split", "cell", "metric"]).agg(mean=("value", "mean"), sd=("value", "std"), n=("value", "count"),
                                         lo=("ci_low", "mean"), hi=("ci_high", "mean"))

    def entry(split, cell, metric):
        if (split, cell, metric) not in stats.index:
            return "n/a"
        s = stats.loc[(split, cell, metric)]
        return (f"{s['mean']:.3f}" + (f" ± {s['sd']:.3f}" if s["n"] > 1 else "")
                + (f" [{s['lo']:.3f}–{s['hi']:.3f}]" if s[["lo", "hi"]].notna().all() else ""))

    for split in meta["splits"]:
        lines += [f"**{split} split**", "", "| cell | " + " | ".join(shown) + " |", "|---" * (len(shown) + 1) + "|"]
        lines += [f"| {cell} | " + " | ".join(entry(split, cell, m) for m in shown) + " |"
                  for cell in map(cell_name, meta["cells"])]
        lines.append("")
    for split in meta["splits"] if reference is not None else ():
        diff = compare(name, reference, split, experiments_dir, root, n_resamples=n_resamples)
        if diff.empty:
            continue
        lines += [f"**Paired differences against `{cell_name(reference)}`, {split} split** (seed-averaged, "
                  f"lesion-level paired bootstrap, {n_resamples} resamples)", "",
                  "| cell | metric | cell − reference | 95% CI | excludes 0 |", "|---|---|---|---|---|"]
        lines += [f"| {r['cell']} | {r['metric']} | {r['difference']:+.3f} | "
                  + (f"{r['ci_low']:+.3f} to {r['ci_high']:+.3f}" if r[["ci_low", "ci_high"]].notna().all()
                     else f"no interval ({n_resamples} resamples)")
                  + f" | {'yes' if r['excludes_zero'] else 'no'} |" for _, r in diff.iterrows()]
        lines += ["", *[f"- {v}" for v in multitask_verdict(diff)], ""]
    return "\n".join(lines)


# --------------------------------------------------------------------------------------- command line
def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m skin_utils.sweep", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    a = sub.add_parser("all", help="execute notebooks 01-05 in order (scripts/run_all.sh)",
                       parents=[TrainConfig.parser(only=RUNNER_OPTIONS, add_help=False)])
    a.set_defaults(**dict.fromkeys(RUNNER_OPTIONS))  # an option not given: each notebook keeps its own default
    a.add_argument("--only", nargs="+", choices=NOTEBOOKS, help="run only these notebooks")
    e = sub.add_parser("experiment", help="a grid of 02_train parameters over seeds, scored by 03_evaluate")
    e.add_argument("--name", required=True, help="experiment name (folder under --experiments-dir)")
    grid = e.add_mutually_exclusive_group(required=True)
    grid.add_argument("--grid", type=json.loads, help='JSON: {"param": [values]} or [{"param": value}, ...]')
    grid.add_argument("--preset", choices=sorted(PRESETS), help="a built-in grid (ablation: the multi-task ablation)")
    e.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    e.add_argument("--fixed", type=json.loads, default={}, help="JSON: parameters every 02_train run gets")
    e.add_argument("--eval", type=json.loads, default={}, help="JSON: parameters every 03_evaluate run gets")
    e.add_argument("--reference", type=json.loads, default=None,
                   help="JSON: the cell the others are compared with; default: the first cell that trains both heads "
                        "(the joint cell of the ablation preset), else the first cell")
    e.add_argument("--experiments-dir", default="reports/experiments")
    e.add_argument("--markdown", default=None, help="also write the summary (tables, paired differences) to this file")
    return p


def main(argv=None) -> int:
    args = parser().parse_args(argv)
    if args.command == "all":
        return run_all({k: getattr(args, k) for k in RUNNER_OPTIONS}, args.only)
    cells = expand_grid(PRESETS[args.preset] if args.preset else args.grid)
    reference = reference_cell(args.reference, cells, args.fixed)  # checked before any run
    status = run_experiment(args.name, cells, args.seeds, args.fixed, experiments_dir=args.experiments_dir,
                            eval_params=args.eval)
    print(status.to_string(index=False))
    table = gather(args.name, args.experiments_dir)
    if not table.empty and (table["status"] == "finished").any():
        markdown = summary_markdown(args.name, reference, args.experiments_dir)
        print(markdown)
        if args.markdown:
            Path(args.markdown).parent.mkdir(parents=True, exist_ok=True)
            Path(args.markdown).write_text(markdown + "\n")
    return 0 if (status["status"] == "finished").all() else 1


if __name__ == "__main__":
    sys.exit(main())
