"""The write path: bring an index up to date with its corpus, as one new generation.

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

The steps: scan the corpus (``scan_corpus``), plan what changed, write the rows
(``_add_documents``: sentences, chunks and their vectors), the dense index
(``dense.py``), the sparse index (``sparse.py``), then publish.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

import numpy as np

from . import chunking, corpus, sparse
from .config import IndexSettings
from .embeddings import Encoder, embed_segments
from .errors import BadDocument
from .types import Chunk, Document, Sentence
from .dense import DenseChoice, build_dense
from .sparse import Sparse
from .store import (PATHS_SCHEMA, Manifest, SCHEMA_VERSION, Progress, WriteLock, connect, content_path, create_content,
                    current_generation, drop_unheld, fsync_dir, meta_row, new_content_name, new_gen_name,
                    remove_stale, versions)


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
    chunks_pooled: int = 0  # of those, vectors pooled from their sentences' encoder passes
    seconds: float = 0.0
    generation: str = ""
    cluster_batches: int = 0  # with --ray: result batches streamed back from the cluster

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
            entries[doc.path] = Entry(doc.doc_id, meta_row(doc.metadata, doc.furniture), stamp, doc)
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
    cluster=None,
    onnx_dir: Path | None = None,
) -> SyncReport:
    """Bring the index in ``index_dir`` in line with ``corpus_dir``; return what changed.

    With ``only``, just those files are looked at (see ``scan_corpus``). The steps: scan,
    ``_plan``, the rows (``_add_documents``), ``_write_dense``, the sparse index, ``_publish``.
    """
    t0 = time.perf_counter()
    log = log or (lambda msg: None)
    root = root or corpus_dir.parent
    report = SyncReport()
    index_dir.mkdir(parents=True, exist_ok=True)
    with WriteLock(index_dir, wait=wait, on_wait=log):
        live = current_generation(index_dir)
        remove_stale(index_dir, keep=live)
        old_manifest = None
        if live is not None:
            try:
                old_manifest = Manifest.read(live)
                reason = old_manifest.differs(encoder.name, encoder.dim, settings.to_dict())
            except ValueError as err:
                reason = f"the index cannot be updated ({err})"
            if reason:
                report.rebuilt_reason = reason
                log(f"{reason}: rebuilding the whole index")
                live = old_manifest = None

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

        differs, to_add, to_remove, stamps_changed = _plan(known, docs, old_docs, report)

        if live is not None and not report.changed_anything and not stamps_changed:
            conn = connect(live, content_path(index_dir, old_manifest), readonly=False)
            with conn:
                drop_unheld(conn, old_docs)
            conn.close()
            report.generation = live.name
            report.seconds = time.perf_counter() - t0
            return report

        gen = index_dir / new_gen_name(index_dir)
        gen.mkdir()
        if live is not None:
            # the paths store is small (no text, no vectors); a plain file copy is
            # consistent here: the live store is complete, and only lock holders write
            shutil.copyfile(live / "store.sqlite", gen / "store.sqlite")
            content = content_path(index_dir, old_manifest)
        else:
            with sqlite3.connect(gen / "store.sqlite") as fresh:
                fresh.executescript(PATHS_SCHEMA)
            fresh.close()
            content = index_dir / new_content_name(index_dir)
            create_content(content)
        conn = connect(gen, content, readonly=False)
        conn.execute("PRAGMA content.synchronous=FULL")  # durable before CURRENT names it

        with conn:
            drop_unheld(conn, old_docs)
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
            if cluster is not None and to_add:
                new_chunk_ids, new_chunk_vecs = _add_documents_on(
                    cluster, conn, to_add, settings, encoder, report, log, onnx_dir)
            else:
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
            bm25_chunks = _bm25_chunks(conn, None if full_bm25 else new_chunk_ids)

        choice = _write_dense(conn, gen, live, old_manifest, manifest_counts["chunks"], removed_chunk_ids,
                              new_chunk_ids, new_chunk_vecs, encoder.dim, log)
        conn.close()

        # sparse: a delta over the live base, or a new base (see sparse.py)
        if full_bm25:
            bm25_info = sparse.write_full(gen, bm25_chunks)
        else:
            bm25_info = sparse.write_delta(gen, live, live_sparse, bm25_chunks, removed_chunk_ids)

        manifest = Manifest(
            schema=SCHEMA_VERSION, content=content.name, settings=settings.to_dict(), model=encoder.name,
            dim=encoder.dim, counts=manifest_counts, dense=choice.to_dict(), dense_index=choice.describe(),
            bm25=bm25_info, created=time.strftime("%Y-%m-%dT%H:%M:%S%z"), versions=versions(),
        )
        _publish(index_dir, gen, manifest)
        report.generation = gen.name
        report.seconds = time.perf_counter() - t0
        return report


def _publish(index_dir: Path, gen: Path, manifest: Manifest) -> None:
    """Make ``gen`` the live generation: its manifest written, every file durable, then CURRENT
    replaced atomically; older generations no reader holds are removed."""
    (gen / "manifest.json").write_text(json.dumps(manifest.to_dict(), indent=2))
    for p in gen.rglob("*"):
        if p.is_file():
            with open(p, "rb") as fh:
                os.fsync(fh.fileno())
    fsync_dir(gen)
    tmp = index_dir / f"CURRENT.{os.getpid()}"
    tmp.write_text(gen.name + "\n")
    with open(tmp, "rb") as fh:
        os.fsync(fh.fileno())
    os.replace(tmp, index_dir / "CURRENT")
    fsync_dir(index_dir)
    remove_stale(index_dir, keep=gen)


def _write_dense(conn, gen: Path, live: Path | None, old_manifest: Manifest | None, n_chunks: int,
                 removed: list[int], new_ids: list[int], new_vecs: np.ndarray, dim: int, log) -> DenseChoice:
    """The generation's dense.faiss: the live one minus removed vectors, plus new ones; rebuilt
    from the stored vectors when the size calls for another kind of index (see DenseChoice)."""
    import faiss

    old_choice = DenseChoice.from_manifest(old_manifest) if live is not None else None
    choice = DenseChoice.for_size(n_chunks, old_choice)
    if old_choice is not None and choice == old_choice:
        dense = faiss.read_index(str(live / "dense.faiss"))
        if removed:
            dense.remove_ids(np.asarray(removed, dtype=np.int64))
        if new_ids:  # as stored (fp16), so an update equals a rebuild
            vecs = new_vecs.astype(np.float16).astype(np.float32)
            dense.add_with_ids(vecs, np.asarray(new_ids, dtype=np.int64))
    else:
        if choice.kind != "flat":
            log(f"{n_chunks:,} passages: building an approximate index ({choice.factory})")
        dense, choice = build_dense(conn, dim, choice)
    faiss.write_index(dense, str(gen / "dense.faiss"))
    return choice


def _plan(known: dict[str, tuple], docs: dict[str, Entry], old_docs: set[str], report: SyncReport
          ) -> tuple[list[str], list[Document], set[str], bool]:
    """What the scan means: the paths whose row differs from the live generation's (re-read or
    re-stamped; the work is proportional to these), the documents to add and to remove, and
    whether any stamp changed; the path-level changes are classified into ``report``."""
    differs = sorted(p for p, e in docs.items()
                     if e.doc is not None or known.get(p) != (e.doc_id, e.meta, e.stamp))
    want_docs: dict[str, Document] = {}
    for path in differs:
        if docs[path].doc is not None:
            want_docs.setdefault(docs[path].doc_id, docs[path].doc)
    wanted_ids = {e.doc_id for e in docs.values()}
    to_remove = old_docs - wanted_ids
    to_add = [want_docs[d] for d in sorted(wanted_ids - old_docs)]

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
    return differs, to_add, to_remove, stamps_changed


def _bm25_chunks(conn, chunk_ids: list[int] | None) -> list[tuple[int, str]]:
    """(id, text) of the chunks BM25 indexes: every chunk the generation holds (None), or these."""
    sql = 'SELECT c.id, c.doc_id, c.start, c."end" FROM chunks c'
    if chunk_ids is None:
        return _chunk_texts(conn, conn.execute(
            sql + " WHERE c.doc_id IN (SELECT doc_id FROM paths) ORDER BY c.id").fetchall())
    rows = []
    for i in range(0, len(chunk_ids), 900):
        part = chunk_ids[i : i + 900]
        rows += conn.execute(sql + f" WHERE c.id IN ({','.join('?' * len(part))}) ORDER BY c.id", part).fetchall()
    return _chunk_texts(conn, rows)


def _chunk_texts(conn, rows: list[tuple[int, str, int, int]]) -> list[tuple[int, str]]:
    """(chunk id, text) for (id, doc_id, start, end) rows, sliced in Python from each document's
    text (SQLite's substr walks a long text from its start for every chunk: quadratic)."""
    out, doc, text = [], None, ""
    for cid, doc_id, start, end in rows:
        if doc_id != doc:
            doc, text = doc_id, conn.execute("SELECT text FROM documents WHERE doc_id=?", (doc_id,)).fetchone()[0]
        out.append((cid, text[start:end]))
    return out


def _insert_document(conn, d: Document, n_sentences: int, n_chunks: int) -> None:
    conn.execute("INSERT INTO documents VALUES (?,?,?,?,?)",
                 (d.doc_id, d.text, n_sentences, n_chunks, json.dumps(list(d.pages))))


def _insert_sentences(conn, rows: list[tuple[Document, int, Sentence]], vecs: np.ndarray) -> None:
    """(document, index in it, sentence) rows with their vectors, stored as fp16."""
    conn.executemany(
        'INSERT INTO sentences (doc_id, idx, start, "end", kind, emb) VALUES (?,?,?,?,?,?)',
        [(d.doc_id, j, s.start, s.end, s.kind, v.astype(np.float16).tobytes()) for (d, j, s), v in zip(rows, vecs)])


def _insert_chunks(conn, rows: list[tuple[Document, Chunk]], vecs: np.ndarray) -> list[int]:
    """(document, chunk) rows with their vectors, stored as fp16; their new ids, in order."""
    ids = []
    for (d, c), v in zip(rows, vecs):
        cur = conn.execute('INSERT INTO chunks (doc_id, start, "end", first_sentence, last_sentence, emb) '
                           "VALUES (?,?,?,?,?,?)",
                           (d.doc_id, c.start, c.end, c.first_sentence, c.last_sentence,
                            v.astype(np.float16).tobytes()))
        ids.append(int(cur.lastrowid))
    return ids


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
        for d, ss, cs in group:
            _insert_document(conn, d, len(ss), len(cs))
        chars, shown = sum(len(d.text) for d, _, _ in group), [0, 0]
        texts = sum(len(ss) + len(cs) for _, ss, cs in group)

        def advance(n: int) -> None:  # progress within the group, in its characters
            shown[0] += n
            now = chars * shown[0] // max(texts, 1)
            if bar is not None:
                bar.update(now - shown[1])
            if steps is not None:
                steps.update(now - shown[1], report)
            shown[1] = now

        segs = [(ss, cs) for _, ss, cs in group]
        for kind, refs, vecs in embed_segments(encoder, segs, settings.passage_vectors == "sentences", _BATCH):
            if kind == "sentences":
                _insert_sentences(conn, [(group[i][0], j, group[i][1][j]) for i, j in refs], vecs)
                report.sentences_embedded += len(refs)
            else:
                rows = [(group[i][0], group[i][2][k]) for i, k in refs]
                chunk_vecs.append(vecs)
                chunk_ids.extend(_insert_chunks(conn, rows, vecs))
                report.chunks_embedded += len(rows)
                report.chunks_pooled += len(rows) if kind == "pooled" else 0
            advance(len(refs))
        group.clear()

    pending = 0
    for doc in docs:
        sents, chunks = chunking.segment(doc, settings)
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


def _add_documents_on(cluster, conn, docs: list[Document], settings: IndexSettings, encoder: Encoder,
                      report: SyncReport, log, onnx_dir: Path | None) -> tuple[list[int], np.ndarray]:
    """``_add_documents`` with the segmenting and embedding done on a Ray cluster
    (``cluster.py``): the results stream back in document order, a batch at a time, and are
    written here as they come, in the same rows (and ids) as a local build."""
    from . import cluster as cluster_mod

    chunk_ids: list[int] = []
    chunk_vecs: list[np.ndarray] = [np.zeros((0, encoder.dim), dtype=np.float32)]
    total, done = len(docs), [0]

    def on_batch(n: int) -> None:
        report.cluster_batches += 1
        done[0] += n
        log(f"cluster: {done[0]:,} of {total:,} documents embedded")

    for n, sents, chunks, svecs, cvecs, pooled in cluster_mod.embed(
            docs, cluster, encoder.name, str(onnx_dir or ""), settings.to_dict(), on_batch):
        d = docs[n]
        _insert_document(conn, d, len(sents), len(chunks))
        _insert_sentences(conn, [(d, j, s) for j, s in enumerate(sents)], svecs)
        chunk_ids.extend(_insert_chunks(conn, [(d, c) for c in chunks], cvecs))
        chunk_vecs.append(np.asarray(cvecs, dtype=np.float32).reshape(-1, encoder.dim))
        report.sentences_embedded += len(sents)
        report.chunks_pooled += int(pooled)
        report.chunks_embedded += len(chunks)
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
