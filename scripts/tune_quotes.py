"""Fit the quote model: the probability that a candidate sentence answers the question.

    .venv/bin/python scripts/tune_quotes.py --exclude .cache/shipped-reader/used_question_ids.json \
        [--paragraphs 800] [--questions 1200] [--write]

Tuning data, and nothing else (SQuAD dev and the people test half stay unseen):
- SQuAD v1.1 *train*: the open corpus of ``scripts/tune_weights.py`` (the same 800 paragraphs
  the reader never learned from); each question asked with its paragraph, without it, and
  with its answer sentences cut out (``tune_weights.whole_askings`` / ``cut_askings``);
- the tuning half of the people-style set (``eval/people-tune.jsonl``) over the shipped corpus;
- with ``--written eval/written-squad-train.jsonl``, questions written the way people ask over
  the open corpus's train paragraphs (weighing ``--written-share``; not in the shipped fit, see
  docs/answer-quality.md).

The shipped set (``eval/shipped.jsonl``) is not fitted on, but joins the choice of the
answer bar, as it has since the first calibration.

Every candidate sentence of every asking is a row: ``answering.quote_features`` and whether
it holds a gold answer. A logistic model (``answering.QUOTE_FEATURES``) is fitted with the
people questions weighing ``--people-share`` of the whole (default 0.8: they are the questions
the product is asked; SQuAD keeps the factoid signals honest), each asking equally within its
source. Five folds by question give held-out probabilities, from
which the answer bar is chosen as ``qa eval --calibrate`` chooses a threshold (each set
weighed to the people set's share of unanswerable questions), and the figures are printed:
top-1 when candidates are ranked by probability against by score, decision accuracy, and
the expected calibration error of the top three quotes. With --write the model and bar go
to qa/calibration.json. ``--drop FEATURE ...`` fits without some features, to measure what one
adds (the rows are cached, so a second run takes seconds).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import pickle
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path
from types import SimpleNamespace

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tune_weights import TRAIN, cut_askings, ranked, tune_corpus, whole_askings  # noqa: E402

from qa import Verbatim, answering, retrieval  # noqa: E402
from qa.answering import CALIBRATION_FILE, QUOTE_FEATURES, Calibration, NoAnswerModel  # noqa: E402
from qa.config import REPO_ROOT  # noqa: E402
from qa.reader import MODEL_DIR as READER_DIR  # noqa: E402
from qa.evaluate import SHIPPED_SET, calibrate, contains_answer, expected_calibration_error, load_jsonl  # noqa: E402

PEOPLE_TUNE = REPO_ROOT / "eval" / "people-tune.jsonl"
# the open corpus of train paragraphs the reader never learned from, and how many of its
# questions the model is fitted on (the rest are unseen by both models: tune_fusion --rerank)
PARAGRAPHS, QUESTIONS = 800, 1200


def quote_row(question: str, cands, golds, present: int, i: int) -> tuple:
    """One asking: every candidate's features and whether it holds a gold answer, the kind of
    asking (1 with the answer there, 0 left out, 2 cut out, 3 a people question that has none)
    and the question's number."""
    return (answering.quote_features(question, cands),
            np.array([contains_answer(c.sentence.text, golds) for c in cands]), present, i)


def rows_key(cal: Calibration, v, *extra) -> str:
    """What rows depend on: the calibration, how a question is read (retrieval and feature code),
    the reader's weights, what built the index (its sentence vectors feed the features) and
    ``extra`` (the questions)."""
    code = Path(answering.__file__).read_bytes() + Path(retrieval.__file__).read_bytes()
    reader = (READER_DIR / "reader.int8.onnx").read_bytes() if (READER_DIR / "reader.int8.onnx").exists() else b""
    built = v.index().manifest.settings
    return hashlib.sha256(repr((asdict(cal), *extra, QUOTE_FEATURES, built)).encode() + code + reader
                          ).hexdigest()[:10]


def squad_rows(a, cal: Calibration, corpus) -> list[tuple]:
    v, questions, work, _ = corpus
    questions = questions[: a.questions]
    cache = work / f"quote-rows-{rows_key(cal, v, len(questions))}.pkl"
    if cache.exists():
        return pickle.loads(cache.read_bytes())
    rows: list[tuple] = []

    def row(cands, golds, present, i):  # the features read the question's words
        return quote_row(questions[i][0], cands, golds, present, i)

    whole_askings(v, questions, cal, cache, row=row, save=lambda _, new: rows.extend(new))
    cut_askings(questions, work, cal, cache, row=row, save=lambda _, new: rows.extend(new))
    cache.write_bytes(pickle.dumps(rows))
    return rows


