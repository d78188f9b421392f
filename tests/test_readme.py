"""Every command the README files show works as written on a fresh clone.

The commands are read from the fenced ```bash blocks of the README files and from the inline
code spans that start like a command (``python -m skin_utils.…``, ``bash scripts/…``, …).
Nothing here runs a command for real (that would train models); each kind is checked for what
makes it fail on a fresh clone:

* ``papermill IN OUT -p k v -y yaml …``: papermill's own command line accepts the options, IN
  exists, OUT's folder is tracked by git or made by a ``mkdir -p`` earlier in the same block (a
  folder some earlier run left behind does not count), OUT is not inside ``notebooks/`` (that
  would overwrite a committed notebook or hand nbval an executed copy), and every ``-p``/``-r``
  name and every ``-y``/``-f`` key is a parameter of IN.
* ``python -m X …``: the module exists, ``--help`` exits 0, every ``--option`` of the command is
  in that help, and (for skin_utils modules, when the command has no placeholder) its arguments
  parse.
* ``python scripts/X.py …`` and ``bash scripts/X.sh …``: the script exists, ``--help`` exits 0
  without installing anything, and every ``--option`` of the command is in that help.
* ``mkdir -p DIR`` and ``conda env create -f FILE && conda activate NAME``.

A command holding a placeholder (``/path/to/…``, ``OWNER/REPO``, ``DOWNLOADS_DIR``, ``~/…``) is
checked for its shape only. A fenced bash line of any other kind fails: teach this file to check
it. The last tests feed broken commands through the same checks, to show that they can fail.
"""

from __future__ import annotations

import atexit
import functools
import importlib.util
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
README_FILES = ("README.md", "data/README.md", "reports/README.md", "checkpoints/README.md")
INLINE_STARTS = ("papermill ", "python -m ", "python scripts/", "bash scripts/", "conda env create ")
PLACEHOLDER = re.compile(r"/path/to/|\bOWNER/REPO\b|^~/|^[A-Z][A-Z0-9]*(_[A-Z0-9]+)+$")
HELP_TIMEOUT = 120


@dataclass
class Command:
    where: str                      # "README.md:123"
    argv: list[str]
    made_dirs: set[str] = field(default_factory=set)   # `mkdir -p` earlier in the same block

    @property
    def has_placeholder(self) -> bool:
        return any(PLACEHOLDER.search(arg) for arg in self.argv)

    def __str__(self) -> str:
        return f"{self.where}: {shlex.join(self.argv)}"


# ---------------------------------------------------------------- reading the README files

def split_commands(line: str) -> list[list[str]]:
    """One shell line -> its commands (split at ``&&``, ``;`` and ``||``), comments dropped."""
    lexer = shlex.shlex(line, posix=True, punctuation_chars=";&|")
    lexer.whitespace_split = True
    commands, current = [], []
    for token in lexer:
        if token in ("&&", ";", "||"):
            commands.append(current)
            current = []
        else:
            current.append(token)
    commands.append(current)
    return [c for c in commands if c]


def commands_in(text: str, name: str) -> list[Command]:
    """The commands of ``text`` (a markdown file called ``name``), in order."""
    found: list[Command] = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        fence = re.match(r"^\s*```\s*(\w*)", lines[i])
        if not fence:
            for span in re.findall(r"`([^`\n]+)`", lines[i]):
                if span.startswith(INLINE_STARTS):
                    for argv in split_commands(span):
                        found.append(Command(f"{name}:{i + 1}", argv))
            i += 1
            continue
        is_bash, made_dirs = fence.group(1) in ("bash", "sh", "shell", "console"), set()
        i += 1
        while i < len(lines) and not lines[i].lstrip().startswith("```"):
            start, logical = i, lines[i]
            while logical.rstrip().endswith("\\") and i + 1 < len(lines):
                i += 1
                logical = logical.rstrip()[:-1] + " " + lines[i]
            if is_bash:
                for argv in split_commands(logical):
                    found.append(Command(f"{name}:{start + 1}", argv, set(made_dirs)))
                    if argv[:2] == ["mkdir", "-p"]:
                        for made in map(PurePosixPath, map(posix, argv[2:])):
                            made_dirs.update(str(d) for d in (made, *made.parents) if str(d) != ".")
            i += 1
        i += 1  # the closing fence
    return found


