"""The one public API front ends call: ``Verbatim(...).ask(question)``.

The service owns the encoder (loaded once), the loaded index generation (swapped
atomically when a newer one appears on disk) and the write path (``sync``).
"""

from __future__ import annotations

import os
import re
import sys
import threading
import time
import unicodedata
from dataclasses import replace
from pathlib import Path
from typing import Iterable, Sequence

from . import answering, conversation, index as index_mod, retrieval, store, sync as sync_mod
from .config import DEFAULT_CORPUS, DEFAULT_INDEX, MAX_QUESTION_CHARS, REPO_ROOT, AskSettings, IndexSettings
from .embeddings import Encoder, OnnxEncoder, can_pool, ensure_onnx_export, load_encoder
from .errors import BadQuestion, IndexMissing, ModelMismatch, NothingToLookFor, VerbatimError
from .retrieval import Filter
from .types import AskResult, FollowUp, Passage, Turn

# a terminal's escape sequences (colours, cursor moves: ESC [ ... letter), whole, then any other
# control character: pasted from a terminal, "\x1b[31m" must not leave "[31m" in the question
_CONTROL = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b[@-_]?|[\x00-\x08\x0b-\x1f\x7f]")


def clean_question(question: object) -> str:
    """Validate a question; raise BadQuestion with a one-line reason."""
    if not isinstance(question, str):
        raise BadQuestion("the question must be text")
    q = unicodedata.normalize("NFC", _CONTROL.sub(" ", question)).strip()
    if not q:
        raise BadQuestion("please type a question")
    if len(q) > MAX_QUESTION_CHARS:
        raise BadQuestion(
            f"questions are limited to {MAX_QUESTION_CHARS:,} characters (this one has {len(q):,})"
        )
    if not re.search(r"\w", q):
        raise BadQuestion("the question has no words in it")
    return " ".join(q.split())


def something_to_look_for(read_as: str) -> None:
    """NothingToLookFor unless ``read_as``, the question as it will be read, names someone or
    something ("What did she say?", "Why?", with no earlier turn to lend them words: any quote
    found for them would be chance)."""
    if not conversation.content_words(read_as):
        raise NothingToLookFor("the question names no one and nothing to look for: ask with a name or a "
                               "topic, or right after the question it follows")


