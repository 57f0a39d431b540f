"""Index stage: SQLite (documents, sentences, chunks, metadata) + FAISS + BM25, on disk.

Layout of an index folder::

    embeddings/
      CURRENT            name of the live generation, replaced atomically
      .lock              held (flock) by the one process writing
      content-000002.sqlite
                         documents, sentences (+ vectors), chunks: rows keyed by
                         content (doc ids are content hashes, chunk ids never reused),
                         shared by the generations (WAL, so readers never wait)
      gen-000007/
        store.sqlite     paths (with metadata): which documents this generation holds
        dense.faiss      passage vectors, inner product; ids are chunk ids. Exact
                         (IndexIDMap2(IndexFlatIP)) up to EXACT_MAX passages, IVF
                         above, its nprobe tuned at build time (see DenseChoice)
        bm25/, bm25_ids.npy, bm25_delta.json
                         BM25: a bm25s base segment plus a delta (see sparse.py)
        manifest.json    settings, model, library versions, counts

A sync never changes what the live generation sees. It copies the small paths
store into a new generation and applies the change there; new documents' rows
are *added* to the shared content store (invisible to the live generation,
whose paths, FAISS and BM25 never name them); it writes the dense and sparse
indexes, then switches CURRENT with ``os.replace``. Rows of documents that left
the index stay until the next sync (a reader still answering from the previous
generation can finish), which deletes every content row the live generation
does not hold. A crash at any point leaves the previous generation live;
leftovers are removed by the next sync. A rebuild (new model or settings)
writes a new content store.
"""

from __future__ import annotations

import fcntl
import functools
import json
import math
import os
import shutil
import sqlite3
import threading
import time
import weakref
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Iterable

import numpy as np

from . import chunking, corpus, sparse
from .config import IndexSettings
from .embeddings import Encoder
from .errors import BadDocument, IndexBusy, IndexMissing
from .types import Document, Metadata, Sentence, Source

SCHEMA_VERSION = 5
_SCHEMA = """
CREATE TABLE paths (
  path TEXT PRIMARY KEY, doc_id TEXT NOT NULL,
  title TEXT, publisher TEXT, date TEXT, url TEXT, authors TEXT, furniture TEXT, stamp TEXT
);
CREATE INDEX paths_doc ON paths(doc_id);
"""
_CONTENT_SCHEMA = """
CREATE TABLE documents (
  doc_id TEXT PRIMARY KEY, text TEXT NOT NULL, n_sentences INTEGER, n_chunks INTEGER, pages TEXT
);
CREATE TABLE sentences (
  id INTEGER PRIMARY KEY AUTOINCREMENT, doc_id TEXT NOT NULL, idx INTEGER NOT NULL,
  start INTEGER NOT NULL, "end" INTEGER NOT NULL, kind TEXT NOT NULL, emb BLOB NOT NULL
);
CREATE UNIQUE INDEX sentences_doc ON sentences(doc_id, idx);
CREATE TABLE chunks (
  id INTEGER PRIMARY KEY AUTOINCREMENT, doc_id TEXT NOT NULL,
  start INTEGER NOT NULL, "end" INTEGER NOT NULL, first_sentence INTEGER, last_sentence INTEGER,
  emb BLOB NOT NULL
);
CREATE INDEX chunks_doc ON chunks(doc_id);
"""


def connect(gen_dir: Path, content: Path, readonly: bool = True) -> sqlite3.Connection:
    """A connection to a generation's paths store with the content store attached.

    The two hold different tables, so queries name them unqualified and join across.
    """
    ro = "?mode=ro" if readonly else ""
    conn = sqlite3.connect(f"file:{gen_dir / 'store.sqlite'}{ro}", uri=True, check_same_thread=False)
    conn.execute("ATTACH DATABASE ? AS content", (f"file:{content}{ro}",))
    return conn


def content_path(index_dir: Path, manifest: dict) -> Path:
    return index_dir / manifest["content"]

Progress = Callable[[str], None]


