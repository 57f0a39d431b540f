"""A build on a local Ray cluster against a single-process build of the same corpus.

    .venv/bin/python bench/bench_cluster.py [--paragraphs 200] [--workers 2] [--model all-MiniLM-L6-v2]

Both build from scratch in the same run (the local one first, then `--ray` with a local Ray
started for it, its start-up included). On one machine Ray adds start-up and transfer costs and
no cores, so the ratio says what the pipeline costs; the gain is on a cluster with more cores.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.common import squad_paragraphs, write_corpus  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--paragraphs", type=int, default=200)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--model", default="all-MiniLM-L6-v2")
    a = ap.parse_args()
    from qa import Verbatim
    from qa.cluster import Cluster
    from qa.config import IndexSettings

    tmp = Path(tempfile.mkdtemp(prefix="vb-cluster-"))
    try:
        write_corpus(tmp / "corpus", squad_paragraphs(limit=a.paragraphs))
        times = {}
        for name, cluster in (("local", None), ("ray", Cluster(None, a.workers))):
            v = Verbatim(tmp / "corpus", tmp / name, settings=IndexSettings(model=a.model), root=tmp)
            v.encoder  # the model loaded before timing, in both
            t = time.perf_counter()
            r = v.sync(cluster=cluster)
            times[name] = time.perf_counter() - t
            print(f"{name}: {times[name]:.1f} s, {r.chunks_embedded:,} passages and {r.sentences_embedded:,} "
                  f"sentences embedded" + (f", {r.cluster_batches} batches streamed" if cluster else ""))
        print(f"ratio ray / local: {times['ray'] / times['local']:.2f} ({a.paragraphs} paragraphs, {a.model}, "
              f"{a.workers} workers)")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
