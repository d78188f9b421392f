"""Reports a person can read without running anything.

Each notebook writes its figures to ``reports/figures/``, its numbers to ``reports/metrics/``
and its section to ``reports/sections/NN_name.md``; `write_section` then rebuilds
``reports/REPORT.md`` from all sections, so the report always shows the latest run of each
notebook with its data set, parameters, versions and date.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import platform
import re
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd

from skin_utils.metrics import to_jsonable


def environment_info() -> dict:
    """Versions, device and git commit: what a reader needs to reproduce a number."""
    import matplotlib
    import sklearn
    import torch
    import torchvision

    import skin_utils

    info = {
        "date": _dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "python": platform.python_version(), "platform": platform.platform(),
        "torch": torch.__version__, "torchvision": torchvision.__version__,
        "numpy": np.__version__, "pandas": pd.__version__, "scikit-learn": sklearn.__version__,
        "matplotlib": matplotlib.__version__, "skin_utils": skin_utils.__version__,
        "cpu_threads": torch.get_num_threads(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }
    try:
        root = Path(skin_utils.__file__).resolve().parent.parent
        commit = subprocess.run(["git", "-C", str(root), "rev-parse", "--short", "HEAD"],
                                capture_output=True, text=True, timeout=5)
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=5)
        if commit.returncode == 0:
            info["git_commit"] = commit.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        pass
    return info


def write_json(path, obj) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(to_jsonable(obj), indent=2, allow_nan=False))
    return path


def _fmt(v) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "–"
    if isinstance(v, (float, np.floating)):
        return f"{v:.3f}"
    return str(v)


def markdown_table(table: pd.DataFrame | dict, index: bool = True) -> str:
    """A pipe table (no extra dependency): floats to 3 decimals, NaN as a dash."""
    if isinstance(table, dict):
        table = pd.DataFrame({"value": table}).rename_axis("name")
    cols = list(table.columns)
    head = ([table.index.name or ""] if index else []) + [str(c) for c in cols]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for idx, row in table.iterrows():
        cells = ([str(idx)] if index else []) + [_fmt(row[c]) for c in cols]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def params_block(params: dict) -> str:
    return "\n".join(["| parameter | value |", "|---|---|"]
                     + [f"| `{k}` | `{v!r}` |" for k, v in params.items()])


def write_section(reports_dir, name: str, title: str, body: str, *, params: dict | None = None,
                  data: dict | None = None) -> Path:
    """Write ``sections/<name>.md`` (body, then data set, parameters and environment) and
    rebuild ``REPORT.md``. Figure paths in ``body`` are relative to ``reports_dir``."""
    reports_dir = Path(reports_dir)
    env = environment_info()
    parts = [f"## {title}", "", f"*Run {env['date']}*", "", body.strip(), ""]
    if data:
        parts += ["<details><summary>Data set</summary>", "", markdown_table(
            {k: (json.dumps(v) if isinstance(v, (dict, list)) else v) for k, v in data.items()}), "", "</details>", ""]
    if params:
        parts += ["<details><summary>Parameters</summary>", "", params_block(params), "", "</details>", ""]
    parts += ["<details><summary>Environment</summary>", "", markdown_table(env), "", "</details>", ""]
    path = reports_dir / "sections" / f"{name}.md"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(parts))
    build_report(reports_dir)
    return path


def _sections(folder: Path) -> list[str]:
    return [s.read_text() for s in sorted((folder / "sections").glob("*.md"))]


def _rebase(markdown: str, prefix: str) -> str:
    """Point the relative figure links of a run's section at ``prefix`` (the run folder as seen
    from the reports folder): ``](figures/x.png)`` -> ``](runs/<name>/figures/x.png)``."""
    return re.sub(r"\]\((?![a-z]+:|/|#)", f"]({prefix}/", markdown)


def anchor(heading: str) -> str:
    """The link target GitHub and Jupyter give a Markdown heading: lower case, punctuation
    dropped, spaces as hyphens (``Evaluation (test split)`` -> ``evaluation-test-split``)."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def build_report(reports_dir) -> Path:
    """Concatenate the sections into ``REPORT.md`` (notebook order).

    In a run folder (``<reports>/runs/<name>/``) that is the run's own report; the reports
    folder's ``REPORT.md`` holds its own sections (the data, 01_eda) followed by those of the run
    that ``runs/LATEST`` names, so ``reports/REPORT.md`` always shows the latest run. Writing a
    section of the latest run rebuilds both."""
    reports_dir = Path(reports_dir)
    sections = _sections(reports_dir)
    latest = reports_dir / "runs" / "LATEST"
    run_note = []
    if latest.is_file() and (reports_dir / "runs" / latest.read_text().strip()).is_dir():
        name = latest.read_text().strip()
        sections += [_rebase(text, f"runs/{name}") for text in _sections(reports_dir / "runs" / name)]
        run_note = [f"Showing run **{name}** (`runs/{name}/`, its own report: `runs/{name}/REPORT.md`); "
                    "every run keeps its folder under `runs/`.", ""]
    header = ["# Skin lesion multi-task model: report", "",
              "Generated by the notebooks in `notebooks/` (executed copies beside this file). "
              "Each section shows the data set, parameters and versions of its latest run.", ""] + run_note
    toc = [f"- [{text.splitlines()[0][3:].strip()}](#{anchor(text.splitlines()[0][3:])})" for text in sections]
    out = reports_dir / "REPORT.md"
    out.write_text("\n".join(header + toc + [""] + sections))
    runs_dir = reports_dir.parent
    if runs_dir.name == "runs" and (runs_dir / "LATEST").is_file() \
            and (runs_dir / "LATEST").read_text().strip() == reports_dir.name:
        build_report(runs_dir.parent)
    return out
