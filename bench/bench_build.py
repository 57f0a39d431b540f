"""Build time of an index from scratch, this code against an older commit, in one run.

    .venv/bin/python bench/bench_build.py [--paragraphs N] [--old 5c50187] [--repeats 1]

The corpus is SQuAD v1.1 dev's paragraphs (all 2,067 by default), one file each with its title,
as `qa eval --squad-corpus` writes them. Each build is a fresh `qa index` process (model loading
and everything a user waits for included) over the same files into an empty index folder; the
old code is `git archive`d from ``--old`` (default: the commit before the ONNX document encoder
and the pooled passage vectors) and run with this virtual environment. This code builds twice:
as `qa index` does by default (a passage's vector pooled from its sentences' encoder passes),
and with `--passage-vectors own` (each passage encoded alone as well, as the old code did). With
``--repeats N`` the builds alternate, and the medians are compared.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.common import REPO, scratch, squad_paragraphs, write_corpus  # noqa: E402

OLD = "5c50187"


def qa_index(code: Path, corpus: Path, index: Path, cwd: Path, *extra: str) -> tuple[float, str]:
    """Seconds for one `qa index` run of the code in ``code``, and its last line of output."""
    env = dict(os.environ, PYTHONPATH=str(code))
    t = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", "from qa.cli import main; main()", "--corpus", str(corpus),
                          "--index", str(index), "index", *extra], cwd=cwd, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - t
    if out.returncode:
        raise SystemExit(f"qa index failed ({code}):\n{out.stdout}\n{out.stderr}")
    return seconds, out.stdout.strip().splitlines()[-1]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--paragraphs", type=int, default=None, help="first N paragraphs (default: all)")
    ap.add_argument("--old", default=OLD, help=f"the commit to compare with (default {OLD})")
    ap.add_argument("--repeats", type=int, default=1)
    a = ap.parse_args()
    with scratch("vb-build-") as tmp:
        paragraphs = squad_paragraphs(limit=a.paragraphs)
        write_corpus(tmp / "corpus", paragraphs)
        old = tmp / "old"
        old.mkdir()
        archive = subprocess.run(["git", "-C", str(REPO), "archive", a.old], capture_output=True, check=True)
        subprocess.run(["tar", "-x", "-C", str(old)], input=archive.stdout, check=True)
        print(f"{len(paragraphs):,} SQuAD v1.1 dev paragraphs; old code: {a.old}; {a.repeats} build(s) each")
        builds = {"old": (old, ()), "new": (REPO, ()), "new, --passage-vectors own": (REPO, (
            "--passage-vectors", "own"))}
        times: dict[str, list[float]] = {name: [] for name in builds}
        for r in range(a.repeats):
            for n, (name, (code, extra)) in enumerate(builds.items()):
                s, last = qa_index(code, tmp / "corpus", tmp / f"index-{n}-{r}", tmp, *extra)
                times[name].append(s)
                print(f"  {name}: {s:.1f} s  ({last.strip()})", flush=True)
        o = statistics.median(times["old"])
        for name in builds:
            m = statistics.median(times[name])
            print(f"median build, {name}: {m:.1f} s, x{m / o:.2f} the old")


if __name__ == "__main__":
    main()