def _versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    out: dict = {"schema": SCHEMA_VERSION}
    for pkg in ("faiss-cpu", "bm25s", "sentence-transformers"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            pass
    return out


from .sparse import Sparse, tokenize as bm25_tokenize  # noqa: E402  (re-exported)


# --------------------------------------------------------------------------- lock


class WriteLock:
    """An exclusive flock on ``index_dir/.lock``; the kernel drops it if the holder dies."""

    def __init__(self, index_dir: Path, wait: bool = True, on_wait: Progress | None = None):
        self.path = index_dir / ".lock"
        self.wait = wait
        self.on_wait = on_wait
        self._fh = None

    def __enter__(self) -> "WriteLock":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fh = open(self.path, "a+")
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.seek(0)
            holder = fh.read().strip() or "another process"
            if not self.wait:
                fh.close()
                raise IndexBusy(
                    f"the index at {self.path.parent} is being updated by {holder}; try again shortly"
                )
            if self.on_wait:
                self.on_wait(f"waiting for {holder} to finish updating the index…")
            fcntl.flock(fh, fcntl.LOCK_EX)
        fh.seek(0)
        fh.truncate()
        fh.write(f"pid {os.getpid()}")
        fh.flush()
        self._fh = fh
        return self

    def __exit__(self, *exc) -> None:
        assert self._fh is not None
        self._fh.seek(0)
        self._fh.truncate()
        fcntl.flock(self._fh, fcntl.LOCK_UN)
        self._fh.close()


# --------------------------------------------------------------------------- reading


def current_generation(index_dir: Path) -> Path | None:
    try:
        name = (index_dir / "CURRENT").read_text().strip()
    except (FileNotFoundError, NotADirectoryError):
        return None
    gen = index_dir / name
    if not name.startswith("gen-") or not (gen / "manifest.json").exists():
        return None
    return gen


def _ends_with(name: str) -> str:
    """A LIKE pattern for paths ending in "/name", the name's own % and _ taken literally."""
    return "%/" + name.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def built_with(index_dir: Path) -> str | None:
    """The embedding model of the live generation (its manifest), or None without one."""
    gen = current_generation(index_dir)
    try:
        return json.loads((gen / "manifest.json").read_text()).get("model") if gen else None
    except (OSError, ValueError):
        return None


def index_is_current(index_dir: Path) -> bool:
    """An index exists and was written with this version's schema."""
    gen = current_generation(index_dir)
    if gen is None:
        return False
    try:
        return json.loads((gen / "manifest.json").read_text()).get("schema") == SCHEMA_VERSION
    except (OSError, ValueError):
        return False


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

    _DOC_CACHE = 32  # documents kept in memory; a generation's texts never change

    @classmethod
    def load(cls, index_dir: Path) -> "Index":
        import faiss

        gen, held = _hold_current(index_dir)
        try:
            manifest = json.loads((gen / "manifest.json").read_text())
        except BaseException:
            os.close(held)
            raise
        if manifest.get("schema") != SCHEMA_VERSION:
            raise IndexMissing(
                f"the index in {index_dir} was built by another version of Verbatim; "
                "run `qa index` to rebuild it"
            )
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
        dim = int(self.manifest["dim"])
        ids = [int(c) for c in chunk_ids]
        rows = dict(self.db().execute(f"SELECT id, emb FROM chunks WHERE id IN ({','.join('?' * len(ids))})", ids))
        return np.array([np.frombuffer(rows[c], dtype=np.float16, count=dim) for c in ids],
                        dtype=np.float32).reshape(len(ids), dim)

    def best_sentence_cosines(self, chunk_ids: list[int], qvec: np.ndarray) -> dict[int, float]:
        """For each passage, the highest cosine of one of its sentences with ``qvec``."""
        dim = int(self.manifest["dim"])
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
        dim = int(self.manifest["dim"])
        return [
            (
                idx,
                Sentence(doc_id, s, e, text[s:e], kind),
                np.frombuffer(emb, dtype=np.float16, count=dim).astype(np.float32),
            )
            for idx, s, e, kind, emb in rows
        ]

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
                                 (selector, _ends_with(selector))).fetchall()
        return sorted(r[0] for r in rows)

    def doc_ids_for(self, selectors: Iterable[str]) -> set[str]:
        """Resolve doc ids or paths (or path suffixes) to doc ids."""
        out: set[str] = set()
        for sel in selectors:
            rows = self.db().execute(
                "SELECT doc_id FROM paths WHERE doc_id=? OR path=? OR path LIKE ? ESCAPE '\\'",
                (sel, sel, _ends_with(sel)),
            ).fetchall()
            out.update(r[0] for r in rows)
        return out


