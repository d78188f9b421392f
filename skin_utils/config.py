"""Every knob, declared once: one dataclass per job, and the paths every job resolves.

A field carries its default, its meaning (the comment after it, which ``--help`` reads) and its check
(its type and its entry in ``RULES``); a misspelt name stops with the nearest valid one. Relative paths
are taken from the repository root or ``$SKIN_UTILS_ROOT``, whatever the working directory.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import difflib
import inspect
import json
import os
import re
import typing
from typing import Optional
from numbers import Integral, Real
from pathlib import Path

from skin_utils.labels import parse_label_map

ROOT_ENV = "SKIN_UTILS_ROOT"
KERNEL_NAMES = frozenset({"In", "Out", "get_ipython", "exit", "quit", "open"})  # IPython's own


class ConfigError(ValueError):
    """A parameter with a wrong name, type or value; the message names it."""


# --------------------------------------------------------------------------------------- paths
def project_root(start: Path | None = None) -> Path:
    """``$SKIN_UTILS_ROOT`` when set (and no ``start``), else the nearest folder at or above ``start`` (the
    working directory) holding ``skin_utils/`` and ``notebooks/``, else ``start`` itself."""
    override = os.environ.get(ROOT_ENV, "").strip()
    if start is None and override:
        root = Path(override).expanduser()
        if not root.is_dir():
            raise FileNotFoundError(f"{ROOT_ENV}={override!r} is not a folder: create it, or unset {ROOT_ENV}.")
        return root.resolve()
    start = Path.cwd() if start is None else Path(start)
    return next((f for f in (start, *start.parents) if (f / "skin_utils").is_dir() and (f / "notebooks").is_dir()),
                start)


def resolve(path, root: Path | None = None) -> Path:
    """``path`` itself when absolute (``~`` expanded), else relative to ``root`` (default: `project_root`)."""
    path = Path(path).expanduser()
    return path if path.is_absolute() else (root or project_root()) / path


def notebooks_dir() -> Path:
    """The ``notebooks/`` beside the installed package (an editable install of the repository)."""
    folder = Path(__file__).resolve().parent.parent / "notebooks"
    if not folder.is_dir():
        raise FileNotFoundError(f"No notebooks/ beside skin_utils ({folder}): clone the repository and "
                                "`pip install -e .` in it.")
    return folder


def slug(text: str) -> str:
    """A file-name-safe version of ``text``: letters, digits and . _ - = ,."""
    return re.sub(r"[^A-Za-z0-9._=,-]+", "-", str(text)).strip("-") or "run"


def check_run_name(name) -> str | None:
    """``name`` when it can name a run folder as it is (None passes): not dots only (``..``), not changed by `slug`."""
    if name is None:
        return None
    text = str(name)
    if set(text) <= {"."} or slug(text) != text:
        example = slug(text) if set(slug(text)) - {"."} else "my-run"
        raise ConfigError(f"run_name={name!r} cannot name a run folder: use letters, digits and . _ - = , only, not "
                          f"only dots and not starting or ending with '-' (e.g. {example!r}).")
    return text


# --------------------------------------------------------------------------------------- checks
def suggest(name: str, known) -> str:
    """"; did you mean 'epochs'?" for ``epoch`` (by likeness), ``lr`` for ``learning_rate`` (initials), ``ema_decay`` for ``ema``."""
    known, name = list(known), str(name)
    initials = "".join(word[:1] for word in name.split("_"))
    close = ([initials] if initials in known else [k for k in known if k.startswith(name + "_")][:1]
             or difflib.get_close_matches(name, known, n=1, cutoff=0.6))
    return f"; did you mean {close[0]!r}?" if close else f"; the parameters are: {', '.join(sorted(known))}"


def check_names(given, known, where: str = "parameters") -> None:
    """Every name in ``given`` must be in ``known``; a misspelt one stops with the nearest."""
    for name in given:
        if name not in known:
            raise ConfigError(f"Unknown parameter {name!r} in {where}{suggest(name, known)}")


# A field's kind (how its annotation starts) -> the types its value may have, and what an error says it expects
_TYPES = {"int": (Integral, "an integer"), "float": (Real, "a number"), "bool": (bool, "True or False"),
          "str": (str, "text"), "list": ((list, tuple), "a list"), "dict": (dict, "a dict")}


def _kind(annotation: str) -> tuple[str, bool]:
    """(a key of `_TYPES` or "any", optional) of a field's annotation, e.g. ``Optional[int]``."""
    base = re.sub(r"^Optional\[(.*)\]$", r"\1", annotation)
    return next((k for k in _TYPES if base.startswith(k)), "any"), base != annotation


