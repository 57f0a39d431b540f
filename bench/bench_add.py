"""Cost of adding one article to a big index, against building that index.

    .venv/bin/python bench/bench_add.py [--articles 10000] [--model all-MiniLM-L6-v2|hashing-256]

Filler articles are SQuAD v1.1 train paragraphs (real text), one file each. Times:
the full build of N articles, then `sync` after adding one article (new text to embed),
after editing one, and with nothing changed. Each incremental step is repeated and
reported as a median.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.common import squad_paragraphs, write_corpus  # noqa: E402

from qa import Verbatim  # noqa: E402
from qa.config import IndexSettings  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--articles", type=int, default=10000)
    ap.add_argument("--model", default="all-MiniLM-L6-v2")
    ap.add_argument("--repeats", type=int, default=3)
    a = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="vb-add-"))
    try:
        write_corpus(tmp / "corpus", squad_paragraphs("train-v1.1.json", limit=a.articles))
        v = Verbatim(tmp / "corpus", tmp / "index", settings=IndexSettings(model=a.model), root=tmp)
        v.encoder
        t = time.perf_counter()
        r = v.sync()
        build = time.perf_counter() - t
        print(f"model {a.model}: build of {a.articles} articles ({r.chunks_embedded} passages, "
              f"{r.sentences_embedded} sentences): {build:.1f} s")
        time.sleep(2.1)  # past the 2 s "racy" window in which a file's stamp is not trusted
        v.sync()  # records the stamps of the files the build read while they were racy
        extra = squad_paragraphs("dev-v1.1.json", limit=a.repeats * 2)
        adds, edits, noops = [], [], []
        for i in range(a.repeats):
            (tmp / "corpus" / f"new{i}.txt").write_text(extra[i][1])
            t = time.perf_counter()
            r = v.sync()
            adds.append(time.perf_counter() - t)
            assert r.added == [f"corpus/new{i}.txt"], r.summary()
            f = tmp / "corpus" / "p000005.txt"
            f.write_text(f.read_text() + f" Edit number {i}.")
            t = time.perf_counter()
            r = v.sync()
            edits.append(time.perf_counter() - t)
            assert r.changed == ["corpus/p000005.txt"], r.summary()
            time.sleep(2.1)
            v.sync()
            t = time.perf_counter()
            r = v.sync()
            noops.append(time.perf_counter() - t)
            assert not r.changed_anything
        add = statistics.median(adds)
        print(f"  add one article:   median {add:.2f} s (min {min(adds):.2f}, max {max(adds):.2f})")
        print(f"  edit one article:  median {statistics.median(edits):.2f} s")
        print(f"  nothing changed:   median {statistics.median(noops):.2f} s")
        print(f"  ratio add / build: {add / build:.4f}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
