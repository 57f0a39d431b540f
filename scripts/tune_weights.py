"""Tune the sentence-scoring weights on SQuAD v1.1 *train* (dev stays for evaluation).

    .venv/bin/python scripts/tune_weights.py [--paragraphs 400] [--seed 7]

A random sample of train paragraphs becomes an open corpus (indexed by the normal
pipeline, cached in .cache/tune/); every question of those paragraphs is asked and
the features of every candidate sentence are recorded (the reader's too, when its
weights are there). A grid search then picks the weights that put a sentence
containing a gold answer first most often (ties: the best mean reciprocal rank of the
first correct sentence). The weights are written to
qa/calibration.json (the threshold is left to `qa eval --calibrate`).

With --exclude FILE (the ids written by `scripts/train_reader.py used-ids`), only
paragraphs none of whose questions the reader learned from are sampled, so the
reader's weight is tuned on questions it has not seen.

With --no-answer (and the reader there), the no-answer model is fitted next, with the
weights then in qa/calibration.json: every question is asked three times, over the whole
sample; with its own paragraph left out of retrieval (a question the sources cannot
answer); and with its paragraph replaced by a copy whose sentences holding a gold answer
are cut out (one they touch on but do not answer; indexed apart, in index-cut/). A
logistic model learns from the best candidate's features (``answering.decision_features``)
whether it holds a gold answer. Its threshold is then chosen by `qa eval --calibrate`.
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import json
import random
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
from scipy.stats import mannwhitneyu

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from qa import Verbatim, answering, retrieval  # noqa: E402
from qa.answering import CALIBRATION_FILE, Calibration  # noqa: E402
from qa.config import REPO_ROOT, SQUAD_DIR, AskSettings  # noqa: E402
from qa.evaluate import contains_answer, file_hash  # noqa: E402
from qa.reader import MODEL_DIR as READER_DIR  # noqa: E402

TRAIN = SQUAD_DIR / "train-v1.1.json"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--paragraphs", type=int, default=400)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--write", action="store_true", help="store the best weights in qa/calibration.json")
    ap.add_argument("--exclude", help="JSON list of question ids to keep out (the reader's training questions)")
    ap.add_argument("--no-answer", action="store_true",
                    help="then fit the no-answer model (with the weights in qa/calibration.json)")
    a = ap.parse_args()
    v, questions, work, paras = tune_corpus(a.paragraphs, a.seed, a.exclude)
    reader = v.reader
    # features depend on the reader's weights: the cache is named by the weights file
    # (training steps alone do not name it: stages 1 and 3 both ran 900)
    tag = f"reader-{file_hash(READER_DIR / 'reader.int8.onnx')}" if reader else "no-reader"
    # ... and by the fusion, which ranks the passages read
    feats_file = work / f"features-{tag}-{_digest(v.calibration.fusion_weights)}.npz"
    if feats_file.exists():
        z = np.load(feats_file)
        F, OK = z["F"], z["OK"]
    else:
        idx = v.index()
        rows = []  # per question: list of (features, is_correct)
        for q, golds, *_ in questions:
            cands = ranked(v, idx, v.calibration, q)
            rows.append([((c.cos, c.lex, c.passage, c.typed, c.reader, c.reader_top),
                          contains_answer(c.sentence.text, golds)) for c in cands])
        width = max(len(r) for r in rows)
        F = np.full((len(rows), width, 6), -1e3, dtype=np.float32)  # padding never wins
        OK = np.zeros((len(rows), width), dtype=bool)
        for i, r in enumerate(rows):
            for j, (f, ok) in enumerate(r):
                F[i, j], OK[i, j] = f, ok
        np.savez(feats_file, F=F, OK=OK)
    print(f"a correct sentence is among the candidates for {OK.any(axis=1).mean():.3f} of questions")

    def top1(w):
        best = np.argmax(F @ np.asarray(w, dtype=np.float32), axis=1)
        return float(OK[np.arange(len(OK)), best].mean())

    def mrr(w):
        """Mean reciprocal rank of the first correct sentence (0 when none is a candidate)."""
        S = F @ np.asarray(w, dtype=np.float32)
        best_ok = np.where(OK, S, -np.inf).max(axis=1, keepdims=True)
        rank = 1 + (S > best_ok).sum(axis=1)
        return float(np.where(OK.any(axis=1), 1 / rank, 0).mean())

    readers = [0, 0.1, 0.2, 0.3, 0.5, 1] if reader else [0]
    results = []
    for wc, wl, wp, wt, wr, wrt in itertools.product(
            [x / 10 for x in range(3, 11)], [x / 10 for x in range(0, 11)], [0, 0.1, 0.2, 0.3],
            [0, 0.1, 0.2], readers, readers):
        results.append((top1((wc, wl, wp, wt, wr, wrt)), (wc, wl, wp, wt, wr, wrt)))
    # many weight sets tie on top-1; among those, the one that also ranks the correct
    # sentence highest where it is not first (mean reciprocal rank) generalises better
    top = max(score for score, _ in results)
    results.sort(key=lambda r: (r[0], mrr(r[1]) if r[0] == top else 0.0), reverse=True)
    print(f"{sum(score == top for score, _ in results)} weight sets tie at top-1 {top:.4f}; "
          "the one with the best MRR is chosen")
    cur = v.calibration
    cw = (cur.w_cos, cur.w_lex, cur.w_passage, cur.w_type, cur.w_reader, cur.w_reader_top)
    print(f"current weights {cw}: top-1 {top1(cw):.3f}, MRR {mrr(cw):.4f}")
    print(f"reader alone: margin {top1((0, 0, 0, 0, 1, 0)):.3f}, relative score {top1((0, 0, 0, 0, 0, 1)):.3f}; "
          f"best without the reader: {max(r[0] for r in results if r[1][4] == r[1][5] == 0):.3f}")
    for score, w in results[:5]:
        print(f"  w_cos={w[0]} w_lex={w[1]} w_passage={w[2]} w_type={w[3]} w_reader={w[4]} "
              f"w_reader_top={w[5]}: top-1 {score:.4f}, MRR {mrr(w):.4f}")
    best_score, best = results[0]
    # scale so that cosine and lexical weights sum to 1 (the threshold lives on that scale)
    s = best[0] + best[1]
    best = tuple(round(x / s, 4) for x in best)
    if a.write:
        cal = Calibration.load(quote_model=False)
        how = (f"scripts/tune_weights.py --paragraphs {a.paragraphs} --seed {a.seed} on "
               f"{time.strftime('%Y-%m-%d')}: grid search on {len(questions)} SQuAD v1.1 train questions "
               f"(open corpus of {len(paras)} train paragraphs); top-1 contains answer {best_score:.3f}")
        out = {**asdict(cal), "w_cos": best[0], "w_lex": best[1], "w_passage": best[2], "w_type": best[3],
               "w_reader": best[4], "w_reader_top": best[5], "weights_how": how}
        if Calibration.load().quote_model is not None:
            out["quote_model"] = json.loads(CALIBRATION_FILE.read_text())["quote_model"]
            print("the quote model reads these weights: refit it (scripts/tune_quotes.py --write)")
        CALIBRATION_FILE.write_text(json.dumps(out, indent=2) + "\n")
        print(f"wrote {CALIBRATION_FILE}: {best}")
    if a.no_answer and reader:
        fit_no_answer(v, questions, work, tag, a)


def _digest(x) -> str:
    return hashlib.sha256(repr(x).encode()).hexdigest()[:8]


def tune_corpus(paragraphs: int, seed: int, exclude: str | None):
    """The open corpus of ``paragraphs`` train paragraphs (sampled with ``seed``, none of whose
    questions are in ``exclude``), indexed; its questions as (question, golds, file name,
    paragraph, gold spans); the work folder; the paragraphs."""
    data = json.loads(TRAIN.read_text())["data"]
    paras = [(art["title"], p) for art in data for p in art["paragraphs"]]
    if exclude:
        used = set(json.loads(Path(exclude).read_text()))
        paras = [(t, p) for t, p in paras if not any(q["id"] in used for q in p["qas"])]
    random.Random(seed).shuffle(paras)
    paras = paras[:paragraphs]
    # the cache is named by the paragraphs it holds (another --exclude samples others)
    digest = hashlib.sha256("\n".join(p["context"] for _, p in paras).encode()).hexdigest()[:10]
    work = REPO_ROOT / ".cache" / "tune" / f"train-{paragraphs}-{seed}-{digest}"
    (work / "corpus").mkdir(parents=True, exist_ok=True)
    questions = []
    for i, (title, p) in enumerate(paras):
        f = work / "corpus" / f"p{i:05d}.txt"
        if not f.exists():
            f.write_text(p["context"])
        questions += [(q["question"], [x["text"] for x in q["answers"]], f.name, p["context"],
                       [(x["answer_start"], len(x["text"])) for x in q["answers"]]) for q in p["qas"]]
    # the candidates in score order: the quote model, when there is one, is not applied
    v = Verbatim(work / "corpus", work / "index", root=work, calibration=Calibration.load(quote_model=False))
    t = time.perf_counter()
    v.sync()
    print(f"{len(paras)} train paragraphs, {len(questions)} questions; index ready in {time.perf_counter() - t:.0f} s")
    return v, questions, work, paras


def ranked(v, idx, cal: Calibration, q: str, flt: retrieval.Filter = retrieval.Filter()) -> list:
    """The candidate sentences for ``q``, best first, from the top 8 passages ``flt`` allows,
    read as the app reads a question (``Verbatim.candidates``) with ``cal``."""
    return v.candidates(q, AskSettings(passages=8), flt, cal=cal, idx=idx)[1]


def doc_of(idx, name: str) -> str:
    """The document of a corpus file (files with equal texts share one)."""
    return next(iter(idx.doc_ids_for([name])))


# one row per asking: the best candidate's decision features, whether it holds a gold answer,
# the kind of asking (1 with its paragraph, 0 without, 2 with the answer cut out), the question
ROW_FIELDS = ("X", "y", "present", "group")


def save_rows(path: Path, rows: list[tuple]) -> None:
    np.savez(path, **{k: np.array([r[n] for r in rows]) for n, k in enumerate(ROW_FIELDS)})


def load_rows(path: Path) -> tuple[np.ndarray, ...]:
    z = np.load(path)
    return tuple(z[k] for k in ROW_FIELDS)


def decision_row(cands: list, golds: list[str], kind: int, i: int) -> tuple:
    return answering.decision_features(cands), contains_answer(cands[0].sentence.text, golds), kind, i


def whole_askings(v, questions, cal: Calibration, out: Path, row=None, save=None) -> None:
    """Each question over all the paragraphs, and with its own paragraph left out of
    retrieval (a question the sources cannot answer)."""
    idx = v.index()
    everything = frozenset(doc_of(idx, f.name) for f in v.corpus_dir.iterdir())
    rows = []
    t = time.perf_counter()
    for i, (q, golds, fname, *_) in enumerate(questions):
        for present, flt in ((1, retrieval.Filter()), (0, retrieval.Filter(doc_ids=everything - {doc_of(idx, fname)}))):
            if cands := ranked(v, idx, cal, q, flt):
                rows.append((row or decision_row)(cands, golds, present, i))
    print(f"features for {len(questions)} questions x 2 in {time.perf_counter() - t:.0f} s")
    (save or save_rows)(out, rows)


def cut_askings(questions, work: Path, cal: Calibration, out: Path, row=None, save=None) -> None:
    """A third asking of each question, like one the sources touch on but do not answer: its
    own paragraph replaced by a copy with the sentences that hold a gold answer cut out."""
    from qa.chunking import sentence_spans

    # one cut corpus per question list (its BM25 statistics depend on what it holds)
    tag = hashlib.sha256("\n".join(q[0] for q in questions).encode()).hexdigest()[:8]
    corpus = work / f"corpus-cut-{tag}"
    corpus.mkdir(exist_ok=True)
    for f in (work / "corpus").iterdir():  # the other paragraphs stay
        if not (corpus / f.name).exists():
            (corpus / f.name).write_bytes(f.read_bytes())
    cut_of = {}
    for i, (_, _, fname, context, spans) in enumerate(questions):
        kept = [context[s:e] for s, e in sentence_spans(context)
                if not any(s < a + n and a < e for a, n in spans)]
        if len(" ".join(kept).split()) >= 8:  # a paragraph left to read
            cut_of[i] = f"cut{i:05d}.txt"
            if not (corpus / cut_of[i]).exists():
                (corpus / cut_of[i]).write_text(" ".join(kept))
    v = Verbatim(corpus, work / f"index-cut-{tag}", root=work)
    t = time.perf_counter()
    v.sync()
    print(f"{len(cut_of)} paragraphs with the answer cut out; index ready in {time.perf_counter() - t:.0f} s")
    idx = v.index()
    paragraphs = frozenset(doc_of(idx, f.name) for f in (work / "corpus").iterdir())
    rows = []
    t = time.perf_counter()
    for i, fname in cut_of.items():
        q, golds, own = questions[i][:3]
        flt = retrieval.Filter(doc_ids=(paragraphs - {doc_of(idx, own)}) | {doc_of(idx, fname)})
        if cands := ranked(v, idx, cal, q, flt):
            rows.append((row or decision_row)(cands, golds, 2, i))
    print(f"features with the answer cut out, {len(rows)} questions in {time.perf_counter() - t:.0f} s")
    (save or save_rows)(out, rows)


def fit_no_answer(v, questions, work: Path, tag: str, a) -> None:
    cal = Calibration.load(quote_model=False)
    weights = (cal.w_cos, cal.w_lex, cal.w_passage, cal.w_type, cal.w_reader, cal.w_reader_top, cal.fusion_weights)
    whole_file = work / f"no-answer-{tag}-{hashlib.sha256(repr(weights).encode()).hexdigest()[:8]}.npz"
    cut_file = whole_file.with_name(whole_file.stem + "-cut.npz")
    if not whole_file.exists():
        whole_askings(v, questions, cal, whole_file)
    if not cut_file.exists():
        cut_askings(questions, work, cal, cut_file)
    X, y, present, group = (np.concatenate(pair) for pair in zip(load_rows(whole_file), load_rows(cut_file)))

    def auc(pos, neg):  # probability that a positive outranks a negative (ties: half)
        return mannwhitneyu(pos, neg).statistic / (len(pos) * len(neg))

    # five folds by question (all askings of a question in one fold): held-out logits
    fold = group % 5
    held = np.zeros(len(y))
    for k in range(5):
        held[fold == k] = answering.NoAnswerModel.fit(X[fold != k], y[fold != k]).logit(X[fold == k])
    right, absent, cut, wrong = (present == 1) & y, present == 0, present == 2, (present == 1) & ~y
    print(f"best sentence holds the answer: {y[present == 1].mean():.3f} with its paragraph, "
          f"{y[present == 0].mean():.3f} without, {y[cut].mean():.3f} with its answer cut out")
    aucs = {}  # signal -> AUC right vs paragraph left out, vs answer cut out, vs wrong sentence
    for name, s in (("score", X[:, 0]), ("no-answer model (5-fold)", held)):
        aucs[name] = [auc(s[right], s[absent]), auc(s[right], s[cut & ~y]), auc(s[right], s[wrong])]
        print(f"  {name}: AUC right vs paragraph left out {aucs[name][0]:.3f}, "
              f"vs answer cut out {aucs[name][1]:.3f}, right vs wrong sentence {aucs[name][2]:.3f}")
    model = answering.NoAnswerModel.fit(X, y)
    print("coefficients (standardised): " + ", ".join(
        f"{n} {c:+.3f}" for n, c in zip(answering.NO_ANSWER_FEATURES, model.coef)) + f", bias {model.bias:+.3f}")
    if a.write:
        how = (f"scripts/tune_weights.py --no-answer on {time.strftime('%Y-%m-%d')}: logistic model on "
               f"{len(y)} askings of {len(questions)} SQuAD v1.1 train questions, each with its paragraph, "
               f"without it, and with the sentences holding its answer cut out (open corpus of {a.paragraphs} "
               f"paragraphs); 5-fold AUC right vs left out {aucs['no-answer model (5-fold)'][0]:.3f}, vs cut "
               f"{aucs['no-answer model (5-fold)'][1]:.3f} (score alone {aucs['score'][0]:.3f}, {aucs['score'][1]:.3f})")
        out = {**json.loads(CALIBRATION_FILE.read_text()), "no_answer": replace(model, how=how).to_dict()}
        CALIBRATION_FILE.write_text(json.dumps(out, indent=2) + "\n")
        print(f"wrote the no-answer model to {CALIBRATION_FILE}; its threshold is stale until "
              "`qa eval --calibrate`")


if __name__ == "__main__":
    main()
