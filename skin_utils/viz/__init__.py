"""Figures: each function takes what the metrics and the data functions return and gives back
a matplotlib Figure; `publish` saves it under reports/figures and shows it in the notebook."""

from skin_utils.viz.plots import *  # noqa: F401,F403
