"""Other data sets' diagnosis names -> our seven classes (`skin_utils.labels.CLASS_NAMES`).

Names are compared after :func:`normalise_name`: case-insensitive, and spaces, underscores,
hyphens and brackets are all the same ("Common_Nevus" == "common nevus" == "COMMON-NEVUS").

* :data:`SYNONYMS`: the names recognised without a ``label_map``. Our class codes themselves
  (MEL, NV, ...) always map to themselves.
* :func:`parse_label_map`: a ``label_map`` given as a dict or as JSON text (papermill's ``-y``
  gives a dict, ``-p`` a string), checked: every value must be one of our classes, or
  ``null``/None for "not a diagnosis, leave these images out".
* :func:`map_labels`: map a list of names; returns the classes and the names that map to nothing.
* :func:`suggest_label_map`: the JSON ``label_map`` to start from for names that map to nothing.

**SCC is not mapped.** HAM10000's AKIEC is actinic keratosis and *intraepithelial* carcinoma
(Bowen's disease, squamous cell carcinoma in situ); an invasive squamous cell carcinoma (ISIC
2019's SCC, PAD-UFES-20's SCC) is none of our seven classes. Pass ``{"SCC": "AKIEC"}`` only if
you accept that approximation, and say so when reporting.
"""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Iterable, Mapping

from skin_utils.labels import CLASS_NAMES

__all__ = ["SYNONYMS", "map_labels", "normalise_name", "parse_label_map", "suggest_label_map"]

_SEPARATORS = re.compile(r"[\s_\-()]+")


def normalise_name(name) -> str:
    """The form names are compared in: lower case, runs of spaces, underscores, hyphens and
    brackets made one space, stripped ("Melanoma (in situ)" -> "melanoma in situ")."""
    return _SEPARATORS.sub(" ", str(name).lower()).strip()


_NAMES_BY_CLASS: dict[str, tuple[str, ...]] = {
    "MEL": ("melanoma", "malignant melanoma", "melanoma in situ", "invasive melanoma",
            "lentigo maligna", "lentigo maligna melanoma", "superficial spreading melanoma",
            "nodular melanoma", "acral lentiginous melanoma", "melanoma metastasis"),
    "NV": ("nevus", "naevus", "nevi", "naevi", "nev", "common nevus", "atypical nevus",
           "dysplastic nevus", "melanocytic nevus", "melanocytic nevi", "melanocytic naevus",
           "benign nevus", "blue nevus", "clark nevus", "combined nevus", "congenital nevus",
           "dermal nevus", "junctional nevus", "compound nevus", "intradermal nevus",
           "recurrent nevus", "spitz nevus", "reed or spitz nevus"),
    "BCC": ("basal cell carcinoma", "basal cell carcinomas", "basalioma"),
    "AKIEC": ("ak", "actinic keratosis", "actinic keratoses", "ack", "solar keratosis",
              "bowen", "bowen's disease", "bowens disease", "bowen disease",
              "intraepithelial carcinoma", "squamous cell carcinoma in situ", "scc in situ",
              "actinic keratosis / intraepithelial carcinoma",
              "actinic keratoses and intraepithelial carcinoma"),
    "BKL": ("benign keratosis", "benign keratosis like lesion", "benign keratosis like lesions",
            "seborrheic keratosis", "seborrhoeic keratosis", "seborrheic keratoses", "sk", "sek",
            "solar lentigo", "lichen planus like keratosis", "lichenoid keratosis", "lplk"),
    "DF": ("dermatofibroma", "dermatofibromas"),
    "VASC": ("vascular lesion", "vascular lesions", "vascular", "angioma", "hemangioma",
             "haemangioma", "cherry angioma", "angiokeratoma", "pyogenic granuloma"),
}

#: Normalised name -> class, recognised without a label_map (the class codes included).
SYNONYMS: dict[str, str] = {
    **{normalise_name(c): c for c in CLASS_NAMES},
    **{normalise_name(n): c for c, names in _NAMES_BY_CLASS.items() for n in names},
}


def _class_of(value, key) -> str | None:
    """The class a label_map value names (case-insensitive), None for null/""; ValueError else."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    code = str(value).strip().upper()
    if code not in CLASS_NAMES:
        raise ValueError(
            f"label_map maps {key!r} to {value!r}, which is not one of our classes "
            f"{', '.join(CLASS_NAMES)} (or null to leave those images out)."
        )
    return code


def parse_label_map(label_map: str | Mapping | None) -> dict[str, str | None]:
    """``label_map`` as ``{normalised set name: class or None}``.

    Accepts None or "" (no map), a dict, or the same as JSON text
    (``'{"melanoma": "MEL", "common_nevus": "NV"}'``). Values are our class names in any case;
    ``null``/None means "not a diagnosis: leave these images out". Raises ValueError for text
    that is not a JSON object, or a value that is not a class.
    """
    if label_map is None:
        return {}
    if isinstance(label_map, str):
        text = label_map.strip()
        if not text:
            return {}
        try:
            label_map = json.loads(text)
        except json.JSONDecodeError as e:
            raise ValueError(
                f"label_map is not valid JSON ({e}): {text[:200]!r}. Write it as a JSON object, "
                'e.g. \'{"melanoma": "MEL", "common_nevus": "NV"}\'.'
            ) from None
    if not isinstance(label_map, Mapping):
        raise ValueError(f"label_map must be a dict or a JSON object, got {type(label_map).__name__}: "
                         f"{str(label_map)[:200]!r}")
    return {normalise_name(k): _class_of(v, k) for k, v in label_map.items()}


def map_labels(names: Iterable, label_map: str | Mapping | None = None) -> tuple[list[str | None], list[str]]:
    """Map diagnosis names onto our classes: ``label_map`` first, then :data:`SYNONYMS`.

    Returns ``(mapped, unknown)``: ``mapped[i]`` is the class of ``names[i]`` or None; ``unknown``
    the sorted distinct names (as written) that map to nothing. A name that ``label_map`` maps to
    null, and an empty name, give None without being unknown.
    """
    lookup = parse_label_map(label_map)
    mapped: list[str | None] = []
    unknown: set[str] = set()
    for name in names:
        key = normalise_name("" if name is None else name)
        if not key:
            mapped.append(None)
        elif key in lookup:
            mapped.append(lookup[key])
        elif key in SYNONYMS:
            mapped.append(SYNONYMS[key])
        else:
            mapped.append(None)
            unknown.add(str(name).strip())
    return mapped, sorted(unknown)


def suggest_label_map(unknown_counts: Mapping[str, int], label_map: str | Mapping | None = None) -> str:
    """A JSON ``label_map`` to start from: the names that map to nothing, each with the class of
    the closest known name when one is very close (a typo), else "?", after the entries of
    ``label_map`` already given (as normalised keys)."""
    given = parse_label_map(label_map)
    suggestion: dict[str, str | None] = dict(given)
    for name in unknown_counts:
        close = difflib.get_close_matches(normalise_name(name), list(SYNONYMS), n=1, cutoff=0.85)
        suggestion[name] = SYNONYMS[close[0]] if close else "?"
    return json.dumps(suggestion)
