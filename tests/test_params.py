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
