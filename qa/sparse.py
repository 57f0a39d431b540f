"""The BM25 side of the index: a bm25s base segment plus a small delta segment.

bm25s precomputes its score matrix in one pass and cannot add or delete
documents, and rebuilding it costs seconds per 100k passages (tokenising and
stemming every passage again). So a generation holds:

    bm25/              bm25s index of the *base* passages (hard-linked, not copied,
                       from one generation to the next while the base is unchanged)
    bm25_ids.npy       base row -> chunk id
    bm25_delta.json    passages added since the base was built (chunk ids and their
                       tokens), chunk ids of base passages deleted since, base avgdl

Delta passages are scored with the same formula as bm25s' default (Lucene BM25,
k1 = 1.5, b = 0.75) and corpus-wide statistics (document frequency of base plus
delta, the base's average length), so a new article ranks as it would after a
rebuild; deleted base passages are masked out of the base's results. When the
delta and the deletions together exceed REBUILD_SHARE of the base, or the base
is smaller than MIN_BASE passages (where a rebuild takes well under a second),
the next sync rebuilds the base from all passages.
"""

from __future__ import annotations

import functools
import json
import math
import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

K1, B = 1.5, 0.75
MIN_BASE = 20_000
REBUILD_SHARE = 0.10


@functools.lru_cache(maxsize=1)
def _stemmer():
    import Stemmer

    return Stemmer.Stemmer("english")


def tokenize(texts: list[str]) -> list[list[str]]:
    """bm25s tokenisation: lower case, English stopwords out, Snowball-stemmed."""
    import bm25s

    return bm25s.tokenize(
        texts, stopwords="en", stemmer=_stemmer(), return_ids=False, show_progress=False
    )


@dataclass
class Sparse:
    """A loaded BM25 segment pair. Read-only; safe to share between threads."""

    base: object | None  # bm25s.BM25
    base_ids: np.ndarray
    base_avgdl: float
    delta_ids: np.ndarray
    delta_tokens: list[list[str]]
    deleted: np.ndarray  # chunk ids of base passages no longer live

    @classmethod
    def load(cls, gen: Path) -> "Sparse":
        import bm25s

        base = None
        ids = np.zeros(0, dtype=np.int64)
        if (gen / "bm25" / "params.index.json").exists():
            base = bm25s.BM25.load(str(gen / "bm25"), mmap=False, show_progress=False)
            ids = np.load(gen / "bm25_ids.npy")
        d = json.loads((gen / "bm25_delta.json").read_text()) if (gen / "bm25_delta.json").exists() else {}
        return cls(
            base, ids, float(d.get("base_avgdl", 1.0)),
            np.asarray(d.get("ids", []), dtype=np.int64), d.get("tokens", []),
            np.asarray(d.get("deleted", []), dtype=np.int64),
        )

    # -- statistics

    @functools.cached_property
    def _base_df(self) -> np.ndarray:
        if self.base is None:
            return np.zeros(0, dtype=np.int64)
        return np.diff(np.asarray(self.base.scores["indptr"]))

    @functools.cached_property
    def _base_mask(self) -> np.ndarray | None:
        if not self.deleted.size:
            return None
        return (~np.isin(self.base_ids, self.deleted)).astype(np.float32)

    @functools.cached_property
    def _postings(self) -> tuple[dict[str, tuple[np.ndarray, np.ndarray]], np.ndarray]:
        """term -> (delta rows, term frequencies); and the delta passages' lengths."""
        rows: dict[str, list[int]] = {}
        tfs: dict[str, list[int]] = {}
        for r, toks in enumerate(self.delta_tokens):
            for t, c in Counter(toks).items():
                rows.setdefault(t, []).append(r)
                tfs.setdefault(t, []).append(c)
        post = {t: (np.asarray(rows[t]), np.asarray(tfs[t], dtype=np.float32)) for t in rows}
        lens = np.asarray([len(t) for t in self.delta_tokens], dtype=np.float32)
        return post, lens

    @property
    def size(self) -> int:
        """Live passages."""
        return int(self.base_ids.size - self.deleted.size + self.delta_ids.size)

    def live_ids(self) -> set[int]:
        return (set(self.base_ids.tolist()) - set(self.deleted.tolist())) | set(self.delta_ids.tolist())

    def df(self, term: str) -> int:
        n = 0
        if self.base is not None:
            i = self.base.vocab_dict.get(term)
            if i is not None and i < self._base_df.size:
                n += int(self._base_df[i])
        hit = self._postings[0].get(term)
        return n + (hit[0].size if hit is not None else 0)

    def idf(self, df: int) -> float:
        n = max(self.size, 1)
        return math.log(1.0 + (n - df + 0.5) / (df + 0.5))

    @functools.cached_property
    def idf_table(self) -> tuple[dict[str, float], float]:
        """idf of every known term, and the idf of a term the corpus lacks."""
        terms = set(self._postings[0])
        if self.base is not None:
            terms |= {t for t, i in self.base.vocab_dict.items() if i < self._base_df.size}
        return {t: self.idf(self.df(t)) for t in terms}, self.idf(0)

    # -- search

    def search(self, tokens: list[str], k: int, allowed: np.ndarray | None) -> tuple[list[int], list[float]]:
        """Top ``k`` live passages for the query tokens: (chunk ids, scores), best first."""
        ids: list[np.ndarray] = []
        scores: list[np.ndarray] = []
        if self.base is not None and self.base_ids.size and any(t in self.base.vocab_dict for t in tokens):
            mask = self._base_mask
            if allowed is not None:
                keep = np.isin(self.base_ids, allowed).astype(np.float32)
                mask = keep if mask is None else mask * keep
            n = int(self.base_ids.size if mask is None else np.count_nonzero(mask))
            if n:
                rows, sc = self.base.retrieve([tokens], k=min(k, n), show_progress=False, weight_mask=mask)
                ids.append(self.base_ids[rows[0]])
                scores.append(np.asarray(sc[0], dtype=np.float32))
        if self.delta_ids.size:
            sc = self._delta_scores(tokens)
            if allowed is not None:
                sc = sc * np.isin(self.delta_ids, allowed)
            top = np.argsort(-sc, kind="stable")[:k]
            ids.append(self.delta_ids[top])
            scores.append(sc[top])
        if not ids:
            return [], []
        all_ids, all_sc = np.concatenate(ids), np.concatenate(scores)
        order = np.argsort(-all_sc, kind="stable")[:k]
        keep = order[all_sc[order] > 0]
        return all_ids[keep].tolist(), all_sc[keep].tolist()

    def _delta_scores(self, tokens: list[str]) -> np.ndarray:
        post, lens = self._postings
        idf = self.idf_table[0]
        out = np.zeros(self.delta_ids.size, dtype=np.float32)
        norm = K1 * (1 - B + B * lens / max(self.base_avgdl, 1e-9))
        for t in set(tokens):
            hit = post.get(t)
            if hit is None:
                continue
            rows, tf = hit
            out[rows] += idf[t] * tf / (norm[rows] + tf)
        return out


