"""A PH2-like external set built from the test-split lesions of the shared HAM10000 images (never
trained on): other file names, images at the top level, larger (bicubic to 640x480), masks as
<id>_lesion.bmp, labels in a CSV with other column names and other diagnosis names, MEL and NV only.
Usage: python make_ph2_like.py DATA SPLIT OUT"""
import sys
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

data, split, out = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])
out.mkdir(parents=True, exist_ok=True)
meta = pd.read_csv(data / "HAM10000_metadata.csv")
test = pd.read_csv(split).query("split == 'test'")
rows = meta[meta.image_id.isin(test.image_id) & meta.dx.isin(["mel", "nv"])].sort_values("image_id")
rng = np.random.default_rng(0)
records = []
for k, r in enumerate(rows.itertuples(), 1):
    name = f"IMD{k:04d}"
    img = Image.open(next((data / "images").glob(r.image_id + ".*"))).convert("RGB")
    img.resize((640, 480), Image.BICUBIC).save(out / f"{name}.jpg", quality=92)
    mask = Image.open(next((data / "masks").glob(r.image_id + "_segmentation.*"))).convert("L")
    mask.resize((640, 480), Image.NEAREST).save(out / f"{name}_lesion.bmp")
    dx = "Melanoma" if r.dx == "mel" else ("Common Nevus" if rng.random() < 0.6 else "Atypical Nevus")
    records.append({"Image Name": name, "Clinical Diagnosis": dx, "Asymmetry": int(rng.integers(0, 3))})
pd.DataFrame(records).to_csv(out / "PH2_dataset.csv", index=False)
print(f"{len(records)} images -> {out}:", pd.DataFrame(records)["Clinical Diagnosis"].value_counts().to_dict())