# --------------------------------------------------------------------------- writing


@dataclass
class SyncReport:
    added: list[str] = field(default_factory=list)  # paths whose text is new to the index
    changed: list[str] = field(default_factory=list)  # paths whose text changed
    removed: list[str] = field(default_factory=list)  # paths no longer in the corpus
    renamed: list[tuple[str, str]] = field(default_factory=list)
    metadata_updated: list[str] = field(default_factory=list)
    unchanged: int = 0
    skipped: list[str] = field(default_factory=list)  # one-line reasons
    warnings: list[str] = field(default_factory=list)
    rebuilt_reason: str = ""
    chunks_embedded: int = 0
    sentences_embedded: int = 0
    seconds: float = 0.0
    generation: str = ""

    @property
    def changed_anything(self) -> bool:
        return bool(
            self.added or self.changed or self.removed or self.renamed
            or self.metadata_updated or self.rebuilt_reason
        )

    def summary(self) -> str:
        parts = [
            f"{len(self.added)} added", f"{len(self.changed)} changed",
            f"{len(self.removed)} removed", f"{self.unchanged} unchanged",
        ]
        if self.renamed:
            parts.append(f"{len(self.renamed)} renamed")
        if self.metadata_updated:
            parts.append(f"{len(self.metadata_updated)} with new metadata")
        if self.skipped:
            parts.append(f"{len(self.skipped)} skipped")
        return ", ".join(parts)


def _meta_row(meta: Metadata, furniture) -> tuple:
    return (
        meta.title, meta.publisher, meta.date, meta.url, json.dumps(list(meta.authors)),
        json.dumps([[s.start, s.end] for s in furniture]),
    )


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _new_gen_name(index_dir: Path) -> str:
    nums = [int(p.name[4:]) for p in index_dir.glob("gen-*") if p.name[4:].isdigit()]
    return f"gen-{max(nums, default=0) + 1:06d}"


def _new_content_name(index_dir: Path) -> str:
    nums = [int(p.name[8:14]) for p in index_dir.glob("content-*.sqlite") if p.name[8:14].isdigit()]
    return f"content-{max(nums, default=0) + 1:06d}.sqlite"


def _hold_current(index_dir: Path) -> tuple[Path, int]:
    """The live generation and an open descriptor holding a shared lock on it (its manifest):
    while a reader holds it, no writer removes the generation."""
    for _ in range(20):
        gen = current_generation(index_dir)
        if gen is None:
            raise IndexMissing(f"no index in {index_dir}; run `qa index` first")
        try:
            fd = os.open(gen / "manifest.json", os.O_RDONLY)
        except FileNotFoundError:
            continue  # replaced and removed since CURRENT was read: read it again
        fcntl.flock(fd, fcntl.LOCK_SH)
        if (gen / "manifest.json").exists():
            return gen, fd
        os.close(fd)  # removed while we waited for the lock
    raise IndexMissing(f"the index in {index_dir} kept changing while it was being opened; try again")


def _remove_generation(gen: Path) -> bool:
    """Remove a generation no reader holds; False (kept for a later sync) if one does."""
    try:
        fd = os.open(gen / "manifest.json", os.O_RDONLY)
    except FileNotFoundError:  # never finished (a crash mid-write): nobody can hold it
        shutil.rmtree(gen, ignore_errors=True)
        return True
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return False
    try:
        shutil.rmtree(gen, ignore_errors=True)
    finally:
        os.close(fd)
    return True


def _remove_stale(index_dir: Path, keep: Path | None) -> None:
    """Remove every generation but ``keep`` that no reader holds (a held one goes at a later
    sync), and every content store none of the remaining generations uses."""
    remaining = [keep] if keep is not None else []
    for p in index_dir.glob("gen-*"):
        if (keep is None or p.name != keep.name) and not _remove_generation(p):
            remaining.append(p)
    for p in index_dir.glob("CURRENT.*"):
        p.unlink(missing_ok=True)
    used = set()
    for g in remaining:
        try:
            used.add(json.loads((g / "manifest.json").read_text()).get("content"))
        except (OSError, ValueError):
            continue
    for p in index_dir.glob("content-*.sqlite*"):  # with its -wal and -shm
        if not any(u and p.name.startswith(u) for u in used):
            p.unlink(missing_ok=True)


