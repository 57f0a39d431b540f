"""Warm ask latency of a follow-up question against a standalone one, in the same process.

    .venv/bin/python bench/bench_chat.py [--rounds 3]

Over the shipped corpus and the dialogue sets (eval/dialogues-*.jsonl): each round asks every
dialogue in order, a follow-up with the earlier turns as Verbatim answered them, and right after
it the same question written out in full, alone (the baseline). Interleaving the two keeps
drift (caches, CPU frequency) out of the ratio. Prints medians and p95 of each, and the ratio.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.common import scratch, REPO, pct, summary  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    a = ap.parse_args()
    from qa import Verbatim

    dialogues = [json.loads(line) for half in ("tune", "test")
                 for line in (REPO / "eval" / f"dialogues-{half}.jsonl").read_text().splitlines()]
    with scratch("vb-chat-") as tmp:
        v = Verbatim(REPO / "corpus", tmp / "index", root=REPO)
        v.sync()
        v.ask("Who is Tim Peters?")  # warm: models loaded, first-call costs paid
        follow, alone, first = [], [], []
        for _ in range(a.rounds):
            for d in dialogues:
                history = []
                for t in d["turns"]:
                    t0 = time.perf_counter()
                    res = v.ask(t["question"], history=history)
                    ms = (time.perf_counter() - t0) * 1e3
                    history.append(res.turn())
                    if not t["follow_up"]:
                        first.append(ms)
                        continue
                    follow.append(ms)
                    t0 = time.perf_counter()
                    v.ask(t["full"])
                    alone.append((time.perf_counter() - t0) * 1e3)
        med = lambda xs: pct(xs, 50)  # noqa: E731
        print(f"shipped corpus, {len(dialogues)} dialogues x {a.rounds} rounds, warm ask (ms):")
        print(f"  follow-up, with its history      {summary(follow)}  p95 {pct(follow, 95):.1f}")
        print(f"  same question in full, alone     {summary(alone)}  p95 {pct(alone, 95):.1f}")
        print(f"  first turns (standalone)         {summary(first)}  p95 {pct(first, 95):.1f}")
        print(f"  ratio follow-up / in full: median {med(follow) / med(alone):.2f}x, "
              f"p95 {pct(follow, 95) / pct(alone, 95):.2f}x")


if __name__ == "__main__":
    main()
