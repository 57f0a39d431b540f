"""Small typed data objects passed between the pipeline stages.

Every object that points into a document carries ``start``/``end`` character
offsets with the invariant ``document.text[x.start:x.end] == x.text``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Literal

SentenceKind = Literal["body", "heading", "furniture"]


@dataclass(frozen=True)
class Span:
    start: int
    end: int

    def __post_init__(self) -> None:
        if self.start < 0 or self.end < self.start:
            raise ValueError(f"invalid span [{self.start}, {self.end})")

    def __len__(self) -> int:
        return self.end - self.start


@dataclass(frozen=True)
class Metadata:
    title: str = ""
    publisher: str = ""
    date: str = ""  # ISO 8601 (YYYY, YYYY-MM or YYYY-MM-DD) or "" when unknown
    url: str = ""
    authors: tuple[str, ...] = ()

    def to_dict(self) -> dict:
        d = asdict(self)
        d["authors"] = list(self.authors)
        return d


@dataclass(frozen=True)
class Document:
    """One source file's text, exactly as read (decoded), plus its metadata."""

    doc_id: str  # content hash prefix: identical texts share one id
    path: str  # path relative to the repository root (or as given)
    text: str
    metadata: Metadata
    furniture: tuple[Span, ...] = ()  # page furniture: never quotable
    warnings: tuple[str, ...] = ()
    pages: tuple[int, ...] = ()  # start offset of each page (PDF), else empty


@dataclass(frozen=True)
class Sentence:
    doc_id: str
    start: int
    end: int
    text: str
    kind: SentenceKind = "body"

    @property
    def quotable(self) -> bool:
        return self.kind == "body"


@dataclass(frozen=True)
class Chunk:
    """A few consecutive sentences of one document: the unit of retrieval."""

    doc_id: str
    start: int
    end: int
    text: str
    first_sentence: int  # index into the document's sentence list
    last_sentence: int  # inclusive


@dataclass(frozen=True)
class Source:
    doc_id: str
    path: str
    title: str
    publisher: str
    date: str
    url: str
    authors: tuple[str, ...] = ()
    paths: tuple[str, ...] = ()  # every file carrying this exact text

    def to_dict(self) -> dict:
        d = asdict(self)
        d["authors"] = list(self.authors)
        d["paths"] = list(self.paths)
        return d


@dataclass(frozen=True)
class Passage:
    """A retrieved chunk with its scores and attribution."""

    chunk_id: int
    doc_id: str
    start: int
    end: int
    text: str
    score: float  # fused score (RRF or convex, see retrieval.py)
    dense_score: float | None
    bm25_score: float | None
    dense_rank: int | None
    bm25_rank: int | None
    source: Source
    first_sentence: int = 0  # the chunk's sentences, by index in the document
    last_sentence: int = 0


@dataclass(frozen=True)
class Quote:
    """One verbatim answer: ``text == document.text[span.start:span.end]``."""

    text: str
    span: Span  # the quote's offsets in its document
    score: float
    source: Source
    also_in: tuple[tuple[Source, Span], ...] = ()  # the same sentence in other documents
    answer: str | None = None  # the answer words inside the quote
    answer_span: Span | None = None  # their document offsets
    context_before: str = ""  # the sentences either side, and the span they and the quote cover
    context_after: str = ""
    context_span: Span | None = None
    page: int | None = None  # 1-based page of a PDF
    reader_margin: float | None = None  # reader's span score minus its "no answer" score
    probability: float | None = None  # calibrated probability that it answers the question
    label: str = ""  # that probability in words: "likely answers", "may answer", "related, not an answer"

    @property
    def start(self) -> int:
        return self.span.start

    @property
    def end(self) -> int:
        return self.span.end

    def to_dict(self) -> dict:
        return {
            "page": self.page,
            "quote": self.text,
            "score": round(float(self.score), 4),
            "probability": None if self.probability is None else round(float(self.probability), 4),
            "label": self.label,
            "reader_margin": None if self.reader_margin is None else round(float(self.reader_margin), 3),
            "start": self.start,
            "end": self.end,
            "answer": self.answer,
            "answer_start": self.answer_span.start if self.answer_span else None,
            "answer_end": self.answer_span.end if self.answer_span else None,
            "source": self.source.to_dict(),
            "also_in": [
                {"source": s.to_dict(), "start": sp.start, "end": sp.end} for s, sp in self.also_in
            ],
            "context": {
                "before": self.context_before,
                "after": self.context_after,
                "start": self.context_span.start if self.context_span else self.start,
                "end": self.context_span.end if self.context_span else self.end,
            },
        }


@dataclass(frozen=True)
class Turn:
    """An earlier turn of a conversation, as a follow-up question can use it."""

    question: str  # as the user typed it
    read_as: str = ""  # as it was searched and read ("" : as typed)
    answer: str = ""  # the answer words of the quote that answered it ("" : none, or refused)

    @classmethod
    def from_dict(cls, d: dict | str) -> "Turn":
        """A turn from the API: an earlier question, or ``{"question", "read_as"?, "answer"?}``
        (the ``turn`` an earlier reply returned)."""
        if isinstance(d, str):
            return cls(d)
        if not isinstance(d, dict) or not isinstance(d.get("question"), str):
            raise TypeError("each earlier turn must be a question, or an object with a \"question\"")
        read_as, answer = d.get("read_as") or "", d.get("answer") or ""
        if not isinstance(read_as, str) or not isinstance(answer, str):
            raise TypeError("an earlier turn's \"read_as\" and \"answer\" must be text")
        return cls(d["question"], read_as, answer)

    def to_dict(self) -> dict:
        return {"question": self.question, "read_as": self.read_as, "answer": self.answer}


@dataclass(frozen=True)
class FollowUp:
    """How earlier turns were used for a question: shown to the user in one line
    (``conversation.py``)."""

    earlier: str  # the earlier question (as the user typed it)
    read_as: str  # the question as it was searched and read
    cue: str  # why: "pronoun", "lead", "short", "other" or "refused alone"

    def to_dict(self) -> dict:
        return {"earlier_question": self.earlier, "read_as": self.read_as, "cue": self.cue}


@dataclass(frozen=True)
class AskResult:
    question: str
    answers: tuple[Quote, ...]
    no_answer: bool
    # shown labelled "related, not an answer": the closest passages when no_answer is true,
    # else the quotes that did not clear the answer bar on their own
    closest: tuple[Quote, ...] = ()
    timings_ms: dict = field(default_factory=dict)
    # the best sentence's confidence, compared with the no-answer threshold (None: nothing retrieved)
    confidence: float | None = None
    # how earlier turns of the conversation were used (None: the question was read alone)
    follow_up: FollowUp | None = None

    @property
    def read_as(self) -> str:
        return self.follow_up.read_as if self.follow_up is not None else self.question

    def turn(self) -> Turn:
        """This question and its answer as an earlier turn for the next question."""
        answer = (self.answers[0].answer or "") if self.answers else ""
        return Turn(self.question, self.read_as, answer)

    def to_dict(self) -> dict:
        return {
            "question": self.question,
            "follow_up": None if self.follow_up is None else self.follow_up.to_dict(),
            "turn": self.turn().to_dict(),
            "no_answer": self.no_answer,
            "confidence": None if self.confidence is None else round(float(self.confidence), 4),
            "answers": [q.to_dict() for q in self.answers],
            "closest": [q.to_dict() for q in self.closest],
            "timings_ms": {k: round(v, 2) for k, v in self.timings_ms.items()},
        }
