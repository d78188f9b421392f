"""Up-front checks of notebook parameters, with messages that name the parameter.

papermill passes ``-p epochs 5`` as an int, ``-p lr 1e-3`` as a float and anything unparsable
as a string; a typo should fail in the first cell, not after an hour of training.
"""

from __future__ import annotations

import difflib
from numbers import Integral, Real


class ParameterError(ValueError):
    """A notebook parameter with a wrong type or value."""


def _fail(name, value, expected):
    raise ParameterError(f"Parameter {name}={value!r}: expected {expected}.")


def _choices() -> dict:
    """The allowed values of each choice parameter, from the module that defines them."""
    from skin_utils.data import SPLITS
    from skin_utils.layout import ON_BAD_DATA
    from skin_utils.transforms import AUGMENTATIONS, COLOUR_CONSTANCY
    from skin_utils.engine import AMP_CHOICES, LR_SCHEDULES, SELECTION_CRITERIA
    from skin_utils.trust.explain import CAM_METHODS
    from skin_utils.losses import CLASS_BALANCE

    return {
        "amp": AMP_CHOICES,
        "augment": AUGMENTATIONS,
        "colour_constancy": COLOUR_CONSTANCY,
        "class_balance": CLASS_BALANCE,
        "lr_schedule": LR_SCHEDULES,
        "on_bad_data": ON_BAD_DATA,
        "selection": SELECTION_CRITERIA,
        "split": (*SPLITS, "all"),
        "cam_method": CAM_METHODS,
    }


RULES = {
    # name: (kind, constraint)
    "image_size": ("int", (32, 4096)),
    "epochs": ("int", (1, 10_000)),
    "batch_size": ("int", (1, 4096)),
    "lr": ("float", (0.0, 10.0)),
    "weight_decay": ("float", (0.0, 1.0)),
    "seg_weight": ("float", (0.0, 1000.0)),
    "cls_weight": ("float", (0.0, 1000.0)),
    "label_smoothing": ("float", (0.0, 0.99)),
    "ema_decay": ("float_or_none", (0.0, 0.999999)),
    "balance_power": ("float", (0.0, 2.0)),
    "seed": ("int", (0, 2**32 - 1)),
    "split_seed": ("int", (0, 2**32 - 1)),
    "max_samples": ("int_or_none", (1, 10**9)),
    "patience": ("int_or_none", (1, 10_000)),
    "num_workers": ("int_or_none", (0, 256)),
    "n_demo_images": ("int", (1, 1000)),
    "n_examples": ("int", (1, 100)),
    "per_class": ("int", (1, 50)),
    "max_mask_images": ("int_or_none", (1, 10**9)),
    "threshold": ("float", (0.0, 1.0)),
    "device": ("choice", None),  # checked by engine.resolve_device
    **{name: ("choice", tuple(values)) for name, values in _choices().items()},
    "resume": ("bool", None),
    "overwrite": ("bool", None),
    "compile": ("bool", None),
    "sync_bn": ("bool", None),
    "n_bootstrap": ("int", (0, 100_000)),
    "bootstrap_seed": ("int", (0, 2**32 - 1)),
    "tta": ("bool", None),
    "calibrate_tta": ("bool", None),
    "recalibrate": ("bool", None),
    "cam": ("bool", None),
    "target_sensitivity": ("float", (0.01, 1.0)),
    "target_coverage": ("float", (0.01, 1.0)),
    "mc_samples": ("int", (0, 1000)),
    "cam_max_images": ("int_or_none", (1, 10**9)),
    "time_budget": ("float_or_none", (0.1, 100_000.0)),  # minutes
    "label_map": ("label_map", None),        # a dict (papermill -y) or JSON text (-p), or None
    "label_column": ("str_or_none", None),
    "run_name": ("run_name", None),
    "id_column": ("str_or_none", None),
}


def check_names(given, known, where: str = "parameters") -> None:
    """Every name in ``given`` must be one of ``known``: a misspelt one (``epoch``) stops with the
    nearest valid name instead of being ignored while the run goes on with the defaults."""
    known = list(known)
    for name in given:
        if name not in known:
            initials = "".join(word[:1] for word in str(name).split("_"))  # learning_rate -> lr
            close = [initials] if initials in known else difflib.get_close_matches(str(name), known, n=1, cutoff=0.6)
            hint = f"; did you mean {close[0]!r}?" if close else f"; the parameters are: {', '.join(sorted(known))}"
            raise ParameterError(f"Unknown parameter {name!r} in {where}{hint}")