def readme_commands() -> list[Command]:
    commands = []
    for name in README_FILES:
        commands += commands_in((ROOT / name).read_text(encoding="utf-8"), name)
    return commands


def posix(path: str) -> str:
    return str(PurePosixPath(os.path.normpath(path)))


@functools.lru_cache(maxsize=1)
def fresh_clone_dirs() -> frozenset[str]:
    """Folders a fresh clone has: "." and every folder above a file git tracks."""
    if shutil.which("git") is None:
        pytest.skip("git is not installed: cannot tell which folders a fresh clone has")
    done = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"{ROOT} is not a git checkout ({done.stderr.strip()}): cannot tell what a clone has")
    dirs = {"."}
    for tracked in filter(None, done.stdout.split("\0")):
        dirs.update(str(parent) for parent in PurePosixPath(tracked).parents)
    return frozenset(dirs)


# ---------------------------------------------------------------- running --help

@functools.lru_cache(maxsize=None)
def module_help(module: str) -> subprocess.CompletedProcess:
    return run([sys.executable, "-m", module, "--help"])


@functools.lru_cache(maxsize=None)
def script_help(script: str) -> tuple[subprocess.CompletedProcess, list[str]]:
    """``--help`` of a script in a copy of the repository without ``.venv``: (result, what it created)."""
    with tempfile.TemporaryDirectory(prefix="readme_help_") as tmp:
        copy = Path(tmp) / "repo"
        copy.mkdir()
        for part in ("scripts", "skin_utils", "notebooks"):
            shutil.copytree(ROOT / part, copy / part, ignore=shutil.ignore_patterns("__pycache__", ".ipynb_checkpoints"))
        shutil.copy2(ROOT / "pyproject.toml", copy / "pyproject.toml")
        before = set(os.listdir(copy))
        runner = ["bash"] if script.endswith(".sh") else [sys.executable]
        # PYTHON: the interpreter scripts/setup_env.sh would make .venv with, and the one
        # run_all.sh prints its options with when there is no .venv. pip without an index or
        # config: a script that wrongly installs fails fast instead of downloading torch.
        # The bare interpreter the test environment was made from (no torch, pandas or papermill), as on a
        # fresh clone before setup: what run_all.sh --help falls back to without .venv.
        bare = getattr(sys, "_base_executable", sys.executable)
        env = {**quiet_env(), "PYTHON": bare, "PIP_NO_INDEX": "1", "PIP_CONFIG_FILE": os.devnull}
        done = run([*runner, script, "--help"], cwd=copy, env=env)
        return done, sorted(set(os.listdir(copy)) - before)


