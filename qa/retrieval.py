"""Retrieval stage: dense (FAISS) and BM25 candidates, fused.

Two fusions: reciprocal rank fusion (``rrf``), which reads only ranks, and a convex
combination of scores (``convex``), each signal min-max normalised over its own candidate
list, a passage missing from a list getting 0 from it. The convex fusion reads three
signals: the passage vector's cosine (FAISS), BM25, and the best cosine of any one of the
passage's sentences with the question (``sentence_max``: computed for the union of the two
retrievers' candidates from the stored sentence vectors; a question about one fact matches
its sentence more sharply than a four-sentence passage). RRF throws away how far ahead a
retriever's first hit is, which pushes right BM25 top hits down. The convex weights are
fitted on SQuAD v1.1 *train* (``scripts/tune_fusion.py``) and stored in
``qa/calibration.json`` (``fusion_weights``: dense, BM25, sentence).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable

import numpy as np

from .corpus import is_calendar_date
from .errors import BadQuestion
from .dense import REFINE, refine
from .index import Index
from .sparse import tokenize as bm25_tokenize
from .types import Passage


@dataclass(frozen=True)
class Filter:
    """Restrict retrieval to some documents and/or a date range (ISO strings, inclusive)."""

    doc_ids: frozenset[str] | None = None
    date_from: str = ""
    date_to: str = ""

    def __post_init__(self) -> None:
        for name in ("date_from", "date_to"):
            v = getattr(self, name)
            if v and not is_calendar_date(v):
                raise BadQuestion(f"dates must be real dates written like 2024-08-23, 2024-08 or 2024 (got {v!r})")

    @property
    def active(self) -> bool:
        return self.doc_ids is not None or bool(self.date_from or self.date_to)


_LINK = ("of", "the", "and", "for", "on", "in", "de", "du", "des", "la", "le")  # inside a name, not initials
_NAME = re.compile(rf"[A-Z][\w'’.-]*(?:\s+(?:(?:{'|'.join(_LINK)})\s+)*[A-Z][\w'’.-]*)+")
ACRONYM_WORDS = 8  # the longest name read as an acronym
ACRONYM_PASSAGES = 10  # read to tell whether the corpus writes an acronym or its name


def _initials(word: str) -> str:
    """A word's part of an acronym: its initial, or the letters of a dotted one ("U.S." -> "US")."""
    return "".join(c for c in word if c.isupper()) if "." in word.rstrip(".") else word[0].upper()


def acronyms(question: str, used: Callable[[str, str], bool]) -> list[tuple[str, str]]:
    """(acronym, name) for the acronyms that names of ``question`` abbreviate and that ``used``
    says the corpus uses, in question order: people write "Christian Solidarity Worldwide" where
    an article, after spelling it out once, writes "CSW". Every run of capitalised words is
    tried (link words such as "of" and "for" skipped: "United Nations High Commissioner for
    Refugees" -> "UNHCR"), and each shorter run inside it, but not from the question's first
    word ("Which Germans") and not for two letters (too many mean something else). A question in
    capitals has no names to tell apart: none."""
    if not any(c.islower() for c in question):
        return []
    out: list[tuple[str, str]] = []
    for m in _NAME.finditer(question):
        words = m.group(0).split()
        for i in range(1 if m.start() == 0 else 0, len(words)):  # "Which Germans" is no name
            for j in range(min(len(words), i + ACRONYM_WORDS), i + 1, -1):
                run = words[i:j]
                if run[0].lower() in _LINK or run[-1].lower() in _LINK:
                    continue
                acr = "".join(_initials(w) for w in run if w.lower() not in _LINK)
                if (3 <= len(acr) <= 7 and acr not in (a for a, _ in out)
                        and not re.search(rf"\b{acr}\b", question) and used(acr, " ".join(run))):
                    out.append((acr, " ".join(run)))
    return out


def read_with_acronyms(index: Index, question: str) -> tuple[str, tuple[tuple[str, str], ...]]:
    """``question`` with the acronyms its names abbreviate in this corpus in brackets after it,
    and those (acronym, name) pairs: retrieval and the reader then find "CSW" in a sentence for
    the question's "Christian Solidarity Worldwide", and the quote model counts either as the
    other (``answering.candidates``). An acronym counts only where the corpus writes it in
    capitals ("WHO" for "World Health Organization" is not the word "who"), and where it is
    the corpus's usual form: written at least as often as the name, in the passages BM25 ranks
    first for each. An article that spells a name out once and then abbreviates it is the case
    this is for; one that writes "Doctor Who" throughout is better searched with the question's
    own words. A question naming none is returned as it is."""
    def written(pattern: re.Pattern, query: str) -> int:
        ids, _ = bm25_search(index, query, ACRONYM_PASSAGES, None)
        rows = index.chunks(ids)
        return sum(len(pattern.findall(index.document_text(r[0])[r[1]:r[2]])) for r in rows.values())

    def usual(acr: str, name: str) -> bool:
        tokens = bm25_tokenize([acr])[0]
        if len(tokens) != 1 or index.sparse.df(tokens[0]) == 0:
            return False
        short = written(re.compile(rf"\b{acr}\b"), acr)
        return short > 0 and short >= written(re.compile(r"\s+".join(map(re.escape, name.split())), re.I), name)

    def used(acr: str, name: str) -> bool:  # a fact about the generation: read once per name
        return index.memo(("acronym", acr, name), lambda: usual(acr, name))

    found = tuple(acronyms(question, used))
    return (f"{question} ({', '.join(a for a, _ in found)})" if found else question), found


