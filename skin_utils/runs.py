"""Run folders: every training run keeps its own checkpoints, metrics, figures and executed
notebooks, and no result is ever overwritten silently.

A run folder (``<runs_dir>/<run_name>/``, by default under ``reports/runs/``) holds::

    run.json                    parameters and start time of the run
    checkpoints/best.pt, last.pt
    metrics/train.json, evaluate.json (test split), evaluate_<split>.json (other splits),
            evaluate_per_image.csv, evaluate_<split>_per_image.csv
    figures/*.png, sections/*.md, REPORT.md, notebooks/*.ipynb

``<runs_dir>/LATEST`` names the run that the reports show (the last one trained, or the one
set with `set_latest`). Notebooks 03 and 04 take a run (a name, a folder or "latest") or a
checkpoint path.
"""

from __future__ import annotations

import datetime as _dt
import json
import shutil
from dataclasses import dataclass
from pathlib import Path

from skin_utils.config import check_run_name, slug

LATEST = "latest"
RESULT_FILES = ("checkpoints/last.pt", "checkpoints/best.pt", "metrics/train.json")
KEEP_ON_OVERWRITE = ("notebooks",)  # papermill may be writing the executed notebook there right now


class RunExistsError(FileExistsError):
    """A run folder that already holds results, started again without resume or overwrite."""


@dataclass(frozen=True)
class Run:
    """The paths of one run folder."""

    root: Path

    @property
    def name(self) -> str:
        return self.root.name

    @property
    def checkpoints(self) -> Path:
        return self.root / "checkpoints"

    @property
    def best(self) -> Path:
        return self.checkpoints / "best.pt"

    @property
    def last(self) -> Path:
        return self.checkpoints / "last.pt"

    @property
    def metrics(self) -> Path:
        return self.root / "metrics"

    @property
    def figures(self) -> Path:
        return self.root / "figures"

    @property
    def notebooks(self) -> Path:
        return self.root / "notebooks"

    def evaluation(self, split: str = "test") -> Path:
        """``metrics/evaluate.json`` for the test split, ``metrics/evaluate_<split>.json`` otherwise."""
        return self.metrics / ("evaluate.json" if split == "test" else f"evaluate_{split}.json")

    def per_image(self, split: str = "test") -> Path:
        return self.evaluation(split).with_name(self.evaluation(split).stem + "_per_image.csv")

    def results(self) -> list[str]:
        """The result files present (relative paths); empty for a fresh folder."""
        return [f for f in RESULT_FILES if (self.root / f).exists()]


def default_run_name(params: dict, now: _dt.datetime | None = None) -> str:
    """``20261126-153012_128px_e5_seg1-cls1_seed0``: when, and the knobs that tell runs apart."""
    now = now or _dt.datetime.now()
    parts = [now.strftime("%Y%m%d-%H%M%S")]
    if "image_size" in params:
        parts.append(f"{params['image_size']}px")
    if params.get("time_budget") is not None:
        parts.append(f"{params['time_budget']}min")
    elif "epochs" in params:
        parts.append(f"e{params['epochs']}")
    if "seg_weight" in params and "cls_weight" in params:
        parts.append(f"seg{params['seg_weight']:g}-cls{params['cls_weight']:g}")
    if "seed" in params:
        parts.append(f"seed{params['seed']}")
    return slug("_".join(parts))


def start_run(runs_dir, run_name: str | None, params: dict, *, resume: bool = False,
              overwrite: bool = False) -> Run:
    """Create (or reopen) the run folder ``runs_dir/run_name`` for training.

    A folder that already holds results is only reused with ``resume=True`` (continue from its
    ``last.pt``) or ``overwrite=True`` (its results are deleted first); otherwise
    `RunExistsError` says which files are there and what to do."""
    if resume and overwrite:
        raise ValueError("resume=True and overwrite=True contradict each other: choose one.")
    run = Run(Path(runs_dir) / (check_run_name(run_name) or default_run_name(params)))
    if run.root.resolve().parent != Path(runs_dir).resolve():
        raise ValueError(f"run folder {run.root} is not directly inside {runs_dir}: refusing to use it.")
    found = run.results()
    if found and not (resume or overwrite):
        raise RunExistsError(
            f"Run folder {run.root} already holds results ({', '.join(found)}). Pass resume=True to "
            "continue it, overwrite=True to replace it, or choose another run_name.")
    if found and overwrite:
        for child in run.root.iterdir():
            if child.name not in KEEP_ON_OVERWRITE:
                shutil.rmtree(child) if child.is_dir() else child.unlink()
    if resume and not run.last.exists():
        if found:
            raise FileNotFoundError(f"resume=True but {run.last} is missing; use overwrite=True to start {run.root} again.")
    for folder in (run.checkpoints, run.metrics, run.figures, run.notebooks):
        folder.mkdir(parents=True, exist_ok=True)
    info = {"run_name": run.name, "started": _dt.datetime.now().isoformat(timespec="seconds"),
            "resumed": bool(resume and run.last.exists()), "params": params}
    (run.root / "run.json").write_text(json.dumps(info, indent=2, default=str))
    return run


def set_latest(runs_dir, run: Run | str | Path) -> Path:
    """Point ``runs_dir/LATEST`` at ``run`` (what "latest" resolves to)."""
    name = run.name if isinstance(run, Run) else Path(run).name
    path = Path(runs_dir) / "LATEST"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(name + "\n")
    return path


def find_run(run, runs_dir) -> Run:
    """A run from a name under ``runs_dir``, a folder path, or "latest"."""
    runs_dir = Path(runs_dir)
    if str(run) == LATEST:
        pointer = runs_dir / "LATEST"
        if not pointer.is_file():
            raise FileNotFoundError(
                f"No run yet: {pointer} does not exist. Train one with notebooks/02_train.ipynb, "
                "or pass run=<name> or checkpoint=<path>.")
        run = pointer.read_text().strip()
    candidates = [Path(run)] if Path(run).is_absolute() else [runs_dir / str(run), Path(run)]
    for folder in candidates:
        if (folder / "checkpoints").is_dir() or (folder / "run.json").is_file():
            return Run(folder)
    available = sorted(p.name for p in runs_dir.iterdir() if p.is_dir()) if runs_dir.is_dir() else []
    raise FileNotFoundError(f"No run folder {run!r} under {runs_dir}. Runs there: {available or 'none'}.")


def run_of_checkpoint(checkpoint) -> Run | None:
    """The run folder a checkpoint lives in (``<run>/checkpoints/best.pt``), or None."""
    folder = Path(checkpoint).resolve().parent.parent
    return Run(folder) if (folder / "run.json").is_file() else None


def run_to_score(run, checkpoint, runs_dir) -> tuple[Run, Path]:
    """What notebooks 03 and 04 score, and where their results go: ``checkpoint`` when given (its
    own run folder, or ``<runs_dir>/checkpoint-<name>/`` for a loose file), else the ``best.pt``
    of ``run`` (a name under ``runs_dir``, a folder, or "latest")."""
    if checkpoint:
        path = Path(checkpoint)
        return run_of_checkpoint(path) or Run(Path(runs_dir) / slug(f"checkpoint-{path.stem}")), path
    found = find_run(run, runs_dir)
    return found, found.best