def run(argv: list[str], cwd: Path | None = None, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run ``argv``; on timeout, end its whole process group (a script's children too).

    By default in an empty folder, with the checkout on PYTHONPATH: ``python -m pytest --help``
    run in the checkout would load its conftest.py, which guards data/, checkpoints/ and reports/."""
    cwd = empty_dir() if cwd is None else cwd
    if env is None:
        env = {**quiet_env(), "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    with subprocess.Popen(argv, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True, start_new_session=True) as proc:
        try:
            out, err = proc.communicate(timeout=HELP_TIMEOUT)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            out, err = proc.communicate()
            err += f"\n(killed after {HELP_TIMEOUT} s)"
        return subprocess.CompletedProcess(argv, proc.returncode, out, err)


@functools.lru_cache(maxsize=1)
def empty_dir() -> Path:
    folder = Path(tempfile.mkdtemp(prefix="readme_cwd_"))
    atexit.register(shutil.rmtree, folder, True)
    return folder


def quiet_env() -> dict:
    return {**os.environ, "PYTHONDONTWRITEBYTECODE": "1", "MPLBACKEND": "Agg"}


def options_of(argv: list[str]) -> list[str]:
    return [arg.split("=", 1)[0] for arg in argv if arg.startswith("--") and arg != "--help"]


def missing_options(argv: list[str], help_text: str) -> list[str]:
    return [opt for opt in options_of(argv) if not re.search(rf"(?<![\w-]){re.escape(opt)}(?![\w-])", help_text)]


# ---------------------------------------------------------------- the checks, one per kind

@functools.lru_cache(maxsize=None)
def notebook_parameters(notebook: str) -> frozenset[str]:
    """The parameters cell's names, and every field of the notebook's config (a notebook takes any
    field with -p, also one its cell does not show: skin_utils.config.Config.from_notebook)."""
    from papermill.inspection import inspect_notebook

    from skin_utils import config

    jobs = {c.NOTEBOOK: c for c in vars(config).values()
            if isinstance(c, type) and issubclass(c, config.Config) and c is not config.Config}
    fields = jobs[PurePosixPath(notebook).stem].names() if PurePosixPath(notebook).stem in jobs else []
    return frozenset(inspect_notebook(str(ROOT / notebook))) | frozenset(fields)


def check_papermill(cmd: Command) -> list[str]:
    import click
    from papermill.cli import papermill as papermill_cli

    try:
        ctx = papermill_cli.make_context("papermill", list(cmd.argv[1:]))
    except click.ClickException as err:
        return [f"papermill refuses the command line: {err.format_message()}"]
    p = ctx.params
    notebook, out = p["notebook_path"], p["output_path"]
    if not (ROOT / notebook).is_file():
        return [f"the input notebook {notebook} does not exist"]
    problems = []
    if not p["help_notebook"]:
        if not out:
            problems.append("no output notebook: papermill IN OUT needs both")
        elif not PurePosixPath(out).is_absolute():
            folder = posix(str(PurePosixPath(out).parent))
            if folder not in fresh_clone_dirs() and folder not in cmd.made_dirs:
                problems.append(f"the output folder {folder}/ does not exist in a fresh clone and papermill "
                                f"does not create it: write to a tracked folder or `mkdir -p {folder}` first")
            if posix(out).startswith("notebooks/"):
                problems.append(f"the output {out} is inside notebooks/: it would overwrite a committed "
                                "notebook or leave an executed copy for nbval; write to reports/ or out/")
    names = [name for name, _ in (*p["parameters"], *p["parameters_raw"])]
    for text in p["parameters_yaml"]:
        names += list(yaml.safe_load(text) or {})
    for path in p["parameters_file"]:
        if not (ROOT / path).is_file():
            problems.append(f"the parameters file {path} does not exist")
        else:
            names += list(yaml.safe_load((ROOT / path).read_text()) or {})
    known = notebook_parameters(notebook)
    unknown = [name for name in names if name not in known]
    if unknown:
        problems.append(f"{notebook} has no parameter {', '.join(unknown)} (its parameters: {', '.join(sorted(known))})")
    return problems


def check_python_module(cmd: Command) -> list[str]:
    module = cmd.argv[2] if len(cmd.argv) > 2 else ""
    try:
        spec = importlib.util.find_spec(module)
    except ModuleNotFoundError as err:
        spec, why = None, str(err)
    else:
        why = "no such module"
    if spec is None:
        return [f"module {module} does not exist ({why}); see `ls -R skin_utils`"]
    done = module_help(module)
    if done.returncode != 0:
        return [f"`python -m {module} --help` exited {done.returncode}:\n{done.stderr[-2000:]}"]
    problems = [f"`python -m {module}` has no option {opt} (see its --help)"
                for opt in missing_options(cmd.argv[3:], done.stdout)]
    if not problems and module.startswith("skin_utils") and not cmd.has_placeholder and len(cmd.argv) > 3:
        # argparse converts and checks every argument before it meets the trailing --help
        parsed = run([sys.executable, "-m", module, *cmd.argv[3:], "--help"])
        if parsed.returncode != 0:
            problems.append(f"the arguments do not parse:\n{parsed.stderr[-2000:]}")
    return problems


def check_script(cmd: Command) -> list[str]:
    script = cmd.argv[1] if len(cmd.argv) > 1 else ""
    if not (ROOT / script).is_file():
        return [f"the script {script} does not exist"]
    done, created = script_help(script)
    problems = []
    if done.returncode != 0:
        problems.append(f"`{cmd.argv[0]} {script} --help` exited {done.returncode}:\n{done.stderr[-2000:]}")
    if created:
        problems.append(f"`{cmd.argv[0]} {script} --help` created {created}: --help must install nothing")
    problems += [f"{script} has no option {opt} (see its --help)" for opt in missing_options(cmd.argv[2:], done.stdout)]
    return problems


def check_mkdir(cmd: Command) -> list[str]:
    return [] if cmd.argv[:2] == ["mkdir", "-p"] and len(cmd.argv) > 2 else ["write `mkdir -p DIR`"]


def check_conda(cmd: Command) -> list[str]:
    if cmd.argv[:2] == ["conda", "activate"]:
        return [] if cmd.argv[2:] == [conda_env_name()] else [f"environment.yml names {conda_env_name()!r}"]
    if cmd.argv[:3] == ["conda", "env", "create"] and cmd.argv[3:] == ["-f", "environment.yml"]:
        return [] if (ROOT / "environment.yml").is_file() else ["environment.yml does not exist"]
    return ["only `conda env create -f environment.yml` and `conda activate NAME` are checked here"]


def conda_env_name() -> str:
    return yaml.safe_load((ROOT / "environment.yml").read_text())["name"]


def problems_of(cmd: Command) -> list[str]:
    argv = cmd.argv
    if argv[0] == "papermill":
        return check_papermill(cmd)
    if argv[0] == "python" and argv[1:2] == ["-m"]:
        return check_python_module(cmd)
    if (argv[0] == "bash" and argv[1:2] and argv[1].endswith(".sh")) or \
       (argv[0] == "python" and argv[1:2] and argv[1].endswith(".py")):
        return check_script(cmd)
    if argv[0] == "mkdir":
        return check_mkdir(cmd)
    if argv[0] == "conda":
        return check_conda(cmd)
    return [f"no check for `{argv[0]}` commands: teach tests/test_readme.py to check it"]


# ---------------------------------------------------------------- the tests

COMMANDS = readme_commands()


def test_readme_commands_are_found():
    kinds = {c.argv[0] for c in COMMANDS}
    assert {"papermill", "python", "bash"} <= kinds, f"found only {sorted(kinds)}: is the parser broken?"
    assert any(c.argv[:2] == ["bash", "scripts/run_all.sh"] for c in COMMANDS)


@pytest.mark.parametrize("cmd", COMMANDS, ids=[f"{c.where} {c.argv[0]} {' '.join(c.argv[1:3])}" for c in COMMANDS])
def test_readme_command_works_as_written(cmd):
    problems = problems_of(cmd)
    assert not problems, f"{cmd}\n  - " + "\n  - ".join(problems)


@pytest.mark.parametrize("script", ["scripts/run_all.sh", "scripts/test.sh", "scripts/setup_env.sh"])
def test_script_help_installs_nothing(script):
    done, created = script_help(script)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"usage: bash {script}"), done.stdout[:300]
    assert created == [], f"`bash {script} --help` created {created}"


def test_run_all_help_lists_the_pipeline_options():
    done, _ = script_help("scripts/run_all.sh")
    assert "--epochs" in done.stdout and "--data-dir" in done.stdout, done.stdout


def test_ci_runs_exactly_the_readme_test_command():
    lines = [ln.strip() for ln in (ROOT / ".ci/run").read_text().splitlines()]
    assert "bash scripts/test.sh" in lines
    assert any(c.argv == ["bash", "scripts/test.sh"] for c in COMMANDS if c.where.startswith("README.md"))


def requirement_name(spec: str) -> str:
    return re.split(r"[<>=!~\[; ]", spec.strip(), maxsplit=1)[0].lower()


def test_environment_yml_mirrors_pyproject():
    tomllib = pytest.importorskip("tomllib", reason="tomllib is in the standard library from Python 3.11")
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = {requirement_name(s) for s in project["dependencies"] + project["optional-dependencies"]["dev"]}
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d)
    listed = {requirement_name(s) for s in pip if not s.startswith("-")}
    assert wanted == listed, f"only in pyproject.toml: {sorted(wanted - listed)}; only in environment.yml: {sorted(listed - wanted)}"
    assert "-e .[dev]" in pip


# ------------------------------------------------ the checks can fail: broken commands

BROKEN = """
```bash
papermill notebooks/02_train.ipynb out/02.ipynb -p epochs 5
papermill notebooks/02_train.ipynb reports/02.ipynb -p epochz 5 -y "{lr: 0.1, colour: 2}"
papermill notebooks/02_train.ipynb notebooks/02_out.ipynb
papermill notebooks/99_missing.ipynb reports/x.ipynb
papermill notebooks/02_train.ipynb reports/x.ipynb --no-such-option
python -m skin_utils.pipeline --epochs 5
python -m skin_utils.train --no-such-flag 3
python -m skin_utils.train --epochs many
bash scripts/no_such_script.sh
bash scripts/run_all.sh --epochz 5
conda activate some-other-env
make everything
```
"""


def test_broken_commands_are_caught():
    commands = commands_in(BROKEN, "BROKEN.md")
    assert len(commands) == 12
    caught = {c.where: problems_of(c) for c in commands}
    expected = {  # line -> a phrase of the problem
        3: "out/ does not exist in a fresh clone", 4: "no parameter epochz, colour", 5: "inside notebooks/",
        6: "does not exist", 7: "No such option", 8: "module skin_utils.pipeline does not exist",
        9: "has no option --no-such-flag", 10: "do not parse", 11: "does not exist",
        12: "has no option --epochz", 13: "environment.yml names", 14: "no check for `make`",
    }
    for line, phrase in expected.items():
        problems = caught[f"BROKEN.md:{line}"]
        assert any(phrase in p for p in problems), f"line {line}: expected {phrase!r}, got {problems}"


def test_a_mkdir_in_the_block_makes_the_output_folder():
    commands = commands_in("```bash\nmkdir -p out/run1\npapermill notebooks/02_train.ipynb out/run1/02.ipynb "
                           "\\\n  -p epochs 5  # five\n```\n", "OK.md")
    assert [c.argv[0] for c in commands] == ["mkdir", "papermill"]
    assert commands[1].argv[-2:] == ["epochs", "5"]
    assert problems_of(commands[1]) == []
    assert commands[1].made_dirs == {"out", "out/run1"}


def test_placeholders_are_recognised():
    for text, expected in [("python -m skin_utils.prepare ham10000 DOWNLOADS_DIR --out data", True),
                           ("python -m skin_utils.prepare check /path/to/ham", True),
                           ("python scripts/set_github_repo.py OWNER/REPO", True),
                           ("python -m skin_utils.prepare ham10000 ~/Downloads/ham", True),
                           ("python -m skin_utils.prepare check data", False),
                           ("python scripts/benchmark.py --max-samples 1000", False)]:
        assert Command("x", shlex.split(text)).has_placeholder is expected, text
