"""Figures: each ``plot_*`` function takes what one metrics, data or evaluation function returns
and gives back a matplotlib Figure; `publish` saves it under reports/figures and shows it in the
notebook. One module per notebook that shows the figures (``eda``, ``train``, ``evaluate``,
``inference``, ``benchmark``), what they share in ``common``; everything public is here."""

from skin_utils.viz.benchmark import plot_benchmark
from skin_utils.viz.common import (
    CLASS_COLORS,
    CORRECT_COLOR,
    PRED_MASK_COLOR,
    TRUE_MASK_COLOR,
    WRONG_COLOR,
    class_color,
    overlay_mask,
    publish,
    save_figure,
)
from skin_utils.viz.eda import (
    SPLIT_COLORS,
    plot_class_distribution,
    plot_images_per_lesion,
    plot_mask_area,
    plot_metadata,
    plot_sample_grid,
    plot_split_counts,
)
from skin_utils.viz.evaluate import (plot_cases, plot_confusion_matrix, plot_domain_shift, plot_per_class_metrics,
                                    plot_roc_curves)
from skin_utils.viz.inference import plot_overlay_grid
from skin_utils.viz.experiments import plot_experiment, plot_paired_differences
from skin_utils.viz.train import HISTORY_PANELS, plot_learning_curves
from skin_utils.viz.trust import plot_cam_grid, plot_cam_overlay, plot_reliability_diagram, plot_risk_coverage

__all__ = [
    "plot_cases",
    "plot_domain_shift",
    "CLASS_COLORS",
    "TRUE_MASK_COLOR",
    "PRED_MASK_COLOR",
    "CORRECT_COLOR",
    "WRONG_COLOR",
    "SPLIT_COLORS",
    "HISTORY_PANELS",
    "class_color",
    "save_figure",
    "publish",
    "overlay_mask",
    "plot_class_distribution",
    "plot_split_counts",
    "plot_images_per_lesion",
    "plot_metadata",
    "plot_mask_area",
    "plot_sample_grid",
    "plot_learning_curves",
    "plot_confusion_matrix",
    "plot_roc_curves",
    "plot_per_class_metrics",
    "plot_overlay_grid",
    "plot_benchmark",
    "plot_experiment",
    "plot_paired_differences",
    "plot_reliability_diagram",
    "plot_risk_coverage",
    "plot_cam_overlay",
    "plot_cam_grid",
]
