# %% [markdown]
# # 03 · Evaluate a trained model
# [![Open in Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/OWNER/REPO/blob/main/notebooks/03_evaluate.ipynb)
#
# *On Colab, a notebook opened on its own gets a runtime of its own, without a checkpoint: open
# `02_train` instead, which trains and whose last cell then runs this notebook in the same runtime.*
#
# Scores a trained run (by default the latest; or any `checkpoint`) with the ISIC 2018
# definitions on lesions it never saw: by default the **test** split of the lesion-level split
# made for training; `split="val"` scores the validation split (where choices are made); with
# `split="all"` and another `data_dir`, every image of an **external** data set. That folder may
# have masks and diagnoses (everything is scored), masks only (segmentation only), or diagnoses
# only (classification only); its diagnosis names are mapped onto ours by common synonyms or a
# `label_map` (e.g. `-p label_map '{"common nevus": "NV", "atypical nevus": "NV"}'`), and the label
# CSV's columns are detected or named (`id_column`, `label_column`). An external set is put side by
# side with the training data's test split (the domain shift).
# Every headline number comes with a 95% confidence interval from a bootstrap over **lesions**
# (all images of a lesion stay together), and per subgroup of the metadata (sex, age, site).
# Results go to the run's folder: `metrics/evaluate.json` for the test split,
# `metrics/evaluate_<split>.json` for another split, `metrics/evaluate_external_<folder>.json` for
# an external set (figures named likewise), so that no evaluation overwrites another.
#
# * Segmentation (Task 1), per image at the image's **original size**, then averaged: Dice,
#   Jaccard, thresholded Jaccard (0 when Jaccard < 0.65), pixel sensitivity and specificity.
# * Classification (Task 3): **balanced accuracy** (mean per-class recall, the headline),
#   accuracy, per-class sensitivity, specificity, AUC and average precision, macro AUC, the
#   confusion matrix and ROC curves, always beside chance and always answering the set's most
#   frequent class. On a set with fewer than seven classes they average over the classes present
#   (`classes_present` in the metrics file).
# * **Melanoma versus the rest**: AUC of the calibrated P(MEL), and sensitivity and specificity at
#   the P(MEL) threshold chosen on the training data's validation split (stored in the checkpoint).
# * One rule for the class scores: every classification number here (AUCs, the per-class rows,
#   melanoma versus the rest, subgroups, the per-image table that paired comparisons read) uses
#   the **calibrated** probabilities, the ones the melanoma threshold applies to.
# * Trust in each prediction: calibration (ECE, NLL, Brier) before and after the temperature
#   fitted on validation, the risk–coverage curve of referring the most uncertain images, the
#   melanoma operating point chosen on validation, and Grad-CAM heat maps checked against the
#   lesion masks.

# %% tags=["parameters"]
from typing import Optional, Union

run: str = "latest"                      # a run name under <reports_dir>/runs, a run folder, or "latest"
checkpoint: Optional[str] = None         # a checkpoint file instead of a run (its results go to a run folder named after it)
data_dir: Optional[str] = None           # None: the data the run was trained on; or another folder with masks and/or diagnoses (with split "all")
split: str = "test"                      # "test", "val", "train" or "all"
split_path: Optional[str] = None         # None: the split the run was trained with
label_map: Optional[Union[str, dict]] = None  # the set's diagnosis names -> ours, a dict (-y) or JSON text (-p); common synonyms need none
label_column: Optional[str] = None       # the diagnosis column of the set's label CSV; None: detected
id_column: Optional[str] = None          # the image-id column of the set's label CSV; None: detected
batch_size: int = 32
threshold: float = 0.5                   # mask probability threshold
tta: bool = True                         # average each prediction over the 8 flips and 90-degree turns of the image
n_examples: int = 4                      # best and worst cases shown (and Grad-CAM examples)
recalibrate: bool = False                # fit temperature and thresholds on the validation split now, into the checkpoint (for models trained before calibration existed)
mc_samples: int = 0                      # Monte-Carlo dropout samples per image; 0: off
cam_method: str = "gradcam"              # "gradcam" or "gradcam++"
cam_max_images: Optional[int] = None     # Grad-CAM check on at most this many images of the split; None: all
n_bootstrap: int = 1000                  # lesion-level bootstrap resamples for the 95% intervals
bootstrap_seed: int = 0                  # seed of the resampling
device: str = "auto"                     # "auto", "cpu", "cuda", "cuda:1", ...
amp: str = "auto"                        # mixed precision: "auto", "bf16", "fp16" or "off"
on_bad_data: str = "raise"               # "raise": stop on bad files with a report; "skip": leave them out
reports_dir: str = "reports"             # holds runs/ and the top-level REPORT.md
repo_url: str = "https://github.com/OWNER/REPO"  # cloned on Colab to install skin_utils