def allowed_chunk_ids(index: Index, flt: Filter) -> np.ndarray | None:
    """Chunk ids passing the filter, or None when there is no filter."""
    if not flt.active:
        return None
    sql = "SELECT c.id FROM chunks c WHERE 1=1"
    args: list = []
    if flt.doc_ids is not None:
        ids = sorted(flt.doc_ids)
        sql += f" AND c.doc_id IN ({','.join('?' * len(ids))})" if ids else " AND 0"
        args += ids
    if flt.date_from or flt.date_to:
        # a document passes if any of its paths carries a date in range;
        # partial dates (YYYY, YYYY-MM) compare by their first day / last day
        sql += " AND c.doc_id IN (SELECT doc_id FROM paths WHERE date != ''"
        if flt.date_from:
            sql += " AND (date || '-99-99') >= ?"
            args.append(flt.date_from)
        if flt.date_to:  # up to the last day of a partial bound: --date-to 2018 keeps 2018-10-01
            sql += " AND date <= (? || '-99-99')"
            args.append(flt.date_to)
        sql += ")"
    rows = index.db().execute(sql, args).fetchall()
    return np.asarray([r[0] for r in rows], dtype=np.int64)


EXACT_FILTERED_MAX = 20_000  # a filter this narrow is searched exactly on an IVF index


def dense_search(index: Index, qvec: np.ndarray, k: int, allowed: np.ndarray | None):
    import faiss

    n = index.dense.ntotal
    if n == 0 or k <= 0:
        return [], []
    params = None
    choice = index.dense_choice
    if allowed is not None:
        if allowed.size == 0:
            return [], []
        k = min(k, int(allowed.size))
        sel = faiss.IDSelectorBatch(allowed)
        if choice.kind == "ivf":
            # the nprobe lists nearest the question may hold none of a few selected
            # documents: a narrow filter scans every list (the selector skips the other
            # vectors before any distance is computed; quantised candidates are then
            # re-ranked exactly below)
            nprobe = choice.nlist if allowed.size <= EXACT_FILTERED_MAX else 4 * choice.nprobe
            params = faiss.SearchParametersIVF(sel=sel, nprobe=min(nprobe, choice.nlist))
        else:
            params = faiss.SearchParameters(sel=sel)
    k = min(k, n)
    q = qvec.reshape(1, -1).astype(np.float32)
    scores, ids = index.dense.search(q, max(k, REFINE) if choice.refines else k, params=params)
    keep = ids[0] >= 0
    ids, scores = ids[0][keep], scores[0][keep]
    if choice.refines:  # quantised scores reorder close hits: re-rank with the stored vectors
        ids, scores = refine(ids, index.chunk_vectors(ids), q[0], k)
    return ids.tolist(), scores.tolist()


def bm25_search(index: Index, question: str, k: int, allowed: np.ndarray | None):
    if allowed is not None and allowed.size == 0:
        return [], []
    return index.sparse.search(bm25_tokenize([question])[0], k, allowed)


def rrf(rankings: list[list[int]], k: int = 60, scores: list[list[float]] | None = None) -> dict[int, float]:
    """Reciprocal rank fusion: sum over rankings of 1 / (k + rank), rank from 1.

    With ``scores`` (best first, beside each ranking) equal scores share a rank (the
    best one), so how a tie happens to be ordered inside an index (which depends on
    the order documents were added) does not change the fused result.
    """
    fused: dict[int, float] = {}
    for r, ranking in enumerate(rankings):
        for cid, rank in ranks(ranking, scores[r] if scores is not None else None).items():
            fused[cid] = fused.get(cid, 0.0) + 1.0 / (k + rank)
    return fused


Hits = tuple[list[int], list[float]]  # chunk ids best first, their scores


def convex(lists: list[Hits], weights: list[float]) -> dict[int, float]:
    """The weighted sum of each list's min-max normalised scores; a hit missing from a list
    gets 0 from it (it scored below that list's last hit). A list whose scores are all
    equal gives each of its hits 1."""
    fused: dict[int, float] = {}
    for (ids, scores), w in zip(lists, weights):
        if not ids:
            continue
        hi, lo = max(scores), min(scores)
        for cid, sc in zip(ids, scores):
            norm = (sc - lo) / (hi - lo) if hi > lo else 1.0
            fused[cid] = fused.get(cid, 0.0) + w * norm
    return fused


