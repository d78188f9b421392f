"""skin_utils: one shared ResNet18 encoder, a U-Net decoder for the lesion mask and a head for
the seven HAM10000 diagnoses, with the data, metrics, plots and reports around it."""

from skin_utils.labels import CLASS_NAMES, DX_TO_INDEX, NUM_CLASSES

__version__ = "0.1.0"
__all__ = ["CLASS_NAMES", "DX_TO_INDEX", "NUM_CLASSES", "__version__"]
