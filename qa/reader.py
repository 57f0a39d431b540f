"""The extractive reader: which words of a passage answer the question, if any.

A MiniLM encoder with a start/end head, trained by ``scripts/train_reader.py`` on
SQuAD v1.1 train (with "no answer" windows) and shipped as int8 ONNX in
``qa/models/reader/`` (model card beside it). It reads bounded windows
(question + passage, at most ``max_len`` tokens, longer passages in overlapping
windows), one window per run (no padding).

For every window the null score is start[CLS] + end[CLS]; a span (i, j) scores
start[i] + end[j] (j - i < MAX_ANSWER_TOKENS). ``Reading.best_in(a, b)`` gives
the best span lying inside document characters [a, b) and its margin over the
null score of its window; answering turns margins into a sentence feature and
the marked answer words.
"""

from __future__ import annotations

import json
import threading
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

MODEL_DIR = Path(__file__).with_name("models") / "reader"
MAX_ANSWER_TOKENS = 30


@dataclass(frozen=True)
class Span:
    start: int  # document offsets
    end: int
    score: float
    margin: float  # span score minus the window's null score


@dataclass
class _Window:
    doc_id: str
    doc_start: int  # document offset of the passage text the offsets refer to
    ctx: np.ndarray  # token positions of passage tokens
    offs: np.ndarray  # (n, 2) char offsets of those tokens within the passage text
    start: np.ndarray  # start logits of those tokens
    end: np.ndarray
    null: float


class Reading:
    """The reader's output for one question over some passages."""

    def __init__(self, windows: list[_Window]):
        self.windows = windows
        self._by_doc: dict[str, list[_Window]] = {}
        for w in windows:
            self._by_doc.setdefault(w.doc_id, []).append(w)

    def best_in(self, doc_id: str, a: int, b: int) -> Span | None:
        """Best span inside document characters [a, b) over all windows that cover it."""
        best: Span | None = None
        for w in self._by_doc.get(doc_id, ()):
            s_doc = w.offs[:, 0] + w.doc_start
            e_doc = w.offs[:, 1] + w.doc_start
            inside = np.nonzero((s_doc >= a) & (e_doc <= b) & (e_doc > s_doc))[0]
            if inside.size == 0:
                continue
            st, en = w.start[inside], w.end[inside]
            pos = w.ctx[inside]
            # span scores for i <= j within MAX_ANSWER_TOKENS tokens
            scores = st[:, None] + en[None, :]
            gap = pos[None, :] - pos[:, None]
            scores = np.where((gap >= 0) & (gap < MAX_ANSWER_TOKENS), scores, -np.inf)
            i, j = np.unravel_index(int(np.argmax(scores)), scores.shape)
            sc = float(scores[i, j])
            if not np.isfinite(sc):
                continue
            span = Span(int(s_doc[inside[i]]), int(e_doc[inside[j]]), sc, sc - w.null)
            if best is None or span.margin > best.margin:
                best = span
        return best


MAX_QUESTION_TOKENS = 64  # of the reader's window (max_len 192, stride 64): the rest is passage


class Reader:
    def __init__(self, folder: Path = MODEL_DIR):
        from tokenizers import Tokenizer

        from .embeddings import ort_session

        cfg = json.loads((folder / "config.json").read_text())
        self.config = cfg
        self.max_len = int(cfg.get("max_len", 192))
        self.stride = int(cfg.get("stride", 64))
        self._tok = Tokenizer.from_file(str(folder / "tokenizer.json"))
        self._tok.no_padding()
        self._tok.enable_truncation(self.max_len, stride=self.stride, strategy="only_second")
        self._qtok = Tokenizer.from_file(str(folder / "tokenizer.json"))  # questions, untruncated
        self._qtok.no_padding()
        self._qtok.no_truncation()
        self._sess = ort_session(folder / "reader.int8.onnx")
        self._lock = threading.Lock()

    def read(self, question: str, passages: list[tuple[str, int, str]]) -> Reading:
        """Read ``(doc_id, doc_start, passage_text)`` windows for ``question``. A question longer
        than MAX_QUESTION_TOKENS is read by its first ones (the window must leave room for the
        passage: the tokenizer fails outright on a question that fills it)."""
        ids = self._qtok.encode(question, add_special_tokens=False)
        if len(ids.ids) > MAX_QUESTION_TOKENS:
            question = question[: ids.offsets[MAX_QUESTION_TOKENS - 1][1]]
        encs, owners = [], []
        for k, (_, _, text) in enumerate(passages):
            enc = self._tok.encode(question, text)
            for e in [enc, *enc.overflowing]:
                encs.append(e)
                owners.append(k)
        windows = []
        with self._lock:
            # one window per run: windows differ in length, and padding them to one
            # batch cost 40% more tokens (bench: 224 vs 174 ms for the top 8 passages)
            for e, k in zip(encs, owners):
                ids = np.asarray([e.ids], dtype=np.int64)
                tt = np.asarray([e.type_ids], dtype=np.int64)
                start, end = self._sess.run(
                    None, {"input_ids": ids, "attention_mask": np.ones_like(ids), "token_type_ids": tt})
                seq = np.asarray([-1 if s is None else s for s in e.sequence_ids])
                ctx = np.nonzero(seq == 1)[0]
                offs = np.asarray(e.offsets, dtype=np.int64)[ctx] if ctx.size else np.zeros((0, 2), np.int64)
                doc_id, doc_start, _ = passages[k]
                windows.append(_Window(doc_id, doc_start, ctx, offs, start[0, ctx], end[0, ctx],
                                       float(start[0, 0] + end[0, 0])))
        return Reading(windows)


_CACHE: dict[str, Reader | None] = {}
_LOCK = threading.Lock()


def load_reader(folder: Path | None = None) -> Reader | None:
    """The shipped reader, loaded once; None (with a warning) if its files are missing."""
    folder = folder or MODEL_DIR
    key = str(folder)
    with _LOCK:
        if key not in _CACHE:
            try:
                _CACHE[key] = Reader(folder)
            except Exception as err:  # missing or damaged weights: answer without the reader
                warnings.warn(f"reader unavailable ({err}); answers use the sentence scorer only",
                              stacklevel=2)
                _CACHE[key] = None
        return _CACHE[key]
