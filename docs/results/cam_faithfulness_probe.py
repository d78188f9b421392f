"""Which heat map shows where the diagnosis head looks? On the HAM10000 validation split (true masks), the share of
each map's energy inside the lesion for Grad-CAM, Grad-CAM++ and HiResCAM (Draelos & Carin 2020: gradient times
activation, summed over channels, before any spatial averaging) of the predicted class, at encoder.layer4. The
head is linear in layer4's activations (lesion pooling's weights are detached), so HiResCAM is each location's
exact share of the class logit; Grad-CAM equals it under frame pooling and loses the lesion weights otherwise.

    python docs/results/cam_faithfulness_probe.py reports/runs/<run> [reports/runs/<run> ...]
"""
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from skin_utils.checkpoint import load_model
from skin_utils.data import make_loader
from skin_utils.engine import grad_cam
from skin_utils.transforms import Normalize
from skin_utils.trust import cam_localization, cam_localization_report, data_for_checkpoint

torch.set_num_threads(2)


def hirescam(model, x):
    store = {}
    hook = model.encoder.layer4.register_forward_hook(lambda module, inputs, output: store.__setitem__("a", output))
    try:
        logits = model(x.clone().requires_grad_(True))[1]
    finally:
        hook.remove()
    (g,) = torch.autograd.grad(logits.gather(1, logits.argmax(1)[:, None]).sum(), store["a"])
    cam = F.interpolate((g * store["a"]).sum(1, keepdim=True).clamp_min(0), size=x.shape[-2:], mode="bilinear")[:, 0]
    return (cam / cam.amax((1, 2), keepdim=True).clamp_min(1e-12)).detach().numpy()


for run in sys.argv[1:]:
    t0 = time.time()
    model, ckpt = load_model(Path(run) / "checkpoints" / "best.pt", map_location="cpu")
    model.eval()
    data, norm = data_for_checkpoint(ckpt, progress=False), Normalize.from_config(ckpt.normalization)
    maps, masks, labels = {"gradcam": [], "gradcam++": [], "hirescam": []}, [], []
    for images, m, y, _ in make_loader(data.dataset("val"), 64, torch.device("cpu")):
        x = norm(images)
        maps["gradcam"].append(grad_cam(model, x, method="gradcam")[0])
        maps["gradcam++"].append(grad_cam(model, x, method="gradcam++")[0])
        maps["hirescam"].append(hirescam(model, x))
        masks.append(m[:, 0].numpy() > 0)
        labels.append(y.numpy())
    masks, labels = np.concatenate(masks), np.concatenate(labels)
    for name, found in maps.items():
        o = cam_localization_report(cam_localization(np.concatenate(found), masks, labels))["overall"]
        print(f"{Path(run).name} pooling={model.config.get('pooling', 'average')} {name}: energy inside "
              f"{o['energy_inside']:.3f}, lesion area {o['area_share']:.3f}, lift {o['lift']:.2f}, above uniform "
              f"{o['above_baseline']:.0%} ({len(labels)} images)", flush=True)
    print(f"{Path(run).name}: {time.time() - t0:.0f} s", flush=True)
