"""Calibration metrics against hand computations and scikit-learn; temperature scaling recovers a
known temperature."""

import math
import warnings

import numpy as np
import pytest
import torch
from sklearn.metrics import brier_score_loss, log_loss

from skin_utils.trust.calibration import (
    CalibrationMetrics,
    apply_temperature,
    brier_score,
    calibration_report,
    classwise_ece,
    expected_calibration_error,
    fit_temperature,
    negative_log_likelihood,
    probs_to_logits,
    reliability_diagram,
)

# Four binary predictions, confidences away from bin edges:
#   0.95 right, 0.95 wrong, 0.75 right (class 1), 0.55 wrong (says 0, is 1)
HAND_PROBS = np.array([[0.95, 0.05], [0.95, 0.05], [0.25, 0.75], [0.55, 0.45]])
HAND_LABELS = np.array([0, 1, 1, 1])
# bins of 0.95 (2 images, accuracy 1/2): 2/4 * |0.5 - 0.95| = 0.225
# bin of 0.75 (right):                     1/4 * |1 - 0.75|  = 0.0625
# bin of 0.55 (wrong):                     1/4 * |0 - 0.55|  = 0.1375
HAND_ECE = 0.425


def _softmax(z):
    e = np.exp(z - z.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


def _random_case(n=300, k=4, seed=0):
    rng = np.random.default_rng(seed)
    z = rng.normal(0, 2, size=(n, k))
    return _softmax(z), rng.integers(0, k, size=n)


@pytest.mark.parametrize("n_bins", [5, 15])
def test_ece_hand_computed(n_bins):
    assert expected_calibration_error(HAND_PROBS, HAND_LABELS, n_bins) == pytest.approx(HAND_ECE)


def test_ece_perfect_and_worst():
    # one-hot right answers: confidence 1, accuracy 1
    probs = np.eye(3)[[0, 1, 2, 1]]
    assert expected_calibration_error(probs, [0, 1, 2, 1]) == 0.0
    # one-hot wrong answers: confidence 1, accuracy 0
    assert expected_calibration_error(probs, [1, 2, 0, 0]) == 1.0


def test_classwise_ece_hand_and_reference():
    # binary: both classes mirror the top-label case
    assert classwise_ece(HAND_PROBS, HAND_LABELS, 5) == pytest.approx(HAND_ECE)
    per_class = classwise_ece(HAND_PROBS, HAND_LABELS, 5, reduction="none")
    np.testing.assert_allclose(per_class, [HAND_ECE, HAND_ECE])
    # 4 classes against a loop written straight from the definition
    probs, labels = _random_case()
    n_bins = 10
    expected = []
    for k in range(probs.shape[1]):
        total = 0.0
        for b in range(n_bins):
            lo, hi = b / n_bins, (b + 1) / n_bins
            inside = (probs[:, k] > lo) & (probs[:, k] <= hi) if b else (probs[:, k] <= hi)
            if inside.any():
                gap = abs(np.mean(labels[inside] == k) - probs[inside, k].mean())
                total += inside.sum() / len(labels) * gap
        expected.append(total)
    np.testing.assert_allclose(classwise_ece(probs, labels, n_bins, reduction="none"), expected)
    assert classwise_ece(probs, labels, n_bins) == pytest.approx(np.mean(expected))


def test_reliability_diagram_bins():
    d = reliability_diagram(HAND_PROBS, HAND_LABELS, n_bins=5)
    assert d["count"] == [0, 0, 1, 1, 2]
    np.testing.assert_allclose(d["accuracy"][2:], [0.0, 1.0, 0.5])
    np.testing.assert_allclose(d["confidence"][2:], [0.55, 0.75, 0.95])
    assert all(math.isnan(v) for v in d["accuracy"][:2])  # empty bins
    assert d["bin_edges"] == pytest.approx([0, 0.2, 0.4, 0.6, 0.8, 1.0])
    assert d["ece"] == pytest.approx(HAND_ECE)
    assert d["accuracy_overall"] == 0.5 and d["n_images"] == 4
    # right-closed bins: exactly 0.6 belongs to (0.4, 0.6], exactly 1.0 to the last bin
    d = reliability_diagram([[0.6, 0.4], [1.0, 0.0]], [0, 0], n_bins=5)
    assert d["count"] == [0, 0, 1, 0, 1]


def test_nll_and_brier_against_sklearn_and_hand():
    probs, labels = _random_case(k=5, seed=1)
    assert negative_log_likelihood(probs, labels) == pytest.approx(log_loss(labels, probs, labels=range(5)))
    assert brier_score(probs, labels) == pytest.approx(
        brier_score_loss(labels, probs, labels=range(5), scale_by_half=False))
    # hand: -(log .95 + log .05 + log .75 + log .45) / 4
    assert negative_log_likelihood(HAND_PROBS, HAND_LABELS) == pytest.approx(
        -(math.log(0.95) + math.log(0.05) + math.log(0.75) + math.log(0.45)) / 4)
    # hand: per row sum of squares: .005, 2*.95^2, 2*.25^2, 2*.55^2
    assert brier_score(HAND_PROBS, HAND_LABELS) == pytest.approx(
        (2 * 0.05**2 + 2 * 0.95**2 + 2 * 0.25**2 + 2 * 0.55**2) / 4)
    # a confident mistake is large but finite
    assert negative_log_likelihood([[1.0, 0.0]], [1]) == pytest.approx(-math.log(1e-15))


def test_torch_inputs_and_report_and_accumulator():
    probs, labels = _random_case(n=200, k=7, seed=2)
    report = calibration_report(torch.tensor(probs, dtype=torch.float32), torch.tensor(labels))
    assert report["ece"] == pytest.approx(expected_calibration_error(probs, labels), abs=1e-6)
    m = CalibrationMetrics()
    for chunk in np.array_split(np.arange(200), 3):
        m.update(probs[chunk], labels[chunk])
    assert len(m) == 200
    assert m.aggregate() == pytest.approx(calibration_report(probs, labels))
    m.reset()
    with pytest.raises(ValueError, match="before any sample"):
        m.aggregate()


def test_input_errors_say_what_is_wrong():
    with pytest.raises(ValueError, match="logits"):
        expected_calibration_error(np.array([[2.0, -1.0]]), [0])
    with pytest.raises(ValueError, match="sum to 1"):
        brier_score([[0.5, 0.2]], [0])
    with pytest.raises(ValueError, match=r"\[0, 2\)"):
        negative_log_likelihood([[0.5, 0.5]], [2])
    with pytest.raises(ValueError, match="rows"):
        brier_score([[0.5, 0.5]], [0, 1])
    with pytest.raises(ValueError, match="temperature"):
        apply_temperature(np.zeros((1, 2)), 0.0)


def test_temperature_one_is_plain_softmax_and_argmax_is_kept():
    z = np.random.default_rng(3).normal(0, 3, size=(50, 7))
    np.testing.assert_allclose(apply_temperature(z, 1.0), _softmax(z), rtol=1e-12)
    zt = torch.tensor(z, dtype=torch.float32)
    out = apply_temperature(zt, 1.0)
    assert isinstance(out, torch.Tensor) and out.dtype == torch.float32
    torch.testing.assert_close(out, zt.softmax(1))
    for t in (0.3, 2.5):
        np.testing.assert_array_equal(apply_temperature(z, t).argmax(1), z.argmax(1))
    # TTA-averaged probabilities: log p as logits gives p back at T = 1
    p = _softmax(z)
    np.testing.assert_allclose(apply_temperature(probs_to_logits(p), 1.0), p, rtol=1e-9)


@pytest.mark.parametrize("t_true", [0.6, 2.0])
def test_fit_temperature_recovers_known_temperature(t_true):
    rng = np.random.default_rng(4)
    z = rng.normal(0, 2.5, size=(20000, 7))
    p = _softmax(z / t_true)
    labels = (p.cumsum(1) > rng.random((len(p), 1))).argmax(1)  # one draw per row from p
    t = fit_temperature(z, labels)
    assert t == pytest.approx(t_true, rel=0.05)
    # the fitted T is at least as good as the truth on the fitting data, and deterministic
    nll = lambda temp: negative_log_likelihood(apply_temperature(z, temp), labels)  # noqa: E731
    assert nll(t) <= nll(t_true) + 1e-9
    assert fit_temperature(torch.tensor(z), torch.tensor(labels)) == t


def test_fit_temperature_warns_at_the_bound():
    # labels that contradict the logits: the best T is as large as allowed
    z = np.array([[5.0, -5.0], [-5.0, 5.0]] * 10)
    labels = np.array([1, 0] * 10)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        t = fit_temperature(z, labels, bounds=(0.1, 10.0))
    assert t == pytest.approx(10.0, rel=1e-3)
    assert any("edge of the search interval" in str(w.message) for w in caught)


def test_reliability_figure():
    import matplotlib.pyplot as plt

    from skin_utils.plots import plot_reliability_diagram

    d = reliability_diagram(HAND_PROBS, HAND_LABELS, n_bins=5)
    fig = plot_reliability_diagram(d, d, temperature=1.5, title="t")
    assert len(fig.axes) == 4 and "T = 1.50" in fig.axes[1].get_title()
    plt.close(fig)
    with pytest.raises(ValueError, match="reliability_diagram"):
        plot_reliability_diagram({"ece": 0.1})
