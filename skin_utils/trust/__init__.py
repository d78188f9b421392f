"""Trust in each prediction: calibrated probabilities (`calibration`: ECE, NLL, Brier,
temperature scaling), uncertainty and referral (`uncertainty`: entropy, TTA disagreement, MC
dropout, risk-coverage, the melanoma operating point), explanations checked against the lesion
masks (`explain`: Grad-CAM), the post-training step that fits and stores them in a checkpoint
(`calibrate`: ``python -m skin_utils.trust.calibrate``), and their assessment on an evaluated
split (`assess`, used by ``03_evaluate``)."""
