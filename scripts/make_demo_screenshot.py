"""A screenshot of the web demo (skin_utils.app) for the README: start it on a free localhost port, upload
one image in headless Chromium, wait for the result, save the page. Trains nothing.

    .venv/bin/pip install -e ".[demo]" playwright      # and: apt-get install -y chromium
    .venv/bin/python scripts/make_demo_screenshot.py                  # run "latest", a synthetic image
    .venv/bin/python scripts/make_demo_screenshot.py --run reports/runs/<run> --image lesion.jpg --out demo.png

`drive` is also what tests/test_app.py uses to check the page against `Predictor.predict_image`. It drives
the system Chromium (/usr/bin/chromium) through playwright; `playwright install` (a download) is not needed.
"""

from __future__ import annotations

import argparse
import socket
import sys
import tempfile
from pathlib import Path

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
ROOT = Path(__file__).resolve().parent.parent


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def serve(demo, host: str = "127.0.0.1") -> str:
    """Start ``demo`` (a gradio.Blocks) in a background thread; its URL. ``demo.close()`` stops it."""
    _, url, _ = demo.launch(server_name=host, server_port=free_port(host), prevent_thread_lock=True, quiet=True)
    return url


def drive(url: str, image, out_png=None, timeout_s: float = 60) -> dict:
    """Open ``url``, upload ``image``, wait for the result; the page's ``pred``, ``probs`` (class -> number
    as shown), ``result`` and ``page`` text; a full-page screenshot to ``out_png`` when given."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.set_default_timeout(timeout_s * 1000)
            page.goto(url, wait_until="domcontentloaded")
            page.locator("input[type=file]").first.set_input_files(str(image))
            heading = page.locator("#result h3", has_text="Predicted:")
            heading.wait_for()
            page.wait_for_function("() => [...document.images].every(i => i.complete)")
            probs = {}
            for row in page.locator("#result table tbody tr").all():
                cells = row.locator("td").all_inner_texts()
                probs[cells[0].strip()] = float(cells[-1])
            if out_png:
                page.screenshot(path=str(out_png), full_page=True)
            return {"pred": heading.inner_text().split(":", 1)[1].split("(")[0].strip(), "probs": probs,
                    "result": page.inner_text("#result"), "page": page.inner_text("body")}
        finally:
            browser.close()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", help='run, best.pt or export folder (default: "latest", else a tiny untrained '
                                      "checkpoint, with a warning)")
    parser.add_argument("--runs-dir", default="reports/runs")
    parser.add_argument("--image", help="the image to upload (default: a new synthetic lesion)")
    parser.add_argument("--out", default=str(ROOT / "docs" / "figures" / "demo.png"))
    args = parser.parse_args(argv)
    if not Path(CHROMIUM).is_file():
        parser.exit(2, f"error: no {CHROMIUM}: apt-get install -y chromium\n")
    sys.path.insert(0, str(ROOT))
    from skin_utils.app import build_demo
    from skin_utils.config import resolve
    from skin_utils.inference import load_predictor, write_demo_images

    with tempfile.TemporaryDirectory() as tmp:
        try:
            predictor = load_predictor(args.run or "latest", resolve(args.runs_dir), device="cpu", tta=True)
        except FileNotFoundError as err:
            if args.run:
                parser.exit(2, f"error: {err}\n")
            print(f"WARNING: {err}\nWARNING: using a tiny UNTRAINED checkpoint: the numbers shown mean nothing.")
            predictor = load_predictor(tiny_checkpoint(Path(tmp) / "best.pt"), device="cpu")
        image = args.image or write_demo_images(Path(tmp) / "images", n=1) / "demo_00.jpg"
        demo = build_demo(predictor)
        try:
            shown = drive(serve(demo), image, args.out)
        finally:
            demo.close()
    print(f"{args.out}: {shown['pred']} {shown['probs']}")
    return 0


def tiny_checkpoint(path, calibration: dict | None = None) -> Path:
    """An untrained MultiTaskNet at 64x64 (seed 0), as a best.pt; ``calibration`` as the checkpoint holds it."""
    import torch

    from skin_utils.checkpoint import Checkpoint
    from skin_utils.labels import CLASS_NAMES
    from skin_utils.model import MultiTaskNet

    torch.manual_seed(0)
    model = MultiTaskNet()
    Checkpoint(model_config=model.config, model=model.state_dict(), class_names=list(CLASS_NAMES), image_size=64,
               calibration=calibration or {}).save(path)
    return Path(path)


if __name__ == "__main__":
    sys.exit(main())
