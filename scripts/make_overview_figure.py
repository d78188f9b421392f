"""The README's figure (docs/figures/overview.png): 04_inference's heat-map figure (mask outline,
Grad-CAM, calibrated probability, melanoma flag) from a small model trained on the synthetic demo.
HAM10000 images are CC BY-NC and never committed, so the committed figure shows demo images; run
04_inference on your data for the same figure on real images (reports/runs/<run>/figures/inference_trust.png).

    python scripts/make_overview_figure.py          # ~3 minutes on 2 CPU cores (AMD EPYC)
"""

import argparse
import shutil
import tempfile
from pathlib import Path

from skin_utils.config import InferConfig, TrainConfig
from skin_utils.demo import make_synthetic_dataset
from skin_utils.inference import infer
from skin_utils.train import train

ROOT = Path(__file__).resolve().parents[1]
parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
parser.add_argument("--out", default=str(ROOT / "docs" / "figures" / "overview.png"), help="where the figure goes")
args = parser.parse_args()

with tempfile.TemporaryDirectory() as tmp:
    make_synthetic_dataset(Path(tmp) / "demo", n_images=600)
    train(TrainConfig(data_dir=f"{tmp}/demo", reports_dir=f"{tmp}/reports", split_path=f"{tmp}/split.csv",
                      run_name="overview", epochs=6, image_size=96, encoder_weights=None))
    infer(InferConfig(run="overview", reports_dir=f"{tmp}/reports", n_demo_images=4))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(Path(tmp) / "reports" / "runs" / "overview" / "figures" / "inference_trust.png", out)
    print(f"wrote {out}")
