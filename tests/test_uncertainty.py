"""Uncertainty measures, MC dropout, mask uncertainty, referral and the melanoma operating point on
small cases with known answers."""

import math

import numpy as np
import pytest
import torch
from torch import nn

from skin_utils.model import MultiTaskNet
from skin_utils.trust.uncertainty import (
    binary_entropy,
    border_band,
    dropout_modules,
    expected_entropy,
    mask_uncertainty_score,
    mc_dropout_probs,
    mutual_information,
    operating_threshold,
    predictive_entropy,
    referral_threshold,
    risk_coverage_curve,
    sample_uncertainty,
    sample_variance,
    selective_metrics,
    selective_report,
    sens_spec_at,
    vote_disagreement,
)


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
    np.testing.assert_allclose(expected_entropy(s), [predictive_entropy([[0.7, 0.3]])[0], 0.0])
    out = sample_uncertainty(torch.tensor(s))
    np.testing.assert_allclose(out["mean_probs"][1], [2 / 3, 1 / 3])
    np.testing.assert_allclose(out["predictive_entropy"], out["expected_entropy"] + out["mutual_information"])


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


# ----------------------------------------------------------------------------- MC dropout
@pytest.fixture(scope="module")
def small_net():
    torch.manual_seed(0)
    return MultiTaskNet(num_classes=7, encoder_weights=None, dropout=0.5)


def _bn_stats(model):
    return [b.clone() for n, b in model.named_buffers() if "running" in n]


def test_mc_dropout_samples_vary_only_dropout(small_net):
    x = torch.randn(2, 3, 64, 64)
    small_net.train()  # the caller's mode must come back
    before = _bn_stats(small_net)
    rng_before = torch.get_rng_state()
    s = mc_dropout_probs(small_net, x, n_samples=5, seed=1)
    assert s.shape == (5, 2, 7) and torch.isfinite(s).all()
    torch.testing.assert_close(s.sum(-1), torch.ones(5, 2))
    assert not torch.allclose(s[0], s[1])  # dropout did vary the passes
    # BatchNorm ran in eval mode: its running statistics did not move
    for a, b in zip(before, _bn_stats(small_net)):
        torch.testing.assert_close(a, b)
    assert all(m.training for m in small_net.modules())
    assert torch.equal(torch.get_rng_state(), rng_before)  # the caller's random stream is untouched
    torch.testing.assert_close(mc_dropout_probs(small_net, x, n_samples=5, seed=1), s)
    # in eval mode with dropout off, the mean of the passes is near the plain prediction
    small_net.eval()
    with torch.no_grad():
        plain = small_net(x)[1].softmax(1)
    many = mc_dropout_probs(small_net, x, n_samples=200, seed=2).mean(0)
    assert (many - plain).abs().max() < 0.1
    assert not small_net.training


def test_mc_dropout_whole_model_path_and_no_dropout():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Dropout(0.5), nn.Flatten(),
                          nn.LazyLinear(3))
    x = torch.randn(2, 3, 8, 8)
    model(x)
    s = mc_dropout_probs(model.eval(), x, n_samples=4)
    assert s.shape == (4, 2, 3) and not torch.allclose(s[0], s[1])
    with pytest.raises(ValueError, match="no dropout"):
        mc_dropout_probs(MultiTaskNet(encoder_weights=None, dropout=0.0), x, n_samples=4)
    assert len(dropout_modules(MultiTaskNet(encoder_weights=None))) == 1  # the head's, p = 0.2


# ----------------------------------------------------------------------------- masks
def test_binary_entropy_and_variance():
    np.testing.assert_allclose(binary_entropy(np.array([0.0, 0.5, 1.0, 0.25])),
                               [0.0, 1.0, 0.0, -(0.25 * math.log2(0.25) + 0.75 * math.log2(0.75))])
    s = np.stack([np.zeros((1, 2, 2)), np.ones((1, 2, 2))])
    np.testing.assert_allclose(sample_variance(s), np.full((1, 2, 2), 0.25))
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
    np.testing.assert_allclose(mask_uncertainty_score(p, region="image"),
                               [176 * h / 1600, 0.0])
    # a supplied per-pixel map (e.g. TTA variance) replaces the entropy
    u = np.full((2, 40, 40), 0.2)
    np.testing.assert_allclose(mask_uncertainty_score(p, u, width=2), [0.2, 1.0])
    # images of different sizes, as a list
    assert mask_uncertainty_score([p[0], np.zeros((10, 12))], region="image").shape == (2,)


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


def test_sens_spec_at_counts():
    r = sens_spec_at([0.9, 0.6, 0.4, 0.1, 0.7], [1, 1, 0, 0, 0], 0.5)
    assert (r["tp"], r["fn"], r["tn"], r["fp"]) == (2, 0, 2, 1)
    assert r["sensitivity"] == 1.0 and r["specificity"] == pytest.approx(2 / 3)
    assert r["ppv"] == pytest.approx(2 / 3)
    assert math.isnan(sens_spec_at([0.2], [0], 0.5)["sensitivity"])
    with pytest.raises(ValueError, match="binary"):
        sens_spec_at([0.2, 0.3], [0, 3], 0.5)


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
