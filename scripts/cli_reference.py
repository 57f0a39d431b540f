"""The CLI reference, generated from the parser: the README's command table and docs/cli.md.

    .venv/bin/python scripts/cli_reference.py --write   # after changing a command or option
    .venv/bin/python scripts/cli_reference.py           # check: exit 1 when they drift

tests/test_e2e.py runs the check, so a README that no longer matches `--help` fails the suite.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from qa.cli import README_BEGIN, README_END, reference  # noqa: E402
from qa.config import REPO_ROOT  # noqa: E402

README = REPO_ROOT / "README.md"
CLI_DOC = REPO_ROOT / "docs" / "cli.md"


def expected() -> dict[Path, str]:
    """Each generated file's text as it should be."""
    readme = README.read_text(encoding="utf-8")
    head, rest = readme.split(README_BEGIN, 1)
    _, tail = rest.split(README_END, 1)
    return {README: f"{head}{README_BEGIN}\n{reference()}{README_END}{tail}", CLI_DOC: reference(full=True)}


def drift() -> list[Path]:
    return [p for p, text in expected().items() if not p.exists() or p.read_text(encoding="utf-8") != text]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--write", action="store_true", help="rewrite the generated parts")
    a = ap.parse_args()
    if a.write:
        for p, text in expected().items():
            p.write_text(text, encoding="utf-8")
            print(f"wrote {p.relative_to(REPO_ROOT)}")
        return
    stale = drift()
    if stale:
        sys.exit("out of date with `qa --help`: " + ", ".join(str(p.relative_to(REPO_ROOT)) for p in stale)
                 + " (run scripts/cli_reference.py --write)")
    print("the CLI reference matches --help")


if __name__ == "__main__":
    main()
