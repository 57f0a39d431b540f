"""Index build throughput vs the raw encoder, and warm `ask` latency.

    .venv/bin/python bench/bench_foundation.py [--paragraphs 300] [--repeats 3]
        [--ask-only] [--baseline-calibration FILE]

Build: a corpus of SQuAD v1.1 dev paragraphs (real text) indexed from scratch.
"Raw encoder" encodes exactly the texts the build embeds (its chunks and its
sentences) with the same model and batch size, so the ratio is the pipeline's
overhead (reading, segmentation, SQLite, FAISS, BM25, atomic write).
Ask: warm latency on the shipped corpus over the example questions, repeated. With
--baseline-calibration (an earlier qa/calibration.json, e.g. from `git show`), the same
questions are also asked with it, interleaved, and the ratio of the medians is printed.
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
from bench.common import REPO, pct, squad_paragraphs, summary, write_corpus  # noqa: E402

from qa import Verbatim  # noqa: E402
import numpy as np  # noqa: E402

def encode_raw(encoder, texts: list[str], batch: int = 256) -> np.ndarray:
    """The encoder alone, in plain batches: the baseline the build is compared with."""
    out = [encoder.encode_documents(texts[i : i + batch]) for i in range(0, len(texts), batch)]
    return np.concatenate(out) if out else np.zeros((0, encoder.dim), dtype=np.float32)


QUESTIONS = [
    "How many North Korean refugees did China forcibly repatriate in October 2023?",
    "Why does China send North Korean defectors back?",
    "What happens to defectors who are sent back to North Korea?",
    "Where were the ten North Korean defectors arrested?",
    "What percentage of North Korea's population is malnourished?",
    "Who is the chair of the North Korean Freedom Coalition?",
    "When did Grace Jo come to the United States?",
    "Who won the 2022 FIFA World Cup?",
    "What did the UN Commission of Inquiry report say in 2014?",
    "How long was Grace Jo imprisoned in China?",
]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--paragraphs", type=int, default=300)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--asks", type=int, default=100)
    ap.add_argument("--ask-only", action="store_true", help="skip the build benchmark")
    ap.add_argument("--baseline-calibration", help="also ask with this calibration file, for the ratio")
    a = ap.parse_args()
    if not a.ask_only:
        bench_build(a)
    bench_ask(a)


def bench_build(a) -> None:
    import torch

    print(f"torch threads: {torch.get_num_threads()}")
    tmp = Path(tempfile.mkdtemp(prefix="vb-bench-"))
    try:
        write_corpus(tmp / "corpus", squad_paragraphs(limit=a.paragraphs))
        builds, raws, chunk_rates, raw_rates = [], [], [], []
        for r in range(a.repeats):
            shutil.rmtree(tmp / "index", ignore_errors=True)
            v = Verbatim(tmp / "corpus", tmp / "index", root=tmp)
            v.encoder  # model load is not part of the build
            t = time.perf_counter()
            rep = v.sync()
            build = time.perf_counter() - t
            idx = v.index()
            chunks = [t for (t,) in idx.db().execute(
                'SELECT substr(d.text, c.start+1, c."end"-c.start) FROM chunks c JOIN documents d USING(doc_id)')]
            sents = [t for (t,) in idx.db().execute(
                'SELECT substr(d.text, s.start+1, s."end"-s.start) FROM sentences s JOIN documents d USING(doc_id)')]
            t = time.perf_counter()
            encode_raw(v.encoder, sents)
            encode_raw(v.encoder, chunks)
            raw = time.perf_counter() - t
            builds.append(build)
            raws.append(raw)
            chunk_rates.append(rep.chunks_embedded / build)
            raw_rates.append(rep.chunks_embedded / raw)
        print(f"\nbuild: {a.paragraphs} SQuAD paragraphs -> {rep.chunks_embedded} passages, "
              f"{rep.sentences_embedded} sentences (both embedded)")
        print(f"  index build seconds      {summary(builds)}")
        print(f"  raw encode seconds       {summary(raws)}  (same chunk + sentence texts)")
        print(f"  build throughput         {statistics.median(chunk_rates):.1f} passages/s")
        print(f"  raw encoder throughput   {statistics.median(raw_rates):.1f} passages/s (+ their sentences)")
        print(f"  ratio build/raw          {statistics.median(raws) / statistics.median(builds):.2f}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)



def bench_ask(a) -> None:
    from qa.answering import Calibration

    idx_dir = Path(tempfile.mkdtemp(prefix="vb-bench-ask-"))
    try:
        services = {"current": Verbatim(REPO / "corpus", idx_dir / "index", root=REPO)}
        services["current"].sync()
        if a.baseline_calibration:
            services["baseline"] = Verbatim(REPO / "corpus", idx_dir / "index", root=REPO,
                                            calibration=Calibration.load(Path(a.baseline_calibration), strict=True))
        lat: dict[str, list[float]] = {name: [] for name in services}
        for v in services.values():
            for q in QUESTIONS:  # warm-up
                v.ask(q)
        for i in range(a.asks):
            for name, v in services.items():  # interleaved: both see the same machine state
                t = time.perf_counter()
                v.ask(QUESTIONS[i % len(QUESTIONS)])
                lat[name].append((time.perf_counter() - t) * 1e3)
        for name, ms in lat.items():
            print(f"\nwarm ask on the shipped corpus, {name} calibration ({a.asks} asks): p50 {pct(ms, 50):.1f} ms, "
                  f"p95 {pct(ms, 95):.1f} ms, max {max(ms):.1f} ms")
        if "baseline" in lat:
            print(f"ratio of p50s current/baseline: {pct(lat['current'], 50) / pct(lat['baseline'], 50):.2f}")
    finally:
        shutil.rmtree(idx_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
