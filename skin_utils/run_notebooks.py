"""Run the notebooks end to end with papermill: ``python -m skin_utils.run_notebooks``.

Every setting not given here keeps the default in the notebook's own ``parameters`` cell (shown
below, read from the notebooks); the runner passes only the options you give, plus the paths that
tie the notebooks together (one data folder, one split file, one reports folder, and the run that
02_train trains and 03/04 score). 02_train writes its run into ``<reports_dir>/runs/<run_name>/``
(a new name from the date and the main settings unless ``--run-name`` is given); the executed
notebooks go to that run's ``notebooks/`` (01_eda's to ``<reports_dir>/notebooks/``), and
``<reports_dir>/REPORT.md`` shows the data and the latest run. With no data set in ``data/`` everything runs on
the synthetic demo. Relative paths are taken from the repository root (or ``$SKIN_UTILS_ROOT``).
"""

from __future__ import annotations

import argparse
import ast
import os
import sys
import time
from pathlib import Path

from skin_utils.nb.paths import notebooks_dir, project_root, resolve

NOTEBOOKS = ("01_eda", "02_train", "03_evaluate", "04_inference", "05_experiments")
RUNNER_ENV = "SKIN_UTILS_RUNNER"  # set for the kernels this runner starts (02_train's Colab cell checks it)
# option -> (notebook whose default it shows, parameter); each is passed to every notebook that has it
OPTIONS = {
    "data_dir": ("02_train", "data_dir"),
    "epochs": ("02_train", "epochs"),
    "time_budget": ("02_train", "time_budget"),
    "image_size": ("02_train", "image_size"),
    "batch_size": ("02_train", "batch_size"),
    "max_samples": ("02_train", "max_samples"),
    "reports_dir": ("02_train", "reports_dir"),
    "run_name": ("02_train", "run_name"),
}
NOT_TIED = {"03_evaluate": ("data_dir", "split_path")}  # 03 reads the data and split of the run it scores
TRAIN_ONLY = {"epochs", "time_budget", "image_size", "batch_size"}  # 03/04 take image size and batch size of their own; 05's runs their own budget


def notebook_defaults(name: str) -> dict:
    """The parameters of notebook ``name`` with their default values: the assignments of the
    ``parameters`` cell of its ``.py`` pair, read without papermill (or anything else beyond the
    standard library), so that ``--help`` works before anything is installed."""
    path = notebooks_dir() / f"{name}.py"
    lines = path.read_text(encoding="utf-8").splitlines()
    start = next((i for i, line in enumerate(lines) if line.startswith("# %%") and '"parameters"' in line), None)
    if start is None:
        raise ValueError(f"{path} has no cell tagged parameters.")
    end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("# %%")), len(lines))
    out = {}
    for node in ast.parse("\n".join(lines[start + 1:end])).body:
        target = node.target if isinstance(node, ast.AnnAssign) else (
            node.targets[0] if isinstance(node, ast.Assign) and len(node.targets) == 1 else None)
        if not isinstance(target, ast.Name):
            continue
        try:
            out[target.id] = ast.literal_eval(node.value)
        except ValueError as err:
            raise ValueError(f"{path}: the default of parameter {target.id} is not a Python literal; the runner "
                             "can only pass literals.") from err
    return out


def notebook_params(options: dict, defaults: dict[str, dict]) -> dict[str, dict]:
    """What each notebook is given: the options the user set (``None`` = not set), to each
    notebook that has the parameter, and the paths that tie the notebooks together."""
    given = {k: v for k, v in options.items() if v is not None}
    reports = given.get("reports_dir", defaults["02_train"]["reports_dir"])
    data_dir = given.get("data_dir", defaults["02_train"]["data_dir"])
    ties = {"reports_dir": str(reports), "split_path": str(Path(reports) / "split.csv"),
            "data_dir": str(data_dir)}
    if given.get("run_name"):
        ties.update(run_name=given["run_name"], run=given["run_name"])
    # 05_experiments: its small default experiment beside the runs, on the data given
    ties["experiments_dir"] = str(Path(reports) / "experiments")
    if "data_dir" in given and "05_experiments" in defaults:
        ties["fixed"] = {**defaults["05_experiments"]["fixed"], "data_dir": str(data_dir)}
    out = {}
    for name, params in defaults.items():
        chosen = {k: v for k, v in given.items() if k in params and (name == "02_train" or k not in TRAIN_ONLY)}
        tied = {k: v for k, v in ties.items() if k in params and k not in NOT_TIED.get(name, ())}
        out[name] = {**tied, **chosen}
    return out


