"""The numbers of skin_utils.trust on cases with known answers: calibration metrics against hand
computations and scikit-learn, temperature scaling recovering a known temperature; uncertainty,
mask uncertainty, referral and the melanoma operating point; the heat map against the mask. (MC
dropout and Grad-CAM themselves are computed by the prediction loop: tests/test_engine.py.)"""

import math
import warnings

import numpy as np
import pytest
import torch
from sklearn.metrics import brier_score_loss, log_loss

from skin_utils.metrics import sens_spec_at
from skin_utils.trust import (apply_temperature, binary_entropy, border_band, calibration_report, cam_localization,
                              cam_localization_report, classwise_ece, feature_distance, feature_reference, feature_summary,
                              fit_temperature, mask_uncertainty_score,
                              mutual_information, operating_threshold, predictive_entropy, probs_to_logits,
                              referral_threshold, reliability_diagram, risk_coverage_curve, selective_metrics,
                              selective_report, vote_disagreement)

# ----------------------------------------------------------------------------- calibration
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


def _ece(probs, labels, n_bins=15):
    return calibration_report(probs, labels, n_bins)["ece"]


def _nll(probs, labels):
    return calibration_report(probs, labels)["nll"]


def _brier(probs, labels):
    return calibration_report(probs, labels)["brier"]


def _random_case(n=300, k=4, seed=0):
    rng = np.random.default_rng(seed)
    z = rng.normal(0, 2, size=(n, k))
    return _softmax(z), rng.integers(0, k, size=n)


@pytest.mark.parametrize("n_bins", [5, 15])
def test_ece_hand_computed(n_bins):
    assert _ece(HAND_PROBS, HAND_LABELS, n_bins) == pytest.approx(HAND_ECE)


def test_ece_perfect_and_worst():
    # one-hot right answers: confidence 1, accuracy 1
    probs = np.eye(3)[[0, 1, 2, 1]]
    assert _ece(probs, [0, 1, 2, 1]) == 0.0
    # one-hot wrong answers: confidence 1, accuracy 0
    assert _ece(probs, [1, 2, 0, 0]) == 1.0


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
    assert _nll(probs, labels) == pytest.approx(log_loss(labels, probs, labels=range(5)))
    assert _brier(probs, labels) == pytest.approx(
        brier_score_loss(labels, probs, labels=range(5), scale_by_half=False))
    # hand: -(log .95 + log .05 + log .75 + log .45) / 4
    assert _nll(HAND_PROBS, HAND_LABELS) == pytest.approx(
        -(math.log(0.95) + math.log(0.05) + math.log(0.75) + math.log(0.45)) / 4)
    # hand: per row sum of squares: .005, 2*.95^2, 2*.25^2, 2*.55^2
    assert _brier(HAND_PROBS, HAND_LABELS) == pytest.approx(
        (2 * 0.05**2 + 2 * 0.95**2 + 2 * 0.25**2 + 2 * 0.55**2) / 4)
    # a confident mistake is large but finite
    assert _nll([[1.0, 0.0]], [1]) == pytest.approx(-math.log(1e-15))


def test_torch_inputs_and_report():
    probs, labels = _random_case(n=200, k=7, seed=2)
    report = calibration_report(probs, labels)
    torch_report = calibration_report(torch.tensor(probs, dtype=torch.float32), torch.tensor(labels))
    assert torch_report["ece"] == pytest.approx(report["ece"], abs=1e-6)
    assert set(report) == {"ece", "classwise_ece", "nll", "brier", "n_bins", "n_images"}
    assert report["ece"] == reliability_diagram(probs, labels)["ece"]
    assert report["classwise_ece"] == classwise_ece(probs, labels)
    assert (report["n_bins"], report["n_images"]) == (15, 200)
    with pytest.raises(ValueError, match="No samples"):
        calibration_report(probs[:0], labels[:0])


def test_input_errors_say_what_is_wrong():
    with pytest.raises(ValueError, match="logits"):
        _ece(np.array([[2.0, -1.0]]), [0])
    with pytest.raises(ValueError, match="sum to 1"):
        _brier([[0.5, 0.2]], [0])
    with pytest.raises(ValueError, match=r"\[0, 2\)"):
        _nll([[0.5, 0.5]], [2])
    with pytest.raises(ValueError, match="rows"):
        _brier([[0.5, 0.5]], [0, 1])
    with pytest.raises(ValueError, match="temperature"):
        apply_temperature(np.zeros((1, 2)), 0.0)