def _create_content(path: Path) -> None:
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA journal_mode=WAL")  # readers of the live generation never wait
    conn.executescript(_CONTENT_SCHEMA)
    conn.close()


def _drop_unheld(conn: sqlite3.Connection, held: set[str]) -> None:
    """Delete the content rows of every document not in ``held`` (the live generation's):
    those removed by the previous sync, or written by a sync that crashed before switching.
    ``secure_delete`` overwrites the freed pages, so a removed article's text is gone."""
    ids = [(r[0],) for r in conn.execute("SELECT doc_id FROM documents") if r[0] not in held]
    if ids:
        conn.execute("PRAGMA content.secure_delete=ON")
        for table in ("chunks", "sentences", "documents"):
            conn.executemany(f"DELETE FROM {table} WHERE doc_id=?", ids)


@dataclass
class Entry:
    """One indexed path as the scan sees it."""

    doc_id: str
    meta: tuple  # the paths-table metadata columns
    stamp: str  # size and mtime of the file and its sidecar
    doc: Document | None  # None when the file was not re-read (unchanged stamp)


_RACY_NS = 2_000_000_000


def _stamp(f: str, sidecar: bool = True) -> str:
    """Size and mtime of a file and its sidecar; "" (never trusted) if modified just now.

    File times are coarse on many systems, so a same-size rewrite within the same tick
    would keep its stamp; like git, a file changed in the last two seconds is re-read
    on the next scan too.
    """
    st = os.stat(f)
    try:
        ss = os.stat(f"{f}{corpus.SIDECAR_SUFFIX}") if sidecar else None
    except FileNotFoundError:
        ss = None
    newest = max(st.st_mtime_ns, ss.st_mtime_ns if ss else 0)
    if time.time_ns() - newest < _RACY_NS:
        return ""
    return f"{st.st_size}:{st.st_mtime_ns}:" + (f"{ss.st_size}:{ss.st_mtime_ns}" if ss else "-")


def scan_corpus(corpus_dir: Path, root: Path, report: SyncReport,
                known: dict[str, tuple] | None = None,
                only: Iterable[Path | str] | None = None) -> dict[str, Entry]:
    """Every document under ``corpus_dir``: path -> Entry. Bad files are reported.

    ``known`` maps indexed paths to (doc_id, meta, stamp). A file whose size and mtime
    (and its sidecar's) equal the stamp recorded when it was last read keeps its
    recorded content hash and metadata without being read again (as git and rsync do);
    any other file is read, hashed and parsed.

    ``only`` names the files that changed (an upload, a watcher's events): only those
    are looked at, and every other indexed path is carried over as it is. A hint that
    is not a plain file inside the corpus falls back to the full scan.
    """
    known = known or {}
    resolved_root = str(root.resolve())
    entries: dict[str, Entry] = {}
    hinted = corpus.source_paths_among(corpus_dir, only) if only is not None else None
    if hinted is None:
        sidecars: set[str] = set()
        files, skipped = corpus.list_source_paths(corpus_dir, sidecars)
    else:
        files, skipped, covered = hinted
        sidecars = {f + corpus.SIDECAR_SUFFIX for f in files
                    if os.path.exists(f + corpus.SIDECAR_SUFFIX)}
        looked_at = {corpus.display_path(f, root, resolved_root) for f in covered}
        for path, (doc_id, meta, stamp) in known.items():
            if path.split("#", 1)[0] not in looked_at:
                entries[path] = Entry(doc_id, meta, stamp, None)
    report.skipped.extend(f"{s.path}: {s.reason}" for s in skipped)
    by_file: dict[str, list[str]] = {}
    for path in known:
        by_file.setdefault(path.split("#", 1)[0], []).append(path)
    for f in files:
        try:
            stamp = _stamp(f, f"{f}{corpus.SIDECAR_SUFFIX}" in sidecars)
        except OSError:
            continue  # vanished while scanning: treated as deleted, picked up next time
        rel = corpus.display_path(f, root, resolved_root)
        rows = by_file.get(rel, [])
        if stamp and rows and all(known[p][2] == stamp for p in rows):
            for p in rows:
                entries[p] = Entry(known[p][0], known[p][1], stamp, None)
            continue
        try:
            loaded = corpus.load_file(Path(f), root)
        except BadDocument as err:
            report.skipped.append(str(err))
            continue
        for doc in loaded:
            report.warnings.extend(doc.warnings)
            entries[doc.path] = Entry(doc.doc_id, _meta_row(doc.metadata, doc.furniture), stamp, doc)
    return entries


