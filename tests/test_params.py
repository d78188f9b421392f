import pytest

from skin_utils.nb.params import ParameterError, check_params


@pytest.mark.parametrize("params, message", [
    ({"epochs": "5"}, "epochs='5': expected an integer"),
    ({"epochs": 0}, "epochs=0: expected an integer between 1"),
    ({"lr": -1.0}, "lr=-1.0: expected a number between"),
    ({"batch_size": 2.5}, "batch_size=2.5: expected an integer"),
    ({"amp": "fp8"}, "amp='fp8': expected one of"),
    ({"class_balance": "oversample"}, "class_balance='oversample'"),
    ({"resume": "yes"}, "resume='yes': expected True or False"),
    ({"seg_weight": 0.0, "cls_weight": 0.0}, "both 0"),
    ({"split_fractions": [0.8, 0.3, 0.1]}, "split_fractions"),
    ({"max_samples": True}, "max_samples=True"),
])
def test_bad_parameters_are_named(params, message):
    with pytest.raises(ParameterError, match=message.replace("(", r"\(").replace("[", r"\[")):
        check_params(params)


def test_good_parameters_pass_and_missing_paths_are_named(tmp_path):
    ok = {"epochs": 5, "lr": 1e-3, "max_samples": None, "amp": "auto", "split_fractions": [0.7, 0.15, 0.15]}
    assert check_params(ok) == ok
    with pytest.raises(ParameterError, match="checkpoint=.*does not exist"):
        check_params({"checkpoint": str(tmp_path / "none.pt")}, must_exist=("checkpoint",))


def test_choice_rules_are_the_constants_of_the_modules_that_define_them():
    from skin_utils.transforms import AUGMENTATIONS
    from skin_utils.losses import CLASS_BALANCE
    from skin_utils.data import SPLITS
    from skin_utils.engine import AMP_CHOICES, SELECTION_CRITERIA
    from skin_utils.nb.params import RULES

    assert RULES["amp"] == ("choice", AMP_CHOICES)
    assert RULES["selection"] == ("choice", SELECTION_CRITERIA)
    assert RULES["class_balance"] == ("choice", CLASS_BALANCE)
    assert RULES["augment"] == ("choice", AUGMENTATIONS)
    assert RULES["split"] == ("choice", (*SPLITS, "all"))


def test_lr_schedule_choices_are_what_the_optimiser_builder_accepts():
    import torch

    from skin_utils.engine import build_optimizer_and_schedule
    from skin_utils.nb.params import RULES

    model = torch.nn.Linear(2, 2)
    for schedule in RULES["lr_schedule"][1]:
        build_optimizer_and_schedule(model, 1e-3, 0.0, 2, 3, schedule)
    with pytest.raises(ValueError, match="lr_schedule='linear'"):
        build_optimizer_and_schedule(model, 1e-3, 0.0, 2, 3, "linear")


def test_on_bad_data_choices_are_what_load_index_accepts(tmp_path):
    from skin_utils.layout import DataLayoutError, load_index
    from skin_utils.nb.params import RULES

    for choice in RULES["on_bad_data"][1]:  # accepted: fails only later, on the missing folder
        with pytest.raises(DataLayoutError):
            load_index(tmp_path / "missing", on_bad_data=choice)
    with pytest.raises(ValueError, match="on_bad_data must be") as err:
        load_index(tmp_path / "missing", on_bad_data="ignore")
    assert not isinstance(err.value, DataLayoutError)


ANNOTATION_OF_KIND = {"int": "int", "int_or_none": "Optional[int]", "float": "float", "float_or_none": "Optional[float]", "bool": "bool", "choice": "str",
                      "label_map": "Optional[Union[str, dict]]", "str_or_none": "Optional[str]", "run_name": "Optional[str]"}


@pytest.mark.parametrize("name", ["01_eda", "02_train", "03_evaluate", "04_inference"])
def test_notebook_annotations_agree_with_the_rules(name):
    """A parameter typed `int` in a notebook is checked as an int, `Optional[int]` as int or None, ..."""
    import ast

    import jupytext

    from skin_utils.nb.params import RULES
    from tests.conftest import ROOT

    nb = jupytext.read(ROOT / "notebooks" / f"{name}.py")
    cell = next(c for c in nb.cells if "parameters" in c.metadata.get("tags", []))
    typed = {n.target.id: ast.unparse(n.annotation) for n in ast.parse(cell.source).body if isinstance(n, ast.AnnAssign)}
    checked = {k: v for k, v in typed.items() if k in RULES}
    assert checked, name
    assert checked == {k: ANNOTATION_OF_KIND[RULES[k][0]] for k in checked}
