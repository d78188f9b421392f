#!/usr/bin/env bash
# GPU check: on one machine, in a few minutes, train (compile off and on), evaluate, predict a
# folder and run the benchmark, then print one table of the speeds and the memory they took.
#   bash scripts/gpu_check.sh --help      # this usage
set -euo pipefail
cd "$(dirname "$0")/.."

usage() {
  cat <<'USAGE'
usage: bash scripts/gpu_check.sh DATA_DIR [options]

For a fresh GPU machine with PyTorch installed: needs no papermill, no network and no
`pip install` (it runs `python -m skin_utils....` from this checkout). DATA_DIR is a data set in
the HAM10000 layout (see data/README.md); `data` means the synthetic demo.

Steps, all written under --out (default reports/gpu_check), the cheapest first, so that a run cut
short (a GPU lent for a few minutes) still leaves the main figures:
  1. python -m skin_utils.train, compile off        -> runs/eager/    (img/s end to end, Dice, bal. acc.)
  2. evaluation of runs/eager's best.pt on the test split at original size, prediction on a
     folder of --infer-images images, single-image latency -> infer.json
  3. python scripts/benchmark.py (naive vs ours, and the compiled step) -> bench.json, bench.png
  4. the training of step 1 with --compile          -> runs/compiled/
  5. with more than one GPU: torchrun, one process per GPU -> runs/ddpN/
  6. one table (printed, and summary.json); the summary alone: --summary-only

options (defaults in brackets):
  --device DEV         cuda or cpu (a tiny CPU run proves the script works) [cuda]
  --image-size N       training size in pixels [256]
  --epochs N           epochs of each training run [3]
  --batch-size N       images per step (per GPU with torchrun) [64]
  --max-samples N      train on at most N images (whole lesions) [all]
  --bench-samples N    images the benchmark times [1024]
  --infer-images N     images in the folder predicted in step 4 [512]
  --out DIR            where everything goes [reports/gpu_check]
  --no-compile         skip the compiled training run and the compiled benchmark step
  --summary-only       print the table of what an earlier (perhaps cut short) run under --out wrote
Environment: PYTHON (default python), SKIN_UTILS_CACHE (default OUT/cache).
USAGE
}

if [ $# -lt 1 ] || [ "$1" = "-h" ] || [ "$1" = "--help" ]; then usage; exit $(( $# < 1 )); fi
DATA=$1; shift
DEVICE=cuda; SIZE=256; EPOCHS=3; BATCH=64; MAX_SAMPLES=""; BENCH_SAMPLES=1024; INFER_IMAGES=512
OUT=reports/gpu_check; COMPILE=1; SUMMARY_ONLY=""
while [ $# -gt 0 ]; do
  case "$1" in
    --device) DEVICE=$2; shift 2 ;;
    --image-size) SIZE=$2; shift 2 ;;
    --epochs) EPOCHS=$2; shift 2 ;;
    --batch-size) BATCH=$2; shift 2 ;;
    --max-samples) MAX_SAMPLES=$2; shift 2 ;;
    --bench-samples) BENCH_SAMPLES=$2; shift 2 ;;
    --infer-images) INFER_IMAGES=$2; shift 2 ;;
    --out) OUT=$2; shift 2 ;;
    --no-compile) COMPILE=""; shift ;;
    --summary-only) SUMMARY_ONLY=1; shift ;;
    *) echo "gpu_check.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done

PY=${PYTHON:-python}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export SKIN_UTILS_CACHE=${SKIN_UTILS_CACHE:-$OUT/cache}
export TQDM_DISABLE=1   # epoch lines, not progress bars, in the log
step() { printf '\n==== %s\n' "$*"; }

step "0. machine"
"$PY" - "$DEVICE" <<'EOF'
import sys, torch
device = sys.argv[1]
print(f"torch {torch.__version__}, CUDA available: {torch.cuda.is_available()}")
for i in range(torch.cuda.device_count()):
    p = torch.cuda.get_device_properties(i)
    print(f"  GPU {i}: {p.name}, {p.total_memory / 2**30:.0f} GiB")
if device.startswith("cuda") and not torch.cuda.is_available():
    sys.exit("gpu_check.sh: --device cuda but no GPU is visible (use --device cpu for a dry run)")