def sync(
    corpus_dir: Path,
    index_dir: Path,
    settings: IndexSettings,
    encoder: Encoder,
    root: Path | None = None,
    progress: bool = False,
    log: Progress | None = None,
    wait: bool = True,
    rehash: bool = False,
    only: Iterable[Path | str] | None = None,
) -> SyncReport:
    """Bring the index in ``index_dir`` in line with ``corpus_dir``; return what changed.

    With ``only``, just those files are looked at (see ``scan_corpus``).
    """
    import faiss

    t0 = time.perf_counter()
    log = log or (lambda msg: None)
    root = root or corpus_dir.parent
    report = SyncReport()
    index_dir.mkdir(parents=True, exist_ok=True)
    with WriteLock(index_dir, wait=wait, on_wait=log):
        live = current_generation(index_dir)
        _remove_stale(index_dir, keep=live)
        old_manifest = json.loads((live / "manifest.json").read_text()) if live else None
        if old_manifest is not None:
            reason = _rebuild_reason(old_manifest, settings, encoder)
            if reason:
                report.rebuilt_reason = reason
                log(f"{reason}: rebuilding the whole index")
                live = None

        known: dict[str, tuple] = {}
        if live is not None:
            src = sqlite3.connect(f"file:{live / 'store.sqlite'}?mode=ro", uri=True)
            for r in src.execute("SELECT path, doc_id, title, publisher, date, url, authors, furniture, "
                                 "stamp FROM paths"):
                known[r[0]] = (r[1], tuple(r[2:8]), "" if rehash else (r[8] or ""))
            src.close()
        old_docs = {k[0] for k in known.values()}  # the documents the live generation holds
        docs = scan_corpus(corpus_dir, root, report, known, None if live is None or rehash else only)
        for msg in report.skipped:
            log(f"skipped {msg}")

        # the paths whose row differs from the live generation's (re-read or re-stamped);
        # every other path is unchanged, and the work below is proportional to these
        differs = sorted(p for p, e in docs.items()
                         if e.doc is not None or known.get(p) != (e.doc_id, e.meta, e.stamp))
        want_docs: dict[str, Document] = {}
        for path in differs:
            if docs[path].doc is not None:
                want_docs.setdefault(docs[path].doc_id, docs[path].doc)
        wanted_ids = {e.doc_id for e in docs.values()}
        to_remove = old_docs - wanted_ids
        to_add = [want_docs[d] for d in sorted(wanted_ids - old_docs)]

        # classify path-level changes for the report
        vanished: dict[str, str] = {}  # doc id -> first path of it that is gone
        for p in sorted(p for p in known if p not in docs):
            vanished.setdefault(known[p][0], p)
        report.unchanged = len(docs) - len(differs)
        for path in differs:
            e, old = docs[path], known.get(path)
            if old is None:
                if e.doc_id in vanished and e.doc_id in old_docs:
                    report.renamed.append((vanished[e.doc_id], path))
                else:
                    report.added.append(path)
            elif old[0] != e.doc_id:
                report.changed.append(path)
            elif old[1] != e.meta:
                report.metadata_updated.append(path)
            else:
                report.unchanged += 1
        renamed_from = {a for a, _ in report.renamed}
        report.removed = sorted(p for p in known if p not in docs and p not in renamed_from)
        stamps_changed = any(known.get(p, (None, None, None))[2] != docs[p].stamp for p in differs)

        if live is not None and not report.changed_anything and not stamps_changed:
            conn = connect(live, content_path(index_dir, old_manifest), readonly=False)
            with conn:
                _drop_unheld(conn, old_docs)
            conn.close()
            report.generation = live.name
            report.seconds = time.perf_counter() - t0
            return report

        gen = index_dir / _new_gen_name(index_dir)
        gen.mkdir()
        if live is not None:
            # the paths store is small (no text, no vectors); a plain file copy is
            # consistent here: the live store is complete, and only lock holders write
            shutil.copyfile(live / "store.sqlite", gen / "store.sqlite")
            content = content_path(index_dir, old_manifest)
        else:
            with sqlite3.connect(gen / "store.sqlite") as fresh:
                fresh.executescript(_SCHEMA)
            fresh.close()
            content = index_dir / _new_content_name(index_dir)
            _create_content(content)
        conn = connect(gen, content, readonly=False)
        conn.execute("PRAGMA content.synchronous=FULL")  # durable before CURRENT names it

        with conn:
            _drop_unheld(conn, old_docs)
            # removed documents keep their rows (the live generation may still be
            # answering from them) until the next sync; only their ids are needed here
            removed_chunk_ids: list[int] = []
            for doc_id in sorted(to_remove):
                removed_chunk_ids += [
                    r[0] for r in conn.execute("SELECT id FROM chunks WHERE doc_id=?", (doc_id,))
                ]
            # only the path rows that differ are written (a full rewrite costs ~0.5 s at 50k)
            gone = [(p,) for p in known if p not in docs]
            conn.executemany("DELETE FROM paths WHERE path=?", gone)
            conn.executemany(
                "INSERT OR REPLACE INTO paths VALUES (?,?,?,?,?,?,?,?,?)",
                [(path, docs[path].doc_id, *docs[path].meta, docs[path].stamp)
                 for path in (sorted(docs) if rehash else differs)],
            )
            new_chunk_ids, new_chunk_vecs = _add_documents(
                conn, to_add, settings, encoder, progress, report, log
            )
            held = conn.execute("SELECT count(*), coalesce(sum(n_chunks), 0), coalesce(sum(n_sentences), 0) "
                                "FROM documents WHERE doc_id IN (SELECT doc_id FROM paths)").fetchone()
            manifest_counts = dict(
                documents=held[0],
                paths=conn.execute("SELECT count(*) FROM paths").fetchone()[0],
                chunks=held[1],
                sentences=held[2],
            )
            live_sparse = Sparse.load(live) if live is not None else None
            full_bm25 = sparse.needs_full(live_sparse, len(new_chunk_ids), len(removed_chunk_ids))
            chunk_sql = 'SELECT c.id, c.doc_id, c.start, c."end" FROM chunks c'
            if full_bm25:
                bm25_chunks = _chunk_texts(conn, conn.execute(
                    chunk_sql + " WHERE c.doc_id IN (SELECT doc_id FROM paths) ORDER BY c.id").fetchall())
            else:
                rows = []
                for i in range(0, len(new_chunk_ids), 900):
                    part = new_chunk_ids[i : i + 900]
                    rows += conn.execute(
                        chunk_sql + f" WHERE c.id IN ({','.join('?' * len(part))}) ORDER BY c.id", part
                    ).fetchall()
                bm25_chunks = _chunk_texts(conn, rows)

        # dense: previous vectors minus removed, plus new; rebuilt from the stored
        # vectors when the size calls for another kind of index (see DenseChoice)
        n_chunks = manifest_counts["chunks"]
        old_choice = DenseChoice.from_manifest(old_manifest) if live is not None else None
        choice = DenseChoice.for_size(n_chunks, old_choice)
        if old_choice is not None and choice == old_choice:
            dense = faiss.read_index(str(live / "dense.faiss"))
            if removed_chunk_ids:
                dense.remove_ids(np.asarray(removed_chunk_ids, dtype=np.int64))
            if new_chunk_ids:  # as stored (fp16), so an update equals a rebuild
                vecs = new_chunk_vecs.astype(np.float16).astype(np.float32)
                dense.add_with_ids(vecs, np.asarray(new_chunk_ids, dtype=np.int64))
        else:
            if choice.kind != "flat":
                log(f"{n_chunks:,} passages: building an approximate index ({choice.factory})")
            dense, choice = _build_dense(conn, encoder.dim, choice)
        conn.close()
        faiss.write_index(dense, str(gen / "dense.faiss"))

        # sparse: a delta over the live base, or a new base (see sparse.py)
        if full_bm25:
            bm25_info = sparse.write_full(gen, bm25_chunks)
        else:
            bm25_info = sparse.write_delta(gen, live, live_sparse, bm25_chunks, removed_chunk_ids)

        manifest = {
            "schema": SCHEMA_VERSION,
            "content": content.name,
            "settings": settings.to_dict(),
            "model": encoder.name,
            "dim": encoder.dim,
            "versions": _versions(),
            "counts": manifest_counts,
            "dense_index": choice.describe(),
            "dense": choice.to_dict(),
            "bm25": bm25_info,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        (gen / "manifest.json").write_text(json.dumps(manifest, indent=2))
        for p in gen.rglob("*"):
            if p.is_file():
                with open(p, "rb") as fh:
                    os.fsync(fh.fileno())
        _fsync_dir(gen)
        tmp = index_dir / f"CURRENT.{os.getpid()}"
        tmp.write_text(gen.name + "\n")
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, index_dir / "CURRENT")
        _fsync_dir(index_dir)
        _remove_stale(index_dir, keep=gen)
        report.generation = gen.name
        report.seconds = time.perf_counter() - t0
        return report


