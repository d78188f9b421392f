"""Predict a folder of images, or one image, from the command line:

    python -m skin_utils.predict <folder or image> --run <run | checkpoint | export folder> --out <dir>

writes ``<dir>/predictions.csv`` (class, calibrated probabilities, uncertainty, ``refer``, ``mel_flag``),
``masks/<image_id>.png`` (0/255, the image's size), ``skipped.csv`` (files that could not be read, with the
reason), and on request ``overlays/`` (--overlays) and the ISIC 2018 files ``isic/`` (--isic). An --out whose
masks/, overlays/ or isic/ hold files of other images (an earlier call's) is refused: give an empty one. The other
options are notebooks/04_inference's parameters (`config.InferConfig`), with the same defaults.
"""

from __future__ import annotations

import sys

from skin_utils.config import InferConfig, resolve
from skin_utils.inference import check_out_dir, image_ids, load_predictor, save_predictions, summary
from skin_utils.layout import find_images

OPTIONS = ("run", "batch_size", "threshold", "tta", "cam", "isic", "device", "amp", "reports_dir")


def main(argv=None) -> int:
    parser = InferConfig.parser(only=OPTIONS, prog="python -m skin_utils.predict", description=__doc__)
    parser.add_argument("input", help="a folder of images (searched recursively) or one image file")
    parser.add_argument("--out", required=True, help="the folder to write the predictions to")
    parser.add_argument("--overlays", action="store_true", help="also write overlays/<image_id>.png (with the "
                        "Grad-CAM map unless --no-cam)")
    args = parser.parse_args(argv)
    source, out = resolve(args.input), resolve(args.out)
    if not source.exists():
        parser.error(f"input {args.input!r}: {source} does not exist; pass a folder of images or an image file.")
    try:  # before predicting: an --out holding an earlier call's masks of other images is refused
        check_out_dir(out, image_ids([source] if source.is_file() else sorted(find_images(source))),
                      overlays=args.overlays, isic=args.isic)
    except FileExistsError as err:
        parser.error(str(err))
    cfg = InferConfig(**{name: getattr(args, name) for name in OPTIONS})
    predictor = load_predictor(cfg.run, resolve(cfg.reports_dir) / "runs", device=cfg.device, amp=cfg.amp,
                               threshold=cfg.threshold, tta=cfg.tta, cam=cfg.cam and args.overlays)
    print(f"{source}: predicting at {predictor.image_size} px on {predictor.device}\n"
          f"{predictor.calibration.describe()}")
    predictions, failures = predictor.predict_folder(source, batch_size=cfg.batch_size)
    save_predictions(predictions, failures, out, overlays=args.overlays, isic=cfg.isic)
    print(summary(predictions, len(failures), skipped_file=out / "skipped.csv"))
    print(f"-> {out / 'predictions.csv'}, {out / 'masks'}/" + (f", {out / 'overlays'}/" if args.overlays else "")
          + (f", {out / 'isic'}/" if cfg.isic else ""))
    return 0 if predictions else 1  # nothing predicted: a failure


if __name__ == "__main__":
    sys.exit(main())
