"""A local web demo of a trained model: upload a dermoscopy image, see the predicted lesion mask, the seven
calibrated probabilities, the referral and melanoma flags with the thresholds they come from, and the Grad-CAM.

    pip install -e ".[demo]"                       # gradio, an optional extra
    python -m skin_utils.app --run latest          # or a run folder, a best.pt, an export folder
    python -m skin_utils.app --run best.pt --port 7861 --host 0.0.0.0 --share

The predictions are `python -m skin_utils.predict`'s and notebooks/04_inference's: with TTA by default
(`config.InferConfig`'s ``tta``; --no-tta for the plain outputs and their calibration). In Jupyter or Colab,
``build_demo(load_predictor("latest", tta=True)).launch(inline=True)`` renders the page inline.
Without gradio, ``upload_panel(predictor)`` gives the same in ipywidgets and matplotlib. Every prediction is
``Predictor.predict_image``'s; this module only shows it. Research software, not a medical device.
"""

from __future__ import annotations

import argparse
import io
import sys
import tempfile
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
from PIL import Image

from skin_utils.checkpoint import CheckpointError
from skin_utils.config import InferConfig, resolve
from skin_utils.inference import Predictor, flags_caption, load_predictor
from skin_utils.labels import CLASS_DESCRIPTIONS
from skin_utils.layout import find_images, read_image
from skin_utils.plots import overlay_mask, plot_cam_overlay

DISCLAIMER = "Research software — not a medical device. Do not use it to diagnose or to decide on care."
DISPLAY_SIDE = 512  # pixels: the overlay's longer side


def _gradio():
    try:
        import gradio
    except ImportError:
        raise ImportError('The web demo needs gradio, an optional extra: pip install -e ".[demo]" (in the '
                          "repository).") from None
    return gradio


def thresholds_text(calibration) -> str:
    """Where the flags come from: both thresholds, or "not calibrated"."""
    ref, mel = calibration.referral_threshold, calibration.mel_threshold
    return (f"**Referral threshold:** {'not calibrated' if ref is None else f'normalised entropy > {ref:.3f}'} · "
            f"**Melanoma threshold:** {'not calibrated' if mel is None else f'calibrated P(MEL) ≥ {mel:.3f}'}")


def result_markdown(p, calibration) -> str:
    """The class, the table of calibrated probabilities (4 decimals), and each flag beside its threshold
    (familiarity: beside the validation images')."""
    rows = "\n".join(f"| {c} | {CLASS_DESCRIPTIONS.get(c, '')} | {v:.4f} |" for c, v in p.probs_calibrated.items())
    refer = (f"not calibrated (entropy {p.entropy:.3f}, no referral threshold)" if p.refer is None else
             f"{'REFER' if p.refer else 'no referral'}: entropy {p.entropy:.3f} "
             f"{'>' if p.refer else '≤'} threshold {calibration.referral_threshold:.3f}")
    flag = ("not calibrated (no melanoma threshold)" if p.mel_flag is None else
            f"{'MELANOMA FLAG' if p.mel_flag else 'no melanoma flag'}: calibrated P(MEL) "
            f"{p.probs_calibrated['MEL']:.4f} {'≥' if p.mel_flag else '<'} threshold {calibration.mel_threshold:.3f}")
    familiar = ("not calibrated (no feature reference)" if p.unfamiliar is None else
                f"{'UNFAMILIAR' if p.unfamiliar else 'familiar'}: feature distance {p.feature_distance:.2f} "
                f"{'beyond' if p.unfamiliar else 'within'} what 95% of the validation images reach"
                + (" (another device or clinic? the probabilities and flags may not hold)" if p.unfamiliar else ""))
    return (f"### Predicted: {p.pred} ({p.prob_calibrated:.4f})\n\n| class | diagnosis | calibrated probability |\n"
            f"|---|---|---|\n{rows}\n\n- **Referral:** {refer}\n- **Melanoma flag:** {flag}\n"
            f"- **Familiarity:** {familiar}\n\n{calibration.describe()}\n\n*{DISCLAIMER}*")


def analyse(predictor: Predictor, image) -> tuple:
    """What the page shows for one image (a path or an RGB uint8 array): ``(prediction, overlay, cam)``, the
    overlay DISPLAY_SIDE pixels on its longer side and the Grad-CAM figure as uint8 RGB arrays."""
    p = predictor.predict_image(image, cam=True)  # a path: read as predict and 04 read it (reduced over 4 MP)
    array = read_image(image) if isinstance(image, (str, Path)) else np.asarray(image)  # shown at full size
    overlay = Image.fromarray(overlay_mask(array, p.mask))
    scale = DISPLAY_SIDE / max(overlay.size)  # small images drawn larger, huge ones smaller
    overlay = np.asarray(overlay.resize([round(n * scale) for n in overlay.size], Image.LANCZOS))
    fig = plot_cam_overlay(array, p.cam, pred_mask=p.mask, caption=flags_caption(p).replace("\n", " · "))
    fig.savefig(buffer := io.BytesIO(), format="png", dpi=100)
    plt.close(fig)
    return p, overlay, np.asarray(Image.open(buffer).convert("RGB"))