def _check_value(name: str, value, annotation: str):
    kind, optional = _kind(annotation)
    rule = RULES.get(name)

    def fail(expected):
        raise ConfigError(f"Parameter {name}={value!r}: expected {expected}.")

    if value is None:
        if not optional:
            fail(f"a value ({kind})")
        return
    types, expected = _TYPES.get(kind, (object, ""))
    numeric = kind in ("int", "float")
    if not isinstance(value, types) or (numeric and isinstance(value, bool)):  # to Python, True is an int
        fail(expected + (" or None" if optional and numeric else ""))
    if isinstance(rule, tuple) and len(rule) == 2 and all(isinstance(x, Real) for x in rule):
        if not rule[0] <= value <= rule[1]:
            fail(f"a number between {rule[0]} and {rule[1]}")
    elif isinstance(rule, tuple) and value not in rule:
        fail("one of " + ", ".join(repr(c) for c in rule))
    elif callable(rule):
        try:
            rule(value)
        except (ValueError, TypeError) as err:
            raise ConfigError(f"Parameter {name}={value!r}: {err}") from None


def _fractions(value):
    if len(value) != 3 or any(not isinstance(x, Real) or x < 0 for x in value) or abs(sum(value) - 1) > 1e-6:
        raise ValueError("expected three numbers >= 0 summing to 1 (train, val, test), e.g. [0.7, 0.15, 0.15]")


# --------------------------------------------------------------------------------------- the record
class Config:
    """What every job's dataclass shares: checks on creation, meanings, command line, notebook namespace."""

    NOTEBOOK: typing.ClassVar[str] = ""

    def __post_init__(self):
        for f in dataclasses.fields(self):
            _check_value(f.name, getattr(self, f.name), str(f.type))
        self.check()

    def check(self) -> None:
        """Checks across fields (a subclass adds its own)."""

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def names(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls)]

    @classmethod
    def meanings(cls) -> dict[str, str]:
        """Field -> the comment written after it in the class (its one-line meaning)."""
        lines = inspect.getsource(cls).splitlines()
        found = (re.match(r"\s+(\w+): [^#]*#\s*(.*)$", line) for line in lines)
        return {m.group(1): m.group(2) for m in found if m and m.group(1) in cls.names()}

    @classmethod
    def create(cls, given: dict, where: str = "parameters"):
        """The config from a dict (JSON, papermill ``-y``, an experiment's cell): unknown names stop."""
        check_names(given, cls.names(), where)
        return cls(**given)

    @classmethod
    def from_notebook(cls, namespace: dict, overrides: dict | None = None):
        """The config of a notebook run: the namespace's fields (any field may come with papermill ``-p``),
        then ``overrides``. A variable the notebook's own code never binds (``-p epoch 5``) stops it."""
        names, own = cls.names(), notebook_names(cls.NOTEBOOK)
        stray = [k for k in namespace if not k.startswith("_") and k not in names and k not in KERNEL_NAMES
                 and own is not None and k not in own]
        check_names(stray, [*names, "overrides"], f"the parameters given to {cls.NOTEBOOK}")
        check_names(overrides or {}, names, f"overrides of {cls.NOTEBOOK}")
        return cls(**{**{k: v for k, v in namespace.items() if k in names}, **(overrides or {})})

    @classmethod
    def parser(cls, only=None, **kwargs) -> argparse.ArgumentParser:
        """An argument parser with one ``--option`` (default, type, meaning) per field, or per field in ``only``."""
        p = argparse.ArgumentParser(formatter_class=argparse.RawDescriptionHelpFormatter, **kwargs)
        meanings, defaults = cls.meanings(), cls()
        for f in (f for f in dataclasses.fields(cls) if only is None or f.name in only):
            kind, optional = _kind(str(f.type))
            option, default = "--" + f.name.replace("_", "-"), getattr(defaults, f.name)
            text = f"{meanings.get(f.name, '')} (default: {default!r})".replace("%", "%%")  # argparse formats help
            if kind == "bool":
                p.add_argument(option, action=argparse.BooleanOptionalAction, default=default, help=text)
            elif kind == "list":
                item = {"list[float]": float, "list[int]": int}.get(str(f.type), str)
                p.add_argument(option, type=item, nargs="+", default=default, help=text)
            else:
                convert = {"int": int, "float": float, "dict": json.loads}.get(kind, str)
                p.add_argument(option, type=_none_or(convert) if optional else convert, default=default, help=text)
        return p

    @classmethod
    def from_args(cls, argv=None, **kwargs):
        args = cls.parser(**kwargs).parse_args(argv)
        return cls(**{name: getattr(args, name) for name in cls.names()})


