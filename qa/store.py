"""Index storage: the SQLite schema, generations on disk, the write lock.

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
        dense.faiss      passage vectors (dense.py)
        bm25/, bm25_ids.npy, bm25_delta.json
                         BM25: a bm25s base segment plus a delta (sparse.py)
        manifest.json    settings, model, library versions, counts

A reader holds a shared lock on the generation it loaded (``hold_current``) until the last
question using it is done; a sync removes a generation only when no reader holds it.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import sqlite3
import threading
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from .errors import IndexBusy, IndexMissing
from .types import Metadata

if TYPE_CHECKING:
    from .config import IndexSettings


SCHEMA_VERSION = 6


PATHS_SCHEMA = """
CREATE TABLE paths (
  path TEXT PRIMARY KEY, doc_id TEXT NOT NULL,
  title TEXT, publisher TEXT, date TEXT, url TEXT, authors TEXT, furniture TEXT, stamp TEXT
);
CREATE INDEX paths_doc ON paths(doc_id);
"""


CONTENT_SCHEMA = """
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


def content_path(index_dir: Path, manifest: "Manifest") -> Path:
    return index_dir / manifest.content


Progress = Callable[[str], None]


def versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    out: dict = {"schema": SCHEMA_VERSION}
    for pkg in ("faiss-cpu", "bm25s", "sentence-transformers"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            pass
    return out


class WriteLock:
    """An exclusive flock on ``index_dir/.lock``; the kernel drops it if the holder dies.

    Re-entrant within one thread: ``Verbatim.sync`` holds it while it reads the built settings
    and ``sync.sync`` takes it again inside (another thread or process still waits)."""

    _local = threading.local()  # per thread: lock file -> depth (gone with the thread)

    def __init__(self, index_dir: Path, wait: bool = True, on_wait: Progress | None = None):
        self.path = index_dir / ".lock"
        self.wait = wait
        self.on_wait = on_wait
        self._fh = None
        self._key = ""

    def _depths(self) -> dict[str, int]:
        return WriteLock._local.__dict__.setdefault("depth", {})

    def __enter__(self) -> "WriteLock":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._key = str(self.path.resolve())
        depths = self._depths()
        if self._key in depths:  # this thread holds it already
            depths[self._key] += 1
            return self
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
        depths[self._key] = 1
        return self

    def __exit__(self, *exc) -> None:
        depths = self._depths()
        depths[self._key] -= 1
        if depths[self._key]:
            return
        del depths[self._key]
        assert self._fh is not None
        try:
            self._fh.seek(0)
            self._fh.truncate()
        finally:
            fcntl.flock(self._fh, fcntl.LOCK_UN)
            self._fh.close()


def current_generation(index_dir: Path) -> Path | None:
    try:
        name = (index_dir / "CURRENT").read_text().strip()
    except (FileNotFoundError, NotADirectoryError):
        return None
    gen = index_dir / name
    if not name.startswith("gen-") or not (gen / "manifest.json").exists():
        return None
    return gen


def ends_with(name: str) -> str:
    """A LIKE pattern for paths ending in "/name", the name's own % and _ taken literally."""
    return "%/" + name.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


@dataclass(frozen=True)
class Manifest:
    """A generation's manifest.json, typed: what built the index is what queries it."""

    schema: int
    content: str  # the content store's file name
    settings: dict  # IndexSettings.to_dict() of the build
    model: str  # the embedding model: questions are encoded with it
    dim: int
    counts: dict  # documents, paths, chunks, sentences
    dense: dict  # DenseChoice.to_dict()
    dense_index: str  # that choice in words
    bm25: dict
    created: str
    versions: dict

    @classmethod
    def read(cls, gen: Path) -> "Manifest":
        """The manifest of generation ``gen``; ValueError (one line) when unreadable or of another
        schema (an index built by another version of Verbatim)."""
        try:
            d = json.loads((gen / "manifest.json").read_text())
        except (OSError, ValueError) as err:
            raise ValueError(f"its manifest cannot be read ({err})") from None
        if not isinstance(d, dict) or d.get("schema") != SCHEMA_VERSION:
            raise ValueError("it was built by another version of Verbatim")
        try:
            return cls(**{f: d[f] for f in cls.__dataclass_fields__})
        except KeyError as err:
            raise ValueError(f"its manifest lacks {err}") from None

    def to_dict(self) -> dict:
        return asdict(self)

    def differs(self, model: str, dim: int | None = None, settings: dict | None = None) -> str:
        """The one compatibility check: why an index built as this manifest says cannot serve
        ``model`` (and ``dim`` and ``settings``, when building), or "" when it can."""
        if self.model != model or (dim is not None and self.dim != dim):
            return f"the embedding model changed from {self.model} to {model}"
        if settings is not None:
            from .config import PREDATED

            built = {**PREDATED, **self.settings}  # fields it predates: what was built then
            if changed := sorted(k for k in settings.keys() | built.keys() if settings.get(k) != built.get(k)):
                return f"the index settings changed ({', '.join(changed)})"
        return ""


def live_manifest(index_dir: Path) -> Manifest | None:
    """The live generation's manifest; None without a usable one (none, or another version's)."""
    gen = current_generation(index_dir)
    if gen is None:
        return None
    try:
        return Manifest.read(gen)
    except ValueError:
        return None


def built_with(index_dir: Path) -> IndexSettings | None:
    """The settings (model included) of the live generation (its manifest), or None without one."""
    from .config import IndexSettings

    m = live_manifest(index_dir)
    return IndexSettings.from_dict({**m.settings, "model": m.model}) if m else None


def index_is_current(index_dir: Path) -> bool:
    """An index exists and was written with this version's schema."""
    return live_manifest(index_dir) is not None


def meta_row(meta: Metadata, furniture) -> tuple:
    return (
        meta.title, meta.publisher, meta.date, meta.url, json.dumps(list(meta.authors)),
        json.dumps([[s.start, s.end] for s in furniture]),
    )


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def new_gen_name(index_dir: Path) -> str:
    nums = [int(p.name[4:]) for p in index_dir.glob("gen-*") if p.name[4:].isdigit()]
    return f"gen-{max(nums, default=0) + 1:06d}"


def new_content_name(index_dir: Path) -> str:
    nums = [int(p.name[8:14]) for p in index_dir.glob("content-*.sqlite") if p.name[8:14].isdigit()]
    return f"content-{max(nums, default=0) + 1:06d}.sqlite"


def hold_current(index_dir: Path) -> tuple[Path, int]:
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


def remove_generation(gen: Path) -> bool:
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


def remove_stale(index_dir: Path, keep: Path | None) -> None:
    """Remove every generation but ``keep`` that no reader holds (a held one goes at a later
    sync), and every content store none of the remaining generations uses."""
    remaining = [keep] if keep is not None else []
    for p in index_dir.glob("gen-*"):
        if (keep is None or p.name != keep.name) and not remove_generation(p):
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


def create_content(path: Path) -> None:
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA journal_mode=WAL")  # readers of the live generation never wait
    conn.executescript(CONTENT_SCHEMA)
    conn.close()


def drop_unheld(conn: sqlite3.Connection, held: set[str]) -> None:
    """Delete the content rows of every document not in ``held`` (the live generation's):
    those removed by the previous sync, or written by a sync that crashed before switching.
    ``secure_delete`` overwrites the freed pages, so a removed article's text is gone."""
    ids = [(r[0],) for r in conn.execute("SELECT doc_id FROM documents") if r[0] not in held]
    if ids:
        conn.execute("PRAGMA content.secure_delete=ON")
        for table in ("chunks", "sentences", "documents"):
            conn.executemany(f"DELETE FROM {table} WHERE doc_id=?", ids)