# --------------------------------------------------------------------------- dense index

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
    def from_manifest(cls, manifest: dict | None) -> "DenseChoice":
        d = (manifest or {}).get("dense")
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
        return cls("ivf", nlist=_nlist(n))


def _nlist(n: int) -> int:
    return int(2 ** round(math.log2(4 * math.sqrt(n))))


def _stored_vectors(conn: sqlite3.Connection, dim: int) -> tuple[np.ndarray, np.ndarray]:
    """(chunk ids, vectors) of the passages the connection's generation holds."""
    held = " WHERE doc_id IN (SELECT doc_id FROM paths)"
    n = conn.execute("SELECT count(*) FROM chunks" + held).fetchone()[0]
    ids = np.empty(n, dtype=np.int64)
    vecs = np.empty((n, dim), dtype=np.float32)
    for i, (cid, emb) in enumerate(conn.execute("SELECT id, emb FROM chunks" + held + " ORDER BY id")):
        ids[i] = cid
        vecs[i] = np.frombuffer(emb, dtype=np.float16, count=dim)
    return ids, vecs


def _build_dense(conn: sqlite3.Connection, dim: int, choice: DenseChoice):
    """A new dense index over every passage vector the generation holds, per ``choice``."""
    import faiss

    ids, vecs = _stored_vectors(conn, dim)
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


