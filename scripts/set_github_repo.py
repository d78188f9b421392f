#!/usr/bin/env python3
"""Set this repository's GitHub path (OWNER/REPO) everywhere the notebooks need it, at once:
every "Open in Colab" badge and every ``repo_url`` parameter in notebooks/*.py and
notebooks/*.ipynb, and the Colab links in README.md.

    python scripts/set_github_repo.py you/skin-lesions
    python scripts/set_github_repo.py https://github.com/you/skin-lesions.git   # the same

Whatever path is there now (the placeholder OWNER/REPO, or an earlier one) is replaced, so it
can be run again after a rename or a fork. Standard library only; edits the files in place and
prints what it changed. Commit and push afterwards: Colab opens the notebooks from GitHub.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

PATH_RE = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9-]{0,38})/[A-Za-z0-9._-]{1,100}$")
_SEGMENT = r"[A-Za-z0-9][A-Za-z0-9._-]*"
# the Colab link: colab.research.google.com/github/OWNER/REPO/blob/...
BADGE = re.compile(rf"(colab\.research\.google\.com/github/){_SEGMENT}/{_SEGMENT}(/blob/)")
# the repo_url parameter (in .py: repo_url: str = "https://...", in .ipynb the quotes are escaped: \")
REPO_URL = re.compile(rf"""(repo_url(?:\s*:\s*\w+)?\s*=\s*\\?["']https://github\.com/){_SEGMENT}/{_SEGMENT}(\\?["'])""")


def github_path(text: str) -> str:
    """``OWNER/REPO`` from ``OWNER/REPO``, ``https://github.com/OWNER/REPO`` or ``...REPO.git``."""
    path = text.strip()
    for prefix in ("https://github.com/", "http://github.com/", "github.com/", "git@github.com:"):
        if path.startswith(prefix):
            path = path[len(prefix):]
    path = path.rstrip("/")
    if path.endswith(".git"):
        path = path[:-4]
    if not PATH_RE.match(path):
        raise ValueError(f"{text!r} is not a GitHub repository path: expected OWNER/REPO, e.g. you/skin-lesions.")
    return path


def targets(root: Path) -> list[Path]:
    """The files that carry the repository's path: the notebooks (both sides) and README.md."""
    notebooks = sorted((root / "notebooks").glob("*.py")) + sorted((root / "notebooks").glob("*.ipynb"))
    readme = root / "README.md"
    return notebooks + ([readme] if readme.is_file() else [])


def set_repo(text: str, path: str) -> tuple[str, int]:
    """``text`` with every Colab badge link and ``repo_url`` value pointing at ``path``, and the
    number of places found (already right or changed)."""
    text, n_badges = BADGE.subn(lambda m: f"{m.group(1)}{path}{m.group(2)}", text)
    text, n_urls = REPO_URL.subn(lambda m: f"{m.group(1)}{path}{m.group(2)}", text)
    return text, n_badges + n_urls


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("repo", help="OWNER/REPO (or the repository's https://github.com/... address)")
    parser.add_argument("--root", type=Path, default=Path(__file__).resolve().parent.parent,
                        help="the repository folder (default: the one this script is in)")
    args = parser.parse_args(argv)
    try:
        path = github_path(args.repo)
    except ValueError as err:
        parser.error(str(err))
    files = targets(args.root)
    if not files:
        print(f"No notebooks/ or README.md under {args.root}: is --root the repository?", file=sys.stderr)
        return 1
    total = 0
    for file in files:
        old = file.read_text(encoding="utf-8")
        new, found = set_repo(old, path)
        total += found
        if new != old:
            file.write_text(new, encoding="utf-8")
            print(f"{file.relative_to(args.root)}: {found} place(s) set to {path}")
    if total == 0:
        print(f"No Colab badge or repo_url found in {len(files)} file(s) under {args.root}.", file=sys.stderr)
        return 1
    print(f"Every Colab badge and repo_url now points at https://github.com/{path} ({total} places). "
          "Commit and push for Colab to see it.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