def _none_or(convert):
    def parse(text: str):
        return None if text.lower() in ("none", "null") else convert(text)
    parse.__name__ = convert.__name__  # argparse names it in "invalid int value"
    return parse


def notebook_names(notebook: str) -> set[str] | None:
    """Every name ``notebooks/<notebook>.py`` binds; None without the file (a copied ``.ipynb``)."""
    try:
        tree = ast.parse((notebooks_dir() / f"{notebook}.py").read_text(encoding="utf-8"))
    except (OSError, SyntaxError):
        return None
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            names.add(node.id)
        elif isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names.update((a.asname or a.name).split(".")[0] for a in node.names)
    return names


# --------------------------------------------------------------------------------------- choices
AUGMENTATIONS = ("none", "flips", "standard", "strong", "camera")
COLOUR_CONSTANCY = ("none", "shades_of_gray")
POOLINGS = ("average", "lesion")
#: TrainConfig knobs a resumed run may change, as they leave what is trained alone: where files go (data_dir too:
#: the data fingerprint is compared instead), the hardware and its speed, and the calibration after training.
RESUMABLE_CHANGES = frozenset({"resume", "overwrite", "run_name", "reports_dir", "cache_dir", "data_dir", "device",
                               "amp", "compile", "num_workers", "calibrate_tta", "target_sensitivity",
                               "target_coverage"})
CLASS_BALANCE = ("none", "weighted_loss", "sampler", "both", "logit_adjusted")
LR_SCHEDULES = ("onecycle", "cosine", "constant")
SELECTION_CRITERIA = ("balanced_accuracy+dice", "balanced_accuracy", "dice", "loss")
AMP_CHOICES = ("auto", "bf16", "fp16", "off")
ON_BAD_DATA = ("raise", "skip")
SPLITS = ("train", "val", "test")
SEED = (0, 2**32 - 1)
#: Each field's check beyond its type, by name (a name means the same in every job): (low, high) bounds,
#: choices, or a function that raises ValueError.
RULES = {
    "image_size": (32, 4096), "epochs": (1, 10_000), "time_budget": (0.1, 100_000.0), "batch_size": (1, 4096),
    "lr": (0.0, 10.0), "weight_decay": (0.0, 1.0), "lr_schedule": LR_SCHEDULES, "seg_weight": (0.0, 1000.0),
    "cls_weight": (0.0, 1000.0), "class_balance": CLASS_BALANCE, "balance_power": (0.0, 2.0),
    "label_smoothing": (0.0, 0.99), "ema_decay": (0.0, 0.999999), "augment": AUGMENTATIONS,
    "colour_constancy": COLOUR_CONSTANCY, "class_pooling": POOLINGS, "selection": SELECTION_CRITERIA,
    "patience": (1, 10_000), "seed": SEED, "split_seed": SEED, "split_fractions": _fractions, "max_samples": (1, 10**9),
    "on_bad_data": ON_BAD_DATA, "target_sensitivity": (0.01, 1.0), "target_coverage": (0.01, 1.0),
    "amp": AMP_CHOICES, "num_workers": (0, 256), "run_name": check_run_name,
    "split": (*SPLITS, "all"), "label_map": parse_label_map, "threshold": (0.0, 1.0), "n_examples": (1, 100),
    "cam_max_images": (1, 10**9), "n_bootstrap": (0, 100_000), "bootstrap_seed": SEED,
    "n_demo_images": (1, 1000), "max_mask_images": (1, 10**9), "per_class": (1, 50),
}