def test_temperature_one_is_plain_softmax_and_argmax_is_kept():
    z = np.random.default_rng(3).normal(0, 3, size=(50, 7))
    np.testing.assert_allclose(apply_temperature(z, 1.0), _softmax(z), rtol=1e-12)
    zt = torch.tensor(z, dtype=torch.float32)  # a tensor goes in like any array
    np.testing.assert_allclose(apply_temperature(zt, 1.0), zt.softmax(1).numpy(), atol=1e-6)
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
    nll = lambda temp: _nll(apply_temperature(z, temp), labels)  # noqa: E731
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


# ----------------------------------------------------------------------------- classification
def test_entropy_extremes():
    probs = np.array([[0.25] * 4, [1.0, 0, 0, 0]])
    np.testing.assert_allclose(predictive_entropy(probs), [math.log(4), 0.0])
    np.testing.assert_allclose(predictive_entropy(probs, normalize=True), [1.0, 0.0])


def test_sample_measures_known_cases():
    # image 0: three identical passes; image 1: passes [1,0], [0,1], [1,0]
    s = np.array([
        [[0.7, 0.3], [1.0, 0.0]],
        [[0.7, 0.3], [0.0, 1.0]],
        [[0.7, 0.3], [1.0, 0.0]],
    ])
    mi = mutual_information(s)
    assert mi[0] == pytest.approx(0.0, abs=1e-12)
    # mean (2/3, 1/3), every pass one-hot: MI = H(2/3, 1/3) - 0
    h = -(2 / 3 * math.log(2 / 3) + 1 / 3 * math.log(1 / 3))
    assert mi[1] == pytest.approx(h)
    np.testing.assert_allclose(vote_disagreement(s), [0.0, 1 / 3])
    t = torch.tensor(s)  # the entropy of the mean of the passes = the passes' mean entropy + MI
    np.testing.assert_allclose(predictive_entropy(t), predictive_entropy([[0.7, 0.3], [2 / 3, 1 / 3]]))
    expected = np.mean([predictive_entropy(p) for p in s], axis=0)
    np.testing.assert_allclose(expected, [predictive_entropy([[0.7, 0.3]])[0], 0.0])
    np.testing.assert_allclose(predictive_entropy(t), expected + mutual_information(t))


def test_mutual_information_is_mean_kl_to_the_mean():
    rng = np.random.default_rng(0)
    z = rng.normal(size=(8, 5, 7))
    s = np.exp(z) / np.exp(z).sum(-1, keepdims=True)
    mean = s.mean(0)
    kl = np.sum(s * np.log(s / mean[None]), axis=-1).mean(0)
    np.testing.assert_allclose(mutual_information(s), kl, rtol=1e-10)


def test_sample_shape_errors():
    with pytest.raises(ValueError, match=r"\(S, N, K\)"):
        mutual_information(np.full((4, 2), 0.5))
    with pytest.raises(ValueError, match="sum to 1"):
        vote_disagreement(np.full((2, 3, 2), 0.7))


# ----------------------------------------------------------------------------- masks
def test_binary_entropy():
    np.testing.assert_allclose(binary_entropy(np.array([0.0, 0.5, 1.0, 0.25])),
                               [0.0, 1.0, 0.0, -(0.25 * math.log2(0.25) + 0.75 * math.log2(0.75))])
    assert binary_entropy(np.full((2, 3, 4), 0.5)).shape == (2, 3, 4)
    with pytest.raises(ValueError, match="sigmoid"):
        binary_entropy(np.array([1.5]))


def test_border_band():
    m = np.zeros((30, 30), dtype=bool)
    m[10:20, 10:20] = True
    band = border_band(m, 1)
    assert band.sum() == 12 * 12 - 8 * 8
    assert band[9, 9] and band[10, 10] and not band[15, 15] and not band[8, 15]
    # a lesion cut by the left edge: no band along the image frame
    m = np.zeros((30, 30), dtype=bool)
    m[10:20, 0:10] = True
    band = border_band(m, 1)
    assert not band[15, 0] and band[15, 9] and band[15, 10]
    assert not border_band(np.zeros((5, 5)), 1).any() and not border_band(np.ones((5, 5)), 1).any()