# --------------------------------------------------------------------------- writing


def write_full(gen: Path, chunks: list[tuple[int, str]]) -> dict:
    """A new base over every passage; empty delta. Returns the manifest entry."""
    import bm25s

    ids = np.asarray([c[0] for c in chunks], dtype=np.int64)
    np.save(gen / "bm25_ids.npy", ids)
    avgdl = 1.0
    if chunks:
        tokens = tokenize([c[1] for c in chunks])
        avgdl = float(np.mean([len(t) for t in tokens])) or 1.0
        retriever = bm25s.BM25(k1=K1, b=B)
        retriever.index(tokens, show_progress=False)
        retriever.save(str(gen / "bm25"), show_progress=False)
    _write_delta(gen, {"base_avgdl": avgdl, "ids": [], "tokens": [], "deleted": []})
    return {"base": int(ids.size), "delta": 0, "deleted": 0}


def needs_full(live: Sparse | None, added: int, removed: int) -> bool:
    if live is None or live.base is None:
        return True
    base = int(live.base_ids.size)
    if base < MIN_BASE:
        return True
    changed = live.delta_ids.size + live.deleted.size + added + removed
    return changed > REBUILD_SHARE * base


def write_delta(gen: Path, live_gen: Path, live: Sparse, added: list[tuple[int, str]],
                removed_ids: list[int]) -> dict:
    """Reuse the live base (hard links); carry the delta forward with this change."""
    (gen / "bm25").mkdir()
    for p in (live_gen / "bm25").iterdir():
        os.link(p, gen / "bm25" / p.name)
    os.link(live_gen / "bm25_ids.npy", gen / "bm25_ids.npy")
    gone = set(int(i) for i in removed_ids)
    keep = [(int(i), t) for i, t in zip(live.delta_ids.tolist(), live.delta_tokens) if int(i) not in gone]
    new_tokens = tokenize([t for _, t in added]) if added else []
    keep += [(int(i), t) for (i, _), t in zip(added, new_tokens)]
    base = set(live.base_ids.tolist())
    deleted = sorted(set(live.deleted.tolist()) | {i for i in gone if i in base})
    _write_delta(gen, {"base_avgdl": live.base_avgdl, "ids": [i for i, _ in keep],
                       "tokens": [t for _, t in keep], "deleted": deleted})
    return {"base": int(live.base_ids.size), "delta": len(keep), "deleted": len(deleted)}


def _write_delta(gen: Path, data: dict) -> None:
    (gen / "bm25_delta.json").write_text(json.dumps(data, separators=(",", ":")))
