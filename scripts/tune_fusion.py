"""Fit the retrieval fusion on SQuAD v1.1 *train*; report it on a SQuAD file (dev stays unseen).

    .venv/bin/python scripts/tune_fusion.py [--paragraphs 2000] [--seed 7] [--write]
    .venv/bin/python scripts/tune_fusion.py --rerank --exclude .cache/shipped-reader/used_question_ids.json
    .venv/bin/python scripts/tune_fusion.py --report ../shared/data/squad/dev-v1.1.json --limit 2000 --seed 13 --rerank

Fitting: whole train articles, drawn at random until they hold ``--paragraphs`` paragraphs,
become an open corpus (indexed by the normal pipeline, cached in .cache/tune/): like the dev
set, many paragraphs share a topic, which is what makes finding the right one hard. For a
sample of their questions the three signals' lists (``retrieval.hybrid_lists``) are fetched
once, then each weighting (dense, BM25, sentence) of the convex fusion on a grid is scored
by how often the question's own paragraph is ranked first (strict hit@1; ties: MRR@10).
With --write the best weights go to qa/calibration.json.

Re-ranking (--rerank --exclude IDS): the passages the answerer reads, ranked again by their fused
score plus a weight times their best candidate sentence's probability (``answering.rerank``). It
is scored where neither model has learned: the 800 train paragraphs the reader was kept from
(``tune_weights.tune_corpus``, IDS as for ``scripts/tune_quotes.py``), on their questions after the
first 1,200 (those the quote model is fitted on). Each question is read once with the shipped
calibration; the weights on a grid are scored from those readings. ``answering.RERANK_WEIGHT`` is
set by hand from what it prints.

Reporting: the same figures for BM25 alone, dense alone, sentence alone, RRF and the convex fusion with the
stored weights, on a SQuAD file's paragraphs as one corpus (``qa eval --squad-corpus``'s
cached index), for a seeded sample of its questions. Nothing is fitted there.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import sys
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from qa import Verbatim, answering, retrieval  # noqa: E402
from qa.answering import CALIBRATION_FILE, Calibration  # noqa: E402
from qa.config import REPO_ROOT, SQUAD_DIR, AskSettings  # noqa: E402
from qa.evaluate import sample, squad_service  # noqa: E402
from tune_quotes import PARAGRAPHS as HELD_OUT_PARAGRAPHS, QUESTIONS as QUOTE_FIT_QUESTIONS  # noqa: E402
from tune_weights import tune_corpus  # noqa: E402

TRAIN = SQUAD_DIR / "train-v1.1.json"
STEP = 0.05
RERANK_GRID = (0.0, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0)
# dense, BM25, sentence weights summing to 1 (BM25 at least 0.05: the only exact-word signal)
GRID = [(round(d * STEP, 2), round(1 - (d + s) * STEP, 2), round(s * STEP, 2))
        for d in range(0, 21) for s in range(0, 21) if d + s <= 19]


def candidate_lists(v: Verbatim, questions: list[tuple[str, str]]) -> list[tuple]:
    """Per question: (own doc id, dense hits, BM25 hits, sentence hits, the doc/start of every hit)."""
    idx = v.index()
    doc_of = {}
    out = []
    for q, fname in questions:
        if fname not in doc_of:
            doc_of[fname] = next(iter(idx.doc_ids_for([fname])))
        qvec = v.query_encoder.encode_queries([q])[0]
        dense, bm25, sent = retrieval.hybrid_lists(idx, q, qvec, AskSettings().candidates, None)
        rows = idx.chunks(sent[0])
        out.append((doc_of[fname], dense, bm25, sent, {c: (r[0], r[1]) for c, r in rows.items()}))
    return out


def read_lists(v: Verbatim, questions: list[tuple[str, str]]) -> list[tuple]:
    """Per question: (own doc id, the passages as answers leave them, the answerer's candidates),
    read with the shipped calibration. The passages come re-ranked at ``RERANK_WEIGHT``; that is no
    matter: ``answering.rerank`` orders by a key that does not depend on the order given."""
    idx, cal = v.index(), Calibration.load()
    out = []
    for q, fname in questions:
        passages, cands, _ = v.candidates(q, AskSettings(), retrieve=10, cal=cal, idx=idx)
        out.append((next(iter(idx.doc_ids_for([fname]))), passages, cands))
    return out


def rerank_score(lists: list[tuple], weight: float) -> tuple[float, float]:
    """Strict hit@1 and MRR@10 with the passages read ranked again at ``weight``."""
    ranks = []
    for own, passages, cands in lists:
        order = answering.rerank(passages, cands, AskSettings().passages, weight)
        ranks.append(next((i for i, p in enumerate(order[:10], 1) if p.doc_id == own), None))
    return hit_mrr(ranks)


def hit_mrr(ranks: list[int | None]) -> tuple[float, float]:
    """Strict hit@1 and MRR@10 of the own paragraph's ranks (None: not in the first 10)."""
    return (float(np.mean([r == 1 for r in ranks])),
            float(np.mean([1 / r if r else 0.0 for r in ranks])))


def own_rank(fused: dict[int, float], where: dict[int, tuple], own: str) -> int | None:
    """Rank of the first passage of the question's own document, ordered as ``retrieve`` orders."""
    order = sorted(fused, key=lambda c: (-fused[c], *where[c]))
    for i, c in enumerate(order[:10], 1):
        if where[c][0] == own:
            return i
    return None


def score(lists: list[tuple], fusion) -> tuple[float, float]:
    """Strict hit@1 and MRR@10 of a fusion (a function of the dense, BM25 and sentence hits)."""
    return hit_mrr([own_rank(fusion(d, b, s), where, own) for own, d, b, s, where in lists])


def fusions(weights) -> dict:
    none = ([], [])
    out = {"bm25": lambda d, b, s: retrieval.fuse(none, b),
           "dense": lambda d, b, s: retrieval.fuse(d, none),
           "sentence": lambda d, b, s: retrieval.fuse(none, none, weights=(0, 0, 1), sentence=s),
           "rrf": lambda d, b, s: retrieval.fuse(d, b)}
    if weights is not None:
        out[f"convex {tuple(weights)}"] = lambda d, b, s: retrieval.fuse(d, b, weights=weights, sentence=s)
    return out


def fit_rerank(a) -> None:
    v, questions, _, _ = tune_corpus(HELD_OUT_PARAGRAPHS, a.seed, a.exclude)
    questions = [(q, fname) for q, _, fname, _, _ in questions[QUOTE_FIT_QUESTIONS:]]
    questions = sample(questions, a.limit, a.seed) if a.limit else questions
    t = time.perf_counter()
    lists = read_lists(v, questions)
    print(f"{len(questions)} questions read in {time.perf_counter() - t:.0f} s; passages read ranked again, "
          "own paragraph first / MRR@10:")
    for w in RERANK_GRID:
        h, m = rerank_score(lists, w)
        print(f"  weight {w:<5} hit@1 {h:.4f}  MRR@10 {m:.4f}")


def fit(a) -> None:
    data = json.loads(TRAIN.read_text())["data"]
    random.Random(a.seed).shuffle(data)
    paras = []
    for art in data:
        if len(paras) >= a.paragraphs:
            break
        paras += art["paragraphs"]
    digest = hashlib.sha256("\n".join(p["context"] for p in paras).encode()).hexdigest()[:10]
    work = REPO_ROOT / ".cache" / "tune" / f"fusion-articles-{a.paragraphs}-{a.seed}-{digest}"
    (work / "corpus").mkdir(parents=True, exist_ok=True)
    questions = []
    for i, p in enumerate(paras):
        f = work / "corpus" / f"p{i:05d}.txt"
        if not f.exists():
            f.write_text(p["context"])
        questions += [(q["question"], f.name) for q in p["qas"]]
    questions = sample([*questions], a.limit, a.seed) if a.limit else questions
    v = Verbatim(work / "corpus", work / "index", root=work)
    t = time.perf_counter()
    v.sync()
    print(f"{len(paras)} train paragraphs, {len(questions)} questions; index ready in {time.perf_counter() - t:.0f} s")
    t = time.perf_counter()
    lists = candidate_lists(v, questions)
    print(f"candidate lists in {time.perf_counter() - t:.0f} s")
    for name, f in fusions(None).items():
        h, m = score(lists, f)
        print(f"  {name:<18} hit@1 {h:.4f}  MRR@10 {m:.4f}")
    results = []
    for w in GRID:
        h, m = score(lists, lambda d, b, s: retrieval.fuse(d, b, weights=w, sentence=s))
        results.append((h, m, w))
    results.sort(reverse=True)
    for h, m, w in results[:8]:
        print(f"  convex {w}: hit@1 {h:.4f}  MRR@10 {m:.4f}")
    for w in ((0.5, 0.5, 0.0), (0.0, 0.5, 0.5)):
        h, m = score(lists, lambda d, b, s: retrieval.fuse(d, b, weights=w, sentence=s))
        print(f"  convex {w}: hit@1 {h:.4f}  MRR@10 {m:.4f}")
    h, m, w = results[0]
    print(f"best: weights (dense, BM25, sentence) {w} (hit@1 {h:.4f}, MRR@10 {m:.4f})")
    if a.write:
        cal = Calibration.load()
        how = (f"scripts/tune_fusion.py --paragraphs {a.paragraphs} --seed {a.seed} on {time.strftime('%Y-%m-%d')}: "
               f"grid over the weights on {len(questions)} SQuAD v1.1 train questions (open corpus of "
               f"{len(paras)} train paragraphs, whole articles); own paragraph first {h:.4f}, MRR@10 {m:.4f}")
        out = {**asdict(cal), "fusion_weights": list(w), "fusion_how": how}
        if cal.quote_model is not None:
            print("the quote model reads the fused scores: refit it (scripts/tune_quotes.py --write)")
        CALIBRATION_FILE.write_text(json.dumps(out, indent=2) + "\n")
        print(f"wrote {CALIBRATION_FILE}")


def report(a) -> None:
    path = Path(a.report)
    v, questions, _ = squad_service(path, log=print)
    questions = [q for q in sample(questions, a.limit, a.seed) if q.answers]
    lists = candidate_lists(v, [(q.question, Path(q.source).name) for q in questions])
    print(f"{path.name}: {len(questions)} questions (seed {a.seed}), own paragraph ranked first / MRR@10:")
    for name, f in fusions(Calibration.load().fusion_weights).items():
        h, m = score(lists, f)
        print(f"  {name:<18} hit@1 {h:.4f}  MRR@10 {m:.4f}")
    if a.rerank:  # read as answers read (acronyms too): the weight 0 line is their retrieval alone
        read = read_lists(v, [(q.question, Path(q.source).name) for q in questions])
        for w in (0.0, answering.RERANK_WEIGHT):
            h, m = rerank_score(read, w)
            print(f"  {f'read, weight {w}':<18} hit@1 {h:.4f}  MRR@10 {m:.4f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--paragraphs", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--limit", type=int, help="a sample of this many questions")
    ap.add_argument("--write", action="store_true", help="store the best weights in qa/calibration.json")
    ap.add_argument("--report", help="a SQuAD file: report the fusions on it (nothing fitted)")
    ap.add_argument("--rerank", action="store_true",
                    help="score the re-ranking weights (with --report: report the stored one too)")
    ap.add_argument("--exclude", help="with --rerank: JSON list of the reader's training question ids")
    a = ap.parse_args()
    if a.rerank and not a.report and (a.write or not a.exclude):
        ap.error("--rerank scores on the paragraphs the reader never saw: give --exclude; the weight is "
                 "set by hand (no --write)")
    report(a) if a.report else fit_rerank(a) if a.rerank else fit(a)


if __name__ == "__main__":
    main()