def trained_tasks(seg_weight: float, cls_weight: float) -> list[str]:
    """The heads a run trains: a loss weight of 0 leaves that head untrained (its metrics are n/a)."""
    return [t for t, w in (("segmentation", seg_weight), ("classification", cls_weight)) if float(w) > 0]


# --------------------------------------------------------------------------------------- the jobs
@dataclasses.dataclass
class TrainConfig(Config):
    """Training (notebooks/02_train, ``python -m skin_utils.train``, torchrun, experiments)."""

    data_dir: str = "data"  # the data set (data/README.md); "data" falls back to the synthetic demo when empty
    image_size: int = 96  # training size in pixels (square); 96 won on validation at 10 and 15 CPU minutes, 128 at 45
    epochs: int = 3  # training epochs; ignored when time_budget is set
    time_budget: Optional[float] = None  # minutes for training, validation and calibration: the epochs are fitted to it
    batch_size: int = 16  # images per step (and per process under torchrun)
    lr: float = 2e-3  # peak learning rate of the schedule (AdamW)
    weight_decay: float = 1e-4  # AdamW weight decay
    lr_schedule: str = "onecycle"  # "onecycle", "cosine" or "constant"
    seg_weight: float = 1.0  # weight of the mask loss (BCE); 0 leaves the decoder untrained
    cls_weight: float = 1.0  # weight of the diagnosis loss (cross-entropy); 0 leaves the head untrained
    class_balance: str = "weighted_loss"  # "none", "weighted_loss", "sampler", "both" or "logit_adjusted"
    balance_power: float = 0.4  # strength of the class balance: 0 none, 1 full correction of the class prior
    label_smoothing: float = 0.1  # cross-entropy label smoothing
    ema_decay: Optional[float] = None  # validate, keep and calibrate a moving average of the weights (e.g. 0.999)
    augment: str = "camera"  # "none", "flips", "standard", "strong" or "camera" (standard + casts, blur, vignette, hair)
    colour_constancy: str = "shades_of_gray"  # or "none": applied alike in training, evaluation and inference
    class_pooling: str = "average"  # the diagnosis head pools the frame ("average") or the predicted lesion ("lesion")
    encoder_weights: Optional[str] = "auto"  # "imagenet", "auto" (ImageNet if obtainable), None, or a .pth path
    selection: str = "balanced_accuracy+dice"  # validation score that picks best.pt (only the trained heads count)
    patience: Optional[int] = None  # stop after this many epochs without improvement; None: never
    seed: int = 0  # training randomness: initialisation, shuffling, augmentation
    split_seed: int = 0  # which lesions go to train/val/test (and max_samples' subset)
    split_fractions: list[float] = dataclasses.field(default_factory=lambda: [0.7, 0.15, 0.15])  # train, val, test shares of the lesions
    split_path: str = "reports/split.csv"  # the lesion-level split file (made on first use, shared by the notebooks)
    max_samples: Optional[int] = None  # use at most this many images (whole lesions); None: all
    on_bad_data: str = "raise"  # "raise": stop on bad files with a report; "skip": leave them out
    calibrate_tta: bool = True  # fit the temperature on 8-view TTA outputs (as 03/04 predict) and on plain ones
    target_sensitivity: float = 0.9  # melanoma sensitivity the P(MEL) flag threshold reaches on validation
    target_coverage: float = 0.8  # share of validation images decided automatically; the most uncertain rest is referred
    device: str = "auto"  # "auto", "cpu", "cuda", "cuda:1", ... (under torchrun: the process's GPU)
    amp: str = "auto"  # mixed precision: "auto", "bf16", "fp16" or "off"
    compile: bool = False  # torch.compile the model (slower first epoch; pays off on some GPUs)
    sync_bn: bool = False  # SyncBatchNorm across processes (torchrun on CUDA)
    num_workers: Optional[int] = None  # DataLoader workers; None picks for the device
    cache_dir: Optional[str] = None  # preprocessed-array cache; None: $SKIN_UTILS_CACHE or ~/.cache/skin_utils
    reports_dir: str = "reports"  # runs go to <reports_dir>/runs/<run_name>/
    run_name: Optional[str] = None  # the run's folder; None: date, time and the main knobs
    resume: bool = False  # continue the run from its last.pt
    overwrite: bool = False  # replace the results of an earlier run of the same name

    NOTEBOOK = "02_train"

    def check(self):
        if self.seg_weight + self.cls_weight == 0:
            raise ConfigError("Parameters seg_weight and cls_weight are both 0: nothing would be learnt.")
        if self.resume and self.overwrite:
            raise ConfigError("Parameters resume=True and overwrite=True contradict each other: choose one.")
        if min(self.split_fractions[:2]) == 0:
            raise ConfigError(f"Parameter split_fractions={self.split_fractions!r}: training needs lesions in train "
                              "and val (val picks the best epoch, the temperature and the thresholds), e.g. "
                              "[0.7, 0.15, 0.15].")
        if self.class_pooling == "lesion" and self.seg_weight == 0:
            raise ConfigError("Parameters class_pooling='lesion' and seg_weight=0 contradict each other: the diagnosis "
                              "would pool by the mask of an untrained mask head; use class_pooling='average'.")

    @property
    def tasks(self) -> list[str]:
        return trained_tasks(self.seg_weight, self.cls_weight)


