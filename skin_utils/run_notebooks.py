"""Run the four notebooks end to end with papermill: ``python -m skin_utils.run_notebooks``.

Executed copies go to ``<reports_dir>/notebooks/``; the notebooks themselves write figures,
metrics and ``<reports_dir>/REPORT.md``. With no data set in ``data/`` everything runs on the
synthetic demo (its default of 15 epochs finishes in a few minutes on 2 CPU cores); with
HAM10000 in ``data/`` it trains on it (5 epochs by default).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from skin_utils.nb.paths import project_root, resolve

NOTEBOOKS = ("01_eda", "02_train", "03_evaluate", "04_inference")
DEMO_EPOCHS, REAL_EPOCHS = 15, 5


def run_notebook(name: str, params: dict, root: Path, out_dir: Path, log_output: bool = False) -> Path:
    import papermill

    out = out_dir / f"{name}.ipynb"
    papermill.execute_notebook(str(root / "notebooks" / f"{name}.ipynb"), str(out), parameters=params,
                               cwd=str(root), kernel_name="python3", language="python",
                               log_output=log_output, progress_bar=True)
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", default="data", help="HAM10000 layout; 'data' falls back to the demo")
    parser.add_argument("--epochs", type=int, default=None,
                        help=f"default {DEMO_EPOCHS} on the demo, {REAL_EPOCHS} on real data")
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--max-samples", type=int, default=None)
    parser.add_argument("--reports-dir", default="reports")
    parser.add_argument("--checkpoint-dir", default="checkpoints")
    parser.add_argument("--only", nargs="+", choices=NOTEBOOKS, help="run only these notebooks")
    parser.add_argument("--log-output", action="store_true", help="stream the notebooks' output")
    args = parser.parse_args(argv)

    from skin_utils.data.datasets import resolve_data_dir
    from skin_utils.demo.synthetic import is_synthetic

    root = project_root()
    folder = resolve_data_dir(args.data_dir, root=root)
    demo = is_synthetic(folder)
    epochs = args.epochs or (DEMO_EPOCHS if demo else REAL_EPOCHS)
    reports = resolve(args.reports_dir, root)
    split_path = str(reports / "split.csv")
    checkpoint = str(resolve(args.checkpoint_dir, root) / "best.pt")
    common = {"reports_dir": str(reports)}
    params = {
        "01_eda": {**common, "data_dir": args.data_dir, "split_path": split_path, "max_samples": args.max_samples},
        "02_train": {**common, "data_dir": args.data_dir, "split_path": split_path, "epochs": epochs,
                     "image_size": args.image_size, "batch_size": args.batch_size,
                     "max_samples": args.max_samples, "checkpoint_dir": args.checkpoint_dir},
        "03_evaluate": {**common, "data_dir": args.data_dir, "split_path": split_path, "checkpoint": checkpoint},
        "04_inference": {**common, "checkpoint": checkpoint},
    }
    print(f"Data: {folder} ({'synthetic demo' if demo else 'real'}); {epochs} epochs at {args.image_size} px; "
          f"reports in {reports}")
    out_dir = reports / "notebooks"
    out_dir.mkdir(parents=True, exist_ok=True)
    for name in args.only or NOTEBOOKS:
        t0 = time.perf_counter()
        print(f"== {name}")
        try:
            run_notebook(name, params[name], root, out_dir, args.log_output)
        except Exception as err:  # papermill.PapermillExecutionError and friends
            print(f"\n{name} failed: {err}\nThe executed notebook with the error is {out_dir / (name + '.ipynb')}.",
                  file=sys.stderr)
            return 1
        print(f"   done in {time.perf_counter() - t0:.0f} s -> {out_dir / (name + '.ipynb')}")
    print(f"\nReport: {reports / 'REPORT.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
