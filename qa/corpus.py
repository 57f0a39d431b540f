"""Corpus stage: read source files, decode them, find metadata and page furniture.

The document text is kept exactly as Python's ``open(path).read()`` returns it
(UTF-8, universal newlines), so quote offsets can be checked against the file.

Metadata, in order of precedence:
1. a sidecar ``NAME.meta.json`` beside the file (see ``corpus/README.md``);
2. header lines at the top of the text (``Source:``, ``Date:``, ``Title:``, ``Author:``, ``URL:``);
3. heuristics (first real line as title, a leading dateline as date).
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import logging
import os
import re
import stat
import warnings
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import Iterable

from .errors import BadDocument
from .types import Document, Metadata, Span

TEXT_SUFFIXES = (".txt", ".md", ".markdown")
HTML_SUFFIXES = (".html", ".htm")
SUPPORTED_SUFFIXES = TEXT_SUFFIXES + HTML_SUFFIXES + (".pdf", ".jsonl")
SIDECAR_SUFFIX = ".meta.json"
MAX_FILE_BYTES = 64 * 1024 * 1024  # read at all (PDF and HTML carry more bytes than text)
# the text one document may hold: indexed here in about 26 s with the test encoder (340 MB peak) and
# about 25 min with all-MiniLM-L6-v2 on 2 cores (95 s per million characters), progress logged
MAX_TEXT_CHARS = 16_000_000

_FURNITURE_LINES = [
    r"share( this)? article",
    r"get our latest news for free",
    r"subscribe to get (daily|weekly|daily/weekly) email.*",
    r"was this article helpful\??",
    r"most popular",
    r"select page",
    r"support",
    r"recommended",
    r"advertisement",
    r"(read more|related( articles| stories)?)",
    r"return to homepage\.?",
    r"help keep .{1,60} free for everyone\.?",
    r"by making a recurring donation.*",
    r"we[’']re sorry to hear that\.?",
    r"hope you[’']ll give us another try.*",
    r"follow .{1,60} on (twitter|facebook|x|instagram):?.*",
    r"[\w\-. ]+\.(jpe?g|png|gif|webp|svg)",
    r"pictured( above| below| right| left)?:.*",
]
_FURNITURE_RE = re.compile(r"^(?:%s)$" % "|".join(_FURNITURE_LINES), re.IGNORECASE)
# Photo credits mark a caption: the whole paragraph is furniture.
_CREDIT_RE = re.compile(r"\((?:photo|photos|image|credit|picture)s?\s*:[^)]*\)", re.IGNORECASE)
_HEADER_RE = re.compile(
    r"^(source|date|published|title|author|authors|by|url|link|publisher)\s*:\s*(.+)$",
    re.IGNORECASE,
)
_DATE_FORMATS = (
    "%Y-%m-%d", "%B %d, %Y", "%b %d, %Y", "%b. %d, %Y", "%d %B %Y", "%d %b %Y",
    "%m/%d/%Y", "%B %d %Y", "%Y/%m/%d", "%B %Y", "%Y-%m", "%Y",
)
_LEADING_DATE_RE = re.compile(r"^(\d{1,2}/\d{1,2}/\d{4})\b")
_ISO_RE = re.compile(r"^\d{4}(-\d{2}(-\d{2})?)?$")


@dataclass(frozen=True)
class Skipped:
    """A file that could not be read as a document, with the reason."""

    path: str
    reason: str


def doc_id_for(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def decode(data: bytes, name: str = "") -> tuple[str, list[str]]:
    """Bytes -> text as ``open(path).read()`` would give it; binary is refused."""
    warnings: list[str] = []
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):  # UTF-16 with its byte order mark (Windows Notepad)
        try:
            data = data.decode("utf-16").encode("utf-8")
        except UnicodeDecodeError:
            raise BadDocument(f"{name}: starts like UTF-16 but does not decode as it; skipped") from None
    if b"\x00" in data[:8192]:
        raise BadDocument(f"{name}: looks like a binary file, not text; skipped")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        text = data.decode("utf-8", errors="replace")
        warnings.append(
            f"{name}: not valid UTF-8 (first bad byte at {err.start}); "
            "undecodable bytes were replaced with U+FFFD"
        )
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    if not text.strip():
        raise BadDocument(f"{name}: empty document; skipped")
    return text, warnings


def is_calendar_date(iso: str) -> bool:
    """Whether ``iso`` is written YYYY, YYYY-MM or YYYY-MM-DD and names a real year, month or
    day (not 2024-13-45, not " 024")."""
    if not _ISO_RE.match(iso):
        return False
    parts = iso.split("-")
    try:
        datetime(int(parts[0]), int(parts[1]) if len(parts) > 1 else 1, int(parts[2]) if len(parts) > 2 else 1)
    except (ValueError, IndexError):
        return False
    return True


def normalise_date(value: str) -> str:
    """Return an ISO 8601 date (YYYY, YYYY-MM or YYYY-MM-DD), or "" if unparseable."""
    value = value.strip().rstrip(".")
    if _ISO_RE.match(value):
        return value if is_calendar_date(value) else ""
    value = re.sub(r"(\d)(st|nd|rd|th)\b", r"\1", value)
    value = re.sub(r"\s+", " ", value)
    for fmt in _DATE_FORMATS:
        try:
            parsed = datetime.strptime(value, fmt).date()
        except ValueError:
            continue
        if "%d" in fmt:
            return parsed.isoformat()
        if "%m" in fmt or "%B" in fmt or "%b" in fmt:
            return parsed.strftime("%Y-%m")
        return parsed.strftime("%Y")
    return ""


def _lines(text: str):
    """Yield (start, end, stripped_line) for each line, offsets excluding the newline."""
    pos = 0
    for line in text.split("\n"):
        end = pos + len(line)
        yield pos, end, line.strip()
        pos = end + 1


def _paragraphs(text: str):
    """Yield (start, end) of blank-line separated blocks."""
    for m in re.finditer(r"\S(?:.*?\S)?(?=[^\S\n]*\n[^\S\n]*\n|\s*\Z)", text, re.DOTALL):
        yield m.start(), m.end()


def find_furniture(text: str, extra_lines: tuple[str, ...] = ()) -> tuple[list[Span], dict]:
    """Spans of page furniture, and header fields found at the top of the text."""
    spans: list[Span] = []
    headers: dict[str, str] = {}
    extra = {e.strip().lower() for e in extra_lines if e.strip()}
    seen_body = 0
    for start, end, line in _lines(text):
        if not line:
            continue
        m = _HEADER_RE.match(line)
        if m and seen_body < 3:
            headers.setdefault(m.group(1).lower(), m.group(2).strip())
            spans.append(Span(start, end))
            continue
        if _FURNITURE_RE.match(line) or line.lower() in extra:
            spans.append(Span(start, end))
            continue
        seen_body += 1
    captions = []
    for start, end in _paragraphs(text):
        block = text[start:end]
        if _CREDIT_RE.search(block):
            spans.append(Span(start, end))
            captions.append(block)
    # Scrapers often repeat a caption without its credit just before it.
    if captions:
        for start, end in _paragraphs(text):
            for line_start, line_end, line in _lines(text[start:end]):
                if len(line) > 40 and any(c.startswith(line) for c in captions):
                    spans.append(Span(start + line_start, start + line_end))
    spans.sort(key=lambda s: (s.start, s.end))
    return spans, headers


def _first_real_line(text: str, furniture: list[Span]) -> str:
    for start, end, line in _lines(text):
        if line and not any(s.start <= start and end <= s.end for s in furniture):
            return line[:300]
    return ""


def read_sidecar(path: Path) -> dict:
    """The metadata sidecar of ``path`` ({} when there is none). Only a regular file beside it
    is read: a symbolic link (which could point outside the corpus), a FIFO or a device is
    refused without being opened."""
    side = path.with_name(path.name + SIDECAR_SUFFIX)
    try:
        st = os.lstat(side)
    except FileNotFoundError:
        return {}
    except OSError as err:
        raise BadDocument(f"{side.name}: metadata sidecar cannot be read ({err.strerror})") from None
    if stat.S_ISLNK(st.st_mode):
        raise BadDocument(f"{side.name}: metadata sidecar is a symbolic link, which is not followed; "
                          "put a regular file there")
    if not stat.S_ISREG(st.st_mode):
        raise BadDocument(f"{side.name}: metadata sidecar is not a regular file; not read")
    try:
        raw = side.read_text(encoding="utf-8")
        if not raw.strip():
            raise BadDocument(f"{side.name}: metadata sidecar is empty; write {{}} in it (or delete it) "
                              "to index the article without metadata")
        data = json.loads(raw)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise BadDocument(f"{side.name}: metadata sidecar is not valid JSON ({err})") from err
    if not isinstance(data, dict):
        raise BadDocument(f"{side.name}: metadata sidecar must be a JSON object")
    return data


def build_metadata(text: str, sidecar: dict, headers: dict, furniture: list[Span]) -> Metadata:
    def pick(*keys: str) -> str:
        for k in keys:
            v = sidecar.get(k)
            if isinstance(v, str) and v.strip():
                return v.strip()
        return ""

    title = pick("title") or headers.get("title", "") or _first_real_line(text, furniture)
    source = headers.get("source", "") or headers.get("publisher", "")
    publisher = pick("publisher") or source
    url = pick("url") or headers.get("url", "") or headers.get("link", "")
    if not url and re.match(r"^(https?://|www\.)\S+$", source):
        url = source if source.startswith("http") else "https://" + source
    raw_date = pick("date") or headers.get("date", "") or headers.get("published", "")
    if not raw_date:
        for _, _, line in list(_lines(text))[:10]:
            m = _LEADING_DATE_RE.match(line)
            if m:
                raw_date = m.group(1)
                break
    iso = normalise_date(raw_date) if raw_date else ""
    authors = sidecar.get("authors")
    if isinstance(authors, str):
        authors = [authors]
    if not isinstance(authors, list):
        by = headers.get("author") or headers.get("authors") or headers.get("by") or ""
        authors = [a.strip() for a in re.split(r",| and ", by) if a.strip()]
    return Metadata(
        title=title,
        publisher=publisher,
        date=iso,
        url=url,
        authors=tuple(str(a) for a in authors if str(a).strip()),
    )


def parse_text(text: str, path: str, sidecar: dict | None = None, warnings=(),
               pages: tuple[int, ...] = (), extra_furniture: tuple[Span, ...] = ()) -> Document:
    if not text.strip():
        raise BadDocument(f"{path}: empty document; skipped")
    if len(text) > MAX_TEXT_CHARS:
        raise BadDocument(
            f"{path}: {len(text) / 1e6:.1f} million characters of text, over the {MAX_TEXT_CHARS // 10**6} million "
            f"one file may hold; split it into smaller files (for a text file: split -C 15m "
            f"--additional-suffix=.txt FILE FILE-part-); skipped")
    sidecar = sidecar or {}
    extra = sidecar.get("furniture") or ()
    if isinstance(extra, str):
        extra = (extra,)
    furniture, headers = find_furniture(text, tuple(str(e) for e in extra))
    furniture = sorted([*furniture, *extra_furniture], key=lambda sp: (sp.start, sp.end))
    meta = build_metadata(text, sidecar, headers, furniture)
    return Document(
        doc_id=doc_id_for(text),
        path=path,
        text=text,
        metadata=meta,
        furniture=tuple(furniture),
        warnings=tuple(warnings),
        pages=pages,
    )


@functools.lru_cache(maxsize=64)
def _resolved(root: Path) -> str:
    return str(root.resolve())


def display_path(path: Path | str, root: Path, resolved_root: str | None = None) -> str:
    """Path relative to ``root`` when inside it, else absolute (no per-file resolve when
    ``path`` is already absolute and canonical, as ``list_sources`` returns them)."""
    r = resolved_root or _resolved(root)
    if isinstance(path, str) and path.startswith(r + os.sep) and "/.." not in path:
        return path[len(r) + 1:].replace(os.sep, "/")
    path = Path(path)
    p = str(path) if path.is_absolute() and ".." not in path.parts else str(path.resolve())
    if p.startswith(r + os.sep):
        return p[len(r) + 1:].replace(os.sep, "/")
    p = str(path.resolve())
    return p[len(r) + 1:].replace(os.sep, "/") if p.startswith(r + os.sep) else Path(p).as_posix()


def load_file(path: Path, root: Path) -> list[Document]:
    """The document(s) in one file (a ``.jsonl`` feed holds one per line)."""
    rel = display_path(path, root)
    try:
        size = path.stat().st_size
        if size > MAX_FILE_BYTES:
            raise BadDocument(
                f"{rel}: {size / 1e6:.0f} MB is over the {MAX_FILE_BYTES // 2**20} MiB limit; skipped"
            )
        data = path.read_bytes()
    except OSError as err:
        raise BadDocument(f"{rel}: cannot be read ({err.strerror or err}); skipped") from err
    suffix = path.suffix.lower()
    sidecar = read_sidecar(path)
    if suffix == ".pdf":
        return [_load_pdf(data, rel, sidecar)]
    if suffix in HTML_SUFFIXES:
        return [_load_html(data, rel, sidecar)]
    if suffix == ".jsonl":
        return _load_jsonl(data, rel)
    text, warnings = decode(data, rel)
    if suffix in (".md", ".markdown"):
        front, span = front_matter(text, rel)
        if span is not None and not text[span.end:].strip():
            raise BadDocument(f"{rel}: empty document (front matter only); skipped")
        return [parse_text(text, rel, {**front, **sidecar}, warnings,
                           extra_furniture=(span,) if span else ())]
    return [parse_text(text, rel, sidecar, warnings)]


def front_matter(text: str, name: str = "") -> tuple[dict, Span | None]:
    """YAML front matter (``---`` ... ``---`` at the very top) and its span."""
    m = re.match(r"---[ \t]*\n(.*?\n)?---[ \t]*(\n|$)", text, re.DOTALL)
    if not m:
        return {}, None
    import yaml

    try:
        data = yaml.safe_load(m.group(1) or "") or {}
    except yaml.YAMLError as err:
        raise BadDocument(f"{name}: front matter is not valid YAML ({str(err).splitlines()[0]})") from err
    if not isinstance(data, dict):
        raise BadDocument(f"{name}: front matter must be key: value pairs")
    out = {}
    for k, v in data.items():
        key = str(k).lower()
        if key == "author":
            key = "authors"
        if key == "authors" and isinstance(v, str):
            v = [a.strip() for a in re.split(r",| and ", v) if a.strip()]
        out[key] = [str(x) for x in v] if isinstance(v, list) else (str(v) if v is not None else "")
    return out, Span(0, m.end())


def _load_html(data: bytes, rel: str, sidecar: dict) -> Document:
    """Main text of a web page (trafilatura), with its title, date, author and site."""
    import trafilatura

    if b"\x00" in data[:8192]:
        raise BadDocument(f"{rel}: looks like a binary file, not HTML; skipped")
    raw = data.decode("utf-8", errors="replace")
    try:
        text = trafilatura.extract(raw, output_format="txt", include_comments=False,
                                   include_tables=True, favor_recall=True)
        meta = trafilatura.extract_metadata(raw)
    except Exception as err:  # lxml raises many kinds of parse errors
        raise BadDocument(f"{rel}: HTML could not be parsed ({err}); skipped") from err
    if not text or not text.strip():
        raise BadDocument(f"{rel}: no article text found in the HTML; skipped")
    page = {}
    if meta is not None:
        page = {"title": meta.title or "", "publisher": meta.sitename or "", "url": meta.url or "",
                "date": meta.date or "", "authors": [a.strip() for a in (meta.author or "").split(";") if a.strip()]}
    return parse_text(text, rel, {**page, **sidecar})


def _load_pdf(data: bytes, rel: str, sidecar: dict) -> Document:
    """Text of every page (pypdf), pages separated by a blank line; page starts kept. What pypdf
    says about a damaged file becomes the document's warning, with its path."""
    import io

    import pypdf

    with _pypdf_messages() as said:
        try:
            reader = pypdf.PdfReader(io.BytesIO(data))
            texts = [(page.extract_text() or "").replace("\r\n", "\n").replace("\r", "\n")
                     for page in reader.pages]
            info = reader.metadata or {}
            title = getattr(info, "title", None) if info else None
            author = getattr(info, "author", None) if info else None
            created = getattr(info, "creation_date", None) if info else None
        except Exception as err:  # pypdf raises PdfReadError and plain errors on corrupt files
            raise BadDocument(f"{rel}: not a readable PDF ({type(err).__name__}); skipped") from err
    starts, parts, pos = [], [], 0
    for t in texts:
        starts.append(pos)
        parts.append(t)
        pos += len(t) + 2
    text = "\n\n".join(parts)
    if not text.strip():
        raise BadDocument(f"{rel}: the PDF has no extractable text (scanned images?); skipped")
    meta = {}
    if title:
        meta["title"] = str(title)
    if author:
        meta["authors"] = [str(author)]
    if created is not None:
        meta["date"] = created.date().isoformat()
    notes = [f"{rel}: the PDF is damaged; its text may be incomplete (pypdf: {m})" for m in said[:3]]
    return parse_text(text, rel, {**meta, **sidecar}, notes, pages=tuple(starts))