@dataclasses.dataclass
class EvaluateConfig(Config):
    """Scoring a run on a split or another data set (notebooks/03_evaluate)."""

    run: str = "latest"  # a run name under <reports_dir>/runs, a run folder, or "latest"
    checkpoint: Optional[str] = None  # a checkpoint file instead of a run (its results go to a run folder named after it)
    data_dir: Optional[str] = None  # None: the run's training data; or another folder (with split "all")
    split: str = "test"  # "test", "val", "train" or "all" (every image of data_dir)
    split_path: Optional[str] = None  # None: the split the run was trained with
    label_map: Optional[typing.Union[str, dict]] = None  # the set's diagnosis names -> ours (a dict, or JSON text)
    label_column: Optional[str] = None  # the diagnosis column of the set's label CSV; None: detected
    id_column: Optional[str] = None  # the image-id column of the set's label CSV; None: detected
    batch_size: int = 32  # images per forward pass
    threshold: float = 0.5  # mask probability threshold
    tta: bool = True  # average each prediction over the 8 flips and 90-degree turns of the image
    n_examples: int = 4  # best and worst cases shown (and Grad-CAM examples)
    recalibrate: bool = False  # fit temperature and thresholds on the validation split now, into the checkpoint
    cam_max_images: Optional[int] = None  # Grad-CAM check on at most this many images; None: all
    n_bootstrap: int = 1000  # lesion-level bootstrap resamples for the 95% intervals
    bootstrap_seed: int = 0  # seed of the resampling
    device: str = "auto"  # "auto", "cpu", "cuda", "cuda:1", ...
    amp: str = "auto"  # mixed precision: "auto", "bf16", "fp16" or "off"
    on_bad_data: str = "raise"  # "raise": stop on bad files with a report; "skip": leave them out
    reports_dir: str = "reports"  # holds runs/ and the top-level REPORT.md

    NOTEBOOK = "03_evaluate"

    def check(self):
        _must_exist(self, "checkpoint")
        for name in ("label_column", "id_column"):
            if getattr(self, name) is not None and not getattr(self, name).strip():
                raise ConfigError(f"Parameter {name}={getattr(self, name)!r}: expected a column name or None.")


