"""Reports a person can read without running anything: one Markdown section per notebook in a
folder's ``sections/`` (with the data, parameters and versions that made it), joined into its
``REPORT.md``; the reports folder's own ``REPORT.md`` adds the sections of the latest run.
"""

from __future__ import annotations

import datetime as _dt
import json
from dataclasses import dataclass, field
import math
import platform
import re
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import sklearn
import torch
import torchvision

import skin_utils
from skin_utils.metrics import to_jsonable


def environment_info() -> dict:
    """Date, versions, device and git commit: what a reader needs to reproduce a number."""
    info = {"date": _dt.datetime.now().astimezone().isoformat(timespec="seconds"),
            "python": platform.python_version(), "platform": platform.platform(), "torch": torch.__version__,
            "torchvision": torchvision.__version__, "numpy": np.__version__, "pandas": pd.__version__,
            "scikit-learn": sklearn.__version__, "skin_utils": skin_utils.__version__,
            "cpu_threads": torch.get_num_threads(),
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}
    root = Path(skin_utils.__file__).resolve().parent.parent
    try:  # the short hash, "+dirty" with uncommitted changes to tracked files
        commit = subprocess.run(["git", "-C", str(root), "describe", "--always", "--dirty=+dirty", "--exclude=*"],
                                capture_output=True, text=True, timeout=5)
        if commit.returncode == 0:
            info["git_commit"] = commit.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        pass
    return info


def write_json(path, obj) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(to_jsonable(obj), indent=2, allow_nan=False))
    return path


def _cell(v) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "–"
    return f"{v:.3f}" if isinstance(v, (float, np.floating)) else str(v)


def markdown_table(table: pd.DataFrame | dict, index: bool = True) -> str:
    """A pipe table: floats to 3 decimals, NaN and None as a dash; a dict becomes name | value."""
    if isinstance(table, dict):
        table = pd.DataFrame({"value": table}).rename_axis("name")
    head = ([table.index.name or ""] if index else []) + [str(c) for c in table.columns]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for idx, row in table.iterrows():
        lines.append("| " + " | ".join(([str(idx)] if index else []) + [_cell(v) for v in row]) + " |")
    return "\n".join(lines)


def _details(summary: str, table: str) -> list[str]:
    return [f"<details><summary>{summary}</summary>", "", table, "", "</details>", ""]


def write_section(folder, name: str, title: str, body: str, *, params: dict | None = None,
                  data: dict | None = None) -> Path:
    """Write ``sections/<name>.md`` and rebuild ``REPORT.md``; figure links in ``body`` are relative to ``folder``."""
    folder = Path(folder)
    env = environment_info()
    parts = [f"## {title}", "", f"*Run {env['date']}*", "", body.strip(), ""]
    if data:
        parts += _details("Data set", markdown_table({k: json.dumps(v) if isinstance(v, (dict, list)) else v
                                                       for k, v in data.items()}))
    if params:
        parts += _details("Parameters", "\n".join(["| parameter | value |", "|---|---|"]
                                                  + [f"| `{k}` | `{v!r}` |" for k, v in params.items()]))
    parts += _details("Environment", markdown_table(env))
    path = folder / "sections" / f"{name}.md"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(parts))
    build_report(folder)
    return path


def anchor(heading: str) -> str:
    """The link target GitHub and Jupyter give a heading (``Evaluation (test split)`` -> ``evaluation-test-split``)."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def build_report(folder) -> Path:
    """Join the sections into ``REPORT.md``, in notebook order, with those of ``runs/LATEST`` for the reports
    folder (figure links rebased); the latest run's report rebuilds the reports folder's too."""
    folder = Path(folder)
    sections = [s.read_text() for s in sorted((folder / "sections").glob("*.md"))]
    latest, note = folder / "runs" / "LATEST", []
    if latest.is_file() and (folder / "runs" / latest.read_text().strip()).is_dir():
        name = latest.read_text().strip()
        sections += [re.sub(r"\]\((?![a-z]+:|/|#)", f"](runs/{name}/", s.read_text())
                     for s in sorted((folder / "runs" / name / "sections").glob("*.md"))]
        note = [f"Showing run **{name}** (`runs/{name}/`, its own report: `runs/{name}/REPORT.md`); every run keeps "
                "its folder under `runs/`.", ""]
    header = ["# Skin lesion multi-task model: report", "", "Generated by the notebooks in `notebooks/`. Each "
              "section shows the data set, parameters and versions of its latest run.", "", *note]
    toc = [f"- [{s.splitlines()[0][3:].strip()}](#{anchor(s.splitlines()[0][3:])})" for s in sections]
    out = folder / "REPORT.md"
    out.write_text("\n".join(header + toc + [""] + sections))
    runs = folder.parent
    if runs.name == "runs" and (runs / "LATEST").is_file() and (runs / "LATEST").read_text().strip() == folder.name:
        build_report(runs.parent)
    return out


@dataclass
class Section:
    """One part of a notebook's results: title, tables (caption -> table), saved figures and a sentence,
    written into the report (`markdown`) and shown in the notebook (`show`)."""

    title: str
    tables: dict = field(default_factory=dict)
    figures: list = field(default_factory=list)
    text: str = ""

    def markdown(self) -> str:
        tables = [(f"{k}:\n\n" if k else "") + markdown_table(t) for k, t in self.tables.items()]
        return "\n\n".join([f"### {self.title}", *([self.text] if self.text else []), *tables,
                            *(f"![{p.stem}](figures/{p.name})" for p in self.figures)])

    def show(self) -> None:
        """Display it in a notebook: tables, figures, then the sentence."""
        from IPython.display import Image, Markdown, display  # lazy: only a notebook has somewhere to show it
        shown = [*self.tables.values(), *(Image(filename=str(p)) for p in self.figures)]
        for item in shown + ([Markdown(self.text)] if self.text else []):
            display(item)
