"""Does Monte-Carlo dropout tell the wrong diagnoses apart better than the calibrated entropy the referral uses?
On the validation split of each run (a choice, so no test image): the area under the risk-coverage curve (AURC,
lower is better) of each uncertainty (mc_entropy: the entropy of the mean of the MC samples), and AURC(MC mutual information) - AURC(entropy) with a 95% interval from
300 lesion-level bootstrap resamples, without and with test-time augmentation (20 MC samples each).

    python docs/results/mc_dropout_probe.py reports/runs/<run> [reports/runs/<run> ...]
"""
import sys
import time
from pathlib import Path

import numpy as np
import torch

from skin_utils.checkpoint import load_model
from skin_utils.evaluate import score_split
from skin_utils.trust import (StoredCalibration, data_for_checkpoint, predictive_entropy, risk_coverage_curve,
                              trust_columns)

torch.set_num_threads(2)
for run in sys.argv[1:]:
    model, ckpt = load_model(Path(run) / "checkpoints" / "best.pt", map_location="cpu")
    data = data_for_checkpoint(ckpt, progress=False)
    for tta in (False, True):
        calibration, t0 = StoredCalibration.from_checkpoint(ckpt, tta), time.time()
        ev = score_split(model, data, "val", "cpu", ckpt.class_names, batch_size=64, tta=tta, return_views=True,
                         mc_samples=20, normalization=ckpt.normalization, calibration=calibration, progress=False)
        signals = trust_columns(ev.probs, calibration, ckpt.class_names, ev.view_probs, ev.mc_probs)
        signals["mc_entropy"] = predictive_entropy(ev.mc_probs, normalize=True)  # of the mean of the MC samples
        errors = (ev.probs.argmax(1) != ev.labels).astype(float)
        names = [n for n in ("entropy", "tta_disagreement", "tta_mutual_info", "mc_mutual_info", "mc_entropy") if n in signals]
        aurc = {n: risk_coverage_curve(signals[n].to_numpy(), errors)["aurc"] for n in names}
        _, lesion = np.unique(ev.per_image["lesion_id"].to_numpy(), return_inverse=True)
        members = [np.flatnonzero(lesion == g) for g in range(lesion.max() + 1)]
        rng, diffs = np.random.default_rng(0), []
        for _ in range(300):
            pick = np.concatenate([members[g] for g in rng.integers(0, len(members), len(members))])
            diffs.append(risk_coverage_curve(signals["mc_mutual_info"].to_numpy()[pick], errors[pick])["aurc"]
                         - risk_coverage_curve(signals["entropy"].to_numpy()[pick], errors[pick])["aurc"])
        lo, hi = np.percentile(diffs, [2.5, 97.5])
        print(f"{Path(run).name} pooling={model.config['pooling']} tta={tta} images={len(errors)} "
              f"error rate={errors.mean():.3f} " + " ".join(f"{n}={v:.3f}" for n, v in aurc.items())
              + f" | MC MI - entropy {aurc['mc_mutual_info'] - aurc['entropy']:+.3f} [{lo:+.3f}, {hi:+.3f}]"
              f" ({time.time() - t0:.0f} s)", flush=True)
