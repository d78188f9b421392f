"""Relative paths (`skin_utils.config.resolve`) resolve against $SKIN_UTILS_ROOT when set; the test
run sets it (top-level conftest.py) so that no test touches the checkout's data/, checkpoints/ or
reports/, and fails when one does."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from skin_utils.config import ROOT_ENV, notebooks_dir, project_root, resolve
from tests.conftest import ROOT


def test_the_environment_variable_moves_relative_paths(monkeypatch, tmp_path):
    monkeypatch.setenv(ROOT_ENV, str(tmp_path))
    assert project_root() == tmp_path.resolve()
    assert resolve("data") == tmp_path.resolve() / "data"
    assert resolve(tmp_path / "x" / "y.pt") == tmp_path / "x" / "y.pt"
    assert project_root(start=ROOT / "notebooks") == ROOT, "an explicit start searches from there"
    monkeypatch.setenv(ROOT_ENV, str(tmp_path / "missing"))
    with pytest.raises(FileNotFoundError, match=f"{ROOT_ENV}=.*missing.* is not a folder"):
        resolve("data")


def test_without_it_relative_paths_are_taken_from_the_repository(monkeypatch):
    monkeypatch.delenv(ROOT_ENV, raising=False)
    monkeypatch.chdir(ROOT / "notebooks")
    assert resolve("checkpoints/best.pt") == ROOT / "checkpoints" / "best.pt"
    assert notebooks_dir() == ROOT / "notebooks"


def test_this_test_run_resolves_data_checkpoints_and_reports_outside_the_checkout():
    root = Path(os.environ[ROOT_ENV]).resolve()
    assert not root.is_relative_to(ROOT.resolve()) and root.is_dir()
    for name in ("data", "checkpoints", "reports"):
        assert resolve(name).is_relative_to(root) and not resolve(name).is_relative_to(ROOT.resolve())
    assert not Path(os.environ["SKIN_UTILS_CACHE"]).resolve().is_relative_to(Path.home() / ".cache")


def _checkout(tmp_path, test_source):
    """A minimal checkout: the top-level conftest.py, data/ with a user's file, and one test."""
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "HAM10000_metadata.csv").write_text("the user's file\n")
    shutil.copy(ROOT / "conftest.py", tmp_path / "conftest.py")
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    (tmp_path / "test_it.py").write_text(test_source)
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tmp_path)],
                          cwd=tmp_path, capture_output=True, text=True, timeout=120)


def test_a_test_run_that_writes_into_the_checkout_fails_and_says_where(tmp_path):
    run = _checkout(tmp_path, "from pathlib import Path\n\n"
                              "def test_writes():\n"
                              "    here = Path(__file__).parent\n"
                              "    (here / 'data' / 'HAM10000_metadata.csv').write_text('overwritten, longer\\n')\n"
                              "    (here / 'checkpoints').mkdir()\n"
                              "    (here / 'checkpoints' / 'best.pt').write_text('x')\n")
    assert run.returncode != 0, run.stdout
    assert "1 passed" in run.stdout
    assert "data/: changed HAM10000_metadata.csv" in run.stdout
    assert "checkpoints/: the folder was created" in run.stdout
    assert sorted(p.name for p in (tmp_path / "data").iterdir()) == ["HAM10000_metadata.csv"], "sentinel removed"


def test_a_test_run_that_leaves_the_checkout_alone_passes(tmp_path):
    run = _checkout(tmp_path, "import os\nfrom skin_utils.config import resolve\n\n"
                              "def test_writes_below_the_redirected_root():\n"
                              "    os.makedirs(resolve('checkpoints'))\n"
                              "    resolve('checkpoints/best.pt').write_text('x')\n"
                              "    # the sentinel of another test run going on at the same time is not a change\n"
                              "    (Path(__file__).parent / 'data' / '.pytest-must-survive-0').write_text('')\n"
                              "from pathlib import Path\n")
    assert run.returncode == 0, run.stdout + run.stderr
    assert (tmp_path / "data" / "HAM10000_metadata.csv").read_text() == "the user's file\n"
    assert not (tmp_path / "checkpoints").exists()
    assert sorted(p.name for p in (tmp_path / "data").iterdir()) == [".pytest-must-survive-0", "HAM10000_metadata.csv"]


def test_report_links_point_at_the_headings():
    from skin_utils.report import anchor

    assert anchor("Evaluation (test split)") == "evaluation-test-split"
    assert anchor("Experiment demo: 2 runs") == "experiment-demo-2-runs"


def test_report_tables_show_a_missing_count_as_a_dash():
    # operating_point_table's counts are Int64: a record without them held <NA>, printed as such in REPORT.md
    import pandas as pd

    from skin_utils.report import markdown_table

    table = pd.DataFrame({"tp": pd.array([None, 3], dtype="Int64"), "ppv": [float("nan"), 0.25]}, index=["a", "b"])
    assert markdown_table(table).splitlines()[2:] == ["| a | – | – |", "| b | 3 | 0.250 |"]
