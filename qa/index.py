"""The index as questions read it: ``Index.load`` opens the live generation (its manifest,
content rows, FAISS and BM25). Storage is ``store.py``, the write path ``sync.py``, the dense
index ``dense.py``, BM25 ``sparse.py``.
"""

from __future__ import annotations

import functools
import json
import os
import sqlite3
import threading
import weakref
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

import numpy as np

from .errors import IndexMissing
from .types import Sentence, Source
from .dense import DenseChoice
from .sparse import Sparse
from .store import Manifest, connect, content_path, ends_with, hold_current


@dataclass
class Index:
    """A loaded, read-only generation of the index. Safe to share between threads."""

    gen_dir: Path
    manifest: dict
    dense: object  # faiss.Index
    sparse: Sparse
    _local: threading.local = field(default_factory=threading.local, repr=False)
    _docs: dict = field(default_factory=dict, repr=False)  # doc_id -> (text, pages, n_sentences)
    _docs_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _memo: dict = field(default_factory=dict, repr=False)  # key -> a value read from this generation

    _DOC_CACHE = 32  # documents kept in memory; a generation's texts never change
    _MEMO_SIZE = 4096  # values memo() keeps, the oldest dropped first

    @classmethod
    def load(cls, index_dir: Path) -> "Index":
        import faiss

        gen, held = hold_current(index_dir)
        try:
            manifest = Manifest.read(gen)
        except ValueError as err:
            os.close(held)
            raise IndexMissing(f"the index in {index_dir} cannot be used: {err}; run `qa index` to rebuild it") from None
        except BaseException:
            os.close(held)
            raise
        dense = faiss.read_index(str(gen / "dense.faiss"))
        choice = DenseChoice.from_manifest(manifest)
        if choice.kind == "ivf":
            ivf = faiss.extract_index_ivf(dense)
            ivf.nprobe = choice.nprobe
            ivf.parallel_mode = 1  # one question's lists are scanned on every core
        idx = cls(gen, manifest, dense, Sparse.load(gen))
        # the generation stays on disk while this object lives: its shared lock is released
        # when the last question holding it is done and it is collected
        weakref.finalize(idx, os.close, held)
        return idx

    @functools.cached_property
    def dense_choice(self) -> "DenseChoice":
        """Parsed once per loaded generation (retrieval reads it on every question)."""
        return DenseChoice.from_manifest(self.manifest)

    def db(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = connect(self.gen_dir, content_path(self.gen_dir.parent, self.manifest))
            self._local.conn = conn
        return conn

    # -- lookups used by retrieval and answering

    def sources(self, doc_ids: Iterable[str]) -> dict[str, Source]:
        ids = list(set(doc_ids))
        if not ids:
            return {}
        q = ",".join("?" * len(ids))
        rows = self.db().execute(
            f"SELECT doc_id, path, title, publisher, date, url, authors FROM paths "
            f"WHERE doc_id IN ({q}) ORDER BY path",
            ids,
        ).fetchall()
        out: dict[str, Source] = {}
        paths: dict[str, list[str]] = {}
        for doc_id, path, title, publisher, date, url, authors in rows:
            paths.setdefault(doc_id, []).append(path)
            if doc_id not in out:
                out[doc_id] = Source(
                    doc_id, path, title or "", publisher or "", date or "", url or "",
                    tuple(json.loads(authors or "[]")),
                )
        return {
            d: Source(**{**s.__dict__, "paths": tuple(paths[d])}) for d, s in out.items()
        }

    def _document(self, doc_id: str) -> tuple[str, list[int], int]:
        """(text, page starts, sentence count) of a document, cached per generation."""
        with self._docs_lock:
            hit = self._docs.pop(doc_id, None)
            if hit is not None:
                self._docs[doc_id] = hit  # most recently used last
                return hit
        row = self.db().execute(
            "SELECT text, pages, n_sentences FROM documents WHERE doc_id=?", (doc_id,)
        ).fetchone()
        if row is None:
            raise KeyError(doc_id)
        hit = (row[0], json.loads(row[1] or "[]"), int(row[2]))
        with self._docs_lock:
            self._docs[doc_id] = hit
            while len(self._docs) > self._DOC_CACHE:
                self._docs.pop(next(iter(self._docs)))
        return hit

    def memo(self, key, compute):
        """``compute()``, once per ``key`` for this generation: for facts read from its content
        (it never changes), such as how the corpus writes a name. Thread-safe; at worst two
        threads compute the same value."""
        with self._docs_lock:
            if key in self._memo:
                return self._memo[key]
        value = compute()
        with self._docs_lock:
            self._memo[key] = value
            while len(self._memo) > self._MEMO_SIZE:
                self._memo.pop(next(iter(self._memo)))
        return value

    def document_text(self, doc_id: str) -> str:
        return self._document(doc_id)[0]

    def pages(self, doc_id: str) -> list[int]:
        return self._document(doc_id)[1]

    def sentence_count(self, doc_id: str) -> int:
        return self._document(doc_id)[2]

    @property
    def term_idf(self) -> tuple[dict[str, float], float]:
        """BM25 idf of every (stemmed) term, and the idf of a term the corpus lacks."""
        return self.sparse.idf_table

    def chunk_vectors(self, chunk_ids: np.ndarray) -> np.ndarray:
        """The stored (fp16) vectors of ``chunk_ids``, in that order."""
        dim = self.manifest.dim
        ids = [int(c) for c in chunk_ids]
        rows = dict(self.db().execute(f"SELECT id, emb FROM chunks WHERE id IN ({','.join('?' * len(ids))})", ids))
        return np.array([np.frombuffer(rows[c], dtype=np.float16, count=dim) for c in ids],
                        dtype=np.float32).reshape(len(ids), dim)

    def best_sentence_cosines(self, chunk_ids: list[int], qvec: np.ndarray) -> dict[int, float]:
        """For each passage, the highest cosine of one of its sentences with ``qvec``."""
        dim = self.manifest.dim
        ids = [int(c) for c in chunk_ids]
        rows = self.db().execute(
            "SELECT c.id, s.emb FROM chunks c JOIN sentences s ON s.doc_id = c.doc_id "
            f"AND s.idx BETWEEN c.first_sentence AND c.last_sentence WHERE c.id IN ({','.join('?' * len(ids))})",
            ids).fetchall()
        if not rows:
            return {}
        vecs = np.frombuffer(b"".join(r[1] for r in rows), dtype=np.float16).reshape(len(rows), dim)
        cos = vecs.astype(np.float32) @ qvec.astype(np.float32)
        best: dict[int, float] = {}
        for (cid, _), c in zip(rows, cos.tolist()):
            if c > best.get(cid, -np.inf):
                best[cid] = c
        return best

    def chunk_ids(self) -> list[int]:
        """Ids of the passages this generation holds, ascending."""
        return [r[0] for r in self.db().execute(
            "SELECT id FROM chunks WHERE doc_id IN (SELECT doc_id FROM paths) ORDER BY id")]

    def chunks(self, chunk_ids: list[int]) -> dict[int, tuple]:
        if not chunk_ids:
            return {}
        q = ",".join("?" * len(chunk_ids))
        rows = self.db().execute(
            f'SELECT id, doc_id, start, "end", first_sentence, last_sentence FROM chunks '
            f"WHERE id IN ({q})",
            [int(c) for c in chunk_ids],
        ).fetchall()
        return {r[0]: r[1:] for r in rows}

    def sentences(self, doc_id: str, first: int, last: int) -> list[tuple[int, Sentence, np.ndarray]]:
        """Sentences ``first..last`` (inclusive) of a document with their vectors."""
        text = self.document_text(doc_id)
        rows = self.db().execute(
            'SELECT idx, start, "end", kind, emb FROM sentences '
            "WHERE doc_id=? AND idx BETWEEN ? AND ? ORDER BY idx",
            (doc_id, first, last),
        ).fetchall()
        dim = self.manifest.dim
        return [
            (
                idx,
                Sentence(doc_id, s, e, text[s:e], kind),
                np.frombuffer(emb, dtype=np.float16, count=dim).astype(np.float32),
            )
            for idx, s, e, kind, emb in rows
        ]

    def sentences_by_position(self, doc_id: str, first: int, last: int) -> dict[int, Sentence]:
        """Sentences ``first..last`` (inclusive) of a document by position, without vectors."""
        text = self.document_text(doc_id)
        rows = self.db().execute(
            'SELECT idx, start, "end", kind FROM sentences WHERE doc_id=? AND idx BETWEEN ? AND ? ORDER BY idx',
            (doc_id, first, last),
        ).fetchall()
        return {idx: Sentence(doc_id, s, e, text[s:e], kind) for idx, s, e, kind in rows}

    def documents(self) -> list[dict]:
        rows = self.db().execute(
            "SELECT d.doc_id, d.n_chunks, d.n_sentences, length(d.text) FROM documents d "
            "WHERE d.doc_id IN (SELECT doc_id FROM paths)"  # the content store is shared
        ).fetchall()
        srcs = self.sources([r[0] for r in rows])
        out = []
        for doc_id, n_chunks, n_sent, n_chars in rows:
            s = srcs[doc_id]
            out.append({**s.to_dict(), "passages": n_chunks, "sentences": n_sent, "chars": n_chars})
        out.sort(key=lambda d: d["path"])
        return out

    def paths_named(self, selector: str) -> list[str]:
        """The indexed paths a path or file name names (not every copy of the same text)."""
        rows = self.db().execute("SELECT path FROM paths WHERE path=? OR path LIKE ? ESCAPE '\\'",
                                 (selector, ends_with(selector))).fetchall()
        return sorted(r[0] for r in rows)

    def doc_ids_for(self, selectors: Iterable[str]) -> set[str]:
        """Resolve doc ids or paths (or path suffixes) to doc ids."""
        out: set[str] = set()
        for sel in selectors:
            rows = self.db().execute(
                "SELECT doc_id FROM paths WHERE doc_id=? OR path=? OR path LIKE ? ESCAPE '\\'",
                (sel, sel, ends_with(sel)),
            ).fetchall()
            out.update(r[0] for r in rows)
        return out
