"""The dense index: which FAISS index holds the passage vectors, how it is built and tuned.

Exact search up to EXACT_MAX passages; above, an IVF index whose nprobe is tuned at build time to
reach RECALL_TARGET recall@10 against exact search, its candidates re-ranked with the stored
vectors (``refine``).
"""

from __future__ import annotations

import math
import sqlite3
from dataclasses import dataclass, replace

import numpy as np



EXACT_MAX = 50_000  # passages searched exactly; above this an IVF index is built


RECALL_TARGET = 0.99  # recall@10 against exact search that nprobe is tuned to reach


@dataclass(frozen=True)
class DenseChoice:
    """Which FAISS index holds the passage vectors, and how it was tuned.

    Exact search (a flat inner-product scan) is used up to EXACT_MAX passages:
    at 50k x 384 dimensions one scan takes a few milliseconds. Above that an IVF
    index with 8-bit scalar-quantised vectors (a quarter of the memory, and a
    quarter of the bytes a probe scans) is trained on the stored vectors, with about
    4*sqrt(n) lists. Quantisation alone costs recall (its rounding reorders close
    scores), so the top REFINE candidates are re-ranked exactly with the stored
    vectors (see ``refine``). ``nprobe`` is the smallest power of two whose recall@10
    against exact search, measured on 300 stored sentences used as queries (see
    ``tune_nprobe``), reaches RECALL_TARGET. An IVF index takes additions and
    removals; it is retrained when the collection has grown 4-fold since training
    or shrunk below EXACT_MAX / 2.
    """

    kind: str = "flat"  # flat | ivf
    nlist: int = 0
    nprobe: int = 0
    trained_on: int = 0
    recall_at_10: float = 1.0
    codec: str = "SQ8"  # how an IVF index stores vectors (FAISS factory name)

    @property
    def factory(self) -> str:
        return "Flat" if self.kind == "flat" else f"IVF{self.nlist},{self.codec}"

    @property
    def refines(self) -> bool:
        return self.kind == "ivf" and self.codec != "Flat"

    def describe(self) -> str:
        if self.kind == "flat":
            return "IndexIDMap2(IndexFlatIP) (exact)"
        rerank = f", top {REFINE} re-ranked exactly" if self.refines else ""
        return (f"{self.factory} inner product{rerank}, nprobe {self.nprobe}, "
                f"recall@10 vs exact {self.recall_at_10:.3f} (trained on {self.trained_on:,})")

    def to_dict(self) -> dict:
        return dict(self.__dict__)

    @classmethod
    def from_manifest(cls, manifest) -> "DenseChoice":
        """The choice a generation's ``Manifest`` records (the default without one)."""
        d = manifest.dense if manifest is not None else None
        return cls(**d) if isinstance(d, dict) else cls()

    @classmethod
    def for_size(cls, n: int, current: "DenseChoice | None") -> "DenseChoice":
        """The choice to use for ``n`` passages: ``current`` when it still fits."""
        if current is not None and current.kind == "ivf":
            if EXACT_MAX // 2 <= n <= 4 * current.trained_on:
                return current
        elif n <= EXACT_MAX:
            return current if current is not None else cls()
        if n <= EXACT_MAX:
            return cls()
        return cls("ivf", nlist=nlist(n))


def nlist(n: int) -> int:
    return int(2 ** round(math.log2(4 * math.sqrt(n))))


def stored_vectors(conn: sqlite3.Connection, dim: int) -> tuple[np.ndarray, np.ndarray]:
    """(chunk ids, vectors) of the passages the connection's generation holds."""
    held = " WHERE doc_id IN (SELECT doc_id FROM paths)"
    n = conn.execute("SELECT count(*) FROM chunks" + held).fetchone()[0]
    ids = np.empty(n, dtype=np.int64)
    vecs = np.empty((n, dim), dtype=np.float32)
    for i, (cid, emb) in enumerate(conn.execute("SELECT id, emb FROM chunks" + held + " ORDER BY id")):
        ids[i] = cid
        vecs[i] = np.frombuffer(emb, dtype=np.float16, count=dim)
    return ids, vecs


