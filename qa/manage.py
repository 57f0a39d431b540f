"""Managing the corpus folder: safe uploads, removals (recoverable), and watching for changes."""

from __future__ import annotations

import os
import re
import shutil
import tempfile
import threading
import time
import unicodedata
from pathlib import Path

from . import corpus
from .errors import BadDocument, VerbatimError

MAX_UPLOAD_BYTES = 10 * 1024 * 1024
REMOVED_DIR = ".removed"  # hidden: never indexed, but nothing is deleted


def safe_filename(name: str, default_suffix: str = ".txt") -> str:
    """A plain file name for the corpus: no folders, no leading dots, a supported suffix."""
    base = re.split(r"[/\\\\]", unicodedata.normalize("NFKC", name or ""))[-1]
    base = re.sub(r"[^A-Za-z0-9._-]+", "_", base).strip("._-")[:100]
    stem, dot, suffix = base.rpartition(".")
    if not dot:
        stem, suffix = base, default_suffix.lstrip(".")
    suffix = "." + suffix.lower()
    if suffix not in corpus.SUPPORTED_SUFFIXES:
        raise VerbatimError(
            f"'{suffix}' files are not supported; use one of {', '.join(corpus.SUPPORTED_SUFFIXES)}")
    stem = stem.strip("._-") or "article"
    if (stem + suffix).lower() == "readme.md":  # the corpus folder's own notes: never indexed
        raise VerbatimError("a file named readme.md is taken for the folder's notes and never indexed; "
                            "give the article another name")
    return stem + suffix


def add_file(corpus_dir: Path, name: str, data: bytes, metadata: dict | None = None,
             overwrite: bool = False, max_bytes: int = MAX_UPLOAD_BYTES) -> Path:
    """Validate and save an article into ``corpus_dir``; return its path.

    The bytes are checked by the same reader ``qa index`` uses before anything is
    written; the file appears atomically; an existing file is replaced only when
    ``overwrite`` is true.
    """
    if len(data) > max_bytes:
        raise VerbatimError(f"the file is {len(data) / 1e6:.1f} MB; the limit is {max_bytes / 1e6:.0f} MB")
    fname = safe_filename(name)
    target = (corpus_dir / fname).resolve()
    if target.parent != corpus_dir.resolve():
        raise VerbatimError("the file name must not point outside the corpus folder")
    if target.exists() and not overwrite:
        raise VerbatimError(f"a file named {fname} already exists; confirm to replace it")
    corpus_dir.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".upload-", suffix=target.suffix, dir=corpus_dir)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        meta = {k: v for k, v in (metadata or {}).items() if v}
        side_tmp = None
        if meta:
            import json

            side_tmp = Path(tmp + corpus.SIDECAR_SUFFIX)
            side_tmp.write_text(json.dumps(meta, ensure_ascii=False, indent=2))
        try:
            corpus.load_file(Path(tmp), corpus_dir)  # the same checks as indexing
        except BadDocument as err:
            raise VerbatimError(str(err).replace(Path(tmp).name, fname)) from err
        if side_tmp is not None:
            os.replace(side_tmp, target.with_name(target.name + corpus.SIDECAR_SUFFIX))
        os.replace(tmp, target)
    finally:
        for leftover in (Path(tmp), Path(tmp + corpus.SIDECAR_SUFFIX)):
            leftover.unlink(missing_ok=True)
    return target


def remove_files(corpus_dir: Path, paths: list[Path]) -> list[Path]:
    """Move files (and their sidecars) into ``corpus/.removed/``; nothing is deleted."""
    moved = []
    trash = corpus_dir / REMOVED_DIR / time.strftime("%Y%m%d-%H%M%S")
    for p in paths:
        p = p.resolve()
        if not p.is_relative_to(corpus_dir.resolve()) or not p.is_file():
            continue
        dest = trash / p.relative_to(corpus_dir.resolve())
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(p), dest)
        side = p.with_name(p.name + corpus.SIDECAR_SUFFIX)
        if side.exists():
            shutil.move(str(side), dest.with_name(dest.name + corpus.SIDECAR_SUFFIX))
        moved.append(dest)
    return moved


class Debouncer:
    """Calls ``fn(paths)`` once, ``delay`` seconds after the last of a burst of ``trigger()``s.

    ``paths`` is the set of paths the burst named, or None when one trigger named none
    (something that needs a full scan, such as a folder event).
    """

    def __init__(self, fn, delay: float = 1.5):
        self.fn, self.delay = fn, delay
        self._timer: threading.Timer | None = None
        self._lock = threading.Lock()
        self._paths: set[str] | None = set()

    def trigger(self, *paths: str) -> None:
        with self._lock:
            if self._timer is not None:
                self._timer.cancel()
            if not paths:
                self._paths = None
            elif self._paths is not None:
                self._paths.update(paths)
            self._timer = threading.Timer(self.delay, self._fire)
            self._timer.daemon = True
            self._timer.start()

    def _fire(self) -> None:
        with self._lock:
            paths, self._paths = self._paths, set()
        self.fn(paths)


def watch(corpus_dir: Path, on_change, delay: float = 1.5, stop: threading.Event | None = None) -> None:
    """Run ``on_change(paths)`` after each burst of file changes under ``corpus_dir`` (watchdog).

    ``paths`` are the files the burst touched (None after a folder event: scan everything).
    """
    from watchdog.events import FileSystemEventHandler
    from watchdog.observers import Observer

    deb = Debouncer(on_change, delay)

    class Handler(FileSystemEventHandler):
        def on_any_event(self, event):
            if event.event_type in ("opened", "closed_no_write"):
                return
            rel = Path(str(event.src_path)).resolve()
            try:
                parts = rel.relative_to(corpus_dir.resolve()).parts
            except ValueError:
                return
            if any(part.startswith(".") for part in parts):
                if event.event_type == "moved" and getattr(event, "dest_path", ""):
                    deb.trigger(str(event.dest_path))  # an upload's atomic rename into place
                return  # uploads in progress, the .removed folder, editor swap files
            if event.is_directory:
                if event.event_type != "modified":  # a folder's own "modified" comes with its files' events
                    deb.trigger()
            else:
                deb.trigger(*(str(x) for x in (event.src_path, getattr(event, "dest_path", "")) if x))

    obs = Observer()
    obs.schedule(Handler(), str(corpus_dir), recursive=True)
    obs.start()
    try:
        while not (stop and stop.is_set()):
            time.sleep(0.2)
    finally:
        obs.stop()
        obs.join()
