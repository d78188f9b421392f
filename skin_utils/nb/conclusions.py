"""Each notebook's conclusion in words, computed from its numbers: what is good, what is weak.

Every function takes plain numbers (dicts, lists) and returns a short Markdown paragraph made of
sentences, one per finding, so the notebook only prints it and puts it in its report section.
The thresholds that decide the wording are the constants below.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping, Sequence

from skin_utils.metrics import ISIC_JACCARD_THRESHOLD

NOISY_SUPPORT = 10        # fewer test images of a class than this: its numbers are noise
SMALL_TEST_SET = 100      # fewer test images than this: a few points of difference are noise
NEAR_CHANCE_AUC = 0.6     # a class whose AUC is below this is told apart little better than by chance
GOOD_DICE = 0.85          # mean Dice from here on is called good
WEAK_DICE = 0.7           # mean Dice below this is called weak
MEL_SENSITIVITY_GOOD = 0.8
LOW_CONFIDENCE = 0.5      # a prediction whose top probability is below this is called uncertain
SYNTHETIC_WARNING = ("These numbers come from the **synthetic demo data**: they show that the pipeline "
                     "works, not how the model would do on real lesions.")


def _pct(x: float) -> str:
    return f"{100 * x:.0f}%"


def _finite(x) -> bool:
    return x is not None and not (isinstance(x, float) and math.isnan(x))


def _paragraph(sentences: Sequence[str]) -> str:
    return " ".join(s.strip() for s in sentences if s)


def data_conclusion(class_counts: Mapping[str, int], images_per_lesion: Sequence[int],
                    test_counts: Mapping[str, int] | None = None, median_lesion_share: float | None = None,
                    synthetic: bool = False) -> str:
    """The data set in words: class imbalance and what it does to accuracy, repeated images of a
    lesion, classes too rare in the test split to be measured, lesion size.

    ``class_counts``: images per class; ``images_per_lesion``: one count per lesion;
    ``test_counts``: images per class in the test split."""
    total = sum(class_counts.values())
    if total == 0:
        raise ValueError("class_counts are all 0: there is no data to describe.")
    present = {k: v for k, v in class_counts.items() if v > 0}
    major = max(present, key=present.get)
    rare = min(present, key=present.get)
    out = [f"**{major}** makes up {_pct(present[major] / total)} of the {total} images and **{rare}** only "
           f"{present[rare]} ({present[major] / present[rare]:.0f} to 1): always answering {major} already scores "
           f"accuracy {present[major] / total:.2f}, so read balanced accuracy (chance: {1 / len(present):.2f}), "
           "and the training needs class weighting or sampling."]
    missing = [k for k, v in class_counts.items() if v == 0]
    if missing:
        out.append(f"No images at all of {', '.join(missing)}: the model cannot learn {'it' if len(missing) == 1 else 'them'}.")
    per_lesion = list(images_per_lesion)
    repeated = sum(1 for n in per_lesion if n > 1)
    if repeated:
        out.append(f"{repeated} of {len(per_lesion)} lesions ({_pct(repeated / len(per_lesion))}) have more than one "
                   "image: splitting by image would put near-duplicates on both sides, which is why the split is "
                   "by lesion.")
    else:
        out.append("Every lesion has a single image, so a split by lesion is a split by image.")
    if test_counts is not None:
        thin = [f"{k} ({v})" for k, v in test_counts.items() if class_counts.get(k, 0) > 0 and v < NOISY_SUPPORT]
        if thin:
            out.append(f"The test split holds fewer than {NOISY_SUPPORT} images of {', '.join(thin)}: "
                       "their per-class test numbers will be noisy.")
    if _finite(median_lesion_share):
        size = ("small" if median_lesion_share < 0.1 else "large" if median_lesion_share > 0.5 else "medium-sized")
        out.append(f"The median lesion covers {_pct(median_lesion_share)} of its image ({size}).")
    if synthetic:
        out.append(SYNTHETIC_WARNING)
    return _paragraph(out)


def training_conclusion(history: Sequence[Mapping], selection: str, n_classes: int,
                        synthetic: bool = False) -> str:
    """The training run in words: whether it was still improving, over- or under-fitting signs,
    validation balanced accuracy against chance and Dice.

    ``history``: one dict per epoch with ``epoch``, ``score``, ``train_loss``, ``val_loss``,
    ``val_balanced_accuracy`` and ``val_dice`` (what `skin_utils.engine.fit` returns)."""
    if not history:
        raise ValueError("history is empty: no epoch was trained.")
    best_i = max(range(len(history)), key=lambda i: history[i]["score"])
    best, last = history[best_i], history[-1]
    n = len(history)
    out = []
    if best_i == n - 1 and n > 1:
        out.append(f"The validation score (`{selection}`) was still improving at the last epoch ({n}): "
                   "more epochs would probably help.")
    elif best_i == n - 1:
        out.append("A single epoch was trained: enough to check the pipeline, not to judge the model.")
    else:
        out.append(f"The best validation score (`{selection}`) came at epoch {best['epoch']} of {n}; "
                   f"the {n - 1 - best_i} epoch(s) after it did not improve it.")
    if best_i < n - 1 and "val_loss" in last and "train_loss" in last:
        if last["val_loss"] > best["val_loss"] and last["train_loss"] < best["train_loss"]:
            out.append(f"Training loss kept falling after epoch {best['epoch']} while validation loss rose "
                       f"({best['val_loss']:.3f} to {last['val_loss']:.3f}): the model began to overfit; "
                       "the checkpoint kept is the one before.")
    chance = 1 / n_classes
    bal = best.get("val_balanced_accuracy")
    if _finite(bal):
        if bal < 1.1 * chance:
            verdict = "no better than chance; the classifier has learnt nothing useful yet"
        elif bal < 1.5 * chance:
            verdict = "barely above chance; the classifier has learnt little yet"
        elif bal < 0.5:
            verdict = "clearly above chance, but most images of the rare classes are still misclassified"
        else:
            verdict = "well above chance"
        out.append(f"Validation balanced accuracy {bal:.2f} (chance {chance:.2f}): {verdict}.")
    dice = best.get("val_dice")
    if _finite(dice):
        word = "good" if dice >= GOOD_DICE else "weak" if dice < WEAK_DICE else "fair"
        out.append(f"Validation Dice {dice:.2f} ({word}, at the model's resolution).")
    if synthetic:
        out.append(SYNTHETIC_WARNING)
    return _paragraph(out)


NOT_SCORED = {"classification": "This set has no diagnoses: classification is not scored (only the masks are).",
              "segmentation": "This set has no lesion masks: segmentation is not scored (only the diagnoses are)."}


def evaluation_conclusion(report: Mapping, per_image_jaccard: Sequence[float] | None = None,
                          synthetic: bool = False,
                          tasks: Sequence[str] = ("segmentation", "classification"),
                          shift: Mapping | None = None) -> str:
    """The evaluation in words: the margin over chance and over always answering the majority
    class, melanoma versus the rest, the best class and the classes near chance, Dice, what the set
    does not allow to score, the shift from the training data's test split, and how far to trust it.

    ``report``: what `skin_utils.evaluation.evaluate_original_size` returns as ``report``
    (``balanced_accuracy``, ``accuracy``, ``dice``, ``per_class``, ``majority_baseline``,
    ``n_images``, and when there ``ci95``, ``scored`` (the tasks the data allow), ``classes_present``,
    ``melanoma_vs_rest``); ``per_image_jaccard``: the Jaccard index of each image;
    ``tasks``: the heads the model was trained for (an untrained head's numbers are not judged);
    ``shift``: `skin_utils.evaluation.domain_shift` for an external set (its table compares this
    set with the training data's test split)."""
    out = [f"The {t} head was not trained (its loss weight was 0): its metrics are not applicable."
           for t in ("segmentation", "classification") if t not in tasks]
    scored = report.get("scored", ("segmentation", "classification"))
    out += [NOT_SCORED[t] for t in ("classification", "segmentation") if t not in scored]
    tasks = [t for t in tasks if t in scored]
    ci = report.get("ci95", {})

    def with_ci(metric: str) -> str:
        lo_hi = ci.get(metric)
        return f" (95% CI {lo_hi[0]:.2f}–{lo_hi[1]:.2f}, lesion-level bootstrap)" if lo_hi and all(map(_finite, lo_hi)) else ""

    if "classification" in tasks:
        out += _classification_findings(report, with_ci)
        mel = melanoma_conclusion(report.get("melanoma_vs_rest"), ci)
        out += [mel] if mel else []
    if "segmentation" in tasks:
        out += _segmentation_findings(report, per_image_jaccard, with_ci)
    if shift is not None:
        out += _shift_findings(shift)
    n = report.get("n_images", 0)
    thin = [k for k, v in (report.get("per_class") or {}).items() if 0 < v.get("support", 0) < NOISY_SUPPORT]
    images = "test images" if report.get("split", "test") == "test" else "images"
    if n < SMALL_TEST_SET:
        out.append(f"Only {n} {images}: differences of a few points are noise.")
    elif thin and "classification" in tasks:
        out.append(f"Fewer than {NOISY_SUPPORT} {images} of {', '.join(thin)}: their rows are noisy.")
    if synthetic:
        out.append(SYNTHETIC_WARNING)
    return _paragraph(out)


def melanoma_conclusion(mel: Mapping | None, ci95: Mapping | None = None) -> str:
    """Melanoma versus the rest in one sentence: the AUC, and sensitivity and specificity at the
    P(MEL) threshold chosen on the training data's validation split, or why they are undefined.

    ``mel``: `skin_utils.evaluation.melanoma_report` (None: nothing to say, returns "");
    ``ci95``: the lesion-level intervals of ``mel_auc``, ``mel_sensitivity``, ``mel_specificity``."""
    if not mel:
        return ""
    ci95 = ci95 or {}

    def with_ci(metric: str) -> str:
        lo_hi = ci95.get(metric)
        return f" (95% CI {lo_hi[0]:.2f}–{lo_hi[1]:.2f})" if lo_hi and all(map(_finite, lo_hi)) else ""

    if not _finite(mel.get("auc")):
        why = "; ".join(mel.get("notes") or []) or "undefined"
        return f"Melanoma versus the rest: the AUC is undefined here ({why})."
    out = (f"Melanoma versus the rest: AUC {mel['auc']:.2f}{with_ci('mel_auc')} over {mel['n_mel']} melanomas and "
           f"{mel['n_other']} other lesions")
    if mel.get("threshold") is not None:
        out += (f"; at the P(MEL) threshold {mel['threshold']:.3f} chosen on the training data's validation split, "
                f"sensitivity {mel['sensitivity']:.2f}{with_ci('mel_sensitivity')} and specificity "
                f"{mel['specificity']:.2f}{with_ci('mel_specificity')}")
        target = mel.get("target_sensitivity")
        if target is not None and _finite(mel.get("sensitivity")) and mel["sensitivity"] < float(target) - 0.1:
            out += f", well below the {float(target):.2f} the threshold was chosen to reach"
    else:
        out += "; the checkpoint holds no P(MEL) threshold, so no sensitivity or specificity"
    if mel["auc"] < NEAR_CHANCE_AUC:
        out += ": hardly better than chance (0.5)"
    return out + "."


SHIFT_DROP = 0.05  # a metric that falls by more than this from the test split is called a drop


def _shift_findings(shift: Mapping) -> list[str]:
    """The domain shift table in words: which metrics fall, which hold."""
    table = shift.get("table")
    if table is None:
        return []
    diff = {m: float(d) for m, d in table["external − test"].items() if _finite(float(d))}
    if not diff:
        return ["The training data's test split has none of these metrics to compare with."]
    drops = {m: d for m, d in diff.items() if d < -SHIFT_DROP}
    held = [m for m, d in diff.items() if d >= -SHIFT_DROP]
    out = []
    if drops:
        out.append("Against the training data's test split, " + ", ".join(
            f"{m.replace('_', ' ')} falls by {-d:.2f}" for m, d in sorted(drops.items(), key=lambda x: x[1]))
            + ": the model does not carry these over to this set.")
    if held:
        out.append(f"Within {SHIFT_DROP} of the test split or better: {', '.join(m.replace('_', ' ') for m in held)}.")
    return out


def _classification_findings(report: Mapping, with_ci) -> list[str]:
    base = report["majority_baseline"]
    per_class = report["per_class"]
    bal, acc = report["balanced_accuracy"], report["accuracy"]
    out = []
    present = report.get("classes_present")
    if present and len(present) < len(per_class):
        out.append(f"Only {', '.join(present)} occur here: the classification numbers average over these "
                   f"{len(present)} classes (chance balanced accuracy {1 / len(present):.2f}) and are not comparable "
                   f"with {len(per_class)}-class numbers.")
    margin = bal - base["balanced_accuracy"]
    if margin < 0.05:
        out.append(f"Balanced accuracy {bal:.2f} is hardly better than always answering {base['majority']} "
                   f"({base['balanced_accuracy']:.2f}): the diagnosis head is not useful yet.")
    else:
        out.append(f"Balanced accuracy {bal:.2f}{with_ci('balanced_accuracy')} against {base['balanced_accuracy']:.2f} "
                   f"for always answering {base['majority']}: {margin:+.2f}.")
    if acc <= base["accuracy"]:
        out.append(f"Accuracy {acc:.2f} does not beat always answering {base['majority']} ({base['accuracy']:.2f}): "
                   "the model trades majority-class hits for rare-class ones, or has not learnt enough.")
    mel = per_class.get("MEL")
    if mel and mel.get("support", 0) > 0 and _finite(mel.get("sensitivity")):
        sens, n_mel = mel["sensitivity"], mel["support"]
        missed = round((1 - sens) * n_mel)
        judged = ("good" if sens >= MEL_SENSITIVITY_GOOD else
                  "the main weakness for any screening use")
        out.append(f"Melanoma sensitivity {sens:.2f}: {missed} of {n_mel} melanomas missed ({judged}).")
    aucs = {k: v["auc"] for k, v in per_class.items() if v.get("support", 0) > 0 and _finite(v.get("auc"))}
    if aucs:
        best = max(aucs, key=aucs.get)
        near = sorted((k for k, v in aucs.items() if v < NEAR_CHANCE_AUC), key=aucs.get)
        out.append(f"Best separated class: {best} (AUC {aucs[best]:.2f}).")
        if near:
            out.append("Near chance (AUC below " f"{NEAR_CHANCE_AUC}): "
                       + ", ".join(f"{k} ({aucs[k]:.2f})" for k in near) + ".")
    absent = [k for k, v in per_class.items() if v.get("support", 0) == 0]
    if absent:
        out.append(f"Not in this split, so not measured: {', '.join(absent)}.")
    return out


def _segmentation_findings(report: Mapping, per_image_jaccard, with_ci) -> list[str]:
    dice = report.get("dice")
    if not _finite(dice):
        return []
    word = "good" if dice >= GOOD_DICE else "weak" if dice < WEAK_DICE else "fair"
    sentence = f"Mean Dice {dice:.2f}{with_ci('dice')} ({word})"
    if per_image_jaccard is not None and len(per_image_jaccard):
        failed = sum(1 for j in per_image_jaccard if j < ISIC_JACCARD_THRESHOLD)
        sentence += (f"; {failed} of {len(per_image_jaccard)} masks ({_pct(failed / len(per_image_jaccard))}) "
                     f"have Jaccard below {ISIC_JACCARD_THRESHOLD} and count 0 in the thresholded Jaccard")
    return [sentence + "."]


def inference_conclusion(predicted: Sequence[str], confidences: Sequence[float], n_skipped: int,
                         demo: bool = False, refer: Sequence | None = None,
                         mel_flags: Sequence | None = None) -> str:
    """The predictions in words: how many, which classes, how many are uncertain, what was
    skipped. ``predicted``: the predicted class of each image; ``confidences``: its probability.
    ``refer`` / ``mel_flags``: each image's referral and melanoma flag (`Prediction.refer`,
    ``mel_flag``; None entries, or None, when the checkpoint has no such threshold)."""
    if len(predicted) != len(confidences):
        raise ValueError(f"{len(predicted)} predictions but {len(confidences)} confidences.")
    for name, flags in (("refer", refer), ("mel_flags", mel_flags)):
        if flags is not None and len(flags) != len(predicted):
            raise ValueError(f"{len(predicted)} predictions but {len(flags)} {name}.")
    n = len(predicted)
    out = []
    if n == 0:
        out.append("No image could be predicted.")
    else:
        counts = Counter(predicted).most_common()
        out.append(f"{n} image(s) predicted: " + ", ".join(f"{k} {v}" for k, v in counts) + ".")
        if len(counts) == 1 and n >= 5:
            out.append(f"Every image got {counts[0][0]}: the model may be answering its majority class "
                       "whatever it sees.")
        unsure = sum(1 for c in confidences if c < LOW_CONFIDENCE)
        if unsure:
            out.append(f"{unsure} of {n} predictions have a top probability below {LOW_CONFIDENCE}: "
                       "treat them as uncertain.")
        else:
            out.append(f"All predictions have a top probability of at least {LOW_CONFIDENCE}; "
                       "confidence is not correctness, see the evaluation for how often it is right.")
        known_refer = [bool(r) for r in (refer or []) if r is not None]
        known_mel = [bool(m) for m in (mel_flags or []) if m is not None]
        if known_refer:
            out.append(f"{sum(known_refer)} of {n} image(s) should be referred to a dermatologist: their uncertainty "
                       "is above the threshold chosen on validation.")
        if known_mel:
            out.append(f"{sum(known_mel)} of {n} image(s) raise the melanoma flag (calibrated P(MEL) at or above the "
                       "operating threshold chosen on validation).")
        if (refer is not None or mel_flags is not None) and not known_refer and not known_mel:
            out.append("The checkpoint holds no referral or melanoma threshold, so no image is flagged; calibrate it "
                       "with `python -m skin_utils.trust.calibrate`.")
    if n_skipped:
        out.append(f"{n_skipped} file(s) were skipped, with the reason, in `inference/skipped.csv`.")
    if demo:
        out.append("The input was new synthetic demo images.")
    return _paragraph(out)


# --------------------------------------------------------------------------------------------
# trust in each prediction (notebooks/03_evaluate's calibration, referral and Grad-CAM sections)
# --------------------------------------------------------------------------------------------

WELL_CALIBRATED_ECE = 0.05   # top-label ECE below this is called well calibrated
POORLY_CALIBRATED_ECE = 0.15  # top-label ECE from here on is called poorly calibrated
FEW_MELANOMAS = 20           # fewer melanomas than this: a sensitivity moves in steps of > 5 points
CAM_GOOD_LIFT = 1.5          # heat maps that put this many times the uniform share inside the lesion look at it
CAM_MIN_CLASS_IMAGES = 5     # a class is named as the one the maps miss most only with this many images


def _ece_word(ece: float) -> str:
    return ("well calibrated" if ece < WELL_CALIBRATED_ECE else
            "poorly calibrated" if ece >= POORLY_CALIBRATED_ECE else "moderately calibrated")


def calibration_conclusion(before: Mapping, after: Mapping | None, temperature: float | None,
                           reliability_before: Mapping | None = None, missing: Sequence[str] = ()) -> str:
    """Calibration in words: how far confidence and accuracy part before temperature scaling,
    in which direction, what the temperature fitted on validation does to ECE and NLL here.

    ``before`` / ``after``: `skin_utils.trust.numbers.calibration_report` of the uncalibrated and the
    temperature-scaled probabilities (``after`` None when the checkpoint has no temperature);
    ``reliability_before``: `skin_utils.trust.numbers.reliability_diagram` (for the direction);
    ``missing``: what the checkpoint lacks (`skin_utils.trust.calibrate.StoredCalibration.missing`)."""
    out = [f"Before temperature scaling the top-label ECE is {before['ece']:.3f} ({_ece_word(before['ece'])}; "
           f"class-wise ECE {before['classwise_ece']:.3f}, NLL {before['nll']:.3f}, Brier {before['brier']:.3f})."]
    if reliability_before is not None:
        gap = reliability_before["confidence_overall"] - reliability_before["accuracy_overall"]
        if abs(gap) >= 0.02:
            out.append(f"The model is {'over' if gap > 0 else 'under'}-confident: mean confidence "
                       f"{reliability_before['confidence_overall']:.2f} against accuracy "
                       f"{reliability_before['accuracy_overall']:.2f}.")
    if after is None or temperature is None:
        out.append("The checkpoint holds no temperature"
                   + (f" (missing: {', '.join(missing)})" if missing else "")
                   + ", so the probabilities are used as they are (temperature 1); fit one on the validation "
                     "split with `python -m skin_utils.trust.calibrate`.")
        return _paragraph(out)
    direction = ("softens the over-confident probabilities" if temperature > 1.05 else
                 "sharpens the under-confident probabilities" if temperature < 0.95 else "changes little")
    out.append(f"The temperature fitted on the validation split, T = {temperature:.2f}, {direction}.")
    if after["ece"] < before["ece"]:
        out.append(f"On this split it brings ECE from {before['ece']:.3f} to {after['ece']:.3f} "
                   f"({_ece_word(after['ece'])}) and NLL from {before['nll']:.3f} to {after['nll']:.3f}.")
    else:
        out.append(f"On this split it does not lower ECE ({before['ece']:.3f} to {after['ece']:.3f}; NLL "
                   f"{before['nll']:.3f} to {after['nll']:.3f}): the validation split did not transfer, or it is "
                   "too small to fit the temperature well.")
    out.append("Temperature scaling never changes the predicted class, so accuracy and balanced accuracy are unchanged.")
    return _paragraph(out)


def referral_conclusion(aurc: Mapping, table: Sequence[Mapping], at_threshold: Mapping | None = None,
                        measure: str = "entropy", mask: Mapping | None = None) -> str:
    """Selective prediction in words: whether the uncertainty ranks the errors, what referring
    the most uncertain 10-30% buys, and what the stored referral threshold keeps here.

    ``aurc``: ``aurc``, ``optimal_aurc`` and ``error_rate`` of the risk-coverage curve of
    ``measure`` (`skin_utils.trust.numbers.risk_coverage_curve`); ``table``:
    `skin_utils.trust.numbers.selective_report` rows (fraction 0 first); ``at_threshold``:
    `selective_metrics` at the threshold chosen on validation, with ``threshold`` and
    ``target_coverage`` (None: the checkpoint has none); ``mask``: the same AURC numbers for the
    mask uncertainty against the per-image loss 1 - Dice (None: not judged)."""
    out = []
    a, best, rand = aurc["aurc"], aurc["optimal_aurc"], aurc["error_rate"]
    if rand <= 0:
        out.append("There is no error on this split, so referral cannot improve anything.")
    elif a >= rand:
        out.append(f"Ranking by {measure} does not find the errors: AURC {a:.3f} is no better than referring "
                   f"at random ({rand:.3f}); do not rely on it to refer cases.")
    else:
        share = (rand - a) / (rand - best) if rand > best else float("nan")
        out.append(f"Ranking by {measure} finds errors: AURC {a:.3f} against {rand:.3f} at random and {best:.3f} "
                   f"for an oracle" + (f", {_pct(share)} of the way to the oracle." if _finite(share) else "."))
    rows = {round(r["referral_fraction"], 3): r for r in table}
    base = rows.get(0.0)
    for f in (0.2, 0.1, 0.3):
        r = rows.get(f)
        if base is None or r is None:
            continue
        txt = (f"Referring the most uncertain {_pct(f)} changes balanced accuracy of the rest from "
               f"{base['balanced_accuracy']:.2f} to {r['balanced_accuracy']:.2f}")
        if _finite(r.get("mel_sensitivity_with_referral")) and r.get("n_mel", 0) > 0:
            txt += (f", and melanoma sensitivity (a referred melanoma counts as caught) from "
                    f"{base['mel_sensitivity_with_referral']:.2f} to {r['mel_sensitivity_with_referral']:.2f} "
                    f"({r['mel_referred']} of {r['n_mel']} melanomas referred)")
        out.append(txt + ".")
        break
    if at_threshold is not None:
        target = at_threshold.get("target_coverage")
        out.append(f"The referral threshold chosen on validation ({measure} > {at_threshold['threshold']:.3f}"
                   + (f", for {_pct(target)} coverage" if _finite(target) else "") + f") keeps "
                   f"{_pct(at_threshold['coverage'])} of the images here, with balanced accuracy "
                   f"{at_threshold['balanced_accuracy']:.2f} on those.")
    else:
        out.append("The checkpoint holds no referral threshold: the table shows fixed shares instead.")
    if mask is not None and mask["error_rate"] > 0:
        finds = mask["aurc"] < mask["error_rate"]
        out.append(f"The mask uncertainty (entropy along the predicted border) {'finds' if finds else 'does not find'} "
                   f"the poor masks: AURC of 1 − Dice {mask['aurc']:.3f} against {mask['error_rate']:.3f} at random "
                   f"and {mask['optimal_aurc']:.3f} for an oracle.")
    return _paragraph(out)


def operating_point_conclusion(op: Mapping | None, mel_threshold: float | None = None) -> str:
    """The melanoma operating point in words: sensitivity and specificity reached on this split
    at the threshold chosen on validation, against the target and against the argmax.

    ``op``: ``argmax`` and (when the checkpoint has a threshold) ``at_threshold``
    (`skin_utils.metrics.sens_spec_at`), ``target_sensitivity``, ``n_mel`` (None: no
    melanoma in the split)."""
    if op is None:
        return "There is no melanoma in this split, so the melanoma operating point cannot be checked here."
    arg = op["argmax"]
    n_mel = op["n_mel"]
    out = []
    if op.get("at_threshold") is None:
        out.append(f"The checkpoint holds no melanoma threshold; calling melanoma only when it is the most probable "
                   f"class finds {arg['tp']} of {n_mel} melanomas (sensitivity {arg['sensitivity']:.2f}, specificity "
                   f"{arg['specificity']:.2f}).")
        return _paragraph(out)
    at, target = op["at_threshold"], op.get("target_sensitivity")
    out.append(f"Flagging melanoma when calibrated P(MEL) >= {at['threshold']:.3f} (chosen on validation"
               + (f" for sensitivity {target:.2f}" if _finite(target) else "") + f") finds {at['tp']} of {n_mel} "
               f"melanomas here: sensitivity {at['sensitivity']:.2f} at specificity {at['specificity']:.2f}, "
               f"against {arg['sensitivity']:.2f} and {arg['specificity']:.2f} for the most probable class.")
    if _finite(target) and at["sensitivity"] < target - 0.05:
        out.append("Sensitivity falls short of the target: the threshold does not transfer fully from validation.")
    if n_mel < FEW_MELANOMAS:
        out.append(f"With only {n_mel} melanomas each one moves sensitivity by {1 / n_mel:.2f}: treat it as a rough value.")
    return _paragraph(out)


def cam_conclusion(cam: Mapping) -> str:
    """The Grad-CAM check in words: how much of the heat map lies inside the true lesion against
    the share a uniform map would get, the classes where it looks least at the lesion, how many
    maps fall mostly outside.

    ``cam``: `skin_utils.evaluation.cam_check`'s result (``true_mask`` and ``pred_mask`` from
    `skin_utils.trust.numbers.cam_localization_report`, ``n_images``)."""
    t = cam["true_mask"]["overall"]
    p = cam["pred_mask"]["overall"]
    if not _finite(t["energy_inside"]):
        return "Every heat map was empty (all-zero gradients): Grad-CAM says nothing about this model."
    lift = t["energy_inside"] / t["area_share"] if t["area_share"] else float("nan")
    verdict = ("the classifier looks mostly at the lesion" if _finite(lift) and lift >= CAM_GOOD_LIFT else
               "the classifier looks at the lesion little more than anywhere else" if _finite(lift) and lift >= 1 else
               "the classifier looks at the surrounding skin more than at the lesion")
    out = [f"On average {_pct(t['energy_inside'])} of the Grad-CAM energy lies inside the true lesion, which covers "
           f"{_pct(t['area_share'])} of the image (what a uniform map would score): {verdict}."]
    if _finite(t.get("above_baseline")):
        out.append(f"{_pct(t['above_baseline'])} of the maps put more than that share inside the lesion; "
                   f"{_pct(t['mostly_outside'])} fall mostly outside it (less than half inside).")
    per_class = {k: v for k, v in cam["true_mask"]["per_class"].items()
                 if _finite(v["energy_inside"]) and v["area_share"] > 0 and v["n_images"] >= CAM_MIN_CLASS_IMAGES}
    if len(per_class) > 1:
        worst = min(per_class, key=lambda k: per_class[k]["energy_inside"] / per_class[k]["area_share"])
        w = per_class[worst]
        out.append(f"Least on the lesion, among classes with at least {CAM_MIN_CLASS_IMAGES} images: {worst} "
                   f"({_pct(w['energy_inside'])} inside against {_pct(w['area_share'])} area, {w['n_images']} images).")
    if _finite(p["energy_inside"]):
        out.append(f"Against the predicted mask: {_pct(p['energy_inside'])} inside (area {_pct(p['area_share'])}).")
    if cam.get("n_split") and cam.get("n_images", 0) < cam["n_split"]:
        out.append(f"Checked on {cam['n_images']} of the {cam['n_split']} images.")
    return _paragraph(out)
