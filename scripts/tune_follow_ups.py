"""Fit the follow-up bar: the probability a quote must reach when its question was read with the
words its earlier turn supplies.

    .venv/bin/python scripts/tune_follow_ups.py [--write]

Tuning data only: the dialogues of ``eval/dialogues-tune.jsonl`` (the test half stays unseen),
asked turn by turn over the shipped corpus as `qa eval` asks them, with the stored calibration.
The follow-ups read with the earlier turn's words (a cue: a pointer word, a leading "and", a
short question) are the rows; each is handled well at a bar when it is answerable and its first
quote is right and clears it, answerable and its first quote wrong and below it (a refusal is
better than a wrong quote), or unanswerable and below it. The bar with the most handled well is
chosen (ties: the highest). The standalone questions' bar is not touched: their answers stay
the same. With --write the bar goes to qa/calibration.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from qa import Verbatim  # noqa: E402
from qa.answering import CALIBRATION_FILE, Calibration  # noqa: E402
from qa.config import REPO_ROOT  # noqa: E402
from qa.evaluate import FOLLOW, load_dialogues, run_dialogues  # noqa: E402

DIALOGUES = REPO_ROOT / "eval" / "dialogues-tune.jsonl"
BARS = [round(0.20 + 0.01 * i, 2) for i in range(41)]  # 0.20 ... 0.60


def handled(rows, bar: float) -> float:
    good = 0
    for r in rows:
        shown = r.confidence is not None and r.confidence >= bar
        good += (shown and r.best_contains) or (not shown and not r.best_contains) if r.answerable else not shown
    return good / len(rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--write", action="store_true")
    a = ap.parse_args()
    stored = Calibration.load()
    v = Verbatim(calibration=replace(stored, follow_up_threshold=None))  # the rows' confidences, unmoved
    v.ensure_index()
    t = time.perf_counter()
    preds = run_dialogues(v, load_dialogues(DIALOGUES), progress=sys.stderr.isatty())
    rows = [p for p in preds if p.kind == FOLLOW and p.cue not in (None, "refused alone")]
    print(f"{len(rows)} follow-ups read with their earlier turn ({sum(not r.answerable for r in rows)} "
          f"unanswerable), asked in {time.perf_counter() - t:.0f} s")
    scores = {bar: handled(rows, bar) for bar in BARS}
    best = max(BARS, key=lambda b: (round(scores[b], 6), b))
    for bar in BARS[::5] + [best, stored.threshold]:
        print(f"  bar {bar:.3f}: handled well {handled(rows, bar):.3f}")
    print(f"best: {best:.2f} (the standalone bar is {stored.threshold:.4f})")
    if a.write:
        how = (f"scripts/tune_follow_ups.py on {time.strftime('%Y-%m-%d')}: the bar that handles the most of the "
               f"{len(rows)} follow-ups of eval/dialogues-tune.jsonl read with their earlier turn well "
               f"({scores[best]:.3f}, against {handled(rows, stored.threshold):.3f} at the standalone bar)")
        out = {**json.loads(CALIBRATION_FILE.read_text()), "follow_up_threshold": best, "follow_up_how": how}
        CALIBRATION_FILE.write_text(json.dumps(out, indent=2) + "\n")
        print(f"wrote {CALIBRATION_FILE}")


if __name__ == "__main__":
    main()
