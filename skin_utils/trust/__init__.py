"""Trust in each prediction: the numbers (`numbers`: temperature scaling, ECE, NLL, Brier, entropy,
MC dropout, risk-coverage, referral and melanoma thresholds, Grad-CAM checked against the lesion
masks), the post-training step that fits and stores them in a checkpoint (`calibrate`:
``python -m skin_utils.trust.calibrate``), and their assessment on an evaluated split (`assess`,
used by ``03_evaluate``)."""
