"""Shared fixtures. Tests run offline on the synthetic demo data; tests on real HAM10000 use
../shared/data/ham10000_200x150 and skip (with the reason) when it is absent.

The isolation of every test run (relative paths and the preprocessing cache redirected to a
temporary folder; the checkout's data/, checkpoints/ and reports/ guarded) is in the
repository's top-level conftest.py, which pytest also loads for `pytest --nbval notebooks`."""

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
REAL_DATA = Path(os.environ.get("HAM10000_200X150", ROOT.parent / "shared" / "data" / "ham10000_200x150"))


@pytest.fixture(scope="session")
def synthetic_dir(tmp_path_factory):
    """The demo data set (400 images, 160x120), generated once per test session."""
    from skin_utils.demo import make_synthetic_dataset

    return make_synthetic_dataset(tmp_path_factory.mktemp("synthetic") / "demo", n_images=400, seed=0)


@pytest.fixture(scope="session")
def real_data_dir():
    if not (REAL_DATA / "HAM10000_metadata.csv").is_file():
        pytest.skip(f"real HAM10000 subset not found at {REAL_DATA} (set HAM10000_200X150 to its folder)")
    return REAL_DATA