def asked_rows(v, cal: Calibration, questions: list[tuple[str, list[str]]], first: int) -> list[tuple]:
    """Each (question, answers) asked over ``v``'s whole corpus (no answers: one it does not
    answer), numbered from ``first``."""
    idx, rows = v.index(), []
    for i, (q, answers) in enumerate(questions):
        if cands := ranked(v, idx, cal, q):
            rows.append(quote_row(q, cands, answers, 1 if answers else 3, first + i))
    return rows


def corpus_rows(path: Path, cal: Calibration) -> list[tuple]:
    """The askings of a question set over the shipped corpus."""
    v = Verbatim()
    v.ensure_index()
    return asked_rows(v, cal, [(q.question, q.answers) for q in load_jsonl(path)], 100_000)


def written_rows(path: Path, cal: Calibration, corpus) -> list[tuple]:
    """The ``quote-model`` part of ``path`` (``eval/written-squad-train.jsonl``: questions
    written the way people ask over SQuAD train paragraphs), each asked over the whole open
    corpus, which must hold every one of their paragraphs."""
    v, _, work, paras = corpus
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    lines = [q for q in lines if q["part"] == "quote-model"]
    data = json.loads(TRAIN.read_text())["data"]
    held = {p["context"] for _, p in paras}
    missing = sum(data[q["squad_train"]["article"]]["paragraphs"][q["squad_train"]["paragraph"]]["context"]
                  not in held for q in lines)
    if missing:
        sys.exit(f"{missing} of the {len(lines)} quote-model questions of {path} are over paragraphs this "
                 "corpus does not hold: they were written over the corpus of --paragraphs 800 --seed 7 "
                 "--exclude .cache/shipped-reader/used_question_ids.json")
    cache = work / f"written-rows-{rows_key(cal, v, path.read_bytes())}.pkl"
    if cache.exists():
        return pickle.loads(cache.read_bytes())
    rows = asked_rows(v, cal, [(q["question"], q["answers"]) for q in lines], 200_000)
    cache.write_bytes(pickle.dumps(rows))
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--paragraphs", type=int, default=PARAGRAPHS)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--questions", type=int, default=QUESTIONS, help="SQuAD train questions asked (3 times each)")
    ap.add_argument("--exclude", help="JSON list of question ids to keep out (the reader's training questions)")
    ap.add_argument("--l2", type=float, default=1.0)
    ap.add_argument("--people-share", type=float, default=0.8, help="weight of the people questions in the fit")
    ap.add_argument("--written", type=Path, help="questions written the way people ask over SQuAD train "
                    "paragraphs (eval/written-squad-train.jsonl); those over the corpus's paragraphs are fitted on")
    ap.add_argument("--written-share", type=float, default=0.1,
                    help="their weight in the fit (SQuAD's is what the people and written shares leave)")
    ap.add_argument("--written-in-bar", action="store_true", help="they join the choice of the answer bar")
    ap.add_argument("--drop", nargs="+", action="extend", default=[], choices=QUOTE_FEATURES, metavar="FEATURE",
                    help="fit without these features (to measure what one adds; not with --write)")
    ap.add_argument("--write", action="store_true")
    a = ap.parse_args()
    if a.drop and a.write:
        ap.error("--drop measures; the shipped model reads every feature")
    keep = [i for i, f in enumerate(QUOTE_FEATURES) if f not in a.drop]
    feats = tuple(QUOTE_FEATURES[i] for i in keep)
    if a.people_share + (a.written_share if a.written else 0) >= 1:
        ap.error("the people and written shares must leave SQuAD a share above 0")
    base = Calibration.load(quote_model=False)  # features are read in score order, without the model
    t = time.perf_counter()
    corpus = tune_corpus(a.paragraphs, a.seed, a.exclude)
    written = written_rows(a.written, base, corpus) if a.written else []  # first: it checks the corpus
    squad = squad_rows(a, base, corpus)
    people = corpus_rows(PEOPLE_TUNE, base)
    shipped = corpus_rows(SHIPPED_SET, base)
    print(f"{len(squad)} SQuAD train askings, {len(people)} people-tune questions, {len(written)} written over "
          f"train paragraphs; rows in {time.perf_counter() - t:.0f} s")
    askings = [("squad", r) for r in squad] + [("people", r) for r in people] + [("written", r) for r in written]
    n_by = {"squad": len(squad), "people": len(people), "written": len(written)}
    X = np.vstack([r[0] for _, r in askings])[:, keep]
    y = np.concatenate([r[1] for _, r in askings]).astype(float)
    per = np.array([len(r[1]) for _, r in askings])
    asking_of = np.repeat(np.arange(len(askings)), per)
    group = np.array([r[3] for _, r in askings])
    # each source weighs its share in all; within it, each asking the same
    share_of = {"people": a.people_share, "written": a.written_share if written else 0.0}
    share_of["squad"] = 1 - share_of["people"] - share_of["written"]
    w_ask = np.array([share_of[s] / max(n_by[s], 1) for s, _ in askings]) / per
    weight = np.repeat(w_ask, per) * len(X)
    fold = group[asking_of] % 5
    held = np.zeros(len(X))
    for k in range(5):
        m = NoAnswerModel.fit(X[fold != k], y[fold != k], l2=a.l2, weight=weight[fold != k], features=feats)
        held[fold == k] = m.probability(X[fold == k])
    starts = np.r_[0, np.cumsum(per)[:-1]]

    def summary(prob):
        """Per asking: (source, answerable, top candidate right, its probability, top-3 probabilities/labels)."""
        out = []
        for j, (src, r) in enumerate(askings):
            p = prob[starts[j]: starts[j] + per[j]]
            order = np.argsort(-p, kind="stable")
            out.append((src, r[2] == 1, bool(r[1][order[0]]), float(p[order[0]]),
                        [(float(p[o]), bool(r[1][o])) for o in order[:3]]))
        return out

    held_sum = summary(held)
    by_score = summary(-np.concatenate([np.arange(n) for n in per]).astype(float))  # score order
    for src in (x for x in ("squad", "people", "written") if n_by[x]):
        ans = [(h, s) for h, s in zip(held_sum, by_score) if h[0] == src and h[1]]
        print(f"  {src}: top-1 ranked by probability (5-fold) {np.mean([h[2] for h, _ in ans]):.3f}, "
              f"by score {np.mean([s[2] for _, s in ans]):.3f} ({len(ans)} askings with the answer present)")
    model = NoAnswerModel.fit(X, y, l2=a.l2, weight=weight, features=feats)
    # the shipped set is not fitted on; it joins the choice of the bar, as it always has
    held_sum += [("shipped", r[2] == 1, bool(r[1][o[0]]), float(pr[o[0]]), [])
                 for r in shipped for pr in [model.probability(r[0][:, keep])] for o in [np.argsort(-pr, kind="stable")]]
    share = round(float(np.mean([not q.answerable for q in load_jsonl(PEOPLE_TUNE)])), 4)
    in_bar = ("squad", "people", "shipped") + (("written",) if written and a.written_in_bar else ())
    sets = {src: [SimpleNamespace(answerable=h[1], best_contains=h[2], confidence=h[3])
                  for h in held_sum if h[0] == src] for src in in_bar}
    result = calibrate(sets, unanswerable_share=share, decline_wrong=True)
    bar = result["threshold"]
    print(f"answer bar {bar:.4f}: decision accuracy {result['per_dataset_accuracy']}, answered share "
          f"{result['answered_share']}, unanswerable declined {result['no_answer_recall']}")
    for src in ("squad", "people"):
        pairs = [pc for h in held_sum if h[0] == src for pc in h[4]]
        print(f"  {src}: expected calibration error of the top three quotes (5-fold) "
              f"{expected_calibration_error(pairs):.4f}")
    print("coefficients (standardised): " + ", ".join(f"{n} {c:+.2f}" for n, c in zip(feats, model.coef)))
    if a.write:
        how = (f"scripts/tune_quotes.py --paragraphs {a.paragraphs} --questions {a.questions} on "
               f"{time.strftime('%Y-%m-%d')}: logistic model on every candidate of {len(squad)} askings of SQuAD v1.1 "
               f"train questions (with their paragraph, without it, with the answer cut out) and the "
               f"{len(people)} questions of eval/people-tune.jsonl (weighing {a.people_share:.0%})"
               + (f" and {len(written)} of {a.written} (weighing {a.written_share:.0%})" if written else "")
               + "; answer bar "
               f"{bar:.4f} from their 5-fold probabilities and the shipped set's at a {share:.0%} share of unanswerable questions "
               f"(accuracy {result['per_dataset_accuracy']})")
        out = {**asdict(base), "quote_model": replace(model, how=how).to_dict(), "threshold": bar, "how": how}
        CALIBRATION_FILE.write_text(json.dumps(out, indent=2) + "\n")
        print(f"wrote {CALIBRATION_FILE}")


if __name__ == "__main__":
    main()
