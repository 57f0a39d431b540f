"""Fit the follow-up bar: the probability a quote must reach when its question was read with the
words its earlier turn supplies.

    .venv/bin/python scripts/tune_follow_ups.py [--write]

Tuning data only: the dialogues of ``eval/dialogues-tune.jsonl`` (the test half stays unseen),
asked turn by turn over the shipped corpus as `qa eval` asks them, with the stored calibration.
The follow-ups read with the earlier turn's words (a cue: a pointer word, a leading "and", a
short question) are the rows. The bar is chosen as `qa eval --calibrate` chooses one, with a
wrong first quote counted as bad as a right one refused (``evaluate.calibrate``, ``decline_wrong``):
each row is handled well when its right quote clears the bar, its wrong one does not, or it is
unanswerable and nothing does. The standalone questions' bar is not touched: their answers stay
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
from qa.evaluate import FOLLOW, calibrate, load_dialogues, run_dialogues  # noqa: E402

DIALOGUES = REPO_ROOT / "eval" / "dialogues-tune.jsonl"


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
    result = calibrate({"follow-ups": rows}, decline_wrong=True)
    best, well = result["threshold"], result["per_dataset_accuracy"]["follow-ups"]
    print(f"bar {best:.4f}: handled well {well:.3f}, answered {result['answered_share']['follow-ups']:.3f} of the "
          f"answerable, declined {result['no_answer_recall']['follow-ups']:.3f} of the others "
          f"(the standalone bar is {stored.threshold:.4f})")
    if a.write:
        how = (f"scripts/tune_follow_ups.py on {time.strftime('%Y-%m-%d')}: the bar that handles the most of the "
               f"{len(rows)} follow-ups of eval/dialogues-tune.jsonl read with their earlier turn well "
               f"({well:.3f}; the standalone bar is {stored.threshold:.4f})")
        out = {**json.loads(CALIBRATION_FILE.read_text()), "follow_up_threshold": best, "follow_up_how": how}
        CALIBRATION_FILE.write_text(json.dumps(out, indent=2) + "\n")
        print(f"wrote {CALIBRATION_FILE}")


if __name__ == "__main__":
    main()
