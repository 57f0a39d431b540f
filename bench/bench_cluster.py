"""Embedding throughput of a build: single process against `qa index --ray` with 1 and 2 workers,
and the driver's own cost per passage, in one run.

    .venv/bin/python bench/bench_cluster.py [--paragraphs 200] [--model all-MiniLM-L6-v2]

Each build starts from scratch over the same SQuAD dev paragraphs (a local Ray is started for
each --ray build, its start-up included). The single-process build runs with a timed encoder:
everything but encoding (reading, sentences, chunks, SQLite rows, FAISS, BM25, publishing) is
the driver's overhead, which a `--ray` build keeps in the driver; per passage, it bounds what a
K-worker cluster can reach. On one machine Ray adds start-up and transfers and no cores.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.common import scratch, squad_paragraphs, write_corpus  # noqa: E402


class Timed:
    """An encoder that adds up the seconds spent encoding."""

    def __init__(self, inner):
        self.inner, self.name, self.dim, self.seconds = inner, inner.name, inner.dim, 0.0
        self.mean_pooled = getattr(inner, "mean_pooled", True)

    def _timed(self, encode, texts):
        t = time.perf_counter()
        try:
            return encode(texts)
        finally:
            self.seconds += time.perf_counter() - t

    def encode_documents(self, texts, progress=False):
        return self._timed(self.inner.encode_documents, texts)

    def encode_sums(self, texts):
        return self._timed(self.inner.encode_sums, texts)

    def encode_queries(self, texts):
        return self.inner.encode_queries(texts)


def build(tmp: Path, name: str, model: str, workers: int | None) -> tuple[float, object, float]:
    from qa import Verbatim
    from qa.cluster import Cluster
    from qa.config import IndexSettings

    v = Verbatim(tmp / "corpus", tmp / name, settings=IndexSettings(model=model), root=tmp)
    timed = Timed(v.encoder)  # the model loaded before timing
    v._query_encoder = timed if workers is None else v.encoder
    t = time.perf_counter()
    r = v.sync(cluster=None if workers is None else Cluster(None, workers))
    return time.perf_counter() - t, r, timed.seconds


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--paragraphs", type=int, default=200)
    ap.add_argument("--model", default="all-MiniLM-L6-v2")
    a = ap.parse_args()
    with scratch("vb-cluster-") as tmp:
        write_corpus(tmp / "corpus", squad_paragraphs(limit=a.paragraphs))
        rates = {}
        for name, workers in (("single process", None), ("--ray, 1 worker", 1), ("--ray, 2 workers", 2)):
            s, r, encoding = build(tmp, name.replace(" ", "_").replace(",", ""), a.model, workers)
            texts = r.chunks_embedded + r.sentences_embedded
            rates[name] = texts / s
            print(f"{name}: {s:.1f} s for {texts:,} texts ({r.chunks_embedded:,} passages), "
                  f"{rates[name]:.1f} texts/s, x{rates[name] / rates['single process']:.2f} the single process")
            if workers is None:
                print(f"  driver overhead (everything but encoding): {s - encoding:.2f} s, "
                      f"{(s - encoding) / r.chunks_embedded * 1e3:.2f} ms per passage")


if __name__ == "__main__":
    main()