# %%
# Colab only (nothing happens elsewhere): clone this repository once, install it, and work inside it on every run
import os, subprocess, sys  # noqa: E401
if "google.colab" in sys.modules:
    if repo_url.rstrip("/").endswith("/OWNER/REPO"):
        sys.exit(f"repo_url is still the placeholder {repo_url!r}: set it in the first code cell to the GitHub "
                 "address of this repository (e.g. https://github.com/you/skin-lesions), or run "
                 "`python scripts/set_github_repo.py you/skin-lesions` in a clone and push.")
    if not os.path.isdir("/content/repo/.git"):
        subprocess.check_call(["git", "clone", "--depth", "1", repo_url, "/content/repo"])
    if subprocess.run([sys.executable, "-m", "pip", "show", "-q", "skin_utils"]).returncode != 0:
        subprocess.check_call([sys.executable, "-m", "pip", "install", "-q", "-e", "/content/repo"])
    if "/content/repo" not in sys.path:
        sys.path.insert(0, "/content/repo")
    os.chdir("/content/repo")

# %%
import json

import pandas as pd

from skin_utils import plots
from skin_utils.nb import conclusions, report
from skin_utils.trust.calibrate import StoredCalibration, calibrate_checkpoint
from skin_utils.checkpoint import Checkpoint, load_model
from skin_utils.engine import resolve_device
from skin_utils.evaluation import (best_and_worst, domain_shift, evaluate_original_size, headline_table, is_external,
                                   label_and_mask_flags, melanoma_report, not_applicable, per_class_table,
                                   result_tag, subgroup_tables, subset_note)
from skin_utils.trust.assess import (assess_trust, calibration_table, cam_check, cam_columns, cam_examples, cam_report,
                                     cam_summary_table, choose_cam_examples, operating_point_table, referral_table,
                                     trust_section)
from skin_utils.config import EvaluateConfig, resolve, trained_tasks
from skin_utils.data import load_data
from skin_utils.runs import run_to_score
from skin_utils.metrics import bootstrap_ci, read_per_image

params = EvaluateConfig.from_notebook(globals()).to_dict()  # checked: a wrong value or a misspelt name stops here
out, checkpoint_path = run_to_score(run, checkpoint and resolve(checkpoint), resolve(reports_dir) / "runs")
figures = out.figures
device = resolve_device(device)
model, ckpt = load_model(checkpoint_path, map_location=device)
model.to(device)
class_names = ckpt.class_names
trained = ckpt.params
tasks = trained_tasks(trained.get("seg_weight", 1.0), trained.get("cls_weight", 1.0))
print(f"checkpoint {checkpoint_path}: epoch {ckpt.epoch + 1}, trained at {ckpt.image_size[0]}x{ckpt.image_size[1]} px "
      f"on {ckpt.data['data_dir']}; heads trained: {', '.join(tasks)}; results -> {out.root}")

# %%
data_dir = data_dir or ckpt.data["data_dir"]
split_path = split_path or ckpt.split_path
data = load_data(data_dir, ckpt.image_size, split_path=split_path,
                 split_fractions=trained.get("split_fractions", (0.7, 0.15, 0.15)), seed=trained.get("split_seed", trained.get("seed", 0)),
                 max_samples=trained.get("max_samples") if split != "all" else None,
                 on_bad_data=on_bad_data, need_split=split != "all",
                 label_map=label_map, label_column=label_column, id_column=id_column)
if split != "all" and data.index.attrs["fingerprint"] != ckpt.data["fingerprint"]:
    raise ValueError(f"{data.data_dir} is not the data this model was trained on; its '{split}' split would "
                     "not be held out. Evaluate an external data set with split='all'.")
external = split == "all" and is_external(data.describe(), ckpt.data)
tag = result_tag(split, data.data_dir, external)   # file names of these results: never another evaluation's
has_label, has_mask = label_and_mask_flags(data.index.iloc[data.rows[split]])
scored = [t for t, ok in (("segmentation", has_mask.any()), ("classification", has_label.any())) if ok]
shown = [t for t in tasks if t in scored]   # what this notebook shows: trained, and the data allow it
for t in ("segmentation", "classification"):
    if t not in scored:
        print(conclusions.NOT_SCORED[t])
