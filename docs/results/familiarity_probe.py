"""Which feature statistics tell another clinic's images from HAM10000's? Offline probe on one run: pooled mean and
standard deviation of each encoder stage, per-feature z-scores or Ledoit-Wolf Mahalanobis (optionally in the top
principal axes), each HAM10000 val image scored by a fit without its fold, against the external choice half.

    python docs/results/familiarity_probe.py reports/runs/joint_seed0 uda1_choice_layout
"""
import sys, numpy as np, torch
from sklearn.covariance import LedoitWolf
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import KFold
from skin_utils.checkpoint import load_model
from skin_utils.trust import data_for_checkpoint
from skin_utils.data import make_loader
from skin_utils.transforms import Normalize
torch.set_num_threads(1)
run = sys.argv[1]; ext_dir = sys.argv[2]
model, ckpt = load_model(f"{run}/checkpoints/best.pt", map_location="cpu"); model.eval()
norm = Normalize.from_config(ckpt.normalization)
def feats(data, split):
    out = []
    with torch.inference_mode():
        for images, *_ in make_loader(data.dataset(split), 64, torch.device("cpu")):
            maps = model.encoder(norm(images))
            out.append(torch.cat([torch.cat([m.mean((2, 3)), m.std((2, 3))], 1) for m in maps], 1))
    return torch.cat(out).numpy().astype(np.float64)
ham = data_for_checkpoint(ckpt, "data", None)
ext = data_for_checkpoint(ckpt, ext_dir, None, whole=True)
import os
if os.path.exists(f"{run}/probe_feats.npz"):
    F = dict(np.load(f"{run}/probe_feats.npz"))
else:
    F = {"val": feats(ham, "val"), "test": feats(ham, "test"), "ext": feats(ext, "all")}
    np.savez(f"{run}/probe_feats.npz", **F)
# column blocks: per stage, mean (C) then std (C); stages 64, 64, 128, 256, 512
blocks, start = {}, 0
for i, c in enumerate((64, 64, 128, 256, 512)):
    blocks[f"s{i}_mean"] = np.arange(start, start + c); blocks[f"s{i}_std"] = np.arange(start + c, start + 2 * c); start += 2 * c
def diag(fit, x):
    mu, sd = fit.mean(0), fit.std(0); sd = np.maximum(sd, np.median(sd) * 0.1 + 1e-12)
    return np.sqrt(np.mean(((x - mu) / sd) ** 2, 1))
def maha(fit, x):
    lw = LedoitWolf().fit(fit); return np.sqrt(lw.mahalanobis(x) / fit.shape[1])
def crossfit(fn, val):
    d = np.zeros(len(val))
    for tr, te in KFold(5, shuffle=True, random_state=0).split(val):
        d[te] = fn(val[tr], val[te])
    return d
def pca_lw(k):
    def fn(fit, x):
        mu = fit.mean(0); u, s_, vt = np.linalg.svd(fit - mu, full_matrices=False); P = vt[:k]
        lw = LedoitWolf().fit((fit - mu) @ P.T); return np.sqrt(lw.mahalanobis((x - mu) @ P.T) / k)
    return fn
cands = {"layer4 mean, diag (current)": ["s4_mean"], "all stages mean, diag": [f"s{i}_mean" for i in range(5)],
         "all stages mean+std, diag": list(blocks), "stem+layer1 mean+std, diag": ["s0_mean", "s0_std", "s1_mean", "s1_std"],
         "layer4 mean, LW Mahalanobis": ["s4_mean"], "all stages mean+std, LW Mahalanobis": list(blocks),
         "stem+layer1 mean+std, LW Mahalanobis": ["s0_mean", "s0_std", "s1_mean", "s1_std"],
         "layer4 mean, PCA16 LW": ["s4_mean"], "layer4 mean, PCA32 LW": ["s4_mean"], "layer4 mean, PCA64 LW": ["s4_mean"],
         "layer4 mean, PCA128 LW": ["s4_mean"]}
for name, bl in cands.items():
    cols = np.concatenate([blocks[b] for b in bl])
    fn = pca_lw(int(name.split("PCA")[1].split()[0])) if "PCA" in name else maha if "Mahalanobis" in name else diag
    v, t, e = F["val"][:, cols], F["test"][:, cols], F["ext"][:, cols]
    dv = crossfit(fn, v); thr = np.quantile(dv, 0.95)
    dt, de = fn(v, t), fn(v, e)
    auc_val = roc_auc_score(np.r_[np.zeros(len(dv)), np.ones(len(de))], np.r_[dv, de])
    auc_test = roc_auc_score(np.r_[np.zeros(len(dt)), np.ones(len(de))], np.r_[dt, de])
    print(f"{name:42s} AUROC val(crossfit) vs ext {auc_val:.3f} | test vs ext {auc_test:.3f} | unfamiliar test {np.mean(dt > thr):.3f} ext {np.mean(de > thr):.3f}", flush=True)
