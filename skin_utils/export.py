"""A trained model for use outside skin_utils: ``python -m skin_utils.export <run|checkpoint> --out <folder>``.

The folder it writes:

    model.safetensors, config.json   the weights, and every field that rebuilds the model, its preprocessing
                                     and its calibration; ``Predictor.from_folder(folder)`` reads them (no pickle)
    model.onnx                       ``image`` float32 (N, 3, H, W), RGB in [0, 1], any H and W (the model's
                                     ``image_size`` is what it was trained at) -> ``probs`` (N, C), calibrated
                                     class probabilities, and ``mask`` (N, 1, H, W), the lesion probability.
                                     Colour constancy, mean/std and the temperature are inside the graph.
    MODEL_CARD.md                    what it is for, what it was trained on, how well it does, how to rebuild it
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image

from skin_utils import report
from skin_utils.checkpoint import CONFIG_FILE, Checkpoint, load_model
from skin_utils.config import TrainConfig, resolve
from skin_utils.inference import model_path
from skin_utils.metrics import MELANOMA
from skin_utils.runs import run_of_checkpoint
from skin_utils.transforms import Normalize
from skin_utils.trust import StoredCalibration

ONNX_FILE, CARD_FILE, OPSET = "model.onnx", "MODEL_CARD.md", 17


class ExportedNet(torch.nn.Module):
    """The graph in ``model.onnx``: RGB in [0, 1] -> (calibrated class probabilities, mask probability)."""

    def __init__(self, model: torch.nn.Module, normalization: dict, temperature: float):
        super().__init__()
        self.model, self.normalize, self.temperature = model.eval(), Normalize.from_config(normalization), temperature

    def forward(self, image: torch.Tensor):
        mask_logits, logits = self.model(self.normalize(image * 255.0))
        return torch.softmax(logits.float() / self.temperature, dim=1), torch.sigmoid(mask_logits.float())


def onnx_input(image: np.ndarray, image_size) -> np.ndarray:
    """What ``model.onnx`` expects for one RGB uint8 image: resized to ``image_size`` (H, W) bilinearly (as
    `Predictor` does), scaled to [0, 1], float32 (1, 3, H, W). Needs only numpy and Pillow."""
    h, w = image_size
    resized = np.asarray(Image.fromarray(image).resize((w, h), Image.BILINEAR), dtype=np.float32) / 255.0
    return resized.transpose(2, 0, 1)[None]


def export_onnx(ckpt: Checkpoint, model: torch.nn.Module, path) -> dict:
    """``model.onnx`` of the plain (no TTA) outputs with their stored temperature; what config.json says of it."""
    calibration = StoredCalibration.from_checkpoint(ckpt, tta=False)
    net = ExportedNet(model, ckpt.normalization, calibration.temperature)
    example = torch.rand(1, 3, *ckpt.image_size)
    axes = {"image": {0: "batch", 2: "height", 3: "width"}, "probs": {0: "batch"},
            "mask": {0: "batch", 2: "height", 3: "width"}}
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the legacy exporter's deprecation and tracer notes: checked by tests instead
        torch.onnx.export(net, (example,), str(path), dynamo=False, opset_version=OPSET, input_names=["image"],
                          output_names=["probs", "mask"], dynamic_axes=axes)
    return {"file": Path(path).name, "opset": OPSET, "input": "image: float32 (N, 3, H, W), RGB in [0, 1]",
            "outputs": {"probs": f"float32 (N, {len(ckpt.class_names)}) calibrated probabilities of "
                                 f"{ckpt.class_names}", "mask": "float32 (N, 1, H, W) lesion probability"},
            "preprocessing": f"apply the EXIF orientation; RGB; resize to image_size {list(ckpt.image_size)} (H, W), "
                             "bilinear; divide by 255",
            "temperature": calibration.temperature, "calibration": calibration.describe()}


def export(source, out, runs_dir="reports/runs", onnx: bool = True) -> Path:
    """Write the export folder of ``source`` (a run name or folder, "latest", a checkpoint) to ``out``."""
    path = model_path(source, runs_dir)
    model, ckpt = load_model(path)
    out = ckpt.save_folder(out)
    if onnx:
        config = json.loads((out / CONFIG_FILE).read_text())
        config["onnx"] = export_onnx(ckpt, model, out / ONNX_FILE)
        (out / CONFIG_FILE).write_text(json.dumps(config, indent=2))
    (out / CARD_FILE).write_text(model_card(ckpt, path, onnx))
    return out


# ----------------------------------------------------------------------------- the model card
RESULT_ROWS = {"Dice": "dice", "thresholded Jaccard": "thresholded_jaccard", "accuracy": "accuracy",
               "balanced accuracy": "balanced_accuracy", "macro AUC": "macro_auc", "melanoma AUC": "mel_auc"}


def _ci(saved: dict, key: str) -> str:
    value, (lo, hi) = saved.get(key), saved.get("ci95", {}).get(key) or [None, None]
    return "–" if value is None else f"{value:.3f}" + ("" if lo is None else f" [{lo:.3f}, {hi:.3f}]")


def _results_table(saved: dict) -> str:
    rows = {"images (lesions)": f"{saved['n_images']} ({saved['n_lesions']})",
            **{name: _ci(saved, key) for name, key in RESULT_ROWS.items()}}
    if base := saved.get("majority_baseline"):
        rows[f"always {base['majority']}: accuracy / balanced accuracy"] = (
            f"{base['accuracy']:.3f} / {base['balanced_accuracy']:.3f}")
    return report.markdown_table(rows)


def failure_modes(saved: dict, data: dict) -> list[str]:
    """Weak spots read from a test evaluation ({} before one: the weakest and the rare classes, where Grad-CAM
    looks) and from the training data."""
    notes = [] if saved else ["Unknown until the run is evaluated (notebooks/03_evaluate)."]
    per_class = pd.DataFrame(saved.get("per_class") or {}).T
    if len(per_class):
        weakest = per_class[per_class["support"] > 0].sort_values("sensitivity").head(3)
        notes.append("Weakest classes by sensitivity on the test split: " + ", ".join(
            f"{c} {r['sensitivity']:.2f} (n={int(r['support'])})" for c, r in weakest.iterrows()) + ".")
        if len(rare := per_class[per_class["support"] < 20]):
            notes.append(f"Fewer than 20 test images for {', '.join(rare.index)}: their figures are imprecise.")
    if cam := (saved.get("cam") or {}).get("true_mask", {}).get("overall"):
        notes.append(f"Grad-CAM energy inside the true lesion {cam['energy_inside']:.2f} for a lesion area share of "
                     f"{cam['area_share']:.2f} (lift {cam['lift']:.2f}; 1 means no better than uniform heat).")
    if data.get("synthetic"):
        notes.append("Trained on the synthetic demo: its numbers say nothing about real lesions.")
    return notes + ["Images from other dermoscopes and clinics shift colours and scale: check the calibration and "
                    "the flags on a labelled sample of your own images before relying on them (the `unfamiliar` "
                    "flag marks images whose features lie beyond 95% of the validation images')."]


def reproduce_command(params: dict) -> str:
    """The papermill command that trains the same recipe (the parameters that differ from the defaults)."""
    defaults = TrainConfig().to_dict()
    changed = {k: v for k, v in params.items() if k in defaults and v != defaults[k] and k != "run_name"}
    return "papermill notebooks/02_train.ipynb 02_train.out.ipynb" + "".join(
        f" -p {k} {v}" if isinstance(v, (int, float, str)) and not isinstance(v, bool)
        else f" -y '{k}: {json.dumps(v)}'" for k, v in changed.items())


def model_card(ckpt: Checkpoint, path: Path, onnx: bool = True) -> str:
    """MODEL_CARD.md of the checkpoint at ``path``, with its run folder's evaluations of that checkpoint."""
    p, data, epoch = ckpt.params, ckpt.data, None if ckpt.epoch is None else ckpt.epoch + 1
    features = " + `features.safetensors` (the familiarity reference: the `unfamiliar` flag)" if (
        ckpt.calibration or {}).get("features") else ""
    run = run_of_checkpoint(path) if path.is_file() else None
    found = {f.stem: json.loads(f.read_text()) for f in sorted(run.metrics.glob("evaluate*.json"))} if run else {}
    # the evaluations of this checkpoint, at its epoch (by file name: a run folder moved elsewhere keeps its results)
    saved = {tag: s for tag, s in found.items()
             if Path(str(s.get("checkpoint"))).name == path.name and s.get("checkpoint_epoch") == epoch}
    test, other = saved.get("evaluate") or {}, found.get("evaluate")
    no_test = (f"The run's test results (`metrics/evaluate.json`) are of another checkpoint "
               f"({other.get('checkpoint')}, epoch {other.get('checkpoint_epoch')}): evaluate this one with "
               f"`papermill notebooks/03_evaluate.ipynb 03_evaluate.out.ipynb -p checkpoint {path}`, then export "
               "again." if other else "Not evaluated yet: run `notebooks/03_evaluate.ipynb` on this run, then export "
               "again.")
    out = [f"# Model card: {run.name if run else 'checkpoint'}", "",
           "Research software, **not a medical device**: it must not be used to diagnose, treat or triage patients.",
           "", "## Intended use",
           f"Research and teaching on dermoscopic images: a lesion mask and one of {len(ckpt.class_names)} diagnoses "
           f"({', '.join(ckpt.class_names)}) with calibrated probabilities, a referral flag for uncertain images and a "
           "melanoma flag. Not for clinical photographs, other body imaging, or populations unlike the training data "
           "without a new validation.", "", "## Model",
           f"ResNet18 encoder shared by a U-Net decoder (mask) and a linear head (diagnosis); {ckpt.image_size[0]}x"
           f"{ckpt.image_size[1]} px inputs; encoder initialised from {ckpt.encoder_weights_used or 'unknown'}; "
           f"best epoch {epoch or '–'} by {ckpt.selection or '–'}. Files: `model.safetensors` + `config.json` "
           f"(`Predictor.from_folder`){features}"
           + (f", `{ONNX_FILE}` (opset {OPSET}; inputs and outputs in `config.json` under `onnx`)." if onnx else "."),
           "", "## Training data",
           f"`{Path(str(data.get('data_dir', '?'))).name}` (fingerprint {data.get('fingerprint', '–')}): "
           f"{data.get('n_images', '–')} images of {data.get('n_lesions', '–')} lesions, split by lesion "
           f"{data.get('images_per_split', {})}; {p.get('epochs', '–')} epochs"
           + (f", time budget {p['time_budget']} min" if p.get("time_budget") else "")
           + f", seed {p.get('seed', '–')}.",
           "", "## Results on the test split (95% lesion-level bootstrap intervals)",
           _results_table(test) if test else no_test]
    for tag, external in saved.items():
        if external.get("external"):
            out += ["", f"## External set: {Path(str(external['data'].get('data_dir', tag))).name}",
                    _results_table(external)]
    out += ["", "## Calibration", *(f"- {StoredCalibration.from_checkpoint(ckpt, tta).describe()}" + (
        f" This one is inside `{ONNX_FILE}`." if onnx and not tta else f" `Predictor(..., tta={tta})` uses it.")
        for tta in (True, False))]
    if t := (test.get("trust") or {}).get("calibration"):
        before, after = t["before"], t.get("after")  # after: None when no temperature was fitted for these outputs
        out.append(f"On the test split ({t['kind']} outputs): " + (
            f"ECE {before['ece']:.3f} before, {after['ece']:.3f} after; NLL {before['nll']:.3f} -> {after['nll']:.3f}."
            if after else f"ECE {before['ece']:.3f}, NLL {before['nll']:.3f} (no temperature fitted for them)."))
    if (m := test.get("melanoma_vs_rest")) and m.get("threshold") is not None:
        out += ["", "## The melanoma operating point",
                f"Flag at calibrated P({MELANOMA}) >= {m['threshold']:.3f} of the {m.get('kind')} outputs, chosen on "
                f"validation for sensitivity {m.get('target_sensitivity')}; on the test split sensitivity "
                f"{_ci(test, 'mel_sensitivity')}, specificity {_ci(test, 'mel_specificity')} ({m['n_mel']} melanomas "
                f"of {m['n_images']} images)."]
    for column, rows in (test.get("subgroups") or {}).items():
        if not rows:  # no group of this column was large enough to report
            continue
        table = pd.DataFrame(rows).set_index(column).astype({"n_images": str})
        out += ["", f"## Subgroups: {column}", report.markdown_table(
            table[[c for c in ("n_images", "dice", "balanced_accuracy", "mel_auc") if c in table]])]
    out += ["", "## Known failure modes", *(f"- {n}" for n in failure_modes(test, data)), "",
            "## How to reproduce", f"`{reproduce_command(p)}`", "", "## Use it", "```python",
            "from skin_utils.inference import Predictor",
            "prediction = Predictor.from_folder('<this folder>').predict_image('lesion.jpg')", "```"]
    if onnx:
        out += ["Without skin_utils (numpy, Pillow, onnxruntime):", "```python",
                "import json, numpy as np, onnxruntime as ort", "from PIL import Image, ImageOps",
                "cfg = json.load(open('config.json'))", "h, w = cfg['image_size']",
                "image = ImageOps.exif_transpose(Image.open('lesion.jpg')).convert('RGB')  # as the camera held it",
                "x = np.asarray(image.resize((w, h), Image.BILINEAR), np.float32).transpose(2, 0, 1)[None] / 255",
                "probs, mask = ort.InferenceSession('model.onnx').run(None, {'image': x})", "```"]
    out += ["", "## Licence", "Code MIT. " + ("Weights trained on the synthetic demo (made by skin_utils): MIT."
            if data.get("synthetic") else "Weights inherit the terms of their training data: HAM10000 is CC BY-NC 4.0 "
            "(non-commercial); check the licence of any other data named above.")]
    return "\n".join(out) + "\n"


def main(argv=None) -> Path:
    parser = argparse.ArgumentParser(prog="python -m skin_utils.export", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("source", help='a run name under --runs-dir, a run folder, "latest", or a checkpoint file')
    parser.add_argument("--out", required=True, help="the export folder to write")
    parser.add_argument("--runs-dir", default="reports/runs", help="where run names are looked up")
    parser.add_argument("--no-onnx", action="store_true", help="write safetensors, config.json and the card only")
    args = parser.parse_args(argv)
    out = export(args.source, resolve(args.out), resolve(args.runs_dir), onnx=not args.no_onnx)
    print(f"exported to {out}: {', '.join(sorted(p.name for p in out.iterdir()))}")
    return out


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
