"""Test-run isolation, for every pytest run in this checkout (``pytest tests``, and also
``pytest --nbval notebooks``, which does not load tests/conftest.py).

Before anything runs (and so before nbval starts a notebook kernel, which inherits this
environment), relative paths are redirected to a temporary folder with ``SKIN_UTILS_ROOT`` (see
`skin_utils.config.project_root`), and the preprocessing cache to another with ``SKIN_UTILS_CACHE``: the
notebooks' committed defaults (``data``, ``checkpoints``, ``reports``) then read and write there.

As proof, the checkout's own ``data/``, ``checkpoints/`` and ``reports/`` are listed (and a
sentinel file put into each) at the start; if any file there was added, changed or removed by
the end, the run fails and names them. The sentinels are removed afterwards.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

CHECKOUT = Path(__file__).resolve().parent
GUARDED = ("data", "checkpoints", "reports")
SENTINEL_PREFIX = ".pytest-must-survive-"
SENTINEL = f"{SENTINEL_PREFIX}{os.getpid()}"  # one per run: runs at the same time ignore each other's
_REDIRECTED = {"SKIN_UTILS_ROOT": "root", "SKIN_UTILS_CACHE": "cache"}
_state: dict = {}


def listing(folder: Path) -> dict[str, tuple[int, int]] | None:
    """Every file below ``folder`` as relative path -> (size, modification time in ns), other test
    runs' sentinels left out; None when ``folder`` does not exist."""
    if not folder.is_dir():
        return None
    out = {}
    for dirpath, _, files in os.walk(folder):
        for name in files:
            if name.startswith(SENTINEL_PREFIX) and name != SENTINEL:
                continue
            path = Path(dirpath) / name
            try:
                st = path.stat()
            except OSError:  # vanished while listing
                continue
            out[str(path.relative_to(folder))] = (st.st_size, st.st_mtime_ns)
    return out


def changes(before: dict | None, after: dict | None) -> list[str]:
    """What differs between two `listing`s, one line per file."""
    if before is None or after is None:
        return [] if before == after else ["the folder was " + ("created" if before is None else "removed")]
    return ([f"added {p}" for p in sorted(after.keys() - before.keys())]
            + [f"removed {p}" for p in sorted(before.keys() - after.keys())]
            + [f"changed {p}" for p in sorted(before.keys() & after.keys()) if before[p] != after[p]])


def pytest_configure(config):
    os.environ.setdefault("MPLBACKEND", "Agg")
    os.environ.setdefault("TQDM_DISABLE", "1")
    tmp = Path(tempfile.mkdtemp(prefix="skin_utils_tests_"))
    _state["tmp"] = tmp
    _state["env"] = {name: os.environ.get(name) for name in _REDIRECTED}
    for name, sub in _REDIRECTED.items():
        (tmp / sub).mkdir()
        os.environ[name] = str(tmp / sub)
    _state["before"] = {}
    for name in GUARDED:
        folder = CHECKOUT / name
        if folder.is_dir():
            (folder / SENTINEL).write_text("Written by conftest.py at the start of a test run; the run fails if this "
                                           "folder changes. Removed at the end of the run.\n")
        _state["before"][name] = listing(folder)


@pytest.hookimpl(tryfirst=True)
def pytest_sessionfinish(session, exitstatus):
    problems = []
    for name, before in _state.get("before", {}).items():
        folder = CHECKOUT / name
        problems += [f"{name}/: {line}" for line in changes(before, listing(folder))]
        sentinel = folder / SENTINEL
        if sentinel.is_file():
            sentinel.unlink()
    _state["problems"] = problems
    if problems:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter):
    problems = _state.get("problems")
    if problems:
        terminalreporter.section("the test run changed the checkout's data, checkpoints or reports", red=True)
        for line in problems[:50]:
            terminalreporter.write_line(line)
        terminalreporter.write_line("Tests must write only below SKIN_UTILS_ROOT / tmp_path: find the test that "
                                    "did, and give it a temporary folder.")


def pytest_unconfigure(config):
    for name, old in _state.pop("env", {}).items():
        if old is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = old
    if "tmp" in _state:
        shutil.rmtree(_state.pop("tmp"), ignore_errors=True)
