"""Paths relative to the repository root, whatever the working directory.

papermill runs a notebook's kernel in the launch directory, Jupyter and nbval in the notebook's
folder: resolving relative paths against the repository root makes both behave the same."""

from __future__ import annotations

from pathlib import Path


def project_root(start: Path | None = None) -> Path:
    """The nearest folder at or above ``start`` (default: the working directory) that holds
    ``skin_utils/`` and ``notebooks/``; the working directory when there is none."""
    start = Path.cwd() if start is None else Path(start)
    for folder in (start, *start.parents):
        if (folder / "skin_utils").is_dir() and (folder / "notebooks").is_dir():
            return folder
    return start


def resolve(path, root: Path | None = None) -> Path:
    """``path`` itself when absolute (``~`` expanded), else relative to the repository root."""
    path = Path(path).expanduser()
    return path if path.is_absolute() else (root or project_root()) / path