EOF
NGPU=0
if [ "${DEVICE%%:*}" = "cuda" ]; then NGPU=$("$PY" -c "import torch; print(torch.cuda.device_count())"); fi

TRAIN=(--data-dir "$DATA" --image-size "$SIZE" --epochs "$EPOCHS" --batch-size "$BATCH" --device "$DEVICE"
       --encoder-weights none --split-path "$OUT/split.csv" --reports-dir "$OUT" --overwrite)
if [ -n "$MAX_SAMPLES" ]; then TRAIN+=(--max-samples "$MAX_SAMPLES"); fi

if [ -z "$SUMMARY_ONLY" ]; then
step "1. train, compile off"
"$PY" -m skin_utils.train "${TRAIN[@]}" --run-name eager
step "2. evaluate, predict a folder, single-image latency"
"$PY" - "$OUT" "$DATA" "$DEVICE" "$BATCH" "$INFER_IMAGES" "$MAX_SAMPLES" <<'EOF'
import json, os, sys, time
from pathlib import Path
import torch
from skin_utils import CLASS_NAMES
sys.path.insert(0, "scripts")  # scripts/benchmark.py, beside the package
from benchmark import peak_gpu_memory_mb, reset_peak_gpu_memory
from skin_utils.checkpoint import load_model
from skin_utils.data import load_data
from skin_utils.layout import read_image
from skin_utils.engine import resolve_device
from skin_utils.evaluate import score_split
from skin_utils.inference import Predictor, time_single_image