def build_dense(conn: sqlite3.Connection, dim: int, choice: DenseChoice):
    """A new dense index over every passage vector the generation holds, per ``choice``."""
    import faiss

    ids, vecs = stored_vectors(conn, dim)
    if choice.kind == "flat":
        dense = faiss.IndexIDMap2(faiss.IndexFlatIP(dim))
        if ids.size:
            dense.add_with_ids(vecs, ids)
        return dense, DenseChoice()
    dense = faiss.index_factory(dim, choice.factory, faiss.METRIC_INNER_PRODUCT)
    rng = np.random.default_rng(0)
    train = vecs[rng.choice(len(vecs), size=min(len(vecs), 64 * choice.nlist), replace=False)]
    dense.train(train)
    dense.add_with_ids(vecs, ids)
    faiss.extract_index_ivf(dense).parallel_mode = 1
    queries = _tuning_queries(conn, dim, rng)
    if len(queries) < 50:  # too few sentences: passages stand in
        queries = vecs[rng.choice(len(vecs), size=min(300, len(vecs)), replace=False)]
    choice = DenseChoice("ivf", choice.nlist, 0, len(vecs), 0.0, choice.codec)
    nprobe, recall = tune_nprobe(dense, choice, vecs, ids, queries)
    return dense, replace(choice, nprobe=nprobe, recall_at_10=round(recall, 4))


REFINE = 40  # candidates a quantised index returns, re-ranked with the stored vectors


def refine(ids: np.ndarray, vectors: np.ndarray, qvec: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The best ``k`` of candidate ``ids`` by exact inner product with their ``vectors``."""
    scores = vectors @ qvec
    order = np.argsort(-scores, kind="stable")[:k]
    return ids[order], scores[order]


def _tuning_queries(conn: sqlite3.Connection, dim: int, rng, sample: int = 300) -> np.ndarray:
    """Stored body sentences of held documents, at random: queries that behave like questions.

    A sentence sits near, not on, its passage, and its exact neighbours spread over
    IVF cells as a question's do (measured at 1M passages: recall against nprobe
    follows the bench's real questions within 0.04). Noise added to stored passage
    vectors imitated them worse; stored passages as queries overstated recall.
    """
    lo, hi = conn.execute("SELECT min(id), max(id) FROM sentences").fetchone()
    if lo is None:
        return np.zeros((0, dim), dtype=np.float32)
    pick = rng.choice(np.arange(lo, hi + 1), size=min(4 * sample, hi - lo + 1), replace=False)
    rows = conn.execute(
        f"SELECT emb FROM sentences WHERE id IN ({','.join(map(str, pick.tolist()))}) "
        "AND kind='body' AND doc_id IN (SELECT doc_id FROM paths) ORDER BY id").fetchall()[:sample]
    q = np.array([np.frombuffer(r[0], dtype=np.float16, count=dim) for r in rows], dtype=np.float32)
    q = q.reshape(-1, dim)
    norms = np.linalg.norm(q, axis=1, keepdims=True)
    return np.ascontiguousarray(q[norms[:, 0] > 0] / norms[norms[:, 0] > 0])


def tune_nprobe(dense, choice: DenseChoice, vecs: np.ndarray, ids: np.ndarray, queries: np.ndarray,
                k: int = 10) -> tuple[int, float]:
    """Smallest power-of-two nprobe whose recall@k against exact search >= RECALL_TARGET,
    searching as retrieval does (with the exact re-ranking when the index is quantised)."""
    import faiss

    exact = faiss.IndexFlatIP(vecs.shape[1])
    exact.add(vecs)
    _, rows = exact.search(queries, k)
    truth = ids[rows]
    del exact
    ivf = faiss.extract_index_ivf(dense)
    best = (ivf.nlist, 1.0)
    for nprobe in (2 ** i for i in range(1, 16)):
        if nprobe >= ivf.nlist:
            break
        ivf.nprobe = nprobe
        _, cand = dense.search(queries, max(k, REFINE) if choice.refines else k)
        if choice.refines:  # ids are ascending in ``ids``: rows by binary search
            got = np.full((len(queries), k), -1, dtype=np.int64)
            for i, (c, q) in enumerate(zip(cand, queries)):
                c = c[c >= 0]
                top, _ = refine(c, vecs[np.searchsorted(ids, c)], q, k)
                got[i, : len(top)] = top
        else:
            got = cand
        recall = recall_at_k(truth, got, k)
        if recall >= RECALL_TARGET:
            best = (nprobe, recall)
            break
    ivf.nprobe = best[0]
    return best


def recall_at_k(truth: np.ndarray, got: np.ndarray, k: int) -> float:
    """Share of the true top-k (rows of ``truth``) found in the rows of ``got``."""
    hits = sum(len(set(t[:k].tolist()) & set(g.tolist())) for t, g in zip(truth, got))
    return hits / float(truth.shape[0] * k)
