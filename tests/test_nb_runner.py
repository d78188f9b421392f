"""The notebook runner (python -m skin_utils.run_notebooks) takes its defaults from the notebooks
and passes only what was asked for, plus the paths that tie the notebooks together."""

import ast
import os
import subprocess
import sys

import jupytext
import pytest

from skin_utils import run_notebooks as runner
from tests.conftest import ROOT


def _cell_defaults(name):
    nb = jupytext.read(ROOT / "notebooks" / f"{name}.py")
    cell = next(c for c in nb.cells if "parameters" in c.metadata.get("tags", []))
    return {n.target.id: ast.literal_eval(n.value) for n in ast.parse(cell.source).body if isinstance(n, ast.AnnAssign)}


@pytest.fixture(scope="module")
def defaults():
    return {name: runner.notebook_defaults(name) for name in runner.NOTEBOOKS}


def test_defaults_are_the_notebooks_own(defaults):
    for name in runner.NOTEBOOKS:
        assert defaults[name] == _cell_defaults(name), name


def test_nothing_asked_passes_only_the_paths_that_tie_the_notebooks(defaults):
    plan = runner.notebook_params({k: None for k in runner.OPTIONS}, defaults)
    assert plan["01_eda"] == {"data_dir": "data", "reports_dir": "reports", "split_path": "reports/split.csv"}
    assert plan["02_train"] == {"data_dir": "data", "reports_dir": "reports", "split_path": "reports/split.csv"}
    assert plan["03_evaluate"] == {"reports_dir": "reports"}  # the data and split come from the run it scores
    assert plan["04_inference"] == {"reports_dir": "reports"}
    assert plan["05_experiments"] == {"experiments_dir": "reports/experiments"}
    for name, params in plan.items():  # the ties equal the notebooks' defaults: nothing changes
        assert all(defaults[name][k] == v for k, v in params.items()), name


def test_what_is_asked_goes_to_the_notebooks_that_have_it(defaults):
    options = {k: None for k in runner.OPTIONS} | {"epochs": 2, "batch_size": 8, "max_samples": 50,
                                                     "reports_dir": "/tmp/r", "run_name": "r1"}
    plan = runner.notebook_params(options, defaults)
    assert plan["02_train"]["epochs"] == 2 and plan["02_train"]["batch_size"] == 8
    assert plan["01_eda"]["max_samples"] == 50 and plan["02_train"]["max_samples"] == 50
    assert "batch_size" not in plan["03_evaluate"] and "batch_size" not in plan["04_inference"]
    assert plan["02_train"]["split_path"] == "/tmp/r/split.csv" == plan["01_eda"]["split_path"]
    assert plan["05_experiments"]["experiments_dir"] == "/tmp/r/experiments"
    assert plan["02_train"]["run_name"] == "r1" and plan["03_evaluate"]["run"] == "r1" == plan["04_inference"]["run"]
    assert "image_size" not in plan["02_train"]


def test_help_shows_the_notebook_defaults_and_creates_nothing(tmp_path):
    env = {**os.environ, "SKIN_UTILS_ROOT": str(tmp_path)}
    out = subprocess.run([sys.executable, "-m", "skin_utils.run_notebooks", "--help"], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    train = _cell_defaults("02_train")
    text = " ".join(out.stdout.split())
    for option in ("epochs", "batch_size", "image_size", "data_dir"):
        assert f"(notebook default: {train[option]!r})" in text, option
    assert list(tmp_path.iterdir()) == []


def test_main_runs_the_notebooks_in_order_with_the_plan(monkeypatch, tmp_path, defaults):
    import skin_utils.data

    calls = []
    monkeypatch.setattr(skin_utils.data, "resolve_data_dir", lambda data_dir, root=None: tmp_path)
    monkeypatch.setattr(runner, "run_notebook", lambda name, params, root, out_dir, log_output=False: calls.append(
        (name, params, os.environ.get(runner.RUNNER_ENV))))
    monkeypatch.delenv(runner.RUNNER_ENV, raising=False)
    assert runner.main(["--epochs", "1", "--only", "02_train", "04_inference", "--reports-dir", str(tmp_path)]) == 0
    assert [c[0] for c in calls] == ["02_train", "04_inference"]
    assert calls[0][1]["epochs"] == 1 and calls[0][1]["reports_dir"] == str(tmp_path)
    # one run: 02_train trains it under a new name, 04_inference is given the same name
    assert calls[0][1]["run_name"] == calls[1][1]["run"] and calls[0][1]["run_name"].endswith("_seed0")
    assert all(c[2] == "1" for c in calls), "the kernels see SKIN_UTILS_RUNNER (02_train's Colab cell checks it)"
    assert runner.RUNNER_ENV not in os.environ
