"""The seven HAM10000 diagnoses, and other data sets' diagnosis names (`SYNONYMS`, then a
``label_map``) mapped onto them after `normalise_name`. **SCC is not mapped**: AKIEC is actinic
keratosis and *intraepithelial* carcinoma; an invasive squamous cell carcinoma (ISIC 2019's SCC) is
none of the seven. Pass ``{"SCC": "AKIEC"}`` only if you accept that approximation, and say so.
"""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Iterable, Mapping

CLASS_NAMES: tuple[str, ...] = ("MEL", "NV", "BCC", "AKIEC", "BKL", "DF", "VASC")  # ISIC 2018 Task 3 order
NUM_CLASSES = len(CLASS_NAMES)
#: HAM10000_metadata.csv writes ``dx`` in lower case ("mel", "nv", ...).
DX_TO_INDEX: dict[str, int] = {name.lower(): i for i, name in enumerate(CLASS_NAMES)}
CLASS_DESCRIPTIONS: dict[str, str] = {
    "MEL": "melanoma", "NV": "melanocytic nevus", "BCC": "basal cell carcinoma",
    "AKIEC": "actinic keratosis / intraepithelial carcinoma", "BKL": "benign keratosis-like lesion",
    "DF": "dermatofibroma", "VASC": "vascular lesion",
}
#: Class frequencies of the full HAM10000 release (10,015 images).
HAM10000_CLASS_COUNTS: dict[str, int] = {
    "MEL": 1113, "NV": 6705, "BCC": 514, "AKIEC": 327, "BKL": 1099, "DF": 115, "VASC": 142,
}


def normalise_name(name) -> str:
    """Lower case, runs of spaces, ``_``, ``-`` and brackets one space: "Melanoma (in situ)" -> "melanoma in situ"."""
    return re.sub(r"[\s_\-()]+", " ", str(name).lower()).strip()


_NAMES_BY_CLASS: dict[str, tuple[str, ...]] = {
    "MEL": ("melanoma", "malignant melanoma", "melanoma in situ", "invasive melanoma", "lentigo maligna",
            "lentigo maligna melanoma", "superficial spreading melanoma", "nodular melanoma",
            "acral lentiginous melanoma", "melanoma metastasis"),
    "NV": ("nevus", "naevus", "nevi", "naevi", "nev", "common nevus", "atypical nevus", "dysplastic nevus",
           "melanocytic nevus", "melanocytic nevi", "melanocytic naevus", "benign nevus", "blue nevus",
           "clark nevus", "combined nevus", "congenital nevus", "dermal nevus", "junctional nevus",
           "compound nevus", "intradermal nevus", "recurrent nevus", "spitz nevus", "reed or spitz nevus"),
    "BCC": ("basal cell carcinoma", "basal cell carcinomas", "basalioma"),
    "AKIEC": ("ak", "actinic keratosis", "actinic keratoses", "ack", "solar keratosis", "bowen", "bowen's disease",
              "bowens disease", "bowen disease", "intraepithelial carcinoma", "squamous cell carcinoma in situ",
              "scc in situ", "actinic keratosis / intraepithelial carcinoma",
              "actinic keratoses and intraepithelial carcinoma"),
    "BKL": ("benign keratosis", "benign keratosis like lesion", "benign keratosis like lesions",
            "seborrheic keratosis", "seborrhoeic keratosis", "seborrheic keratoses", "sk", "sek", "solar lentigo",
            "lichen planus like keratosis", "lichenoid keratosis", "lplk"),
    "DF": ("dermatofibroma", "dermatofibromas"),
    "VASC": ("vascular lesion", "vascular lesions", "vascular", "angioma", "hemangioma", "haemangioma",
             "cherry angioma", "angiokeratoma", "pyogenic granuloma"),
}
#: Normalised name -> class, recognised without a label_map (the class codes included).
SYNONYMS: dict[str, str] = {normalise_name(n): c for c, names in _NAMES_BY_CLASS.items() for n in (c, *names)}


def parse_label_map(label_map: str | Mapping | None) -> dict[str, str | None]:
    """``label_map`` (None, a dict or JSON text, as papermill's ``-p`` gives) as ``{normalised name: class
    or None}``; null means "not a diagnosis: leave these images out"."""
    if isinstance(label_map, str):
        try:
            label_map = json.loads(label_map) if label_map.strip() else None
        except json.JSONDecodeError as e:
            raise ValueError(f"label_map is not valid JSON ({e}): {label_map[:200]!r}. Write it as a JSON object, "
                             'e.g. \'{"melanoma": "MEL", "common_nevus": "NV"}\'.') from None
    if not isinstance(label_map, (Mapping, type(None))):
        raise ValueError(f"label_map must be a dict or a JSON object, got {type(label_map).__name__}: "
                         f"{str(label_map)[:200]!r}")
    out = {}
    for key, value in (label_map or {}).items():
        code = "" if value is None else str(value).strip().upper()
        if code and code not in CLASS_NAMES:
            raise ValueError(f"label_map maps {key!r} to {value!r}, which is not one of our classes "
                             f"{', '.join(CLASS_NAMES)} (or null to leave those images out).")
        out[normalise_name(key)] = code or None
    return out


def map_labels(names: Iterable, label_map: str | Mapping | None = None) -> tuple[list[str | None], list[str]]:
    """The class of each name (``label_map`` first, then `SYNONYMS`) or None, and the unknown names
    (empty names and names mapped to null are not unknown)."""
    lookup = {**SYNONYMS, **parse_label_map(label_map)}
    mapped, unknown = [], set()
    for name in names:
        key = normalise_name("" if name is None else name)
        mapped.append(lookup.get(key))
        if key and key not in lookup:
            unknown.add(str(name).strip())
    return mapped, sorted(unknown)


def suggest_label_map(unknown: Iterable[str], label_map: str | Mapping | None = None) -> str:
    """The JSON ``label_map`` to start from: the entries given, then each unknown name with the class of
    a very close known name (a typo), else "?"."""
    suggestion: dict[str, str | None] = dict(parse_label_map(label_map))
    for name in unknown:
        close = difflib.get_close_matches(normalise_name(name), list(SYNONYMS), n=1, cutoff=0.85)
        suggestion[name] = SYNONYMS[close[0]] if close else "?"
    return json.dumps(suggestion)
