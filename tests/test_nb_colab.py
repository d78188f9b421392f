"""Colab: the setup cell every notebook shares, and scripts/set_github_repo.py."""

import difflib
import json
import os
import shutil
import subprocess
import sys
import types

import jupytext
import pytest

from tests.conftest import ROOT

NOTEBOOKS = ["01_eda", "02_train", "03_evaluate", "04_inference"]
REPO = "/content/repo"


def _setup_cell():
    nb = jupytext.read(ROOT / "notebooks" / "02_train.py")
    return [c for c in nb.cells if c.cell_type == "code"][1].source


@pytest.fixture
def colab(monkeypatch):
    """Pretend to be on Colab: records clone/install calls and chdir instead of doing them."""
    state = {"calls": [], "chdir": [], "cloned": False, "installed": False}
    real_isdir = os.path.isdir

    def check_call(cmd, *a, **kw):
        state["calls"].append(cmd[:4] if cmd[0] == "git" else cmd[1:4])
        state["cloned"] |= cmd[0] == "git"
        state["installed"] |= "install" in cmd

    monkeypatch.setitem(sys.modules, "google.colab", types.ModuleType("google.colab"))
    monkeypatch.setattr(subprocess, "check_call", check_call)
    monkeypatch.setattr(subprocess, "run", lambda cmd, *a, **kw: types.SimpleNamespace(
        returncode=0 if state["installed"] else 1))
    monkeypatch.setattr(os.path, "isdir", lambda p: state["cloned"] if str(p).startswith(REPO) else real_isdir(p))
    monkeypatch.setattr(os, "chdir", state["chdir"].append)
    monkeypatch.setattr(sys, "path", list(sys.path))
    return state


def test_setup_cell_clones_and_installs_once_and_enters_the_repository_every_time(colab):
    for _ in range(2):
        exec(_setup_cell(), {"repo_url": "https://github.com/alice/derm-net"})
    assert colab["calls"] == [["git", "clone", "--depth", "1"], ["-m", "pip", "install"]]
    assert colab["chdir"] == [REPO, REPO]
    assert sys.path.count(REPO) == 1


def test_setup_cell_with_the_placeholder_says_what_to_do(colab):
    with pytest.raises(SystemExit) as stop:
        exec(_setup_cell(), {"repo_url": "https://github.com/OWNER/REPO"})
    message = str(stop.value.code)
    assert "repo_url is still the placeholder" in message and "scripts/set_github_repo.py" in message
    assert colab["calls"] == [] and colab["chdir"] == []


def test_setup_cell_does_nothing_off_colab(monkeypatch):
    monkeypatch.delitem(sys.modules, "google.colab", raising=False)
    monkeypatch.setattr(subprocess, "check_call", lambda *a, **kw: pytest.fail("no install off Colab"))
    monkeypatch.setattr(os, "chdir", lambda *a: pytest.fail("no chdir off Colab"))
    exec(_setup_cell(), {"repo_url": "https://github.com/OWNER/REPO"})


@pytest.fixture
def checkout(tmp_path):
    (tmp_path / "notebooks").mkdir()
    (tmp_path / "scripts").mkdir()
    for name in NOTEBOOKS:
        for ext in (".py", ".ipynb"):
            shutil.copy(ROOT / "notebooks" / f"{name}{ext}", tmp_path / "notebooks")
    shutil.copy(ROOT / "README.md", tmp_path)
    shutil.copy(ROOT / "scripts" / "set_github_repo.py", tmp_path / "scripts")
    return tmp_path


def _set(checkout, repo):
    return subprocess.run([sys.executable, str(checkout / "scripts" / "set_github_repo.py"), repo],
                          capture_output=True, text=True, timeout=60)


def _files(root):
    return sorted((root / "notebooks").glob("*")) + [root / "README.md"]


def test_set_github_repo_sets_every_badge_and_repo_url(checkout):
    before = {p.name: p.read_text() for p in _files(checkout)}
    run = _set(checkout, "alice/derm-net")
    assert run.returncode == 0, run.stderr
    for name in NOTEBOOKS:
        py, ipynb = jupytext.read(checkout / "notebooks" / f"{name}.py"), jupytext.read(checkout / "notebooks" / f"{name}.ipynb")
        for nb in (py, ipynb):
            assert f"colab.research.google.com/github/alice/derm-net/blob/main/notebooks/{name}.ipynb" in nb.cells[0].source
            params = next(c for c in nb.cells if "parameters" in c.metadata.get("tags", []))
            assert 'repo_url: str = "https://github.com/alice/derm-net"' in params.source
        assert [c.source for c in py.cells] == [c.source for c in ipynb.cells], "the pair still agrees"
        json.loads((checkout / "notebooks" / f"{name}.ipynb").read_text())
    for path in _files(checkout):  # nothing else changed: only lines that now hold the new path
        changed = [line for line in difflib.unified_diff(before[path.name].splitlines(), path.read_text().splitlines(),
                                                         n=0, lineterm="") if line[:1] == "+" and line[:3] != "+++"]
        assert all("alice/derm-net" in line for line in changed), changed
        if path.suffix in (".py", ".ipynb"):
            assert len(changed) == 2, (path.name, changed)
    assert "colab.research.google.com/github/OWNER/REPO" not in (checkout / "README.md").read_text()

    again = _set(checkout, "https://github.com/fork/renamed.git")
    assert again.returncode == 0, again.stderr
    text = "".join(p.read_text() for p in _files(checkout))
    assert "github.com/fork/renamed\\\"" in text and "alice/derm-net/blob" not in text
    assert "https://github.com/alice/derm-net\"" not in text


def test_set_github_repo_rejects_what_is_not_a_repository_path(checkout):
    run = _set(checkout, "not a path")
    assert run.returncode == 2 and "expected OWNER/REPO" in run.stderr
    empty = checkout / "empty"
    empty.mkdir()
    run = subprocess.run([sys.executable, str(checkout / "scripts" / "set_github_repo.py"), "a/b", "--root", str(empty)],
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 1 and "is --root the repository?" in run.stderr


def _next_cell():
    nb = jupytext.read(ROOT / "notebooks" / "02_train.py")
    return [c for c in nb.cells if c.cell_type == "code"][-1].source


@pytest.mark.parametrize("under_runner", [False, True])
def test_train_notebook_evaluates_and_predicts_in_the_same_colab_runtime(colab, monkeypatch, tmp_path, under_runner):
    """The last cell of 02_train runs 03 and 04 on the new checkpoint (not when the runner runs 02 itself)."""
    from pathlib import Path

    import IPython.display

    from skin_utils import sweep
    from skin_utils.config import TrainConfig
    from skin_utils.runs import Run

    calls, shown = [], []
    monkeypatch.setattr(sweep, "run_all", lambda options, only=None: calls.append((options, only)) or 0)
    monkeypatch.setattr(IPython.display, "display", shown.append)
    monkeypatch.setattr(IPython.display, "Image", lambda filename: Path(filename).name)
    if under_runner:
        monkeypatch.setenv(sweep.RUNNER_ENV, "1")
    else:
        monkeypatch.delenv(sweep.RUNNER_ENV, raising=False)
    result = type("Trained", (), {"run": Run(tmp_path)})()
    exec(_next_cell(), {"cfg": TrainConfig(reports_dir="r"), "result": result, "os": os, "sys": sys})
    if under_runner:
        assert calls == [] and shown == []
        return
    assert calls == [({"data_dir": "data", "reports_dir": "r", "run_name": tmp_path.name},
                      ["03_evaluate", "04_inference"])]
    assert shown == ["evaluate_confusion_matrix.png", "inference_examples.png"]


