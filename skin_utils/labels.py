"""The seven HAM10000 diagnoses, in the ISIC 2018 Task 3 column order."""

CLASS_NAMES: tuple[str, ...] = ("MEL", "NV", "BCC", "AKIEC", "BKL", "DF", "VASC")
NUM_CLASSES = len(CLASS_NAMES)

#: HAM10000_metadata.csv writes ``dx`` in lower case ("mel", "nv", ...).
DX_TO_INDEX: dict[str, int] = {name.lower(): i for i, name in enumerate(CLASS_NAMES)}

CLASS_DESCRIPTIONS: dict[str, str] = {
    "MEL": "melanoma",
    "NV": "melanocytic nevus",
    "BCC": "basal cell carcinoma",
    "AKIEC": "actinic keratosis / intraepithelial carcinoma",
    "BKL": "benign keratosis-like lesion",
    "DF": "dermatofibroma",
    "VASC": "vascular lesion",
}

#: Class frequencies of the full HAM10000 release (10,015 images).
HAM10000_CLASS_COUNTS: dict[str, int] = {
    "MEL": 1113, "NV": 6705, "BCC": 514, "AKIEC": 327, "BKL": 1099, "DF": 115, "VASC": 142,
}


def label_index(dx: str) -> int:
    """Index of a diagnosis code, case-insensitive ("mel", "MEL" -> 0)."""
    try:
        return DX_TO_INDEX[str(dx).strip().lower()]
    except KeyError:
        raise ValueError(
            f"Unknown diagnosis {dx!r}: expected one of {', '.join(CLASS_NAMES)} (any case)."
        ) from None