@contextlib.contextmanager
def _pypdf_messages():
    """pypdf's warnings (its logger and ``warnings.warn``) collected, not printed: they name no
    file, so the caller reports them with the path."""
    said: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            said.append(record.getMessage())

    log = logging.getLogger("pypdf")
    handler, propagate = Collect(logging.WARNING), log.propagate
    log.addHandler(handler)
    log.propagate = False
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            yield said
        said.extend(str(w.message) for w in caught)
    finally:
        log.removeHandler(handler)
        log.propagate = propagate

def _load_jsonl(data: bytes, rel: str) -> list[Document]:
    """One article per line: {"text", "title"?, "url"?, "date"?, "publisher"?, "authors"?}.

    File-level warnings (decoding, skipped lines) are reported once, on the first document.
    """
    text, warnings = decode(data, rel)
    docs = []
    for n, line in enumerate(text.split("\n"), 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
            if not isinstance(obj, dict) or not isinstance(obj.get("text"), str):
                raise ValueError('each line must be an object with a "text" string')
            meta = {k: obj[k] for k in ("title", "url", "date", "publisher", "authors") if k in obj}
            docs.append(parse_text(obj["text"], f"{rel}#{n}", meta))
        except (ValueError, BadDocument) as err:
            warnings.append(f"{rel}: skipped line {n}: {err}")
    if not docs:
        reason = warnings[-1].split(": ", 1)[1] if warnings else "no lines"
        raise BadDocument(f"{rel}: no usable lines ({reason}); skipped")
    docs[0] = replace(docs[0], warnings=tuple(warnings))
    return docs


def list_sources(corpus_dir: Path) -> tuple[list[Path], list[Skipped]]:
    """Files under ``corpus_dir`` that are documents, and those that are not.

    Hidden files and folders (``.name``) are ignored: uploads in progress, ``.removed/``.
    """
    files, skipped = list_source_paths(corpus_dir)
    return [Path(f) for f in files], skipped


def is_index_dir(path: str) -> bool:
    """Whether a folder is a Verbatim index (its CURRENT file and gen-NNNNNN generations)."""
    try:
        return os.path.isfile(os.path.join(path, "CURRENT")) and any(
            n.startswith("gen-") for n in os.listdir(path))
    except OSError:
        return False


def list_source_paths(corpus_dir: Path, sidecars: set[str] | None = None) -> tuple[list[str], list[Skipped]]:
    """``list_sources`` with absolute path strings (cheaper for 100k files).

    The paths of the sidecars seen are added to ``sidecars`` when given (so a caller
    need not stat a missing sidecar per file).
    """
    files: list[str] = []
    skipped: list[Skipped] = []
    if not corpus_dir.is_dir():
        raise BadDocument(f"corpus folder {corpus_dir} does not exist")
    top = _resolved(corpus_dir)
    stack = [top]
    while stack:  # os.scandir: file types come with the listing, no stat per file
        dirpath = stack.pop()
        try:
            entries = sorted(os.scandir(dirpath), key=lambda e: e.name)
        except OSError:
            continue
        subdirs = []
        for entry in entries:
            name = entry.name
            if name.startswith("."):
                continue
            if entry.is_dir(follow_symlinks=False):
                if not is_index_dir(entry.path):  # an index kept inside the corpus is not read as articles
                    subdirs.append(entry.path)
                continue
            if name.endswith(SIDECAR_SUFFIX):
                if sidecars is not None:
                    sidecars.add(entry.path)
                continue
            kind = _file_kind(entry.path, name, top, entry.is_symlink(), entry.is_file(follow_symlinks=False))
            if kind is True:
                files.append(entry.path)
            elif kind:
                skipped.append(kind)
        stack.extend(reversed(subdirs))
    return files, skipped


def _file_kind(full: str, name: str, top: str, is_symlink: bool, is_file: bool) -> "bool | Skipped":
    """True: a document to index; False: not one, silently; a Skipped: not one, reported."""
    if name.startswith(".") or name.endswith(SIDECAR_SUFFIX) or name.lower() == "readme.md":
        return False
    if is_symlink:
        target = os.path.realpath(full)
        if not target.startswith(top + os.sep) or not os.path.isfile(target):
            return Skipped(full, "symbolic link pointing outside the corpus; skipped")
    elif not is_file:
        return False
    suffix = os.path.splitext(name)[1].lower()
    if suffix in SUPPORTED_SUFFIXES:
        return True
    return Skipped(full, f"unsupported file type '{suffix or name}'; skipped")


def source_paths_among(corpus_dir: Path, paths: Iterable[Path | str]
                       ) -> tuple[list[str], list[Skipped], set[str]] | None:
    """``list_source_paths`` restricted to ``paths`` (files said to have changed).

    Returns (documents that exist, skipped, every absolute file path the hints cover,
    existing or not); a sidecar stands for its document. None when a hint is not a
    plain file path inside the corpus (a folder, say): the caller then scans everything.
    """
    top = _resolved(corpus_dir)
    files: list[str] = []
    skipped: list[Skipped] = []
    covered: set[str] = set()
    for p in paths:
        full = os.path.abspath(p)  # the folder resolved, not a symlinked file itself
        full = os.path.join(os.path.realpath(os.path.dirname(full)), os.path.basename(full))
        if full.endswith(SIDECAR_SUFFIX):
            full = full[: -len(SIDECAR_SUFFIX)]
        if not full.startswith(top + os.sep) or os.path.isdir(full):
            return None
        if full in covered:
            continue
        covered.add(full)
        rel_parts = full[len(top) + 1:].split(os.sep)
        if any(part.startswith(".") for part in rel_parts):
            continue  # hidden, as in a full scan
        if not os.path.lexists(full):
            continue  # deleted: its index rows go
        kind = _file_kind(full, rel_parts[-1], top, os.path.islink(full), os.path.isfile(full))
        if kind is True:
            files.append(full)
        elif kind:
            skipped.append(kind)
    return files, skipped, covered
