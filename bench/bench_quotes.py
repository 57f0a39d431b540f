"""What quoting runs costs: ``answering.build_quotes`` with runs against single sentences.

    .venv/bin/python bench/bench_quotes.py [--repeats 200]

A quote that runs on ("She said:" and what she said, a sentence and its list) reads the
sentences around it once, without their vectors (``answering._run_of``: up to 2 * RUN_MAX
before and RUN_MAX + 1 after). The baseline, in the same process and interleaved, reads only the sentence and one
either side and quotes it alone, as quotes were built before runs. Both build the 3 quotes of
each example question from the same candidates, over the shipped corpus's index.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.bench_foundation import QUESTIONS  # noqa: E402
from bench.common import REPO, pct, scratch  # noqa: E402

from qa import Verbatim, answering  # noqa: E402


def single(index, doc_id, idx):
    """The baseline: the sentence alone, with one sentence either side for its context (read
    with their vectors, as quotes were built before runs)."""
    n = index.sentence_count(doc_id)
    return idx, idx, {i: x for i, x, _ in index.sentences(doc_id, max(0, idx - 1), min(n - 1, idx + 1))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=200)
    a = ap.parse_args()
    with scratch("vb-bench-quotes-") as tmp:
        v = Verbatim(REPO / "corpus", tmp / "index", root=REPO)
        v.sync()
        idx, cal = v.index(), v.answer_calibration()
        asked = []
        for q in QUESTIONS:
            passages, cands, _ = v.candidates(q, cal=cal, idx=idx)
            asked.append((cands, {p.doc_id: p.source for p in passages}))
        runs = answering._run_of
        ms: dict[str, list[float]] = {"runs": [], "single sentences": []}
        for i in range(a.repeats):
            cands, sources = asked[i % len(asked)]
            for name, fn in (("runs", runs), ("single sentences", single)):  # interleaved
                answering._run_of = fn
                t = time.perf_counter()
                answering.build_quotes(idx, cands, 3, sources)
                ms[name].append((time.perf_counter() - t) * 1e3)
        answering._run_of = runs
    for name, xs in ms.items():
        print(f"build_quotes, 3 quotes, {name}: p50 {pct(xs, 50):.2f} ms, p95 {pct(xs, 95):.2f} ms ({a.repeats} builds)")
    print(f"ratio of p50s runs/single: {pct(ms['runs'], 50) / pct(ms['single sentences'], 50):.2f}")


if __name__ == "__main__":
    main()