def build_demo(predictor: Predictor, examples=None):
    """The page (a ``gradio.Blocks``); ``examples``: image paths offered under the upload box."""
    gr = _gradio()

    def run(path):
        if path is None:
            return None, None, None, "Upload an image."
        try:
            p, overlay, cam = analyse(predictor, path)
        except (OSError, ValueError) as err:  # an unreadable file: say why on the page
            raise gr.Error(str(err)) from err
        return overlay, cam, p.probs_calibrated, result_markdown(p, predictor.calibration)

    with gr.Blocks(title="Dermoscopy demo (research only)", analytics_enabled=False) as demo:
        gr.Markdown(f"## Lesion mask and diagnosis\n**{DISCLAIMER}**", elem_id="disclaimer")
        gr.Markdown(thresholds_text(predictor.calibration), elem_id="thresholds")
        with gr.Row():
            with gr.Column():
                image = gr.Image(type="filepath", image_mode=None, sources=["upload"], label="Dermoscopy image")
                if examples:
                    gr.Examples([[str(e)] for e in examples], inputs=[image], cache_examples=False)
                overlay = gr.Image(label="Predicted lesion mask", interactive=False)
                cam = gr.Image(label="Grad-CAM of the predicted class", interactive=False)
            with gr.Column():
                label = gr.Label(num_top_classes=len(predictor.class_names), label="Calibrated probabilities")
                result = gr.Markdown("Upload an image.", elem_id="result")
        image.change(run, inputs=image, outputs=[overlay, cam, label, result])
    return demo


def upload_panel(predictor: Predictor):
    """The same without gradio, for Jupyter/Colab: ``display(upload_panel(predictor))``, an upload button over
    an output area (the Grad-CAM drawn by matplotlib). The last `Prediction` is kept as ``panel.prediction``."""
    import ipywidgets as widgets
    from IPython.display import Markdown, display

    upload, out = widgets.FileUpload(accept="image/*", multiple=False, description="Image"), widgets.Output()
    panel = widgets.VBox([widgets.HTML(f"<b>{DISCLAIMER}</b>"), upload, out])
    panel.prediction = None

    def show(change):
        if not change["new"]:
            return
        item = change["new"][0]
        with out, tempfile.TemporaryDirectory() as tmp:
            out.clear_output()
            (path := Path(tmp) / Path(item["name"]).name).write_bytes(bytes(item["content"]))
            try:
                panel.prediction, overlay, cam = analyse(predictor, path)
            except (OSError, ValueError) as err:  # ImageReadError (a ValueError) says why
                return print(f"Cannot use {item['name']}: {err}")
            display(Image.fromarray(overlay), Image.fromarray(cam),
                    Markdown(result_markdown(panel.prediction, predictor.calibration)))

    upload.observe(show, names="value")
    return panel


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m skin_utils.app", description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", default="latest", help="run name or folder, best.pt, export folder (default: latest)")
    parser.add_argument("--runs-dir", default="reports/runs", help="where run names are looked up")
    parser.add_argument("--examples", help="a folder of images offered as examples (the first 12)")
    parser.add_argument("--host", default="127.0.0.1", help="127.0.0.1: this machine only; 0.0.0.0: the network")
    parser.add_argument("--port", type=int, default=7860)
    parser.add_argument("--share", action="store_true", help="also a public gradio.live link")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, mps")
    parser.add_argument("--tta", action=argparse.BooleanOptionalAction, default=InferConfig.tta,
                        help=f"{InferConfig.meanings()['tta']}, as predict and 04 (default: {InferConfig.tta})")
    args = parser.parse_args(argv)
    try:
        _gradio()  # before the model loads: say at once what to install
        predictor = load_predictor(args.run, resolve(args.runs_dir), device=args.device, tta=args.tta)
        demo = build_demo(predictor, sorted(find_images(resolve(args.examples)))[:12] if args.examples else None)
    except (ImportError, OSError, CheckpointError) as err:
        parser.exit(2, f"error: {err}\n")
    print(predictor.calibration.describe())
    demo.launch(server_name=args.host, server_port=args.port, share=args.share)
    return 0


if __name__ == "__main__":
    sys.exit(main())
