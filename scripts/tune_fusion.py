"""Fit the retrieval fusion on SQuAD v1.1 *train*; report it on a SQuAD file (dev stays unseen).

    .venv/bin/python scripts/tune_fusion.py [--paragraphs 2000] [--seed 7] [--write]
    .venv/bin/python scripts/tune_fusion.py --report ../shared/data/squad/dev-v1.1.json --limit 2000 --seed 13

Fitting: whole train articles, drawn at random until they hold ``--paragraphs`` paragraphs,
become an open corpus (indexed by the normal pipeline, cached in .cache/tune/): like the dev
set, many paragraphs share a topic, which is what makes finding the right one hard; for every question of those paragraphs both retrievers'
candidate lists are fetched once, then each dense share ``alpha`` of the convex fusion
(``retrieval.convex``) is scored by how often the question's own paragraph is ranked first
(strict hit@1; ties: MRR@10). With --write the best ``alpha`` goes to qa/calibration.json.

Reporting: the same figures for BM25 alone, dense alone, RRF and the convex fusion with the
stored ``alpha``, on a SQuAD file's paragraphs as one corpus (``qa eval --squad-corpus``'s
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

from qa import Verbatim, retrieval  # noqa: E402
from qa.answering import CALIBRATION_FILE, Calibration  # noqa: E402
from qa.config import REPO_ROOT, AskSettings  # noqa: E402
from qa.evaluate import sample, squad_service  # noqa: E402

TRAIN = REPO_ROOT.parent / "shared" / "data" / "squad" / "train-v1.1.json"
ALPHAS = [round(x / 20, 2) for x in range(21)]


def candidate_lists(v: Verbatim, questions: list[tuple[str, str]]) -> list[tuple]:
    """Per question: (own doc id, dense hits, BM25 hits, the doc/start of every hit)."""
    idx = v.index()
    cfg = AskSettings()
    doc_of = {}
    out = []
    for q, fname in questions:
        if fname not in doc_of:
            doc_of[fname] = next(iter(idx.doc_ids_for([fname])))
        qvec = v.query_encoder.encode_queries([q])[0]
        n = cfg.candidates
        dense = retrieval._cut(*retrieval.dense_search(idx, qvec, n + retrieval.TIE_SLACK, None), n)
        bm25 = retrieval._cut(*retrieval.bm25_search(idx, q, n + retrieval.TIE_SLACK, None), n)
        rows = idx.chunks(list(set(dense[0]) | set(bm25[0])))
        out.append((doc_of[fname], dense, bm25, {c: (r[0], r[1]) for c, r in rows.items()}))
    return out


def own_rank(fused: dict[int, float], where: dict[int, tuple], own: str) -> int | None:
    """Rank of the first passage of the question's own document, ordered as ``retrieve`` orders."""
    order = sorted(fused, key=lambda c: (-fused[c], *where[c]))
    for i, c in enumerate(order[:10], 1):
        if where[c][0] == own:
            return i
    return None


def score(lists: list[tuple], fusion) -> tuple[float, float]:
    """Strict hit@1 and MRR@10 of a fusion (a function of the dense and BM25 hits)."""
    ranks = [own_rank(fusion(d, b), where, own) for own, d, b, where in lists]
    return (float(np.mean([r == 1 for r in ranks])),
            float(np.mean([1 / r if r else 0.0 for r in ranks])))


def fusions(alpha: float | None) -> dict:
    none = ([], [])
    out = {"bm25": lambda d, b: retrieval.fuse(none, b),
           "dense": lambda d, b: retrieval.fuse(d, none),
           "rrf": lambda d, b: retrieval.fuse(d, b)}
    if alpha is not None:
        out[f"convex alpha={alpha}"] = lambda d, b: retrieval.fuse(d, b, alpha=alpha)
    return out


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
    for alpha in ALPHAS:
        h, m = score(lists, lambda d, b: retrieval.fuse(d, b, alpha=alpha))
        results.append((h, m, alpha))
        hm, mm = score(lists, lambda d, b: retrieval.fuse(d, b, alpha=alpha, norm="max"))
        print(f"  convex alpha={alpha:<5} hit@1 {h:.4f}  MRR@10 {m:.4f}   (norm max: {hm:.4f} {mm:.4f})")
    h, m, alpha = max(results)
    print(f"best: alpha={alpha} (hit@1 {h:.4f}, MRR@10 {m:.4f})")
    if a.write:
        cal = Calibration.load()
        how = (f"scripts/tune_fusion.py --paragraphs {a.paragraphs} --seed {a.seed} on {time.strftime('%Y-%m-%d')}: "
               f"grid over alpha on {len(questions)} SQuAD v1.1 train questions (open corpus of {len(paras)} train "
               f"paragraphs); own paragraph first {h:.4f}, MRR@10 {m:.4f}")
        out = {**asdict(cal), "fusion_alpha": alpha, "fusion_how": how}
        CALIBRATION_FILE.write_text(json.dumps(out, indent=2) + "\n")
        print(f"wrote {CALIBRATION_FILE}")


def report(a) -> None:
    path = Path(a.report)
    v, questions, _ = squad_service(path, log=print)
    questions = [q for q in sample(questions, a.limit, a.seed) if q.answers]
    lists = candidate_lists(v, [(q.question, Path(q.source).name) for q in questions])
    print(f"{path.name}: {len(questions)} questions (seed {a.seed}), own paragraph ranked first / MRR@10:")
    for name, f in fusions(Calibration.load().fusion_alpha).items():
        h, m = score(lists, f)
        print(f"  {name:<18} hit@1 {h:.4f}  MRR@10 {m:.4f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--paragraphs", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--limit", type=int, help="a sample of this many questions")
    ap.add_argument("--write", action="store_true", help="store the best alpha in qa/calibration.json")
    ap.add_argument("--report", help="a SQuAD file: report the fusions on it (nothing fitted)")
    a = ap.parse_args()
    report(a) if a.report else fit(a)


if __name__ == "__main__":
    main()
