"""skin_utils.prepare ham10000: official downloads (zipped or extracted) -> the layout, safely and idempotently."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from skin_utils.layout import load_index
from skin_utils.prepare import main, prepare_ham10000

W, H = 40, 30
DXS = ["nv", "mel", "bkl", "bcc", "akiec", "vasc", "df"]
IDS = [f"ISIC_{i:07d}" for i in range(6)]  # 0-2 in part 1, 3-5 in part 2


def _jpeg(seed: int) -> bytes:
    arr = np.random.default_rng(seed).integers(0, 255, (H, W, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "JPEG")
    return buf.getvalue()


def _png_mask() -> bytes:
    m = np.zeros((H, W), np.uint8)
    m[8:22, 10:30] = 255
    buf = io.BytesIO()
    Image.fromarray(m).save(buf, "PNG")
    return buf.getvalue()


def _zip(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(zipfile.ZipInfo(name), data)
    return path


def _metadata_text(ids, sep="\t", quote=True) -> str:
    q = (lambda s: f'"{s}"') if quote else (lambda s: s)
    head = sep.join(q(c) for c in ["lesion_id", "image_id", "dx", "dx_type", "age", "sex", "localization"])
    rows = [sep.join([q(f"HAM_{k // 2:07d}"), q(i), q(DXS[k % 7]), q("histo"), "45.0", q("male"), q("back")])
            for k, i in enumerate(ids)]
    return "\n".join([head] + rows) + "\n"


def make_downloads(d: Path, part2_as_folder=True, with_part2=True, with_masks=True,
                   meta_name="HAM10000_metadata.tab", meta_sep="\t", evil=True) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    part1 = {f"{i}.jpg": _jpeg(k) for k, i in enumerate(IDS[:3])}
    part1.update({"__MACOSX/._ISIC_0000000.jpg": b"resource fork", ".DS_Store": b"junk",
                  "readme.txt": b"not an image"})
    if evil:
        part1.update({"../evil.txt": b"escaped!", "../../evil.jpg": _jpeg(99), "/abs_evil.jpg": _jpeg(98)})
    _zip(d / "HAM10000_images_part_1.zip", part1)
    if with_part2:
        if part2_as_folder:
            folder = d / "HAM10000_images_part_2"
            folder.mkdir()
            for k, i in enumerate(IDS[3:], start=3):
                (folder / f"{i}.jpg").write_bytes(_jpeg(k))
            (folder / ".DS_Store").write_bytes(b"junk")
        else:
            _zip(d / "HAM10000_images_part_2.zip", {f"{i}.jpg": _jpeg(k) for k, i in enumerate(IDS[3:], 3)})
    if with_masks:
        _zip(d / "HAM10000_segmentations_lesion_tschandl.zip",
             {f"HAM10000_segmentations_lesion_tschandl/{i}_segmentation.png": _png_mask() for i in IDS})
    (d / meta_name).write_text(_metadata_text(IDS, sep=meta_sep, quote=meta_sep == "\t"))
    return d


def test_prepare_from_zips_and_folders(tmp_path, capsys):
    dl = make_downloads(tmp_path / "downloads")
    out = tmp_path / "work" / "data"
    s = prepare_ham10000(dl, out)
    assert sorted(p.name for p in (out / "images").iterdir()) == [f"{i}.jpg" for i in IDS]
    assert sorted(p.name for p in (out / "masks").iterdir()) == [f"{i}_segmentation.png" for i in IDS]
    meta = (out / "HAM10000_metadata.csv").read_text()
    assert meta.splitlines()[0] == "lesion_id,image_id,dx,dx_type,age,sex,localization"
    assert "ISIC_0000000" in meta and '"' not in meta and "\t" not in meta
    assert [len(s["ids"][k]) for k in ('image', 'mask', 'label')] == [6, 6, 6]
    assert s["report"].ok
    assert s["lacking"] == {"image": [], "mask": [], "label": []}
    printed = capsys.readouterr().out
    assert "OK: no problems found" in printed and "full release has 10,015" in printed
    df = load_index(out)
    assert len(df) == 6 and df.attrs["has_lesion_ids"]


def test_zip_members_cannot_escape(tmp_path):
    dl = make_downloads(tmp_path / "downloads")
    out = tmp_path / "work" / "data"
    s = prepare_ham10000(dl, out, verbose=False)
    for base in (tmp_path, tmp_path / "work", dl.parent, out.parent, Path("/")):
        assert not (base / "evil.txt").exists() and not (base / "abs_evil.jpg").exists()
    assert not (tmp_path / "evil.jpg").exists() and not (tmp_path.parent / "evil.jpg").exists()
    written = {p.name for p in out.rglob("*")}
    assert not {"evil.txt", "evil.jpg", "abs_evil.jpg", ".DS_Store", "._ISIC_0000000.jpg", "readme.txt"} & written
    assert sorted(m.split(":", 1)[1] for m in s["unsafe_members"]) == ["../../evil.jpg", "../evil.txt", "/abs_evil.jpg"]
    assert "REFUSED 3 zip member(s)" in s["text"]
    assert any("readme.txt" in m for m in s["skipped_members"])


def test_prepare_is_idempotent(tmp_path):
    dl = make_downloads(tmp_path / "downloads", part2_as_folder=False)
    out = tmp_path / "data"
    first = prepare_ham10000(dl, out, verbose=False)
    assert first["written"] == 13  # 6 images + 6 masks + metadata
    snapshot = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()}
    second = prepare_ham10000(dl, out, verbose=False)
    assert second["written"] == 0 and second["kept"] == 13 and not second["conflicts"]
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()} == snapshot


def test_changed_output_is_kept_unless_overwrite(tmp_path):
    dl = make_downloads(tmp_path / "downloads")
    out = tmp_path / "data"
    prepare_ham10000(dl, out, verbose=False)
    (out / "images" / f"{IDS[0]}.jpg").write_bytes(_jpeg(1234) + b"extra")
    s = prepare_ham10000(dl, out, verbose=False)
    assert [Path(c).name for c in s["conflicts"]] == [f"{IDS[0]}.jpg"] and "--overwrite" in s["text"]
    s = prepare_ham10000(dl, out, overwrite=True, verbose=False)
    assert not s["conflicts"] and s["written"] == 1 and s["report"].ok
    assert s["problems"] == ["REFUSED 3 zip member(s) with unsafe names (absolute, '..' or symlink): " + ", ".join(
        f"HAM10000_images_part_1.zip:{m}" for m in ("../evil.txt", "../../evil.jpg", "/abs_evil.jpg"))]


def test_missing_parts_are_reported_with_what_to_download(tmp_path):
    dl = make_downloads(tmp_path / "downloads", with_part2=False, with_masks=False)
    s = prepare_ham10000(dl, tmp_path / "data", verbose=False)
    assert s["missing_downloads"] == ["HAM10000_images_part_2.zip", "HAM10000_segmentations_lesion_tschandl.zip"]
    assert s["lacking"]["image"] == IDS[3:] and s["lacking"]["mask"] == IDS
    assert [len(s["ids"][k]) for k in ('image', 'mask', 'label')] == [3, 0, 6] and not s["ok"]
    text = s["text"]
    assert "MISSING: HAM10000_images_part_2.zip, HAM10000_segmentations_lesion_tschandl.zip" in text
    assert "doi:10.7910/DVN/DBW86T" in text and "Harvard Dataverse" in text
    assert "3 id(s) lack an image: ISIC_0000003, ISIC_0000004, ISIC_0000005" in text
    assert "6 id(s) lack a mask" in text
    assert not (tmp_path / "data" / "masks").exists()
    assert s["report"].ok and "no masks found" in text  # the 3 images are usable


def test_comma_metadata_without_extension(tmp_path):
    dl = make_downloads(tmp_path / "downloads", meta_name="HAM10000_metadata", meta_sep=",")
    s = prepare_ham10000(dl, tmp_path / "data", verbose=False)
    assert s["report"].ok and not s["errors"] and len(s["ids"]["label"]) == 6
    df = pd.read_csv(tmp_path / "data" / "HAM10000_metadata.csv")
    assert df["dx"].tolist()[:2] == ["nv", "mel"] and df["age"].iloc[0] == 45.0


def test_corrupt_zip_is_reported(tmp_path):
    dl = make_downloads(tmp_path / "downloads")
    data = (dl / "HAM10000_segmentations_lesion_tschandl.zip").read_bytes()
    (dl / "HAM10000_segmentations_lesion_tschandl.zip").write_bytes(data[:50])
    s = prepare_ham10000(dl, tmp_path / "data", verbose=False)
    assert not s["ok"] and any("not a readable zip" in e and "download it again" in e for e in s["errors"])


def test_nothing_to_prepare(tmp_path):
    (tmp_path / "dl").mkdir()
    (tmp_path / "dl" / "photo.jpg").write_bytes(b"x")
    with pytest.raises(FileNotFoundError) as ei:
        prepare_ham10000(tmp_path / "dl", tmp_path / "data", verbose=False)
    msg = str(ei.value)
    assert "photo.jpg" in msg and "HAM10000_images_part_1.zip" in msg and "doi:10.7910/DVN/DBW86T" in msg
    with pytest.raises(FileNotFoundError, match="does not exist"):
        prepare_ham10000(tmp_path / "nope", tmp_path / "data", verbose=False)


def test_cli(tmp_path, capsys):
    dl = make_downloads(tmp_path / "downloads", evil=False)
    assert main(["ham10000", str(dl), "--out", str(tmp_path / "data")]) == 0
    assert "OK: no problems found" in capsys.readouterr().out
    assert main(["ham10000", str(tmp_path / "empty_nonexistent"), "--out", str(tmp_path / "x")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["check", str(tmp_path / "data")]) == 0 and "OK: no problems found" in capsys.readouterr().out
    (tmp_path / "data" / "masks" / f"{IDS[0]}_segmentation.png").unlink()
    assert main(["check", str(tmp_path / "data"), "--fast"]) == 1 and "[missing_mask]" in capsys.readouterr().out