def test_mask_uncertainty_score():
    p = np.zeros((2, 40, 40))
    p[0, 10:30, 10:30] = 1.0           # confident lesion ...
    band = border_band(p[0] >= 0.5, 2)
    rim = band & (p[0] == 0)
    p[0][rim] = 0.4                    # ... with an unsure rim just outside it (not predicted)
    h = -(0.4 * math.log2(0.4) + 0.6 * math.log2(0.6))
    # image 1: no lesion predicted at all -> 1.0
    score = mask_uncertainty_score(p, width=2)
    assert (rim.sum(), band.sum()) == (24 * 24 - 20 * 20, 24 * 24 - 16 * 16)
    assert score[0] == pytest.approx(176 * h / 320)
    assert score[1] == 1.0
    # images of different sizes, as a list; the default band is 3% of the shorter side (here 1 pixel)
    np.testing.assert_allclose(mask_uncertainty_score([p[0], np.zeros((10, 12))]),
                               [mask_uncertainty_score(p[0], width=1)[0], 1.0])
    # a confident lesion filling the frame has no border: its entropy over the map, not the maximum
    full = np.full((40, 40), 0.999)
    assert mask_uncertainty_score(full)[0] == pytest.approx(binary_entropy(full).mean())


# ----------------------------------------------------------------------------- selective prediction
def test_risk_coverage_hand_computed():
    c = risk_coverage_curve([0.1, 0.2, 0.3, 0.4], [0, 1, 0, 1])
    np.testing.assert_allclose(c["coverage"], [0.25, 0.5, 0.75, 1.0])
    np.testing.assert_allclose(c["risk"], [0, 1 / 2, 1 / 3, 1 / 2])
    assert c["aurc"] == pytest.approx((0 + 1 / 2 + 1 / 3 + 1 / 2) / 4)
    assert c["optimal_aurc"] == pytest.approx((0 + 0 + 1 / 3 + 1 / 2) / 4)  # errors kept last
    assert c["error_rate"] == 0.5
    assert c["excess_aurc"] == pytest.approx(c["aurc"] - c["optimal_aurc"])


def test_risk_coverage_ties_do_not_depend_on_order():
    a = risk_coverage_curve([0.5, 0.5, 0.1], [1, 0, 0])
    b = risk_coverage_curve([0.5, 0.5, 0.1], [0, 1, 0])
    np.testing.assert_allclose(a["risk"], b["risk"])
    # kept 1: 0; kept 2: one of the tied pair, expected 1/2 error -> 0.25; kept 3: 1/3
    np.testing.assert_allclose(a["risk"], [0, 0.25, 1 / 3])


def test_referral_threshold_coverage():
    u = np.random.default_rng(0).permutation(np.arange(10) / 10)
    t = referral_threshold(u, 0.8)
    assert t == pytest.approx(0.7) and np.mean(u <= t) == 0.8
    t = referral_threshold(u, 0.75)  # 7.5 images: keep 8
    assert np.mean(u <= t) == 0.8
    assert referral_threshold(u, 1.0) == u.max()
    with pytest.raises(ValueError, match=r"\(0, 1\]"):
        referral_threshold(u, 0.0)


def test_selective_metrics_and_report():
    # 5 images, classes 0 = MEL, 1 = NV. Uncertainty ranks image 4 (a missed melanoma) highest.
    probs = np.array([[0.9, 0.1], [0.2, 0.8], [0.3, 0.7], [0.8, 0.2], [0.4, 0.6]])
    labels = np.array([0, 1, 0, 1, 0])
    u = np.array([0.1, 0.2, 0.3, 0.4, 0.9])
    rows = selective_report(probs, labels, u, (0.0, 0.2, 0.4), melanoma_index=0)
    full, r20, r40 = rows
    assert full["coverage"] == 1.0 and full["accuracy"] == pytest.approx(2 / 5)
    assert full["mel_sensitivity_kept"] == pytest.approx(1 / 3)
    assert full["mel_sensitivity_with_referral"] == pytest.approx(1 / 3)
    # refer image 4: melanomas 0 (found), 2 (missed) kept, 4 referred
    assert r20["n_referred"] == 1 and r20["mel_referred"] == 1
    assert r20["accuracy"] == pytest.approx(2 / 4)
    assert r20["mel_sensitivity_kept"] == pytest.approx(1 / 2)
    assert r20["mel_sensitivity_with_referral"] == pytest.approx(2 / 3)
    # refer images 4 and 3: kept 0 (MEL ok), 1 (NV ok), 2 (MEL missed): balanced acc (1/2 + 1) / 2
    assert r40["balanced_accuracy"] == pytest.approx(0.75)
    # an operating threshold on P(MEL) instead of the argmax: 0.35 catches image 4 (0.4) too
    m = selective_metrics(probs, labels, np.ones(5, bool), mel_threshold=0.35)
    assert m["mel_sensitivity_kept"] == pytest.approx(2 / 3)
    m = selective_metrics(probs, labels, np.zeros(5, bool))
    assert math.isnan(m["accuracy"]) and m["mel_sensitivity_with_referral"] == 1.0


