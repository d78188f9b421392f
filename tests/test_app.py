"""The web demo (skin_utils.app) in a real headless Chromium, checked against `Predictor.predict_image`; and the
ipywidgets panel, which needs no gradio. The browser test skips, saying what to install, without gradio,
playwright or /usr/bin/chromium."""

from __future__ import annotations

import importlib.util
import sys
from datetime import datetime, timezone
from pathlib import Path

import pytest

from skin_utils import app
from skin_utils.inference import Predictor, write_demo_images
from tests.conftest import REAL_DATA

ROOT = Path(__file__).resolve().parent.parent
CALIBRATION = {"plain": {"temperature": 1.5, "mel_threshold": 0.5, "referral_threshold": 0.9, "split": "val",
                         "n_images": 100, "target_sensitivity": 0.9, "target_coverage": 0.8},
               "tta": {"temperature": 0.2, "mel_threshold": 0.05, "referral_threshold": 0.995, "split": "val",
                       "n_images": 100, "target_sensitivity": 0.9, "target_coverage": 0.8}}


def _script():
    """scripts/make_demo_screenshot.py as a module: the browser driver the screenshot is made with."""
    spec = importlib.util.spec_from_file_location("make_demo_screenshot", ROOT / "scripts" / "make_demo_screenshot.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _image(tmp_path) -> Path:
    """One real HAM10000 image when the subset is there (read in place, never copied), else a synthetic one."""
    real = sorted((REAL_DATA / "images").glob("*.jpg"))[:1] if (REAL_DATA / "images").is_dir() else []
    return real[0] if real else write_demo_images(tmp_path / "images", n=1) / "demo_00.jpg"


@pytest.fixture(scope="module")
def script():
    return _script()


@pytest.fixture(scope="module")
def calibrated(script, tmp_path_factory):
    return script.tiny_checkpoint(tmp_path_factory.mktemp("ckpt") / "best.pt", CALIBRATION)


def test_page_shows_what_predict_image_gives(script, calibrated, tmp_path):
    for module, install in (("gradio", 'pip install -e ".[demo]"'), ("playwright", "pip install playwright")):
        if importlib.util.find_spec(module) is None:
            pytest.skip(f"{module} is not installed: .venv/bin/{install}")
    if not Path(script.CHROMIUM).is_file():
        pytest.skip(f"no {script.CHROMIUM}: apt-get install -y chromium chromium-driver")
    predictor, image = Predictor(calibrated, device="cpu"), _image(tmp_path)
    expected = predictor.predict_image(image, cam=True)
    demo = app.build_demo(predictor)
    try:
        shown = script.drive(script.serve(demo), image, tmp_path / "demo.png", timeout_s=40)
    finally:
        demo.close()
    assert (tmp_path / "demo.png").stat().st_size > 10_000
    assert shown["pred"] == expected.pred
    assert shown["probs"].keys() == expected.probs_calibrated.keys()
    assert all(abs(shown["probs"][c] - v) < 1e-3 for c, v in expected.probs_calibrated.items()), shown["probs"]
    assert app.DISCLAIMER in shown["page"]
    assert "normalised entropy > 0.900" in shown["page"] and "calibrated P(MEL) ≥ 0.500" in shown["page"]
    assert expected.refer is True and expected.mel_flag is False  # an untrained model: ~uniform probabilities
    assert f"REFER: entropy {expected.entropy:.3f} > threshold 0.900" in shown["result"]
    assert "no melanoma flag: calibrated P(MEL)" in shown["result"] and "< threshold 0.500" in shown["result"]


def test_upload_panel_without_gradio(script, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "gradio", None)  # import gradio now raises ImportError
    predictor = Predictor(script.tiny_checkpoint(tmp_path / "best.pt"), device="cpu")
    with pytest.raises(ImportError, match=r'pip install -e "\.\[demo\]"'):
        app.build_demo(predictor)
    image = write_demo_images(tmp_path / "images", n=1) / "demo_00.jpg"
    panel = app.upload_panel(predictor)
    panel.children[1].value = ({"name": image.name, "type": "image/jpeg", "size": image.stat().st_size,
                                "content": memoryview(image.read_bytes()), "last_modified": datetime.now(timezone.utc)},)
    expected = predictor.predict_image(image)
    assert panel.prediction.pred == expected.pred
    assert panel.prediction.probs_calibrated == pytest.approx(expected.probs_calibrated, abs=1e-6)
    text = app.thresholds_text(predictor.calibration) + app.result_markdown(panel.prediction, predictor.calibration)
    assert text.count("not calibrated") >= 4 and app.DISCLAIMER in text


def test_main_says_what_is_missing(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        app.main(["--run", "no-such-run", "--runs-dir", str(tmp_path)])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "no-such-run" in err or "gradio" in err



def test_the_app_shows_what_the_predict_command_writes(calibrated, tmp_path, monkeypatch, capsys):
    import pandas as pd

    from skin_utils.predict import main as predict_main

    image = _image(tmp_path)
    assert predict_main([str(image), "--run", str(calibrated), "--out", str(tmp_path / "out"), "--device", "cpu"]) == 0
    row = pd.read_csv(tmp_path / "out" / "predictions.csv").iloc[0]
    built = []  # the predictors app.main builds, here without gradio or a server

    class Page:
        def launch(self, **kwargs):
            pass

    monkeypatch.setattr(app, "_gradio", lambda: None)
    monkeypatch.setattr(app, "build_demo", lambda predictor, examples=None: built.append(predictor) or Page())
    assert app.main(["--run", str(calibrated), "--device", "cpu"]) == 0
    p, _, _ = app.analyse(built[0], image)
    assert p.pred == row["pred"] and p.prob_calibrated == pytest.approx(row["prob_calibrated"], abs=2e-4)
    assert p.probs_calibrated == pytest.approx({c: row[f"p_cal_{c}"] for c in p.probs_calibrated}, abs=2e-4)
    assert p.entropy == pytest.approx(row["entropy"], abs=2e-4)
    assert (p.refer, p.mel_flag) == (bool(row["refer"]), bool(row["mel_flag"]))
    assert built[0].calibration.temperature == 0.2  # the TTA outputs' calibration, as predict's and 04's
    assert app.main(["--run", str(calibrated), "--device", "cpu", "--no-tta"]) == 0
    assert built[1].tta is False and built[1].calibration.temperature == 1.5


def test_the_page_scores_a_large_image_as_predict_image_does(script, tmp_path):
    # over 4 MP, predict_image(path), predict and 04 read the image reduced first (as 03's cache does): so must the page
    import numpy as np
    from PIL import Image

    path = tmp_path / "large.jpg"
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (45, 60, 3), dtype=np.uint8)).resize((2560, 1920), Image.BICUBIC).save(path)
    predictor = Predictor(script.tiny_checkpoint(tmp_path / "best.pt"), device="cpu", amp="off")
    shown, overlay, _ = app.analyse(predictor, path)
    expected = predictor.predict_image(path, cam=True)
    assert shown.probs == expected.probs and shown.mask.shape == (1920, 2560)
    assert max(overlay.shape[:2]) == app.DISPLAY_SIDE