def run_notebook(name: str, params: dict, root: Path, out_dir: Path, log_output: bool = False) -> Path:
    import papermill

    out = out_dir / f"{name}.ipynb"
    papermill.execute_notebook(str(notebooks_dir() / f"{name}.ipynb"), str(out), parameters=params,
                               cwd=str(root), kernel_name="python3", language="python",
                               log_output=log_output, progress_bar=True)
    return out


def parser(defaults: dict[str, dict]) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m skin_utils.run_notebooks", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)

    def default(option):
        name, param = OPTIONS[option]
        return f"(notebook default: {defaults[name][param]!r})"

    p.add_argument("--data-dir", help=f"a HAM10000 layout; 'data' falls back to the synthetic demo {default('data_dir')}")
    p.add_argument("--epochs", type=int, help=f"training epochs {default('epochs')}")
    p.add_argument("--time-budget", type=float, metavar="MINUTES",
                   help="minutes for training, validation and calibration; the epochs are fitted to it "
                        f"(instead of --epochs) {default('time_budget')}")
    p.add_argument("--image-size", type=int, help=f"training size in pixels {default('image_size')}")
    p.add_argument("--batch-size", type=int, help=f"training batch size {default('batch_size')}")
    p.add_argument("--max-samples", type=int, help=f"use at most this many images {default('max_samples')}")
    p.add_argument("--reports-dir", help=f"figures, metrics, REPORT.md, executed notebooks {default('reports_dir')}")
    p.add_argument("--run-name", help="the run's folder under <reports-dir>/runs, trained by 02_train and scored by "
                   "03/04 (default: a new name from the date and the main settings; with --only 03_evaluate "
                   "04_inference, the run to score)")
    p.add_argument("--only", nargs="+", choices=NOTEBOOKS, help="run only these notebooks")
    p.add_argument("--log-output", action="store_true", help="stream the notebooks' output")
    return p


def main(argv=None) -> int:
    defaults = {name: notebook_defaults(name) for name in NOTEBOOKS}
    args = parser(defaults).parse_args(argv)
    options = {k: getattr(args, k) for k in OPTIONS}
    from skin_utils.runs import check_run_name

    check_run_name(options["run_name"])  # before anything runs: the one name that 02, 03 and 04 use

    from skin_utils.data import resolve_data_dir
    from skin_utils.layout import is_synthetic
    from skin_utils.runs import LATEST, default_run_name, find_run

    root = project_root()
    names = args.only or NOTEBOOKS
    if options["run_name"] is None:
        train = {**defaults["02_train"], **notebook_params(options, defaults)["02_train"]}
        if "02_train" in names:
            options["run_name"] = default_run_name(train)
        else:  # score an existing run: the latest one
            options["run_name"] = find_run(LATEST, resolve(train["reports_dir"], root) / "runs").name
    plan = notebook_params(options, defaults)
    train = {**defaults["02_train"], **plan["02_train"]}
    folder = resolve_data_dir(train["data_dir"], root=root)
    reports = resolve(train["reports_dir"], root)
    run_dir = reports / "runs" / options["run_name"]
    length = (f"{train['epochs']} epochs" if train.get("time_budget") is None
              else f"a {train['time_budget']:g}-minute time budget")
    print(f"Data: {folder} ({'synthetic demo' if is_synthetic(folder) else 'real'}); {length} at "
          f"{train['image_size']} px, batch {train['batch_size']}; run {run_dir}")
    old = os.environ.get(RUNNER_ENV)
    os.environ[RUNNER_ENV] = "1"
    try:
        for name in names:
            out_dir = (reports if name in ("01_eda", "05_experiments") else run_dir) / "notebooks"
            out_dir.mkdir(parents=True, exist_ok=True)
            t0 = time.perf_counter()
            print(f"== {name} " + " ".join(f"{k}={v!r}" for k, v in plan[name].items()))
            try:
                run_notebook(name, plan[name], root, out_dir, args.log_output)
            except Exception as err:  # papermill.PapermillExecutionError and friends
                print(f"\n{name} failed: {err}\nThe executed notebook with the error is "
                      f"{out_dir / (name + '.ipynb')}.", file=sys.stderr)
                return 1
            print(f"   done in {time.perf_counter() - t0:.0f} s -> {out_dir / (name + '.ipynb')}")
    finally:
        if old is None:
            os.environ.pop(RUNNER_ENV, None)
        else:
            os.environ[RUNNER_ENV] = old
    print(f"\nReport: {reports / 'REPORT.md'} (this run: {run_dir / 'REPORT.md'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