if recalibrate and "classification" in tasks:
    calibrate_checkpoint(checkpoint_path, data if split != "all" else None, tta=tta, batch_size=batch_size,
                         device=device, amp=amp)
    ckpt = Checkpoint.load(checkpoint_path)
calibration = StoredCalibration.from_checkpoint(ckpt, tta)
print(calibration.describe())
title = f"external set · {data.name}" if external else f"{split} split · {data.name}"
evaluation = evaluate_original_size(model, data, split, device, class_names, batch_size=batch_size, amp=amp,
                                    threshold=threshold, tta=tta, return_views=True, mc_samples=mc_samples,
                                    normalization=ckpt.normalization,
                                    calibration=calibration if "classification" in tasks else None)
per_image = evaluation.per_image
labelled = evaluation.subset(evaluation.has_label)
trust = assess_trust(labelled, calibration, class_names) if "classification" in shown else None
if trust is not None:
    per_image = per_image.join(trust.per_image)
melanoma = melanoma_report(evaluation, calibration, class_names) if "classification" in shown else None
ci = bootstrap_ci(per_image, class_names, n_resamples=n_bootstrap, seed=bootstrap_seed, tasks=shown,
                  mel_threshold=calibration.mel_threshold)
mel_numbers = {k: ci["estimate"][k] for k in ("mel_auc", "mel_sensitivity", "mel_specificity") if k in ci["estimate"]}
result = not_applicable({**evaluation.report, **mel_numbers, "ci95": ci["ci95"], "melanoma_vs_rest": melanoma,
                         "external": external, "classes_present": evaluation.report.get("classes_present", []),
                         "bootstrap": {k: ci[k] for k in ("n_resamples", "level", "cluster", "n_lesions")}}, tasks)
note = subset_note(result) if "classification" in shown else None
if note:
    print(note)

# %% [markdown]
# ## Headline numbers with 95% intervals, beside chance and the majority class
# *Reading the table:* each score of the model, its 95% confidence interval from resampling
# lesions, what chance scores, and the same score of always answering the set's most frequent
# class. Only the margin counts: accuracy can look high while the model misses most of the rare
# classes, which balanced accuracy (the mean of the per-class sensitivities) shows. The `mel_`
# rows are melanoma versus the rest: the AUC of the calibrated P(MEL), and sensitivity and
# specificity at the threshold chosen on the training data's validation split. Two models whose
# intervals overlap widely cannot be told apart on this split; `skin_utils.metrics.paired_bootstrap`
# compares two runs on the same images. A head that was not trained (loss weight 0) shows "n/a";
# a set without masks (or without diagnoses) has no segmentation (classification) rows.

# %%
from IPython.display import Markdown, display

headline = headline_table(result)
display(headline)
mel_text = conclusions.melanoma_conclusion(melanoma, result["ci95"])
Markdown("\n\n".join(x for x in (note, mel_text) if x))

# %% [markdown]
# ## Domain shift: the training data's test split beside this set
# *Reading the figure and the table:* for an external set, each metric on the training data's
# test split (grey, from this run's `metrics/evaluate.json`) and on this set (orange), each with
# its 95% interval, with the same mask threshold and the same P(MEL) threshold. When this set has
# fewer classes, the test split's classification numbers are recomputed over those classes, so
# both average over the same ones. A drop whose intervals do not overlap is a real loss on this
# set's clinics and cameras; segmentation often holds while the diagnosis does not.

# %%
shift, shift_text = None, ""
if external:
    test_json, test_table = out.evaluation("test"), out.per_image("test")
    if test_json.is_file():
        shift = domain_shift(result, json.loads(test_json.read_text()),
                             read_per_image(test_table) if test_table.is_file() else None, class_names,
                             n_resamples=n_bootstrap, seed=bootstrap_seed)
        display(shift["table"])
        fig = plots.plot_domain_shift(shift["table"], title=f"Domain shift · {data.name}", external_name=data.name)
        plots.publish(fig, figures / f"{tag}_domain_shift.png")
        shift_text = " ".join(shift["notes"])
    else:
        shift_text = (f"No test-split results of this run yet ({test_json} is missing), so the domain shift "
                      "cannot be shown; make them with `papermill notebooks/03_evaluate.ipynb reports/03_test.ipynb "
                      f"-p checkpoint {checkpoint_path}`, then run this evaluation again.")
