"""Paths relative to the project root, whatever the working directory.

papermill runs a notebook's kernel in the launch directory, Jupyter and nbval in the notebook's
folder: resolving relative paths (``data``, ``checkpoints/best.pt``, ``reports``) against one
root makes all of them behave the same. That root is the repository, or the folder named by the
environment variable ``SKIN_UTILS_ROOT`` when it is set: the tests set it to a temporary folder,
so that no test run reads or writes the checkout's ``data/``, ``checkpoints/`` or ``reports/``.
"""

from __future__ import annotations

import os
from pathlib import Path

ROOT_ENV = "SKIN_UTILS_ROOT"


def project_root(start: Path | None = None) -> Path:
    """The folder that relative paths are taken from.

    ``$SKIN_UTILS_ROOT`` when it is set and ``start`` is not given; otherwise the nearest folder
    at or above ``start`` (default: the working directory) that holds ``skin_utils/`` and
    ``notebooks/``, or ``start`` itself when there is none."""
    override = os.environ.get(ROOT_ENV, "").strip()
    if start is None and override:
        root = Path(override).expanduser()
        if not root.is_dir():
            raise FileNotFoundError(f"{ROOT_ENV}={override!r} is not a folder: create it, or unset {ROOT_ENV} "
                                    "to resolve relative paths against the repository.")
        return root.resolve()
    start = Path.cwd() if start is None else Path(start)
    for folder in (start, *start.parents):
        if (folder / "skin_utils").is_dir() and (folder / "notebooks").is_dir():
            return folder
    return start


def resolve(path, root: Path | None = None) -> Path:
    """``path`` itself when absolute (``~`` expanded), else relative to ``root`` (default:
    `project_root`)."""
    path = Path(path).expanduser()
    return path if path.is_absolute() else (root or project_root()) / path


def notebooks_dir() -> Path:
    """The ``notebooks/`` folder of the repository that this ``skin_utils`` was installed from
    (independent of ``$SKIN_UTILS_ROOT`` and of the working directory)."""
    import skin_utils

    folder = Path(skin_utils.__file__).resolve().parent.parent / "notebooks"
    if not folder.is_dir():
        raise FileNotFoundError(f"No notebooks/ beside the skin_utils package ({folder} is missing): this "
                                "skin_utils is not an editable install of the repository. Clone the repository "
                                "and run `pip install -e .` in it.")
    return folder
