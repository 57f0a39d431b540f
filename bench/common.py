"""Helpers shared by the benchmarks: timing statistics and sample corpora from real text."""

from __future__ import annotations

import contextlib
import json
import shutil
import statistics
import tempfile
from pathlib import Path

from qa.config import REPO_ROOT as REPO, SQUAD_DIR as SQUAD  # noqa: F401  (REPO: for the benches)


@contextlib.contextmanager
def scratch(prefix: str):
    """A temporary folder for one bench run, removed afterwards."""
    tmp = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def pct(values: list[float], p: float) -> float:
    s = sorted(values)
    if not s:
        return float("nan")
    k = (len(s) - 1) * p / 100
    lo, hi = int(k), min(int(k) + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


def summary(values: list[float]) -> str:
    return (f"median {statistics.median(values):.2f}  min {min(values):.2f}  max {max(values):.2f}"
            f"  (n={len(values)})")


def squad_paragraphs(split: str = "dev-v1.1.json", limit: int | None = None) -> list[tuple[str, str]]:
    """(title, paragraph) pairs of a SQuAD file, in file order."""
    data = json.loads((SQUAD / split).read_text())
    out = []
    for art in data["data"]:
        for p in art["paragraphs"]:
            out.append((art["title"].replace("_", " "), p["context"]))
            if limit and len(out) >= limit:
                return out
    return out


def write_corpus(folder: Path, paragraphs: list[tuple[str, str]]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for i, (title, text) in enumerate(paragraphs):
        (folder / f"p{i:06d}.txt").write_text(text + "\n")
        (folder / f"p{i:06d}.txt.meta.json").write_text(json.dumps({"title": title, "publisher": "Wikipedia (SQuAD)"}))
