"""After training: fit on the validation split what makes each prediction trustworthy, and store
it in the checkpoint.

Three numbers per kind of output, all chosen on the **validation** split (never on the test set):

* ``temperature``: temperature scaling (`skin_utils.trust.numbers.fit_temperature`) fitted on the
  same kind of output it is applied to. Evaluation and inference average 8 test-time views by
  default (``tta=True``), so T is fitted on TTA-averaged probabilities, as ``log p``
  (`skin_utils.trust.numbers.probs_to_logits`); the plain single-view output gets its own T. One
  TTA pass gives both: its first view is the image as it is.
* ``mel_threshold``: the threshold on the **calibrated** P(MEL) that reaches ``target_sensitivity``
  (default 0.90) on the validation melanomas (`skin_utils.trust.numbers.operating_threshold`);
  ``P(MEL) >= mel_threshold`` raises the melanoma flag. None when the validation split holds no
  melanoma or the classes have no "MEL".
* ``referral_threshold``: the threshold on the uncertainty (`referral_uncertainty`: the
  normalised predictive entropy of the calibrated probabilities, 0 = certain, 1 = uniform) that
  keeps ``target_coverage`` (default 0.8) of the validation images
  (`skin_utils.trust.numbers.referral_threshold`); an image above it is referred.

``Checkpoint.calibration`` maps the output kind (``"tta"``, ``"plain"``; `output_kind`) to the
record `calibration_record` returns: these three numbers, how they were chosen (targets, split,
image and melanoma counts) and the validation calibration before and after. A checkpoint
without it (trained before calibration existed) still loads: `StoredCalibration` then uses
temperature 1 and raises no flag, and ``missing`` says what is absent.

`calibrate_checkpoint` does the whole step for a checkpoint file (notebooks/02_train calls it
after training); from the command line, for a model trained earlier::

    python -m skin_utils.trust.calibrate latest                 # the latest run's best.pt
    python -m skin_utils.trust.calibrate reports/runs/<run>     # a run folder (or a run name)
    python -m skin_utils.trust.calibrate path/to/best.pt --no-tta --target-sensitivity 0.95
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from skin_utils.metrics import as_probabilities, sens_spec_at, to_jsonable
from skin_utils.trust.numbers import (apply_temperature, calibration_report, fit_temperature, operating_threshold,
                                      predictive_entropy, probs_to_logits, referral_threshold)

__all__ = [
    "OUTPUT_KINDS",
    "REFERRAL_MEASURE",
    "DEFAULT_TARGET_SENSITIVITY",
    "DEFAULT_TARGET_COVERAGE",
    "output_kind",
    "calibrated_probs",
    "referral_uncertainty",
    "calibration_record",
    "StoredCalibration",
    "data_for_checkpoint",
    "calibrate_checkpoint",
    "summary_lines",
    "main",
]

#: The kinds of output a temperature is fitted for: TTA-averaged, or one plain forward pass.
OUTPUT_KINDS = ("tta", "plain")
#: The uncertainty that referral thresholds: normalised predictive entropy of calibrated probabilities.
REFERRAL_MEASURE = "entropy"
DEFAULT_TARGET_SENSITIVITY = 0.90
DEFAULT_TARGET_COVERAGE = 0.80
MELANOMA = "MEL"


def output_kind(tta: bool) -> str:
    """``"tta"`` or ``"plain"``: the key of `Checkpoint.calibration` for outputs made that way."""
    return "tta" if tta else "plain"


def calibrated_probs(probs: Any, temperature: float) -> np.ndarray:
    """``softmax(log p / T)``: probabilities (N, K), averaged over views or not, temperature-scaled.
    float64 (N, K); ``temperature=1`` returns ``probs`` (up to the 1e-15 clip)."""
    return apply_temperature(probs_to_logits(probs), temperature)


def referral_uncertainty(probs: Any) -> np.ndarray:
    """The uncertainty that decides referral: predictive entropy of ``probs`` (N, K) divided by
    log K, float64 (N,) in [0, 1]. Pass calibrated probabilities."""
    return predictive_entropy(probs, normalize=True)


def calibration_record(probs: Any, labels: Any, class_names, *,
                       target_sensitivity: float = DEFAULT_TARGET_SENSITIVITY,
                       target_coverage: float = DEFAULT_TARGET_COVERAGE, split: str = "val") -> dict:
    """Fit the temperature and choose both thresholds on one split's outputs (see the module
    docstring). ``probs`` (N, K): the (uncalibrated) probabilities of the kind the record is for;
    ``labels`` (N,) class indices. Returns plain Python types (what a checkpoint can hold):
    ``temperature``, ``mel_threshold``, ``referral_threshold``, ``uncertainty`` (the measure),
    ``target_sensitivity``, ``target_coverage``, ``split``, ``n_images``, ``n_mel``,
    ``before`` / ``after`` (`skin_utils.trust.numbers.calibration_report` on this split),
    ``mel_at_threshold`` (sensitivity and specificity reached here, `sens_spec_at`),
    ``coverage_at_threshold`` (share kept here) and ``notes`` (why a threshold is None)."""
    p = as_probabilities(probs)
    y = np.asarray(labels, dtype=np.int64)
    names = list(class_names)
    if len(names) != p.shape[1]:
        raise ValueError(f"{len(names)} class names for {p.shape[1]} probability columns.")
    if not 0.0 < float(target_sensitivity) <= 1.0 or not 0.0 < float(target_coverage) <= 1.0:
        raise ValueError(f"target_sensitivity ({target_sensitivity!r}) and target_coverage "
                         f"({target_coverage!r}) must lie in (0, 1].")
    temperature = fit_temperature(probs_to_logits(p), y)
    cal = calibrated_probs(p, temperature)
    notes = []
    mel_threshold, mel_at, n_mel = None, None, 0
    if MELANOMA in names:
        is_mel = y == names.index(MELANOMA)
        n_mel = int(is_mel.sum())
        if n_mel:
            mel_threshold = operating_threshold(cal[:, names.index(MELANOMA)], is_mel, target_sensitivity)
            mel_at = sens_spec_at(cal[:, names.index(MELANOMA)], is_mel, mel_threshold)
        else:
            notes.append(f"no melanoma in the {split} split: no melanoma operating point")
    else:
        notes.append(f"no class named {MELANOMA}: no melanoma operating point")
    u = referral_uncertainty(cal)
    referral = referral_threshold(u, target_coverage)
    record = {
        "temperature": temperature, "mel_threshold": mel_threshold, "referral_threshold": referral,
        "uncertainty": REFERRAL_MEASURE, "target_sensitivity": float(target_sensitivity),
        "target_coverage": float(target_coverage), "split": split, "n_images": int(len(y)),
        "n_mel": n_mel, "before": calibration_report(p, y), "after": calibration_report(cal, y),
        "mel_at_threshold": mel_at, "coverage_at_threshold": float(np.mean(u <= referral)),
        "notes": notes,
    }
    return to_jsonable(record)


@dataclass
class StoredCalibration:
    """What a checkpoint says about calibrating one kind of output (`from_checkpoint`), with the
    fallbacks of a checkpoint that has none: temperature 1, no melanoma flag, no referral.

    ``missing`` names what the checkpoint lacks (empty: everything is there)."""

    kind: str
    temperature: float = 1.0
    mel_threshold: float | None = None
    referral_threshold: float | None = None
    uncertainty: str = REFERRAL_MEASURE
    record: dict = field(default_factory=dict)
    missing: list[str] = field(default_factory=list)

    @classmethod
    def from_checkpoint(cls, checkpoint, tta: bool) -> "StoredCalibration":
        """The calibration of ``checkpoint`` (a `skin_utils.checkpoint.Checkpoint`) for outputs
        made with or without ``tta``."""
        kind = output_kind(tta)
        record = dict((getattr(checkpoint, "calibration", None) or {}).get(kind) or {})
        missing = [k for k in ("temperature", "mel_threshold", "referral_threshold") if record.get(k) is None]
        return cls(kind=kind, temperature=float(record.get("temperature") or 1.0),
                   mel_threshold=record.get("mel_threshold"), referral_threshold=record.get("referral_threshold"),
                   uncertainty=record.get("uncertainty", REFERRAL_MEASURE), record=record, missing=missing)

    @property
    def calibrated(self) -> bool:
        """Whether a fitted temperature is used (False: temperature 1)."""
        return "temperature" not in self.missing

    def apply(self, probs: Any) -> np.ndarray:
        """Calibrated probabilities (N, K) float64."""
        return calibrated_probs(probs, self.temperature)

    def uncertainty_of(self, calibrated: Any) -> np.ndarray:
        """The referral uncertainty (N,) of calibrated probabilities."""
        return referral_uncertainty(calibrated)

    def refer(self, calibrated: Any) -> np.ndarray | None:
        """Bool (N,): uncertainty above the referral threshold; None without a threshold."""
        if self.referral_threshold is None:
            return None
        return self.uncertainty_of(calibrated) > self.referral_threshold

    def mel_flag(self, calibrated: Any, class_names) -> np.ndarray | None:
        """Bool (N,): calibrated P(MEL) at or above the operating threshold; None without one."""
        if self.mel_threshold is None or MELANOMA not in list(class_names):
            return None
        return as_probabilities(calibrated)[:, list(class_names).index(MELANOMA)] >= self.mel_threshold

    def describe(self) -> str:
        """One sentence: what is used, and what is missing and what to do about it."""
        if not self.missing:
            r = self.record
            return (f"Calibration of the {self.kind} outputs, fitted on the {r.get('split', 'val')} split "
                    f"({r.get('n_images')} images): temperature {self.temperature:.3f}; melanoma flag at calibrated "
                    f"P(MEL) >= {self.mel_threshold:.3f} (target sensitivity {r.get('target_sensitivity')}); "
                    f"referral when the normalised entropy exceeds {self.referral_threshold:.3f} "
                    f"(target coverage {r.get('target_coverage')}).")
        if not self.record:
            return (f"The checkpoint holds no calibration for {self.kind} outputs: temperature 1 is used, and "
                    "there is no melanoma flag and no referral. Fit them on the validation split with "
                    "`python -m skin_utils.trust.calibrate <run or checkpoint>`"
                    + (" (add --no-tta for plain outputs)." if self.kind == "plain" else "."))
        notes = "; ".join(self.record.get("notes", []))
        return (f"The checkpoint's calibration of {self.kind} outputs lacks {', '.join(self.missing)}"
                + (f" ({notes})" if notes else "") + f"; temperature {self.temperature:.3f} is used, and "
                "what is missing raises no flag.")

    def as_dict(self) -> dict:
        """The values used, for the metrics files."""
        return {"kind": self.kind, "temperature": self.temperature, "mel_threshold": self.mel_threshold,
                "referral_threshold": self.referral_threshold, "uncertainty": self.uncertainty,
                "missing": list(self.missing), "fitted": self.record}


# --------------------------------------------------------------------------------------------
# the step on a checkpoint
# --------------------------------------------------------------------------------------------

def data_for_checkpoint(checkpoint, data_dir=None, split_path=None, on_bad_data: str = "raise",
                        progress: bool = True):
    """The data a checkpoint was trained on, split as in training: ``data_dir`` and
    ``split_path`` default to what the checkpoint records; the subsample, fractions and split seed
    are the run's (``split_seed``, or ``seed`` for runs from before it existed). Raises when the split file is gone (a new split would not be held out) or when the
    folder holds other data than the training data (its fingerprint differs)."""
    from skin_utils.data import load_data
    from skin_utils.nb.paths import resolve

    params = checkpoint.params or {}
    data_dir = data_dir or checkpoint.data.get("data_dir")
    split_path = split_path or checkpoint.split_path
    if not data_dir or not split_path:
        raise ValueError("The checkpoint does not record its data folder or split file; pass data_dir= and "
                         "split_path= (the ones it was trained with).")
    if not resolve(split_path).is_file():
        raise FileNotFoundError(f"No split file at {resolve(split_path)}: calibrating needs the validation split "
                                "the model was trained with (a new split would not be held out). Pass split_path=.")
    data = load_data(data_dir, checkpoint.image_size, split_path=split_path,
                     split_fractions=params.get("split_fractions", (0.7, 0.15, 0.15)),
                     seed=params.get("split_seed", params.get("seed", 0)),
                     max_samples=params.get("max_samples"), on_bad_data=on_bad_data, progress=progress)
    expected = checkpoint.data.get("fingerprint")
    if expected and data.index.attrs.get("fingerprint") != expected:
        raise ValueError(f"{data.data_dir} is not the data this model was trained on (fingerprint "
                         f"{data.index.attrs.get('fingerprint')} != {expected}); pass the training data_dir.")
    return data


def calibrate_checkpoint(checkpoint, data=None, *, data_dir=None, split_path=None, tta: bool = True,
                         target_sensitivity: float = DEFAULT_TARGET_SENSITIVITY,
                         target_coverage: float = DEFAULT_TARGET_COVERAGE, batch_size: int = 32,
                         device="auto", amp: str = "auto", on_bad_data: str = "raise",
                         progress: bool = True, save: bool = True) -> dict:
    """Fit the calibration of the checkpoint file ``checkpoint`` on its validation split and
    store it in the file (atomically; ``save=False`` only returns it).

    ``data``: the `skin_utils.data.Data` it was trained on (what notebook 02 has in hand);
    None loads it (`data_for_checkpoint`, with ``data_dir``, ``split_path``, ``on_bad_data``).
    ``tta=True`` runs the 8-view pass once and fits both kinds of output (``"tta"`` and
    ``"plain"``, the first view); ``tta=False`` one plain pass, the ``"plain"`` kind only.
    The new records replace those of the same kind only. Returns the records fitted now
    (kind -> `calibration_record`). Raises when the
    classification head was not trained (loss weight 0): there is nothing to calibrate."""
    import torch

    from skin_utils.checkpoint import load_model
    from skin_utils.data import make_loader
    from skin_utils.transforms import Normalize
    from skin_utils.engine import amp_dtype_for, predict, resolve_device
    from skin_utils.config import trained_tasks

    path = Path(checkpoint)
    device = resolve_device(device)
    model, ckpt = load_model(path, map_location="cpu")
    params = ckpt.params or {}
    if "classification" not in trained_tasks(params.get("seg_weight", 1.0), params.get("cls_weight", 1.0)):
        raise ValueError(f"{path}: the classification head was not trained (cls_weight=0), so there are no "
                         "probabilities to calibrate.")
    data = data if data is not None else data_for_checkpoint(ckpt, data_dir, split_path, on_bad_data, progress)
    if len(data.rows.get("val", ())) == 0:
        raise ValueError("The validation split is empty: nothing to calibrate on.")
    model.to(device)
    loader = make_loader(data.dataset("val"), batch_size, device)
    pred = predict(model, loader, device, amp_dtype=amp_dtype_for(device, amp), progress=progress,
                   desc="calibrate on val", tta=tta, return_views=True,
                   normalize=Normalize.from_config(ckpt.normalization))
    outputs = {"tta": pred["probs"], "plain": pred["view_probs"][0]} if tta else {"plain": pred["probs"]}
    records = {kind: calibration_record(p, pred["labels"], ckpt.class_names, target_sensitivity=target_sensitivity,
                                        target_coverage=target_coverage)
               for kind, p in outputs.items()}
    if save:  # merged: a plain-only pass (tta=False) keeps the stored TTA record, and the other way round
        ckpt.calibration = {**(ckpt.calibration or {}), **records}
        ckpt.save(path)
    del model
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return records


def _num(x, fmt: str = ".3f") -> str:
    return "n/a" if x is None or (isinstance(x, float) and x != x) else format(x, fmt)


def summary_lines(records: dict) -> list[str]:
    """One line per output kind: temperature, validation ECE and NLL before and after, both
    thresholds with what they reach on validation."""
    lines = []
    for kind, r in records.items():
        mel = r.get("mel_at_threshold") or {}
        mel_txt = (f"P(MEL) >= {_num(r['mel_threshold'])} (val sensitivity {_num(mel.get('sensitivity'), '.2f')}, "
                   f"specificity {_num(mel.get('specificity'), '.2f')})" if r.get("mel_threshold") is not None
                   else "none (" + "; ".join(r.get("notes", [])) + ")")
        lines.append(f"{kind}: T = {_num(r['temperature'])}; val ECE {_num(r['before']['ece'])} -> "
                     f"{_num(r['after']['ece'])}, NLL {_num(r['before']['nll'])} -> {_num(r['after']['nll'])}; "
                     f"melanoma flag: {mel_txt}; refer when entropy > {_num(r['referral_threshold'])} "
                     f"(val coverage {_num(r['coverage_at_threshold'], '.2f')}).")
    return lines


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m skin_utils.trust.calibrate", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("target", help='a checkpoint file, a run folder or run name, or "latest"')
    p.add_argument("--reports-dir", default="reports", help="holds runs/ (to find a run name or latest)")
    p.add_argument("--data-dir", default=None, help="the training data; default: what the checkpoint records")
    p.add_argument("--split-path", default=None, help="the training split file; default: what the checkpoint records")
    p.add_argument("--tta", action=argparse.BooleanOptionalAction, default=True,
                   help="fit on 8-view TTA outputs (and the plain ones); --no-tta: plain outputs only")
    p.add_argument("--target-sensitivity", type=float, default=DEFAULT_TARGET_SENSITIVITY,
                   help="melanoma sensitivity the P(MEL) threshold reaches on validation")
    p.add_argument("--target-coverage", type=float, default=DEFAULT_TARGET_COVERAGE,
                   help="share of validation images kept (not referred)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--device", default="auto")
    p.add_argument("--amp", default="auto", help="auto, bf16, fp16 or off")
    p.add_argument("--on-bad-data", default="raise", help="raise or skip")
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=True)
    return p


def main(argv=None) -> int:
    from skin_utils.nb import report
    from skin_utils.nb.paths import resolve
    from skin_utils.runs import find_run, run_of_checkpoint

    args = get_args_parser().parse_args(argv)
    target = resolve(args.target) if args.target != "latest" else None
    if target is not None and target.is_file():
        path, run = target, run_of_checkpoint(target)
    else:
        run = find_run(str(target) if target is not None and target.is_dir() else args.target,
                       resolve(args.reports_dir) / "runs")
        path = run.best
    records = calibrate_checkpoint(path, data_dir=args.data_dir, split_path=args.split_path, tta=args.tta,
                                   target_sensitivity=args.target_sensitivity, target_coverage=args.target_coverage,
                                   batch_size=args.batch_size, device=args.device, amp=args.amp,
                                   on_bad_data=args.on_bad_data, progress=args.progress)
    print(f"Calibrated {path} on its validation split:")
    for line in summary_lines(records):
        print("  " + line)
    if run is not None:
        print(f"-> {report.write_json(run.metrics / 'calibration.json', records)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
