"""Each knob declared once (skin_utils.config): checks that name the parameter, misspelt names
stopped with the nearest one, the notebooks' parameters cells and the command-line options equal
to the configs, and one training recipe through the notebook and the script."""

import ast
import json
import subprocess
import sys

import jupytext
import pytest
import torch

from skin_utils.config import (AMP_CHOICES, AUGMENTATIONS, CLASS_BALANCE, LR_SCHEDULES, ConfigError, EdaConfig,
                               EvaluateConfig, ExperimentConfig, InferConfig, TrainConfig)
from tests.conftest import ROOT

JOBS = {"01_eda": EdaConfig, "02_train": TrainConfig, "03_evaluate": EvaluateConfig, "04_inference": InferConfig,
        "05_experiments": ExperimentConfig}


@pytest.mark.parametrize("params, message", [
    ({"epochs": "5"}, "epochs='5': expected an integer"),
    ({"epochs": 0}, "epochs=0: expected a number between 1"),
    ({"lr": -1.0}, "lr=-1.0: expected a number between"),
    ({"batch_size": 2.5}, "batch_size=2.5: expected an integer"),
    ({"amp": "fp8"}, "amp='fp8': expected one of"),
    ({"class_balance": "oversample"}, "class_balance='oversample'"),
    ({"resume": "yes"}, "resume='yes': expected True or False"),
    ({"seg_weight": 0.0, "cls_weight": 0.0}, "both 0"),
    ({"split_fractions": [0.8, 0.3, 0.1]}, "split_fractions"),
    ({"split_fractions": [0.85, 0.0, 0.15]}, "split_fractions=[0.85, 0.0, 0.15]: training needs lesions in train and val"),
    ({"class_pooling": "lesion", "seg_weight": 0.0}, "class_pooling='lesion' and seg_weight=0"),
    ({"max_samples": True}, "max_samples=True"),
    ({"run_name": "my run"}, "'my-run'"),
    ({"epoch": 5}, "Unknown parameter 'epoch'.*did you mean 'epochs'"),
    ({"learning_rate": 1e-3}, "did you mean 'lr'"),
])
def test_bad_parameters_are_named(params, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace("[", r"\[")):
        TrainConfig.create(params)


def test_the_other_jobs_check_their_own_fields():
    with pytest.raises(ConfigError, match="split='tset'"):
        EvaluateConfig(split="tset")
    with pytest.raises(ConfigError, match="n_demo_images=0"):
        InferConfig(n_demo_images=0)
    with pytest.raises(ConfigError, match="label_map="):
        EvaluateConfig(label_map='{"nevus": "XX"}')
    with pytest.raises(ConfigError, match="'epoch' in fixed.*'epochs'"):
        ExperimentConfig(fixed={"epoch": 1})
    assert EvaluateConfig(label_map='{"common nevus": "NV"}').label_map


def test_the_knobs_a_resume_may_change_are_train_config_fields():
    from skin_utils.config import RESUMABLE_CHANGES

    assert RESUMABLE_CHANGES <= set(TrainConfig.names())  # a renamed field would otherwise be refused on resume


def test_choices_are_what_the_code_accepts():
    from skin_utils.transforms import build_augmentation
    from skin_utils.engine import amp_dtype_for, build_optimizer_and_schedule, selection_metrics
    from skin_utils.losses import build_loss

    model = torch.nn.Linear(2, 2)
    for schedule in LR_SCHEDULES:
        build_optimizer_and_schedule(model, 1e-3, 0.0, 2, 3, schedule)
    for augment in AUGMENTATIONS:
        build_augmentation(augment)
    for balance in CLASS_BALANCE:
        build_loss([5, 3, 2, 1, 1, 1, 1], class_balance=balance)
    for amp in AMP_CHOICES:
        amp_dtype_for(torch.device("cpu"), amp)
    # and nothing else, for callers that bypass the configs (fit, Predictor, scripts)
    for bad in (lambda: amp_dtype_for(torch.device("cpu"), "bf"), lambda: selection_metrics("balanced_acuracy+dice"),
                lambda: build_augmentation("zoom"), lambda: build_loss([5, 3, 2, 1, 1, 1, 1], class_balance="weighted")):
        with pytest.raises(ValueError, match="choose one of"):
            bad()


def _cell(name):
    nb = jupytext.read(ROOT / "notebooks" / f"{name}.py")
    cell = next(c for c in nb.cells if "parameters" in c.metadata.get("tags", []))
    return {n.target.id: (ast.literal_eval(n.value), ast.unparse(n.annotation))
            for n in ast.parse(cell.source).body if isinstance(n, ast.AnnAssign)}


@pytest.mark.parametrize("name", sorted(JOBS))
def test_each_parameters_cell_shows_its_configs_fields_with_the_same_defaults(name):
    cfg, cell = JOBS[name](), _cell(name)
    fields = {k: v for k, v in cell.items() if k not in ("overrides", "repo_url")}
    assert fields and set(fields) <= set(cfg.names()), set(fields) - set(cfg.names())
    for key, (default, annotation) in fields.items():
        assert default == getattr(cfg, key), key
        field_type = next(f.type for f in __import__("dataclasses").fields(cfg) if f.name == key)
        assert annotation.replace("typing.", "") == str(field_type).replace("typing.", ""), key
    if name != "02_train":  # the others show every knob; 02 the main ones, the rest through -p or overrides
        assert set(fields) == set(cfg.names())


