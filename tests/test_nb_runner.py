"""The notebooks' runner (python -m skin_utils.sweep all) passes only what was asked for, plus the
paths that tie the notebooks together, and shows the config's defaults without installing anything."""

import os
import subprocess
import sys

from skin_utils import sweep
from skin_utils.config import EdaConfig, EvaluateConfig, InferConfig, TrainConfig

NOTHING = dict.fromkeys(sweep.RUNNER_OPTIONS)


def test_nothing_asked_passes_only_the_paths_that_tie_the_notebooks():
    plan = sweep.notebook_params(NOTHING, "r0")
    ties = {"data_dir": "data", "reports_dir": "reports", "split_path": "reports/split.csv"}
    assert plan["01_eda"] == ties and plan["02_train"] == {**ties, "run_name": "r0"}
    assert plan["03_evaluate"] == {"reports_dir": "reports", "run": "r0"}  # the data and split come from the run
    assert plan["04_inference"] == {"reports_dir": "reports", "run": "r0"}
    assert plan["05_experiments"] == {"experiments_dir": "reports/experiments"}
    # the ties equal the configs' defaults: nothing changes but the run they share
    for params, cfg in ((plan["01_eda"], EdaConfig()), (plan["02_train"], TrainConfig()),
                        (plan["03_evaluate"], EvaluateConfig()), (plan["04_inference"], InferConfig())):
        assert all(getattr(cfg, k) == v for k, v in params.items() if k not in ("run", "run_name"))


def test_what_is_asked_goes_to_the_notebooks_that_have_it():
    options = {**NOTHING, "epochs": 2, "batch_size": 8, "max_samples": 50, "reports_dir": "/tmp/r", "data_dir": "d"}
    plan = sweep.notebook_params(options, "r1")
    assert plan["02_train"]["epochs"] == 2 and plan["02_train"]["batch_size"] == 8
    assert plan["01_eda"]["max_samples"] == 50 and plan["02_train"]["max_samples"] == 50
    assert "batch_size" not in plan["03_evaluate"] and "batch_size" not in plan["04_inference"]
    assert plan["02_train"]["split_path"] == "/tmp/r/split.csv" == plan["01_eda"]["split_path"]
    assert plan["05_experiments"]["experiments_dir"] == "/tmp/r/experiments"
    assert plan["05_experiments"]["fixed"]["data_dir"] == "d"  # the small demo experiment on the data given
    assert plan["02_train"]["run_name"] == "r1" == plan["03_evaluate"]["run"] == plan["04_inference"]["run"]
    assert "image_size" not in plan["02_train"]


def test_help_shows_the_config_defaults_and_creates_nothing(tmp_path):
    env = {**os.environ, "SKIN_UTILS_ROOT": str(tmp_path)}
    out = subprocess.run([sys.executable, "-m", "skin_utils.sweep", "all", "--help"], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    text = " ".join(out.stdout.split())
    for option in ("epochs", "batch_size", "image_size", "data_dir"):
        assert f"(default: {getattr(TrainConfig, option)!r})" in text, option
    assert list(tmp_path.iterdir()) == []


def test_run_all_executes_the_notebooks_in_order_with_one_run(monkeypatch, tmp_path):
    calls = []
    monkeypatch.setattr(sweep, "execute", lambda name, out, params, root: calls.append(
        (name, params, os.environ.get(sweep.RUNNER_ENV))))
    monkeypatch.delenv(sweep.RUNNER_ENV, raising=False)
    options = {**NOTHING, "epochs": 1, "reports_dir": str(tmp_path)}
    assert sweep.run_all(options, only=["02_train", "04_inference"]) == 0
    assert [c[0] for c in calls] == ["02_train", "04_inference"]
    assert calls[0][1]["epochs"] == 1 and calls[0][1]["reports_dir"] == str(tmp_path)
    # one run: 02_train trains it under a new name, 04_inference is given the same name
    assert calls[0][1]["run_name"] == calls[1][1]["run"] and calls[0][1]["run_name"].endswith("_seed0")
    assert all(c[2] == "1" for c in calls), "the kernels see SKIN_UTILS_RUNNER (02_train's Colab cell checks it)"
    assert sweep.RUNNER_ENV not in os.environ