out, data_dir, device, batch, n_infer = Path(sys.argv[1]), sys.argv[2], resolve_device(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
max_samples = int(sys.argv[6]) if sys.argv[6] else None
best = out / "runs" / "eager" / "checkpoints" / "best.pt"
model, ckpt = load_model(best)
model.to(device).to(memory_format=torch.channels_last)
data = load_data(data_dir, ckpt.image_size, split_path=out / "split.csv", max_samples=max_samples, progress=False)
reset_peak_gpu_memory(device)
t0 = time.perf_counter()
ev = score_split(model, data, "test", device, CLASS_NAMES, batch_size=batch, progress=False,
                 normalization=ckpt.normalization)  # as 03 scores it (Shades of Gray by default)
eval_s = time.perf_counter() - t0
eval_peak = peak_gpu_memory_mb(device)
folder = out / "infer_images"
folder.mkdir(exist_ok=True)
for path in data.index["image_path"].head(n_infer):
    link = folder / Path(path).name
    if not link.exists():
        os.symlink(Path(path).resolve(), link)
predictor = Predictor(best, device=str(device))
predictor.predict_folder(folder, batch, progress=False)  # warm-up (kernels, allocator)
reset_peak_gpu_memory(device)
t0 = time.perf_counter()
predictions, failures = predictor.predict_folder(folder, batch, progress=False)
infer_s = time.perf_counter() - t0
result = {"evaluate_images": ev.report["n_images"], "evaluate_images_per_s": ev.report["n_images"] / eval_s,
          "evaluate_peak_gpu_mb": eval_peak, "test_dice": ev.report["dice"],
          "test_balanced_accuracy": ev.report["balanced_accuracy"],
          "infer_images": len(predictions), "infer_failures": len(failures), "infer_images_per_s": len(predictions) / infer_s,
          "infer_peak_gpu_mb": peak_gpu_memory_mb(device),
          "latency_ms": 1000 * time_single_image(predictor, read_image(data.index["image_path"].iat[0]))}
(out / "infer.json").write_text(json.dumps(result, indent=2))
print(json.dumps(result, indent=2))
EOF

step "3. benchmark"
"$PY" scripts/benchmark.py --data-dir "$DATA" --device "$DEVICE" --image-size "$SIZE" --batch-size "$BATCH" \
  --max-samples "$BENCH_SAMPLES" ${COMPILE:+--compile} --out "$OUT/bench.json" --figure "$OUT/bench.png"

if [ -n "$COMPILE" ]; then
  step "4. train, compile on"
  "$PY" -m skin_utils.train "${TRAIN[@]}" --run-name compiled --compile
fi
if [ "$NGPU" -gt 1 ]; then
  step "5. train on $NGPU GPUs (torchrun; global batch $((BATCH * NGPU)))"
  "$PY" -m torch.distributed.run --standalone --nproc_per_node "$NGPU" -m skin_utils.train "${TRAIN[@]}" --run-name "ddp$NGPU"
fi

fi

step "6. summary"
"$PY" - "$OUT" <<'EOF'
import json, statistics, sys
from pathlib import Path

out = Path(sys.argv[1])
read = lambda p: json.loads(p.read_text()) if p.is_file() else None  # noqa: E731
bench, infer = read(out / "bench.json"), read(out / "infer.json")
rate = {(r["stage"], r["pipeline"]): r for r in bench["table"]} if bench else {}
rows = []  # (what, value, unit); a step that did not run leaves its rows out


def mb(x):
    return "n/a" if x is None else f"{x:,.0f}"


for run_dir in sorted((out / "runs").iterdir()) if (out / "runs").is_dir() else []:
    train = read(run_dir / "metrics" / "train.json")
    if not train:
        continue
    speeds = [h["train_images_per_s"] for h in train["history"]]
    steady = speeds[1:] or speeds  # the first epoch warms up (and compiles)
    rows += [(f"train end to end, {run_dir.name} (median epoch after the first)", f"{statistics.median(steady):,.0f}", "img/s"),
             (f"  first epoch, {run_dir.name}", f"{speeds[0]:,.0f}", "img/s"),
             (f"  best val Dice / bal. acc., {run_dir.name}",
              f"{train['best_val']['dice']:.3f} / {train['best_val']['balanced_accuracy']:.3f}", "")]
if bench:
    step_ours = rate["train_step", "ours"]["images_per_s"]
    rows += [("model-alone train step, compile off (bench)", f"{step_ours:,.0f}", "img/s"),
             ("train epoch end to end (bench, ours / naive)",
              f"{rate['train_epoch', 'ours']['images_per_s']:,.0f} / {rate['train_epoch', 'naive']['images_per_s']:,.0f}", "img/s"),
             ("  end to end / model alone (bench)", f"{rate['train_epoch', 'ours']['images_per_s'] / step_ours:.2f}", "x")]
    if bench.get("compile"):
        c = bench["compile"]
        rows += [("model-alone train step, compile on (bench)", f"{c['train_step_images_per_s']:,.0f}", "img/s"),
                 ("  compile speed-up / compile time", f"{c['speedup']:.2f} x / {c['compile_seconds']:.0f} s", "")]
    rows += [("inference on a folder (bench, ours / naive)",
              f"{rate['inference', 'ours']['images_per_s']:,.0f} / {rate['inference', 'naive']['images_per_s']:,.0f}", "img/s"),
             ("peak GPU memory: train step / train epoch (bench)",
              f"{mb(rate['train_step', 'ours']['peak_gpu_mb'])} / {mb(rate['train_epoch', 'ours']['peak_gpu_mb'])}", "MiB")]
if infer:
    rows += [(f"inference on a folder of {infer['infer_images']} images (Predictor)", f"{infer['infer_images_per_s']:,.0f}", "img/s"),
             (f"evaluation of {infer['evaluate_images']} test images at original size", f"{infer['evaluate_images_per_s']:,.0f}", "img/s"),
             ("single-image latency (Predictor, preprocessing included)", f"{infer['latency_ms']:.1f}", "ms"),
             ("peak GPU memory: inference / evaluation", f"{mb(infer['infer_peak_gpu_mb'])} / {mb(infer['evaluate_peak_gpu_mb'])}", "MiB"),
             ("test Dice / bal. acc. (eager run, original size)",
              f"{infer['test_dice']:.3f} / {infer['test_balanced_accuracy']:.3f}", "")]
if not rows:
    sys.exit(f"gpu_check.sh: nothing to summarise under {out} (no run, no infer.json, no bench.json)")
setup = bench["setup"] if bench else None
if setup:
    print(f"device {setup['device']}, torch {setup['torch']}, amp {setup['amp']}, {setup['image_size'][0]} px, "
          f"batch {setup['batch_size']}")
width = max(len(r[0]) for r in rows)
for what, value, unit in rows:
    print(f"{what:<{width}}  {value:>22} {unit}")
(out / "summary.json").write_text(json.dumps({"setup": setup, "rows": rows, "bench": bench, "infer": infer}, indent=2))
print(f"\nwritten: {out / 'summary.json'}")
EOF
