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

``--reading`` measures another way of reading the follow-ups against the shipped one, each at
the bar that suits it best (docs/follow-ups.md, "Tried: other words to read a follow-up with"):
``full-words`` keeps only the earlier turn's words that the question written in full uses, and
``written-in-full`` reads that question instead (both peek at the rewrite: upper bounds, not
methods); ``replace-pronoun`` puts the earlier answer, when it is a short name, where the
pointer word was; ``earlier-document`` keeps retrieval to the document of the earlier turn's
first quote.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from qa import Verbatim, conversation  # noqa: E402
from qa.answering import CALIBRATION_FILE, Calibration  # noqa: E402
from qa.config import REPO_ROOT  # noqa: E402
from qa.evaluate import FOLLOW, calibrate, load_dialogues, run_dialogues  # noqa: E402
from qa.retrieval import Filter  # noqa: E402
from qa.sparse import tokenize  # noqa: E402

DIALOGUES = REPO_ROOT / "eval" / "dialogues-tune.jsonl"
READINGS = ("shipped", "full-words", "written-in-full", "replace-pronoun", "earlier-document")


def other_reading(name: str, full: dict[str, str]):
    """``conversation.read_with`` for the reading ``name``; ``full``: each follow-up written in full."""
    shipped = conversation.read_with

    def full_words(question, turn):
        if question not in full:
            return shipped(question, turn)
        wanted = set(tokenize([full[question]])[0])  # BM25's stemmed terms: "Christians" is "christian"
        kept = [w for w in shipped(question, turn)[len(question):].split() if set(tokenize([w])[0]) & wanted]
        return " ".join([question, *kept])

    def written_in_full(question, turn):
        return shipped(full.get(question, question), turn)

    def replace_pronoun(question, turn):
        at, names = conversation.pointer(question), conversation.content_words(turn.answer)
        if (at is None or at[2] == "demonstrative" or not names or len(conversation.words(turn.answer)) > 6
                or not all(w[:1].isupper() or w[:1].isdigit() for w in names)):
            return shipped(question, turn)
        s, e, _ = at
        name = turn.answer.strip(" .,;:") + ("'s" if question[s:e].lower() in ("his", "its", "their") else "")
        replaced = question[:s] + name + question[e:]
        return shipped(replaced, turn)

    return {"full-words": full_words, "written-in-full": written_in_full, "replace-pronoun": replace_pronoun}.get(name)


class KeptToEarlierDocument:
    """A follow-up that leans on its earlier turn is searched in that turn's first quote's document."""

    def __init__(self, service):
        self.service, self.doc = service, None

    def ask_with_passages(self, question, cfg, flt=Filter(), retrieve=0, history=()):
        if history and self.doc and conversation.follow_up_cue(question):
            flt = Filter(doc_ids=frozenset({self.doc}))
        result, passages = self.service.ask_with_passages(question, cfg, flt, retrieve, history)
        self.doc = result.answers[0].source.doc_id if result.answers else None
        return result, passages


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--reading", choices=READINGS, default="shipped",
                    help="read the follow-ups another way, to compare (not with --write)")
    ap.add_argument("--write", action="store_true")
    a = ap.parse_args()
    if a.write and a.reading != "shipped":
        ap.error("--write fits the bar of the shipped reading")
    stored = Calibration.load()
    v = Verbatim(calibration=replace(stored, follow_up_threshold=None))  # the rows' confidences, unmoved
    v.ensure_index()
    dialogues = load_dialogues(DIALOGUES)
    full = {t.question.question: t.full for _, turns in dialogues for t in turns if t.follow_up and t.full}
    if read_with := other_reading(a.reading, full):
        conversation.read_with = read_with
    t = time.perf_counter()
    service = KeptToEarlierDocument(v) if a.reading == "earlier-document" else v
    preds = run_dialogues(service, dialogues, progress=sys.stderr.isatty())
    rows = [p for p in preds if p.kind == FOLLOW and p.cue not in (None, "refused alone")]
    answerable = [r for r in rows if r.answerable]
    print(f"{len(rows)} follow-ups read with their earlier turn ({len(rows) - len(answerable)} "
          f"unanswerable), asked in {time.perf_counter() - t:.0f} s, reading: {a.reading}; the right sentence "
          f"is the best candidate for {sum(r.best_contains for r in answerable) / len(answerable):.3f} of the others")
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