#: Names a notebook kernel defines besides the notebook's own (IPython's).
KERNEL_NAMES = frozenset({"In", "Out", "get_ipython", "exit", "quit", "open"})


def notebook_names(notebook: str) -> set[str] | None:
    """Every name the notebook's own code binds (its ``notebooks/<notebook>.py``, parsed): the
    parameters and every variable its cells assign. None when the file is not there."""
    import ast

    from skin_utils.nb.paths import notebooks_dir

    try:
        tree = ast.parse((notebooks_dir() / f"{notebook}.py").read_text(encoding="utf-8"))
    except (OSError, SyntaxError):
        return None
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            names.add(node.id)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names.update((a.asname or a.name).split(".")[0] for a in node.names)
    return names


def check_no_unknown(namespace: dict, params, notebook: str) -> None:
    """Stop a notebook whose kernel holds a variable that its own code never binds: papermill only
    warns about a misspelt ``-p`` name (``-p epoch 5``) and injects it as a variable, and the
    run would go on with the default. The message names the nearest of ``params`` (the
    notebook's parameters). Names starting with "_" (IPython's) are left alone."""
    own = notebook_names(notebook)
    if own is None:  # the .py of the pair is not here (a copied .ipynb): nothing to compare with
        return
    unknown = [k for k in namespace if not k.startswith("_") and k not in KERNEL_NAMES and k not in own]
    if unknown:
        check_names(unknown, list(params) + ["repo_url"], f"the parameters given to {notebook}")


def check_params(params: dict, must_exist: tuple[str, ...] = (), *, namespace: dict | None = None,
                 notebook: str | None = None) -> dict:
    """Check every known parameter in ``params``; ``must_exist`` names path parameters that must
    point at an existing file or folder. With a notebook's ``namespace`` (its ``globals()``) and
    name, a variable the notebook never defines (a misspelt papermill ``-p`` name) stops it too
    (`check_no_unknown`). Returns ``params`` unchanged, or raises ParameterError."""
    if namespace is not None:
        check_no_unknown(namespace, params, notebook)
    for name, value in params.items():
        kind, rule = RULES.get(name, (None, None))
        if kind in ("int", "int_or_none"):
            if value is None and kind == "int_or_none":
                continue
            if isinstance(value, bool) or not isinstance(value, Integral):
                _fail(name, value, "an integer" + (" or None" if kind == "int_or_none" else ""))
            if not rule[0] <= value <= rule[1]:
                _fail(name, value, f"an integer between {rule[0]} and {rule[1]}")
        elif kind in ("float", "float_or_none"):
            if value is None and kind == "float_or_none":
                continue
            if isinstance(value, bool) or not isinstance(value, Real):
                _fail(name, value, "a number" + (" or None" if kind == "float_or_none" else ""))
            if not rule[0] <= value <= rule[1]:
                _fail(name, value, f"a number between {rule[0]} and {rule[1]}")
        elif kind == "choice" and rule is not None and value not in rule:
            _fail(name, value, "one of " + ", ".join(repr(c) for c in rule))
        elif kind == "label_map" and value is not None:
            from skin_utils.labels import parse_label_map

            try:
                parse_label_map(value)
            except ValueError as err:
                raise ParameterError(f"Parameter {name}={value!r}: {err}") from None
        elif kind == "run_name":
            from skin_utils.runs import check_run_name

            try:
                check_run_name(value)
            except ValueError as err:
                raise ParameterError(str(err)) from None
        elif kind == "str_or_none" and value is not None and not (isinstance(value, str) and value.strip()):
            _fail(name, value, "a column name (text) or None")
        elif kind == "bool" and not isinstance(value, bool):
            _fail(name, value, "True or False")
    if params.get("mc_samples") == 1:
        _fail("mc_samples", 1, "0 (Monte-Carlo dropout off) or at least 2 samples")
    if {"seg_weight", "cls_weight"} <= params.keys() and params["seg_weight"] + params["cls_weight"] == 0:
        raise ParameterError("Parameters seg_weight and cls_weight are both 0: nothing would be learnt.")
    if "split_fractions" in params:
        f = params["split_fractions"]
        if (not isinstance(f, (list, tuple)) or len(f) != 3 or any(not isinstance(x, Real) or x < 0 for x in f)
                or abs(sum(f) - 1) > 1e-6):
            _fail("split_fractions", f, "three numbers >= 0 summing to 1 (train, val, test), e.g. [0.7, 0.15, 0.15]")
    from skin_utils.nb.paths import resolve

    for name in must_exist:
        if not resolve(params[name]).exists():
            raise ParameterError(f"Parameter {name}={params[name]!r}: {resolve(params[name])} does not exist.")
    return params