def test_operating_threshold_hits_the_target_exactly():
    rng = np.random.default_rng(0)
    p_mel = np.concatenate([np.arange(1, 11) / 10, rng.uniform(0, 0.5, 30)])  # 10 melanomas
    is_mel = np.r_[np.ones(10, bool), np.zeros(30, bool)]
    t = operating_threshold(p_mel, is_mel, 0.9)
    assert t == pytest.approx(0.2)
    assert sens_spec_at(p_mel, is_mel, t)["sensitivity"] == 0.9
    # the highest such threshold: the next melanoma score up misses the target
    assert sens_spec_at(p_mel, is_mel, 0.3)["sensitivity"] < 0.9
    # a target between steps rounds up to the next reachable sensitivity
    assert operating_threshold(p_mel, is_mel, 0.85) == pytest.approx(0.2)
    assert operating_threshold(p_mel, is_mel, 1.0) == pytest.approx(0.1)
    with pytest.raises(ValueError, match="no melanoma"):
        operating_threshold(p_mel[10:], is_mel[10:], 0.9)


def test_risk_coverage_figure():
    import matplotlib.pyplot as plt

    from skin_utils.plots import plot_risk_coverage

    c = risk_coverage_curve([0.1, 0.2, 0.3, 0.4], [0, 1, 0, 1])
    fig = plot_risk_coverage({"entropy": c, "vote": c})
    labels = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert labels[0] == f"entropy (AURC {c['aurc']:.3f})" and len(labels) == 4
    plt.close(fig)
    plt.close(plot_risk_coverage(c))  # a single curve
    with pytest.raises(ValueError, match="risk_coverage_curve"):
        plot_risk_coverage({"x": {"aurc": 0.1}})


# ----------------------------------------------------------------------------- energy inside
def _square_mask(h=20, w=30, box=(5, 15, 10, 25)):
    m = np.zeros((h, w), dtype=bool)
    m[box[0]:box[1], box[2]:box[3]] = True
    return m


def _one(cam, mask, key):
    return [r[key] for r in cam_localization(cam, mask)]


def test_energy_inside_known_answers():
    mask = _square_mask()
    assert _one(mask.astype(float), mask, "energy_inside") == [1.0]          # the map is the mask
    uniform = cam_localization(np.ones(mask.shape), mask)[0]
    assert uniform["energy_inside"] == pytest.approx(uniform["area_share"]) and uniform["lift"] == pytest.approx(1)
    assert uniform["area_share"] == pytest.approx(10 * 15 / 600)             # the uniform-map baseline
    assert _one((~mask).astype(float), mask, "energy_inside") == [0.0]       # all outside
    assert math.isnan(_one(np.zeros(mask.shape), mask, "energy_inside")[0])  # no map at all
    half = np.where(mask, 1.0, 0.0) + np.where(~mask, 150 / 450, 0.0)        # equal mass in and out
    assert _one(half, mask, "energy_inside") == [pytest.approx(0.5)]
    # batches and lists of images
    np.testing.assert_allclose(_one(np.stack([mask, np.ones(mask.shape)]).astype(float), np.stack([mask, mask]),
                                    "energy_inside"), [1.0, 0.25])
    assert len(cam_localization([mask.astype(float)], [mask])) == 1
    with pytest.raises(ValueError, match="differ"):
        cam_localization(np.ones((4, 4)), np.ones((4, 5)))
    with pytest.raises(ValueError, match="non-negative"):
        cam_localization(-np.ones((4, 4)), np.ones((4, 4)))
    with pytest.raises(ValueError, match="2 maps but 1 labels"):
        cam_localization(np.ones((2, 4, 4)), np.ones((2, 4, 4)), labels=[0])


def test_peak_inside():
    mask = _square_mask()
    cam = np.zeros(mask.shape)
    cam[10, 12] = 1.0
    assert _one(cam, mask, "peak_inside") == [True]
    cam[0, 0] = 2.0
    assert _one(cam, mask, "peak_inside") == [False]
    assert _one(np.zeros(mask.shape), mask, "peak_inside") == [False]


