"""Settings, validated on construction and recorded beside the index."""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, replace
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CORPUS = REPO_ROOT / "corpus"
DEFAULT_INDEX = REPO_ROOT / "embeddings"
DEFAULT_MODEL = "all-MiniLM-L6-v2"
# SQuAD v1.1/v2.0 (train for training and tuning, dev for evaluation): shared/data/squad beside the repo
SQUAD_DIR = REPO_ROOT.parent / "shared" / "data" / "squad"

MAX_QUESTION_CHARS = 1000


@dataclass(frozen=True)
class IndexSettings:
    """Everything that changes what the index contains. A change forces a rebuild."""

    model: str = DEFAULT_MODEL
    chunk_sentences: int = 4
    chunk_overlap: int = 1
    max_sentence_chars: int = 800
    # "sentences": a passage's vector is pooled from its sentences' encoder passes (the mean of
    # their token states), so a build encodes each sentence once and no passage (x0.44 the old
    # build time, docs/cluster.md); "own": each passage encoded alone too, as indexes built
    # before this field were
    passage_vectors: str = "sentences"

    def __post_init__(self) -> None:
        if self.chunk_sentences < 1:
            raise ValueError("chunk_sentences must be at least 1")
        if not 0 <= self.chunk_overlap < self.chunk_sentences:
            raise ValueError("chunk_overlap must be at least 0 and less than chunk_sentences")
        if self.max_sentence_chars < 50:
            raise ValueError("max_sentence_chars must be at least 50")
        if self.passage_vectors not in ("sentences", "own"):
            raise ValueError("passage_vectors must be 'sentences' or 'own'")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def chosen(cls, **fields) -> "tuple[IndexSettings | None, tuple[str, ...]]":
        """The settings the user chose (--model, --passage-vectors: those not None) and their
        names, for ``Verbatim(settings=..., named=...)``; nothing chosen: None, the index's own."""
        picked = {k: v for k, v in fields.items() if v}
        return (replace(cls.from_env(), **picked) if picked else None), tuple(picked)

    @classmethod
    def from_dict(cls, d: dict) -> "IndexSettings":
        """The settings a manifest records; a field it predates is what was built then (one this
        version does not know is left out: ``Manifest.differs`` sees it, and rebuilds)."""
        return cls(**{**PREDATED, **{k: v for k, v in d.items() if k in cls.__dataclass_fields__}})

    @classmethod
    def from_env(cls) -> "IndexSettings":
        return cls(model=os.environ.get("VERBATIM_MODEL", DEFAULT_MODEL))


# what an index built before a field existed was built with
PREDATED = {"passage_vectors": "own"}


@dataclass(frozen=True)
class AskSettings:
    """Query-time knobs (no rebuild needed)."""

    top: int = 3  # quotes returned
    passages: int = 8  # passages read by the answerer
    candidates: int = 50  # per retriever, before fusion
    rrf_k: int = 60
    mode: str = "hybrid"  # hybrid | dense | bm25
    reader: bool = True  # use the extractive reader when its weights are there

    def __post_init__(self) -> None:
        if self.top < 1 or self.top > 50:
            raise ValueError("top must be between 1 and 50")
        if self.mode not in ("hybrid", "dense", "bm25"):
            raise ValueError("mode must be one of: hybrid, dense, bm25")