def fuse(dense: Hits, bm25: Hits, rrf_k: int = 60, weights: tuple[float, ...] | None = None,
         sentence: Hits = ([], [])) -> dict[int, float]:
    """The fused score of every hit: convex with ``weights`` (dense, BM25, sentence), or RRF
    of the dense and BM25 ranks when there are none."""
    if weights is None:
        return rrf([dense[0], bm25[0]], rrf_k, [dense[1], bm25[1]])
    return convex([dense, bm25, sentence], list(weights))


def sentence_max(index: Index, chunk_ids: list[int], qvec: np.ndarray) -> Hits:
    """Each passage's best sentence cosine with the question, best first."""
    if not chunk_ids:
        return [], []
    best = index.best_sentence_cosines(chunk_ids, qvec)
    order = sorted(best, key=lambda c: (-best[c], c))
    return order, [best[c] for c in order]


def hybrid_lists(index: Index, question: str, qvec: np.ndarray, candidates: int, allowed: np.ndarray | None,
                 mode: str = "hybrid", sentences: bool = True) -> tuple[Hits, Hits, Hits]:
    """The dense, BM25 and (in hybrid mode, with ``sentences``) sentence-cosine hits."""
    dense: Hits = ([], [])
    bm25: Hits = ([], [])
    if mode in ("hybrid", "dense"):
        dense = _cut(*dense_search(index, qvec, candidates + TIE_SLACK, allowed), candidates)
    if mode in ("hybrid", "bm25"):
        bm25 = _cut(*bm25_search(index, question, candidates + TIE_SLACK, allowed), candidates)
    sent: Hits = ([], [])
    if mode == "hybrid" and sentences:
        sent = sentence_max(index, sorted(set(dense[0]) | set(bm25[0])), qvec)
    return dense, bm25, sent


def ranks(ids: list[int], scores: list[float] | None = None) -> dict[int, int]:
    """Rank (from 1) of each hit of a best-first list; tied scores share the best rank."""
    out: dict[int, int] = {}
    rank = 0
    for i, cid in enumerate(ids):
        if scores is None or i == 0 or scores[i] != scores[i - 1]:
            rank = i + 1
        out[cid] = rank
    return out


TIE_SLACK = 8  # extra hits fetched so that ties at the cut are kept whole


def _cut(ids: list[int], scores: list[float], k: int) -> tuple[list[int], list[float]]:
    """The first ``k`` hits, plus any after them tied with the k-th score: which of
    several equal hits an index returns first is not part of the answer."""
    n = min(k, len(ids))
    while 0 < n < len(ids) and scores[n] == scores[n - 1]:
        n += 1
    return ids[:n], scores[:n]


def retrieve(
    index: Index,
    question: str,
    qvec: np.ndarray,
    top: int = 8,
    candidates: int = 50,
    mode: str = "hybrid",
    rrf_k: int = 60,
    flt: Filter = Filter(),
    weights: tuple[float, ...] | None = None,
) -> list[Passage]:
    """Top passages for ``question``, best first, each with scores and its source.

    ``weights``: of a convex fusion (dense, BM25, sentence); None fuses by RRF (``rrf_k``)."""
    allowed = allowed_chunk_ids(index, flt)
    (d_ids, d_scores), (b_ids, b_scores), sent = hybrid_lists(
        index, question, qvec, candidates, allowed, mode, sentences=weights is not None and weights[2] > 0)
    fused = fuse((d_ids, d_scores), (b_ids, b_scores), rrf_k, weights, sent)
    d_rank, b_rank = ranks(d_ids, d_scores), ranks(b_ids, b_scores)
    d_score = dict(zip(d_ids, d_scores))
    b_score = dict(zip(b_ids, b_scores))
    # equal fused scores are ordered by document and position, not by chunk id (ids
    # depend on the order of updates; a clean build must answer the same)
    rows = index.chunks(list(fused))
    best = sorted(rows, key=lambda c: (-fused[c], rows[c][0], rows[c][1]))[:top]
    sources = index.sources(r[0] for r in rows.values())
    out = []
    for cid in best:
        doc_id, start, end, first, last = rows[cid]
        text = index.document_text(doc_id)[start:end]
        out.append(
            Passage(
                chunk_id=cid, doc_id=doc_id, start=start, end=end, text=text,
                score=fused[cid], dense_score=d_score.get(cid), bm25_score=b_score.get(cid),
                dense_rank=d_rank.get(cid), bm25_rank=b_rank.get(cid), source=sources[doc_id],
                first_sentence=first, last_sentence=last,
            )
        )
    return out