else:
    shift_text = "This is the training data (not an external set): there is no domain shift to show."
Markdown(shift_text)

# %% [markdown]
# ## Per class
# *Reading the figure:* one group of bars per diagnosis (its number of images under the
# name): sensitivity is the share of that class found, precision the share of its predictions
# that are right. Bars from few images (small support) are noisy; a class absent from this set
# has no sensitivity or AUC.

# %%
if "classification" in shown:
    per_class = per_class_table(result)
    fig = plots.plot_per_class_metrics(result, title=f"Per-class performance · {title}")
    plots.publish(fig, figures / f"{tag}_per_class.png")
else:
    per_class = None
    print("No per-class numbers: " + ("this set has no diagnoses." if "classification" not in scored
                                      else "the classification head was not trained."))
per_class

# %% [markdown]
# ## Confusion matrix and ROC curves
# *Reading the figures:* in the confusion matrix each row is a true diagnosis and each column a
# predicted one; the diagonal of the normalised matrix is each class's sensitivity, and a bright
# cell off it names the confusion (MEL taken for NV is the costly one). Each ROC curve shows a
# class against all others at every threshold: the closer to the top-left corner the better, the
# diagonal is chance (AUC 0.5).

# %%
if "classification" in shown:
    fig = plots.plot_confusion_matrix(result, title=f"Confusion matrix · {title}")
    plots.publish(fig, figures / f"{tag}_confusion_matrix.png")
    fig = plots.plot_roc_curves(result["roc_curves"], title=f"ROC curves · {title}")
    plots.publish(fig, figures / f"{tag}_roc_curves.png")

# %% [markdown]
# ## Where the model is weak: subgroups
# *Reading the tables:* the headline metrics for each sex, age band and body site with at least
# 10 lesions, each with its lesion-level 95% interval. A subgroup whose interval lies below the
# others' is one the model serves worse; wide intervals mean too few lesions to say.