class Verbatim:
    def __init__(
        self,
        corpus_dir: Path | str = DEFAULT_CORPUS,
        index_dir: Path | str = DEFAULT_INDEX,
        settings: IndexSettings | None = None,
        root: Path | None = None,
        calibration: answering.Calibration | None = None,
        named: Iterable[str] | None = None,
    ):
        """``named``: the fields of ``settings`` the user chose (--model, --passage-vectors); the
        others are what built the index, when there is one. Default: all of them when
        ``settings`` is given, none otherwise (VERBATIM_MODEL names the model)."""
        self.corpus_dir = Path(corpus_dir)
        self.index_dir = Path(index_dir)
        self.settings = settings or IndexSettings.from_env()
        if named is None:
            named = IndexSettings.__dataclass_fields__ if settings is not None else ()
        self.named = frozenset(named) | ({"model"} if os.environ.get("VERBATIM_MODEL") else frozenset())
        # a model the user named must be the index's; otherwise the index's manifest says which
        # model questions are encoded with
        self.model_named = "model" in self.named
        self.root = root or (REPO_ROOT if _inside(self.corpus_dir, REPO_ROOT) else self.corpus_dir.parent)
        self.calibration = calibration or answering.Calibration.load()
        self._index: index_mod.Index | None = None
        self._encoder: Encoder | None = None
        self._query_encoder: Encoder | None = None
        self._lock = threading.Lock()

    # -- resources

    @property
    def encoder(self) -> Encoder:
        if self._encoder is None:
            self._encoder = load_encoder(self.settings.model)
        return self._encoder

    @property
    def onnx_dir(self) -> Path:
        slug = re.sub(r"[^A-Za-z0-9._-]+", "_", self.settings.model).strip("._") or "model"
        return self.index_dir / f"onnx-{slug[:80]}"

    @property
    def query_encoder(self) -> Encoder:
        """The encoder for questions: the checked ONNX export when there is one
        (no torch import: a cold ``qa ask`` starts in about a second), else the model."""
        if self._query_encoder is None:
            folder = self.onnx_dir
            enc: Encoder | None = None
            if (folder / "checked").exists():
                try:
                    enc = OnnxEncoder(folder)
                    if enc.name != self.settings.model:
                        enc = None
                except Exception:  # a damaged export: the full model still works
                    enc = None
            self._query_encoder = enc or self.encoder
        return self._query_encoder

    @property
    def document_encoder(self) -> Encoder:
        """The encoder for articles: the questions' one. Through the checked ONNX export the
        vectors are within 1e-5 of the model's (2.4e-7 on SQuAD texts) at about the same speed
        (125 against 129 texts/s, bench/bench_encoders.py), and an update never imports torch: a
        cold `qa index` of one new file takes 1.3 s. The first build uses the model, and exports it."""
        return self.query_encoder

    def answer_calibration(self, reader: bool = True) -> answering.Calibration:
        """Weights and no-answer threshold in force: the reader's, or the fallback's."""
        return self.calibration.for_reader(reader and self.reader is not None)

    @property
    def reader(self):
        """The extractive reader (qa/models/reader), or None (with a warning) without it;
        loaded once per process."""
        from .reader import load_reader

        return load_reader()

    def index(self) -> index_mod.Index:
        """The live index generation; reloaded when a newer one has been published."""
        gen = store.current_generation(self.index_dir)
        with self._lock:
            if gen is None:
                if self._index is not None:
                    return self._index
                raise IndexMissing(f"no index in {self.index_dir}; run `qa index` first")
            if self._index is None or self._index.gen_dir != gen:
                idx = index_mod.Index.load(self.index_dir)
                self._use_model_of(idx)
                self._index = idx
            return self._index

    def _use_model_of(self, idx: index_mod.Index) -> None:
        """The manifest is the contract: questions are encoded with the model that built the
        index. A different model named by the user is a one-line error."""
        built = idx.manifest.model
        if not idx.manifest.differs(self.settings.model):
            return
        if self.model_named:
            raise ModelMismatch(
                f"the index in {self.index_dir} was built with the model {built}, not {self.settings.model}: "
                f"rebuild it with `qa index --model {self.settings.model}`, or leave --model out")
        self.settings = replace(self.settings, model=built)
        self._encoder = self._query_encoder = None

    def sync(self, progress: bool = False, log=None, wait: bool = True,
             rehash: bool = False, only=None, cluster=None) -> sync_mod.SyncReport:
        """Update the index; ``only``: the files known to have changed (None: scan all). The
        index keeps the settings it was built with (its model included) but those named; a
        named one that differs rebuilds it."""
        self._settle_settings()  # loads the encoder before the lock: the settings rarely change
        # the built settings are read again under the lock that the update holds: a writer that
        # finished while this one waited must not have its settings undone
        with store.WriteLock(self.index_dir, wait=wait, on_wait=log):
            self._settle_settings()
            report = sync_mod.sync(
                self.corpus_dir, self.index_dir, self.settings, self.document_encoder,
                root=self.root, progress=progress, log=log, wait=wait, rehash=rehash, only=only,
                cluster=cluster, onnx_dir=self.onnx_dir if (self.onnx_dir / "checked").exists() else None,
            )
        if not (self.onnx_dir / "checked").exists() and ensure_onnx_export(self.encoder, self.onnx_dir):
            self._query_encoder = None  # from now on questions and articles go through the export
        return report

    def _settle_settings(self) -> None:
        """The settings a sync writes: the built index's, but those the user named (a named one
        that differs rebuilds it), and its encoder."""
        built = store.built_with(self.index_dir)
        if built is not None:
            wanted = replace(built, **{f: getattr(self.settings, f) for f in self.named})
            if wanted.model != self.settings.model:
                self._encoder = self._query_encoder = None
            self.settings = wanted
        if self.settings.passage_vectors == "sentences" and not can_pool(self.document_encoder):
            if "passage_vectors" in self.named:
                raise VerbatimError(f"the model {self.settings.model} cannot pool passage vectors from its "
                                    "sentences (it is not mean-pooled): use --passage-vectors own")
            self.settings = replace(self.settings, passage_vectors="own")

    def ensure_index(self, log=None) -> sync_mod.SyncReport | None:
        """Build (or rebuild, if stale) the index; return the report, or None if it was fine."""
        if store.index_is_current(self.index_dir):
            return None
        return self.sync(progress=sys.stderr.isatty(), log=log)

    # -- asking

    def ask(self, question: str, top: int = 3, mode: str = "hybrid", flt: Filter = Filter(),
            history: Sequence[Turn] = ()) -> AskResult:
        """Quotes answering ``question`` (or ``no_answer`` with the closest passages); with
        ``history`` (the conversation's earlier turns, oldest first), a follow-up question is
        read with what they supply (``conversation.py``)."""
        return self.ask_with_passages(question, AskSettings(top=top, mode=mode), flt, history=history)[0]

    def ask_with_passages(
        self, question: str, cfg: AskSettings = AskSettings(), flt: Filter = Filter(), retrieve: int = 0,
        history: Sequence[Turn] = (),
    ) -> tuple[AskResult, list[Passage]]:
        """``ask`` with explicit settings, also returning the ranked passages (at least
        ``retrieve`` of them): the first ``cfg.passages``, those the answerer reads, ranked
        again by their best sentence (``answering.rerank``), then the rest in retrieval's
        order, there for retrieval metrics.
        """
        q = clean_question(question)
        earlier = history[-1] if history else None  # a follow-up leans on the last turn
        cue = conversation.follow_up_cue(q) if earlier is not None else None
        read_as = conversation.read_with(q, earlier) if cue is not None else q
        something_to_look_for(read_as)
        if read_as != q:  # the earlier turn supplies words: read with them, and say so
            result, passages = self._read(q, read_as, cfg, flt, retrieve, follow_up=True)
            return replace(result, follow_up=FollowUp(earlier.question, read_as, cue)), passages
        result, passages = self._read(q, q, cfg, flt, retrieve)
        if earlier is not None and result.no_answer:
            # refused alone: read once more with the conversation, kept only if it then answers
            read_as = conversation.read_with(q, earlier)
            if read_as != q:
                again, more = self._read(q, read_as, cfg, flt, retrieve)
                if not again.no_answer:
                    return replace(again, timings_ms=_sum(again.timings_ms, result.timings_ms),
                                   follow_up=FollowUp(earlier.question, read_as, "refused alone")), more
        return result, passages

    def candidates(self, question: str, cfg: AskSettings = AskSettings(), flt: Filter = Filter(), retrieve: int = 0,
                   cal: answering.Calibration | None = None, idx: index_mod.Index | None = None
                   ) -> tuple[list[Passage], list[answering.Candidate], dict[str, float]]:
        """How a question is read, the one path the answers and the tuning scripts share: with the
        acronyms its names abbreviate in this corpus, encoded, retrieved (at least ``retrieve``
        passages ranked), and the first ``cfg.passages`` read into candidate sentences, best
        first, then ranked again by them (``answering.rerank``; the rest keep retrieval's
        order). Also the milliseconds encoding and retrieval took. ``cal``: the weights and quote
        model to read with (default: those answers use); ``idx``: the generation to read (default:
        the live one)."""
        t0 = time.perf_counter()
        idx = idx or self.index()
        read_as, aliases = retrieval.read_with_acronyms(idx, question)  # "… Worldwide? (CSW)"
        qvec = self.query_encoder.encode_queries([read_as])[0]
        t1 = time.perf_counter()
        reader = self.reader if cfg.reader else None
        cal = cal or self.answer_calibration(reader is not None)
        passages = retrieval.retrieve(
            idx, read_as, qvec, top=max(cfg.passages, retrieve), candidates=max(cfg.candidates, retrieve),
            mode=cfg.mode, rrf_k=cfg.rrf_k, flt=flt, weights=cal.fusion_weights,
        )
        t2 = time.perf_counter()
        cands = answering.candidates(idx, read_as, qvec, passages[: cfg.passages], cal, reader, aliases)
        passages = answering.rerank(passages, cands, cfg.passages)  # the reader's say in the ranking
        return passages, cands, {"encode": (t1 - t0) * 1e3, "retrieve": (t2 - t1) * 1e3}

    def _read(self, q: str, read_as: str, cfg: AskSettings, flt: Filter, retrieve: int, follow_up: bool = False
              ) -> tuple[AskResult, list[Passage]]:
        """Retrieve and answer ``read_as`` (the question ``q``, alone or, ``follow_up``, with the
        words its earlier turn supplies: answered against the follow-up bar)."""
        t0 = time.perf_counter()
        idx, cal = self.index(), self.answer_calibration(cfg.reader)  # one generation throughout
        passages, cands, timings = self.candidates(read_as, cfg, flt, retrieve, cal, idx)
        cal = cal.for_follow_up() if follow_up else cal  # only the bar differs
        sources = {p.doc_id: p.source for p in passages[: cfg.passages]}
        quotes = answering.build_quotes(idx, cands, cfg.top, sources)
        confidence = answering.confidence(cands, cal)
        t3 = time.perf_counter()
        total = (t3 - t0) * 1e3  # "answer": reading the passages (the reader) and choosing the quotes
        timings.update({"answer": total - timings["encode"] - timings["retrieve"], "total": total})
        no_answer = confidence is None or confidence < cal.threshold
        if no_answer:
            # the closest passages are shown as such, never with "answer words" marked
            closest = tuple(replace(x, answer=None, answer_span=None,
                                    label=answering.label(x.probability, cal, answer=False)) for x in quotes)
            return AskResult(q, (), True, closest, timings, confidence), passages
        # with a quote model, a quote after the first is an answer only if it clears the bar
        # itself; the others are shown as related (without answer words)
        shown = tuple(replace(x, label=answering.label(x.probability, cal, answer=True, first=n == 0))
                      for n, x in enumerate(quotes) if x.probability is None or x.probability >= cal.threshold)
        related = tuple(replace(x, answer=None, answer_span=None,
                                label=answering.label(x.probability, cal, answer=False)) for x in quotes
                        if x.probability is not None and x.probability < cal.threshold)
        return AskResult(q, shown, False, related, timings, confidence), passages


def _sum(a: dict, b: dict) -> dict:
    """The timings of two readings of one question, added up."""
    return {k: v + b.get(k, 0.0) for k, v in a.items()}


def _inside(path: Path, root: Path) -> bool:
    try:
        path.resolve().relative_to(root.resolve())
        return True
    except ValueError:
        return False
