"""Chunking stage: sentences with exact offsets, then overlapping chunks of sentences.

Sentence boundaries come from syntok (offset-preserving by design: every token
knows its position in the input). Before that, text is cut into blocks at
blank lines and at line breaks that end a paragraph, so scraped one-paragraph-
per-line text and hard-wrapped text both segment sensibly.
"""

from __future__ import annotations

import re

from syntok import segmenter

from .types import Chunk, Document, Sentence, SentenceKind, Span

_ATX = re.compile(r"#{1,6}\s+\S")  # a markdown heading line
_TERMINAL = tuple('.!?:;"”’\')…]')
_WS = re.compile(r"\s+")


def _blocks(text: str) -> list[tuple[int, int]]:
    """Cut text into (start, end) blocks; a block never holds a paragraph break."""
    blocks: list[tuple[int, int]] = []
    lines: list[tuple[int, int]] = []
    pos = 0
    for raw in text.split("\n"):
        lines.append((pos, pos + len(raw)))
        pos += len(raw) + 1
    cur_start: int | None = None
    cur_end = 0
    for i, (s, e) in enumerate(lines):
        line = text[s:e]
        if not line.strip():
            if cur_start is not None:
                blocks.append((cur_start, cur_end))
                cur_start = None
            continue
        if cur_start is None:
            cur_start = s
        cur_end = e
        nxt = lines[i + 1] if i + 1 < len(lines) else None
        if nxt is None:
            continue
        next_line = text[nxt[0] : nxt[1]].lstrip()
        if not next_line:
            continue
        stripped = line.rstrip()
        wrapped = next_line[0].islower() or (
            len(stripped) >= 60 and not stripped.endswith(_TERMINAL)
        )
        if not wrapped:
            blocks.append((cur_start, cur_end))
            cur_start = None
    if cur_start is not None:
        blocks.append((cur_start, cur_end))
    return blocks


def _split_long(text: str, start: int, end: int, limit: int) -> list[tuple[int, int]]:
    """Split an over-long sentence at whitespace into pieces of at most ``limit`` chars."""
    out = []
    while end - start > limit:
        cut = text.rfind(" ", start + limit // 2, start + limit)
        if cut <= start:
            cut = start + limit
        out.append((start, cut))
        start = cut
        while start < end and text[start].isspace():
            start += 1
    if start < end:
        out.append((start, end))
    return out


def sentence_spans(text: str, max_chars: int = 800) -> list[tuple[int, int]]:
    """(start, end) of every sentence; stripped of surrounding whitespace, in order."""
    spans: list[tuple[int, int]] = []
    for b_start, b_end in _blocks(text):
        block = text[b_start:b_end]
        for paragraph in segmenter.analyze(block):
            for sent in paragraph:
                if not sent:
                    continue
                s = b_start + sent[0].offset
                e = b_start + sent[-1].offset + len(sent[-1].value)
                spans.extend(_split_long(text, s, e, max_chars))
    # syntok may leave tiny gaps; guarantee order and non-overlap
    clean: list[tuple[int, int]] = []
    for s, e in spans:
        if clean and s < clean[-1][1]:
            s = clean[-1][1]
        if e > s and text[s:e].strip():
            clean.append((s, e))
    return clean


def own_line(text: str, start: int, end: int) -> bool:
    """``text[start:end]`` is a line of ``text`` by itself (surrounding spaces aside)."""
    line_end = text.find("\n", end)
    line = text[text.rfind("\n", 0, start) + 1: len(text) if line_end == -1 else line_end]
    return line.strip() == text[start:end].strip()


def _is_heading(text: str, sent: str, start: int, end: int) -> bool:
    """A line on its own without terminal punctuation or a markdown heading ("## Why:"), or a
    question: not an answer."""
    if sent.rstrip().endswith("?"):
        return True
    if not own_line(text, start, end):
        return False
    return bool(_ATX.match(sent.lstrip())) or (not sent.rstrip().endswith(_TERMINAL) and len(sent.split()) <= 20)


def _overlap(span_start: int, span_end: int, furniture: tuple[Span, ...]) -> int:
    return sum(max(0, min(span_end, f.end) - max(span_start, f.start)) for f in furniture)


def split_sentences(doc: Document, max_chars: int = 800) -> list[Sentence]:
    out = []
    for s, e in sentence_spans(doc.text, max_chars):
        sent = doc.text[s:e]
        kind: SentenceKind = "body"
        if _overlap(s, e, doc.furniture) * 2 > (e - s):
            kind = "furniture"
        elif _is_heading(doc.text, sent, s, e) or len(_WS.sub(" ", sent).split()) < 3:
            kind = "heading"
        out.append(Sentence(doc.doc_id, s, e, sent, kind))
    return out


def make_chunks(
    doc: Document, sentences: list[Sentence], size: int = 4, overlap: int = 1
) -> list[Chunk]:
    """Windows of ``size`` sentences, consecutive windows sharing ``overlap``.

    Furniture is never inside a chunk: windows run over the stretches of text
    between furniture, so a chunk's text is exactly ``doc.text[start:end]``.
    """
    runs: list[list[int]] = []
    for i, s in enumerate(sentences):
        if s.kind == "furniture":
            if runs and runs[-1]:
                runs.append([])
            continue
        if not runs:
            runs.append([])
        runs[-1].append(i)
    chunks: list[Chunk] = []
    step = size - overlap
    for run in (r for r in runs if r):
        i = 0
        while True:
            window = run[i : i + size]
            first, last = window[0], window[-1]
            start, end = sentences[first].start, sentences[last].end
            chunks.append(Chunk(doc.doc_id, start, end, doc.text[start:end], first, last))
            if i + size >= len(run):
                break
            i += step
    return chunks


def segment(doc: Document, settings) -> tuple[list[Sentence], list[Chunk]]:
    """A document's sentences and chunks as ``settings`` (``IndexSettings``) say: what the
    index stores for it, wherever it is computed (locally, or on a Ray worker)."""
    sents = split_sentences(doc, settings.max_sentence_chars)
    return sents, make_chunks(doc, sents, settings.chunk_sentences, settings.chunk_overlap)