# %%
subgroups = subgroup_tables(evaluation, data.index, class_names, shown, n_resamples=max(100, n_bootstrap // 2),
                            seed=bootstrap_seed)
for column, table in subgroups.items():
    display(table)

# %% [markdown]
# ## Best and worst cases
# *Reading the figure:* the images with the highest and the lowest Dice (on a set without masks:
# the highest and lowest probability given to the true diagnosis), with the expert border (when
# there is one) and the predicted one drawn on each, and the true (when known) and predicted
# diagnosis. The worst rows show what fails: faint borders, hairs, lesions touching the image
# edge, very small lesions, or on an external set its colours and framing.

# %%
rank_by = "dice" if "segmentation" in shown else "p_true" if "classification" in shown else None
if rank_by is not None:
    examples = best_and_worst(data, evaluation, n_examples, by=rank_by)
    ranking = "Dice" if rank_by == "dice" else "P(true class)"
    fig = plots.plot_cases(**examples, title=f"Best and worst by {ranking} · {title}")
    plots.publish(fig, figures / f"{tag}_best_worst.png")

# %% [markdown]
# ## Calibration: do the probabilities mean what they say?
# *Reading the figure:* images are binned by their top-label probability (confidence); each bar
# is the share of the bin that is correct, the hatched part the gap to the bin's mean
# confidence, and the dashed diagonal is perfect calibration: bars below it mean
# over-confidence. The grey histogram shows how many images fall in each bin (bins with few
# images are noisy). Left, the raw probabilities; right, after the temperature fitted on the
# validation split (absent when the checkpoint has none). ECE is the count-weighted mean gap
# over 15 bins; the table adds class-wise ECE, NLL and Brier score (lower is better for all).

# %%
no_trust = ("This set has no diagnoses: nothing to calibrate, refer or explain." if "classification" not in scored
            else "The classification head was not trained: there are no probabilities to calibrate.")
if trust is not None:
    cal = trust.calibration
    fig = plots.plot_reliability_diagram(cal["reliability_before"], cal["reliability_after"],
                                         temperature=calibration.temperature if cal["calibrated"] else None,
                                         title=f"Reliability · {title}")
    plots.publish(fig, figures / f"{tag}_reliability.png")
    calibration_text = conclusions.calibration_conclusion(cal["before"], cal["after"], calibration.temperature,
                                                          cal["reliability_before"], calibration.missing)
    display(calibration_table(cal))
else:
    calibration_text = no_trust
Markdown(calibration_text)

# %% [markdown]
# ## Referral: what if the most uncertain images go to a dermatologist?
# *Reading the figure:* images are kept from the most certain down; at each coverage (share
# kept) the curve shows the error rate of the kept images. A curve falling to the left means the
# uncertainty finds the errors; the dotted line is referring at random, the dashed one an oracle
# that refers every error first. AURC, the area under the curve, is lower when better. The
# uncertainty is the entropy of the calibrated probabilities (and, with TTA, the disagreement of
# the 8 views). The table shows what referring the most uncertain 10/20/30% does to the kept
# images' balanced accuracy and to melanoma sensitivity (a referred melanoma counts as caught).

# %%
if trust is not None:
    fig = plots.plot_risk_coverage(trust.referral["curves"], title=f"Risk–coverage · {title}")
    plots.publish(fig, figures / f"{tag}_risk_coverage.png")
    referral = trust.referral
    referral_text = conclusions.referral_conclusion(referral["aurc"]["entropy"], referral["table"], referral["at_threshold"],
                                                    mask=referral["mask"] if "segmentation" in shown else None)
    display(referral_table(trust))
else:
    referral_text = no_trust
Markdown(referral_text)

# %% [markdown]
# ## The melanoma operating point
# *Reading the table:* the melanoma flag is raised when the calibrated P(MEL) reaches a
# threshold chosen on the validation split for a target sensitivity (stored in the checkpoint).
# The rows give sensitivity (melanomas flagged), specificity (other lesions not flagged) and
# PPV (flags that are melanomas) on the validation split, on this split at that threshold, and
# for calling melanoma only when it is the most probable class. A lower threshold buys
# sensitivity with specificity.

# %%
operating_text = (conclusions.operating_point_conclusion(trust.operating_point) if trust is not None else no_trust)
if trust is not None and trust.operating_point is not None:
    display(operating_point_table(trust.operating_point))
Markdown(operating_text)

# %% [markdown]
# ## Grad-CAM: where does the classifier look?
# *Reading the figure:* the heat map (bright = the regions that raised the score of the
# predicted class named in the caption most, from the last encoder block) over examples of
# each class, the expert lesion border in green (when the set has masks) and the predicted one
# in magenta. A map on the lesion is reassuring; a map on rulers, hairs, ink or the dark corners
# of the dermatoscope means the class may come from an artefact. The maps are computed at the
# model's resolution and enlarged.

# %%
cam, energy = None, None
if trust is not None:
    with_both = evaluation.subset(evaluation.has_label & evaluation.has_mask)   # the check needs true masks
    if len(with_both.per_image):
        cam = cam_check(model, data, split, with_both, device, class_names, batch_size=batch_size, method=cam_method,
                        max_images=cam_max_images, normalization=ckpt.normalization)
        per_image = per_image.merge(cam_columns(cam), on="image_id", how="left")
        energy = dict(zip(per_image["image_id"], per_image["cam_energy_true"]))
    examples = cam_examples(model, data, labelled, choose_cam_examples(labelled.per_image, class_names, n_examples),
                            device, method=cam_method, normalization=ckpt.normalization, energy=energy,
                            class_names=class_names)
    fig = plots.plot_cam_grid(**examples, title=f"Grad-CAM ({cam_method}) · {title}")
    plots.publish(fig, figures / f"{tag}_cam_examples.png")
else:
    print(no_trust)

# %% [markdown]
# ## Is the heat map on the lesion? The check against the masks
# *Reading the figure and the table:* for every image with a diagnosis and a mask, the share of
# the heat map's energy inside the true lesion mask (and inside the predicted one), per true class
# and overall, beside the share of the image the lesion covers, which is what a uniform map would
# score. Lift is their ratio (1 = no better than uniform); "above uniform" is the share of images
# whose map beats that baseline, "mostly outside" the share with less than half of the energy
# inside. The figure shows the maps that fall most outside the lesion, lowest share first.

# %%
if cam is not None:
    outside = [r["index"] for r in cam["true_mask"]["mostly_outside"][:2 * n_examples]]
    if outside:
        fig = plots.plot_cam_grid(**cam_examples(model, data, with_both, outside, device, method=cam_method,
                                                 normalization=ckpt.normalization, energy=energy,
                                                 class_names=class_names),
                                  title=f"Heat maps mostly outside the lesion · {title}")
        plots.publish(fig, figures / f"{tag}_cam_outside.png")
    else:
        print("No heat map falls mostly outside the true lesion.")
    cam_text = conclusions.cam_conclusion(cam)
    display(cam_summary_table(cam))
else:
    cam_text = ("No image has both a diagnosis and a mask: the heat maps cannot be checked against the lesions."
                if trust is not None else "No Grad-CAM check.")
Markdown(cam_text)

# %% [markdown]
# ## Conclusion
# Computed from the numbers above (`skin_utils.nb.conclusions.evaluation_conclusion`).

# %%
conclusion = conclusions.evaluation_conclusion(result, per_image["jaccard"].dropna().tolist(), synthetic=data.synthetic,
                                               tasks=tasks, shift=shift)
Markdown(conclusion)

# %%
report.write_json(out.metrics / f"{tag}.json",
                  {**{k: v for k, v in result.items() if k != "roc_curves"}, "checkpoint": str(checkpoint_path),
                   "checkpoint_epoch": ckpt.epoch + 1, "data": data.describe(), "params": params,
                   "subgroups": {c: t.to_dict(orient="records") for c, t in subgroups.items()},
                   "calibration_used": calibration.as_dict(), "trust": trust.report() if trust else None,
                   "cam": cam_report(cam) if cam else None,
                   "domain_shift": None if shift is None else {
                       "test_results": str(out.evaluation("test")), "notes": shift["notes"],
                       "restricted_to": shift["restricted_to"],
                       "table": shift["table"].reset_index().to_dict(orient="records")}})
per_image.to_csv(out.metrics / f"{tag}_per_image.csv", index=False)
figure_links = "\n".join(f"![{name}](figures/{tag}_{name}.png)" for name in
                         ("per_class", "confusion_matrix", "roc_curves", "best_worst")
                         if (figures / f"{tag}_{name}.png").is_file())
subgroup_md = "\n\n".join(f"By {c}:\n\n{report.markdown_table(t.set_index(c))}" for c, t in subgroups.items() if len(t))
base = result.get("majority_baseline") if "classification" in shown else None
baseline_md = (f"Chance balanced accuracy {result['chance']['balanced_accuracy']:.3f}; always answering {base['majority']} "
               f"would score accuracy {base['accuracy']:.3f} and balanced accuracy {base['balanced_accuracy']:.3f}."
               if base else "")
shift_md = ""
if external:
    shift_md = "### Domain shift: the training data's test split beside this set\n\n" + (
        report.markdown_table(shift["table"]) + f"\n\n![domain shift](figures/{tag}_domain_shift.png)\n\n"
        if shift is not None else "") + shift_text
masks_md = (f"Masks scored at each image's original size{' (averaged over the 8 flips and turns)' if tta else ''}. "
            if "segmentation" in shown else "")
not_scored_md = " ".join(conclusions.NOT_SCORED[t] for t in ("segmentation", "classification") if t not in scored)
what = (f"the external set **{data.name}** (`{data.data_dir}`, all images)" if external
        else f"the **{split}** split of **{data.name}**")
trust_md = (trust_section(trust, cam, calibration, tag, calibration_text, referral_text, operating_text, cam_text)
            if trust is not None or "classification" in scored else f"### Trust in each prediction\n\n{no_trust}")
report.write_section(out.root, f"03_{tag}", f"External evaluation: {data.name}" if external else f"Evaluation ({split} split)", f"""
Checkpoint `{checkpoint_path.name}` of run `{out.name}` (epoch {ckpt.epoch + 1}, {ckpt.image_size[0]}x{ckpt.image_size[1]} px;
heads trained: {', '.join(tasks)}) on {what}: {result['n_images']} images of
{result['n_lesions']} lesions ({result['n_with_mask']} with a mask, {result['n_with_label']} with a diagnosis).
{masks_md}95% intervals from {n_bootstrap} bootstrap resamples of lesions. {' '.join(x for x in (baseline_md, not_scored_md) if x)}
{f"Class scores: {result['scores']}." if result.get('scores') else ''}

{note or ''}

{report.markdown_table(headline)}

{mel_text}

{shift_md}

{report.markdown_table(per_class) if per_class is not None else ''}

{figure_links}

{subgroup_md}

{trust_md}

**Conclusion.** {conclusion}
""", params=params, data=data.describe())
print(f"results: {out.metrics / f'{tag}.json'}, {out.metrics / f'{tag}_per_image.csv'}, figures/{tag}_*.png")