def _rebuild_reason(manifest: dict, settings: IndexSettings, encoder: Encoder) -> str:
    if manifest.get("schema") != SCHEMA_VERSION:
        return "the index was built by another version of Verbatim"
    if manifest.get("model") != encoder.name or manifest.get("dim") != encoder.dim:
        return f"the embedding model changed from {manifest.get('model')} to {encoder.name}"
    if manifest.get("settings") != settings.to_dict():
        return "the chunking settings changed"
    return ""


def _chunk_texts(conn, rows: list[tuple[int, str, int, int]]) -> list[tuple[int, str]]:
    """(chunk id, text) for (id, doc_id, start, end) rows, sliced in Python from each document's
    text (SQLite's substr walks a long text from its start for every chunk: quadratic)."""
    out, doc, text = [], None, ""
    for cid, doc_id, start, end in rows:
        if doc_id != doc:
            doc, text = doc_id, conn.execute("SELECT text FROM documents WHERE doc_id=?", (doc_id,)).fetchone()[0]
        out.append((cid, text[start:end]))
    return out


def _add_documents(conn, docs: list[Document], settings: IndexSettings, encoder: Encoder,
                   progress: bool, report: SyncReport, log=None) -> tuple[list[int], np.ndarray]:
    """Insert documents with their sentences and chunks; return new chunk ids and vectors.

    Documents are segmented as they come and embedded in groups of about ``_BATCH``
    sentences (a huge document in slices of that size), then written, so memory stays
    bounded by one group (plus the chunk vectors, which FAISS holds anyway).
    """
    total = sum(len(d.text) for d in docs)
    bar = _progress_bar(total, progress)
    # off a terminal (logs, `qa watch`, a server), a long update says how far it got every 10%
    steps = _LogProgress(total, log) if bar is None and log is not None and total >= _LOG_PROGRESS_CHARS else None
    chunk_ids: list[int] = []
    chunk_vecs: list[np.ndarray] = [np.zeros((0, encoder.dim), dtype=np.float32)]
    group: list[tuple[Document, list[Sentence], list]] = []

    def flush() -> None:
        sents = [(d, i, s) for d, ss, _ in group for i, s in enumerate(ss)]
        chunks = [(d, c) for d, _, cs in group for c in cs]
        for d, ss, cs in group:
            conn.execute("INSERT INTO documents VALUES (?,?,?,?,?)",
                         (d.doc_id, d.text, len(ss), len(cs), json.dumps(list(d.pages))))
        chars, texts, shown = sum(len(d.text) for d, _, _ in group), len(sents) + len(chunks), [0, 0]

        def advance(n: int) -> None:  # progress within the group, in its characters
            shown[0] += n
            now = chars * shown[0] // max(texts, 1)
            if bar is not None:
                bar.update(now - shown[1])
            if steps is not None:
                steps.update(now - shown[1], report)
            shown[1] = now

        for i in range(0, len(sents), _BATCH):
            part = sents[i : i + _BATCH]
            vecs = encoder.encode_documents([s.text for _, _, s in part]).astype(np.float16)
            conn.executemany(
                'INSERT INTO sentences (doc_id, idx, start, "end", kind, emb) VALUES (?,?,?,?,?,?)',
                [(d.doc_id, j, s.start, s.end, s.kind, v.tobytes()) for (d, j, s), v in zip(part, vecs)],
            )
            report.sentences_embedded += len(part)
            advance(len(part))
        for i in range(0, len(chunks), _BATCH):
            part = chunks[i : i + _BATCH]
            vecs = encoder.encode_documents([c.text for _, c in part])
            chunk_vecs.append(vecs)
            for (d, c), v in zip(part, vecs):
                cur = conn.execute(
                    'INSERT INTO chunks (doc_id, start, "end", first_sentence, last_sentence, emb) '
                    "VALUES (?,?,?,?,?,?)",
                    (d.doc_id, c.start, c.end, c.first_sentence, c.last_sentence,
                     v.astype(np.float16).tobytes()))
                chunk_ids.append(int(cur.lastrowid))
            report.chunks_embedded += len(part)
            advance(len(part))
        group.clear()

    pending = 0
    for doc in docs:
        sents = chunking.split_sentences(doc, settings.max_sentence_chars)
        chunks = chunking.make_chunks(doc, sents, settings.chunk_sentences, settings.chunk_overlap)
        group.append((doc, sents, chunks))
        pending += len(sents)
        if pending >= _BATCH:
            flush()
            pending = 0
    if group:
        flush()
    if bar is not None:
        bar.close()
    return chunk_ids, np.ascontiguousarray(np.concatenate(chunk_vecs), dtype=np.float32)


_BATCH = 1024
_LOG_PROGRESS_CHARS = 1_000_000


class _LogProgress:
    """"indexing: 40% of 4.0 million characters (9,452 sentences and passages embedded)", once per 10%."""

    def __init__(self, total: int, log) -> None:
        self.total, self.log, self.done, self.said = total, log, 0, 0

    def update(self, chars: int, report: SyncReport) -> None:
        self.done += chars
        tenth = self.done * 10 // self.total
        if tenth > self.said and self.done < self.total:
            self.said = tenth
            self.log(f"indexing: {tenth * 10}% of {self.total / 1e6:.1f} million characters "
                     f"({report.sentences_embedded + report.chunks_embedded:,} sentences and passages embedded)")


def _progress_bar(total_chars: int, enabled: bool):
    if not enabled or total_chars < 20_000:
        return None
    from tqdm import tqdm

    return tqdm(total=total_chars, unit="char", unit_scale=True, desc="indexing", leave=False)