def test_localization_report_per_class_and_outside_list():
    mask = _square_mask()
    inside, uniform, outside = mask.astype(float), np.ones(mask.shape), (~mask).astype(float)
    whole = np.ones(mask.shape, bool)  # "d": an all-zero map on a lesion filling the image, left out of every mean
    report = cam_localization_report(cam_localization(
        [inside, uniform, outside, np.zeros(mask.shape)], [mask] * 3 + [whole], labels=[0, 0, 1, 1],
        image_ids=["a", "b", "c", "d"]))
    o = report["overall"]
    assert o["n_images"] == 4 and o["n_empty_cam"] == 1
    assert o["energy_inside"] == pytest.approx((1 + 0.25 + 0) / 3)
    assert o["area_share"] == pytest.approx(0.25)          # of the maps whose energy is scored, not (3 * 0.25 + 1) / 4
    assert o["above_baseline"] == pytest.approx(1 / 3)     # only "a" beats the area share
    assert o["mostly_outside"] == pytest.approx(2 / 3)     # "b" (0.25) and "c" (0)
    assert o["peak_inside"] == pytest.approx(1 / 3)        # "a" only: the uniform map peaks at (0, 0)
    mel = report["per_class"]["MEL"]
    assert mel["n_images"] == 2 and mel["energy_inside"] == pytest.approx(0.625)
    assert mel["lift"] == pytest.approx((4 + 1) / 2)
    assert set(report["per_class"]) == {"MEL", "NV"}
    assert [r["image_id"] for r in report["mostly_outside"]] == ["c", "b"]  # lowest first
    assert [r["index"] for r in report["mostly_outside"]] == [2, 1]         # positions, for the figure
    # rows of several batches, concatenated, give the same report
    rows = (cam_localization([inside, uniform], [mask, mask], [0, 0], ["a", "b"])
            + cam_localization(np.stack([outside, np.zeros(mask.shape)]), np.stack([mask, whole]), [1, 1], ["c", "d"]))
    assert cam_localization_report(rows)["overall"] == pytest.approx(o, nan_ok=True)
    with pytest.raises(ValueError, match="no heat maps"):
        cam_localization_report([])


def test_cam_figures():
    import matplotlib.pyplot as plt

    from skin_utils.plots import plot_cam_grid, plot_cam_overlay

    image = np.zeros((20, 30, 3), np.uint8)
    mask = _square_mask()
    cam = np.random.default_rng(0).random((10, 15))  # a map at a lower resolution is resized
    fig = plot_cam_overlay(image, cam, mask, mask, caption="MEL")
    assert fig.axes[1].get_title() == "MEL"
    plt.close(fig)
    fig = plot_cam_grid([image] * 3, [cam] * 3, [mask] * 3, ncols=2)
    assert len(fig.axes) == 5 and not fig.axes[3].axison  # 2 x 2 panels and the colour bar
    assert fig.axes[4].get_ylabel() == "relative evidence"
    assert [t.get_text() for t in fig.legends[0].get_texts()] == ["true lesion outline"]  # only the outlines drawn
    plt.close(fig)
    with pytest.raises(ValueError, match="image is"):
        plot_cam_overlay(image, cam, mask[:10])
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        plot_cam_overlay(image, cam * 3)


def test_feature_distance_flags_about_five_percent_of_new_images_of_the_reference_kind_and_most_of_a_shift():
    rng = np.random.default_rng(0)
    mix = rng.normal(size=(64, 96)) * rng.uniform(0.1, 5.0, size=(64, 1))  # 96 correlated features on many scales
    draw = lambda n, shift=0.0: (rng.normal(size=(n, 64)) + shift) @ mix  # noqa: E731
    ref = feature_reference(draw(1500))
    assert ref["quantile"] == 0.95 and ref["n_images"] == 1500 and np.shape(ref["precision"]) == (96, 96)
    assert set(ref) >= {"mean", "precision", "threshold", "median"} and 0.5 < ref["median"] < 1.2
    alike = feature_distance(draw(4000), ref)  # new images of the same kind: the threshold was set out of sample
    assert 0.03 < np.mean(alike > ref["threshold"]) < 0.09  # 5% by design, up to the noise of a tail quantile
    assert np.mean(feature_distance(draw(500, shift=1.0), ref) > ref["threshold"]) > 0.9
    # same spread per feature, broken correlations: a per-feature z-score would not see it, the covariance does
    scrambled = np.column_stack([rng.permutation(col) for col in draw(500).T])
    assert np.mean(feature_distance(scrambled, ref) > ref["threshold"]) > 0.9
    assert set(feature_summary(ref)) == set(ref) - {"mean", "precision"}
    with pytest.raises(ValueError, match="reference of 96 dimensions"):
        feature_distance(np.zeros((2, 3)), ref)
    with pytest.raises(ValueError, match=r"\(N >= 10, D\)"):
        feature_reference(np.zeros((4, 8)))
