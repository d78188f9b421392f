"""Run folders, where no result is ever overwritten silently: ``<runs_dir>/<run_name>/`` holds
``run.json`` (parameters, start time), ``checkpoints/``, ``metrics/``, ``figures/``, ``sections/``,
``REPORT.md`` and ``notebooks/``; ``<runs_dir>/LATEST`` names the run "latest" resolves to.
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

    name = property(lambda self: self.root.name)
    checkpoints = property(lambda self: self.root / "checkpoints")
    best = property(lambda self: self.checkpoints / "best.pt")
    last = property(lambda self: self.checkpoints / "last.pt")
    metrics = property(lambda self: self.root / "metrics")
    figures = property(lambda self: self.root / "figures")
    notebooks = property(lambda self: self.root / "notebooks")

    def evaluation(self, split: str = "test") -> Path:
        """``metrics/evaluate.json`` for the test split, ``metrics/evaluate_<split>.json`` otherwise."""
        return self.metrics / ("evaluate.json" if split == "test" else f"evaluate_{split}.json")

    def per_image(self, split: str = "test") -> Path:
        return self.evaluation(split).with_name(self.evaluation(split).stem + "_per_image.csv")

    def results(self) -> list[str]:
        """The result files present (relative paths); empty for a fresh folder."""
        return [f for f in RESULT_FILES if (self.root / f).exists()]


def default_run_name(params: dict, now: _dt.datetime | None = None) -> str:
    """``20261126-153012_128px_e5_seg1-cls1_seed0``: when, and the knobs (TrainConfig's) that tell runs apart."""
    length = f"e{params['epochs']}" if params.get("time_budget") is None else f"{params['time_budget']}min"
    return slug(f"{now or _dt.datetime.now():%Y%m%d-%H%M%S}_{params['image_size']}px_{length}_"
                f"seg{params['seg_weight']:g}-cls{params['cls_weight']:g}_seed{params['seed']}")


def start_run(runs_dir, run_name: str | None, params: dict, *, resume: bool = False, overwrite: bool = False) -> Run:
    """Create (or reopen) ``runs_dir/run_name`` for training. A folder with results is reused only with
    ``resume`` (from its ``last.pt``; ``run.json`` keeps the first start's time and parameters, which
    `engine.fit` holds the resumed run to) or ``overwrite`` (its results deleted first), else `RunExistsError`."""
    run = Run(Path(runs_dir) / (check_run_name(run_name) or default_run_name(params)))
    if run.root.resolve().parent != Path(runs_dir).resolve():  # a symbolic link out of the runs folder
        raise ValueError(f"run folder {run.root} is not directly inside {runs_dir}: refusing to use it.")
    found = run.results()
    if found and not (resume or overwrite):
        raise RunExistsError(f"Run folder {run.root} already holds results ({', '.join(found)}). Pass resume=True to "
                             "continue it, overwrite=True to replace it, or choose another run_name.")
    if found and resume and not run.last.exists():
        raise FileNotFoundError(f"resume=True but {run.last} is missing; use overwrite=True to start {run.root} again.")
    if found and overwrite:
        for child in run.root.iterdir():
            if child.name not in KEEP_ON_OVERWRITE:
                shutil.rmtree(child) if child.is_dir() else child.unlink()
    for folder in (run.checkpoints, run.metrics, run.figures, run.notebooks):
        folder.mkdir(parents=True, exist_ok=True)
    resumed, record = bool(resume and run.last.exists()), run.root / "run.json"
    first = json.loads(record.read_text()) if resumed and record.is_file() else {}  # kept: when and how it started
    info = {"run_name": run.name, "started": first.get("started", _dt.datetime.now().isoformat(timespec="seconds")),
            "resumed": resumed, "params": first.get("params", params)}
    record.write_text(json.dumps(info, indent=2, default=str))
    return run


def set_latest(runs_dir, run: Run) -> None:
    """Point ``runs_dir/LATEST`` at ``run`` (what "latest" resolves to)."""
    (Path(runs_dir) / "LATEST").write_text(run.name + "\n")


def find_run(run, runs_dir) -> Run:
    """A run from a name under ``runs_dir``, a folder path, or "latest"."""
    runs_dir = Path(runs_dir)
    if str(run) == LATEST:
        if not (runs_dir / "LATEST").is_file():
            raise FileNotFoundError(f"No run yet: {runs_dir / 'LATEST'} does not exist. Train one with "
                                    "notebooks/02_train.ipynb, or pass run=<name> or checkpoint=<path>.")
        run = (runs_dir / "LATEST").read_text().strip()
    for folder in [Path(run)] if Path(run).is_absolute() else [runs_dir / str(run), Path(run)]:
        if (folder / "checkpoints").is_dir() or (folder / "run.json").is_file():
            return Run(folder)
    available = sorted(p.name for p in runs_dir.iterdir() if p.is_dir()) if runs_dir.is_dir() else []
    raise FileNotFoundError(f"No run folder {run!r} under {runs_dir}. Runs there: {available or 'none'}.")


def run_of_checkpoint(checkpoint) -> Run | None:
    """The run folder a checkpoint lives in (``<run>/checkpoints/best.pt``), or None."""
    folder = Path(checkpoint).resolve().parent.parent
    return Run(folder) if (folder / "run.json").is_file() else None


def run_to_score(run, checkpoint, runs_dir) -> tuple[Run, Path]:
    """The run folder and checkpoint notebooks 03 and 04 score: ``checkpoint`` when given (its run folder,
    or ``<runs_dir>/checkpoint-<name>/`` for a loose file), else ``run``'s best.pt."""
    if checkpoint:
        path = Path(checkpoint)
        return run_of_checkpoint(path) or Run(Path(runs_dir) / slug(f"checkpoint-{path.stem}")), path
    found = find_run(run, runs_dir)
    return found, found.best
