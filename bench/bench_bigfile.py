"""Indexing one large text file: seconds and peak memory per million characters, by file size.

    .venv/bin/python bench/bench_bigfile.py [--sizes 1,4,16] [--model hashing-256]

Each size is a fresh process-local build of one .txt file made of SQuAD dev paragraphs. With
the hashing encoder the figures are the pipeline's own cost (reading, sentences, chunks, SQLite,
FAISS, BM25): flat seconds per million characters mean it grows linearly (the baseline is the
smallest size, in the same run). With a real model, embedding dominates.
"""

from __future__ import annotations

import argparse
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.common import squad_paragraphs  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="1,4,16", help="millions of characters, comma-separated")
    ap.add_argument("--model", default="hashing-256")
    a = ap.parse_args()
    from qa import Verbatim
    from qa.config import IndexSettings

    paras = [p for _, p in squad_paragraphs()]
    base = None
    for size in [float(s) for s in a.sizes.split(",")]:
        parts, n, i = [], 0, 0
        while n + len(paras[i % len(paras)]) + 2 <= size * 1e6:  # at most the size (the limit is 16M)
            parts.append(paras[i % len(paras)])
            n += len(parts[-1]) + 2
            i += 1
        tmp = Path(tempfile.mkdtemp(prefix="vb-big-"))
        try:
            (tmp / "corpus").mkdir()
            (tmp / "corpus" / "big.txt").write_text("\n\n".join(parts))
            v = Verbatim(tmp / "corpus", tmp / "index", settings=IndexSettings(model=a.model), root=tmp)
            t = time.perf_counter()
            r = v.sync()
            s = time.perf_counter() - t
            if r.skipped:
                sys.exit(f"skipped: {r.skipped[0]}")
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        per = s / size
        base = base or per
        print(f"{size:g} million characters ({a.model}): {s:.1f} s, {per:.2f} s per million "
              f"(x{per / base:.2f} the smallest), {r.chunks_embedded:,} passages, "
              f"peak RSS so far {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")


if __name__ == "__main__":
    main()