def test_a_notebook_namespace_becomes_its_config_and_a_stray_name_stops_it():
    cfg = TrainConfig.from_notebook({"epochs": 2, "lr": 1e-3, "overrides": {}, "In": [], "_i1": "", "result": None},
                                    {"ema_decay": 0.99})
    assert (cfg.epochs, cfg.lr, cfg.ema_decay) == (2, 1e-3, 0.99)
    # -y 'overrides: {epochs: 5}' for a knob the parameters cell also declares: the override wins
    assert TrainConfig.from_notebook({"epochs": 2}, {"epochs": 5}).epochs == 5
    with pytest.raises(ConfigError, match="'epoch' in the parameters given to 02_train.*'epochs'"):
        TrainConfig.from_notebook({"epoch": 5})
    with pytest.raises(ConfigError, match="overrides of 02_train.*'ema_decay'"):
        TrainConfig.from_notebook({}, {"ema": 0.99})


def test_the_command_line_options_are_the_fields():
    out = subprocess.run([sys.executable, "-m", "skin_utils.train", "--help"], capture_output=True, text=True,
                         timeout=120, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    for name, meaning in TrainConfig.meanings().items():
        assert "--" + name.replace("_", "-") in out.stdout, name
    assert set(TrainConfig.meanings()) == set(TrainConfig.names())  # every field has its one-line meaning
    assert TrainConfig.from_args([]) == TrainConfig()  # the script's defaults are the notebook's (the cell test)
    cfg = TrainConfig.from_args(["--epochs", "4", "--time-budget", "none", "--split-fractions", "0.6", "0.2", "0.2",
                                 "--no-calibrate-tta", "--ema-decay", "0.99"])
    assert (cfg.epochs, cfg.time_budget, cfg.split_fractions, cfg.calibrate_tta, cfg.ema_decay) == \
        (4, None, [0.6, 0.2, 0.2], False, 0.99)


TIMING = {"minutes_taken", "history", "budget_check"}


def test_one_recipe_the_notebook_and_the_script_train_the_same_run(synthetic_dir, tmp_path):
    """02_train (papermill) and `python -m skin_utils.train` call the same `train(cfg)`: the same
    train.json (timings aside) and the same checkpoint fields and weights."""
    import papermill

    from skin_utils.checkpoint import Checkpoint

    common = {"data_dir": str(synthetic_dir), "image_size": 32, "epochs": 1, "batch_size": 16, "max_samples": 120,
              "split_path": str(tmp_path / "split.csv"), "reports_dir": str(tmp_path / "reports")}
    extra = {"encoder_weights": None, "device": "cpu", "amp": "off", "num_workers": 0, "calibrate_tta": False}
    papermill.execute_notebook(str(ROOT / "notebooks" / "02_train.ipynb"), str(tmp_path / "02.ipynb"),
                               parameters={**common, "run_name": "notebook", "overrides": extra}, cwd=str(ROOT),
                               kernel_name="python3", language="python", progress_bar=False)
    argv = [x for k, v in {**common, **extra, "run_name": "script"}.items() if k != "calibrate_tta"
            for x in ("--" + k.replace("_", "-"), "none" if v is None else str(v))] + ["--no-calibrate-tta"]
    out = subprocess.run([sys.executable, "-m", "skin_utils.train", *argv], capture_output=True, text=True,
                         timeout=600, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-3000:]
    runs = {n: tmp_path / "reports" / "runs" / n for n in ("notebook", "script")}
    summaries = {n: json.loads((r / "metrics" / "train.json").read_text()) for n, r in runs.items()}
    a, b = ({k: v for k, v in s.items() if k not in TIMING} for s in summaries.values())
    assert a["params"].pop("run_name") == "notebook" and b["params"].pop("run_name") == "script"
    a.pop("checkpoint"), b.pop("checkpoint")
    assert a["environment"].pop("date") and b["environment"].pop("date")  # the versions and the commit are equal
    assert a["environment"]["torch"] == torch.__version__
    assert a == b
    ckpts = {n: Checkpoint.load(r / "checkpoints" / "best.pt") for n, r in runs.items()}
    for field in ("model_config", "class_names", "image_size", "normalization", "data", "selection", "epoch",
                  "calibration", "encoder_weights_used"):
        assert getattr(ckpts["notebook"], field) == getattr(ckpts["script"], field), field
    assert {k: v for k, v in ckpts["notebook"].params.items() if k != "run_name"} == \
        {k: v for k, v in ckpts["script"].params.items() if k != "run_name"}
    for key, tensor in ckpts["notebook"].model.items():
        assert torch.equal(tensor, ckpts["script"].model[key]), key
    assert json.loads((runs["notebook"] / "run.json").read_text())["params"] == {**TrainConfig.create(
        {**common, **extra, "run_name": "notebook"}).to_dict()}


def test_the_training_note_says_where_the_best_epoch_fell():
    from skin_utils.train import training_note

    rows = [{"epoch": e, "score": s} for e, s in ((1, 0.5), (2, 0.7), (3, 0.6))]
    assert "came at epoch 2 of 3" in training_note(rows, "dice")
    assert "still improving at the last epoch" in training_note(rows[:2], "dice")
    assert training_note(rows[:1], "dice").startswith("A single epoch")


@pytest.mark.parametrize("cls", [TrainConfig, EvaluateConfig, InferConfig, EdaConfig, ExperimentConfig],
                         ids=lambda c: c.__name__)
def test_every_configs_help_prints_each_meaning(cls):
    # argparse reads '%' in help text as a format: "95% intervals" crashed EvaluateConfig's --help
    text = " ".join(cls.parser().format_help().split())
    for name, meaning in cls.meanings().items():
        assert " ".join(meaning.split()) in text, name