@dataclasses.dataclass
class InferConfig(Config):
    """Predicting new images (notebooks/04_inference)."""

    run: str = "latest"  # a run name under <reports_dir>/runs, a run folder, or "latest"
    checkpoint: Optional[str] = None  # a checkpoint file instead of a run
    input_dir: Optional[str] = None  # a folder of images; None: a few new synthetic demo images
    n_demo_images: int = 6  # how many demo images when input_dir is None
    batch_size: int = 16  # images per forward pass
    threshold: float = 0.5  # mask probability threshold
    tta: bool = True  # average each prediction over the 8 flips and turns (8x the compute)
    cam: bool = True  # Grad-CAM heat map of the predicted class on each overlay
    isic: bool = False  # also write ISIC 2018 submission files: Task 1 masks and the Task 3 CSV (inference/isic/)
    device: str = "auto"  # "auto", "cpu", "cuda", "cuda:1", ...
    amp: str = "auto"  # mixed precision: "auto", "bf16", "fp16" or "off"
    reports_dir: str = "reports"  # holds runs/ and the top-level REPORT.md

    NOTEBOOK = "04_inference"

    def check(self):
        _must_exist(self, "checkpoint", "input_dir")


def _must_exist(cfg, *names) -> None:
    for name in names:
        value = getattr(cfg, name)
        if value is not None and not resolve(value).exists():
            raise ConfigError(f"Parameter {name}={value!r}: {resolve(value)} does not exist.")


@dataclasses.dataclass
class EdaConfig(Config):
    """Looking at the data before training (notebooks/01_eda)."""

    data_dir: str = "data"  # the data set (data/README.md); "data" falls back to the synthetic demo when empty
    split_fractions: list[float] = dataclasses.field(default_factory=lambda: [0.7, 0.15, 0.15])  # train, val, test shares of the lesions
    split_path: str = "reports/split.csv"  # the lesion-level split, made here and used by every notebook
    seed: int = 0  # which lesions go to train/val/test (02_train's split_seed)
    max_samples: Optional[int] = None  # use at most this many images (whole lesions); None: all
    max_mask_images: Optional[int] = 3000  # masks read to measure lesion size (a random sample); None: all
    per_class: int = 5  # example images per diagnosis
    on_bad_data: str = "raise"  # "raise": stop on bad files with a report; "skip": leave them out
    reports_dir: str = "reports"  # figures, metrics and REPORT.md

    NOTEBOOK = "01_eda"


@dataclasses.dataclass
class ExperimentConfig(Config):
    """A grid of 02_train parameters over seeds, each run scored by 03_evaluate (notebooks/05_experiments)."""

    name: str = "demo"  # the experiment's folder under experiments_dir, and its table's name
    grid: typing.Union[dict, list] = dataclasses.field(default_factory=lambda: {"cls_weight": [1.0, 0.0]})  # parameter -> values (every combination), or a list of cells
    seeds: list[int] = dataclasses.field(default_factory=lambda: [0])  # each cell is trained once per seed
    fixed: dict = dataclasses.field(default_factory=lambda: {"epochs": 1, "image_size": 64, "max_samples": 120})  # 02_train parameters every run gets
    time_budget: Optional[float] = None  # minutes per training run (instead of epochs); None: as in fixed
    eval_params: dict = dataclasses.field(default_factory=lambda: {"tta": False, "n_bootstrap": 200})  # 03_evaluate parameters every evaluation gets
    reference: Optional[dict] = None  # the cell the others are compared with (paired bootstrap); None: the first that trains both heads
    metrics: list[str] = dataclasses.field(default_factory=lambda: ["dice", "balanced_accuracy", "macro_auc"])  # shown in the figure
    n_bootstrap: int = 1000  # resamples of the paired comparison
    experiments_dir: str = "reports/experiments"  # experiments go to <experiments_dir>/<name>/

    NOTEBOOK = "05_experiments"

    def check(self):
        check_names(self.fixed, TrainConfig.names(), "fixed (02_train parameters)")
        check_names(self.eval_params, EvaluateConfig.names(), "eval_params (03_evaluate parameters)")
        for cell in (self.grid if isinstance(self.grid, list) else [dict.fromkeys(self.grid)]):
            check_names(cell, TrainConfig.names(), "grid (02_train parameters)")
