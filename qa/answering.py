"""Answering stage: pick the sentences that answer, mark the answer words, or say none do.

Each candidate sentence (body sentences of the top passages) is scored by

    score = W_COS * cosine(question, sentence)
          + W_LEX * idf-weighted share of the question's content terms in the sentence
          + W_PASSAGE * fused retrieval score of its best passage (relative to the best)
          + W_TYPE * (1 if the sentence holds a span of the type the question asks for
                      (a number for "how many", a date for "when", a name for "who"), else 0)
          + W_READER * sigmoid(margin of the reader's best span inside the sentence
                               over its window's "no answer" score)
          + W_READER_TOP * exp(that span's score - the best span score of any candidate)

When the reader (``reader.py``) is there, its best span inside the chosen sentence
is the marked answer; without it (weights missing) the typed-span heuristic below
marks number/date/name answers.

The weights are tuned on SQuAD v1.1 *train* (``scripts/tune_weights.py``); the threshold is
calibrated on the shipped question set and SQuAD v2.0 dev (``qa eval --calibrate``).

Each candidate then gets a probability that it answers (``quote_features`` read by a logistic
``NoAnswerModel`` fitted on per-candidate rows, the "quote model": ``scripts/tune_quotes.py``, on
SQuAD v1.1 *train* askings and the people tuning half). The candidates are ranked by it; a quote
is an answer only when its own probability reaches the bar (``Calibration.threshold``, chosen
with the model), and the question is declared unanswered when the best one does not.

Without a quote model (an older calibration), the decision is the older one: the *confidence*
of the best sentence, the logit of a small logistic model over its score, cosine, lexical
overlap, the reader's margin and raw score, and its lead over the runner-up (``NoAnswerModel``
on ``decision_features``, ``scripts/tune_weights.py --no-answer``), against a threshold from
``qa eval --calibrate``. Without the reader, confidence is the score, and retrieval fuses by
RRF, as when its weights were fitted. All of it is stored in ``qa/calibration.json``, and the
models are parsed once, when it is loaded.
"""

from __future__ import annotations

import bisect
import json
import re
import warnings
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np

from .chunking import own_line
from .index import Index
from .sparse import tokenize as bm25_tokenize
from .types import Passage, Quote, Sentence, Source, Span

CALIBRATION_FILE = Path(__file__).with_name("calibration.json")
W_COS, W_LEX, W_PASSAGE, W_TYPE = 0.5, 0.4, 0.1, 0.0
DEFAULT_THRESHOLD = 0.35


@dataclass(frozen=True)
class Calibration:
    threshold: float = DEFAULT_THRESHOLD
    w_cos: float = W_COS
    w_lex: float = W_LEX
    w_passage: float = W_PASSAGE
    w_type: float = W_TYPE
    w_reader: float = 0.0
    w_reader_top: float = 0.0
    reader_span_margin: float = -4.0  # below this the reader's span is not marked
    fusion_weights: tuple[float, ...] | None = None  # convex fusion: dense, BM25, sentence; None: RRF
    fusion_how: str = ""
    # probability that a quote answers (QuoteModel on quote_features); when there is one it
    # ranks the candidates, and ``threshold`` is a probability every quote shown as an answer
    # must reach on its own
    quote_model: NoAnswerModel | None = None
    likely: float = 0.5  # a quote at or above this (and the threshold) "likely answers"
    no_answer: NoAnswerModel | None = None  # None: confidence is the score
    how: str = "default"
    weights_how: str = "default"
    # weights and threshold chosen for answering *without* the reader (its weights
    # missing, or --no-reader): scores then lack the reader's terms, so they need
    # their own threshold
    without_reader: dict | None = None
    # the bar for a follow-up read with the words its earlier turn supplies: those words dilute
    # what the quote model (fitted on questions that stand alone) reads, so its probabilities
    # run low there; fitted on the tuning dialogues (scripts/tune_follow_ups.py). None: ``threshold``
    follow_up_threshold: float | None = None
    follow_up_how: str = ""

    @classmethod
    def load(cls, path: Path = CALIBRATION_FILE, quote_model: bool = True, strict: bool = False) -> "Calibration":
        """The stored calibration; a damaged model in it gives the default one (with a warning),
        or with ``strict`` (a file the user named) a ValueError. ``quote_model=False`` leaves
        the quote model out (to compute the features it reads)."""
        if strict:
            with warnings.catch_warnings():
                warnings.simplefilter("error")
                try:
                    json.loads(path.read_text())
                    return cls.load(path, quote_model)
                except (OSError, ValueError, UserWarning) as e:
                    raise ValueError(f"{path}: not a usable calibration file ({e})") from e
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            return cls()
        if not quote_model:
            data.pop("quote_model", None)
        keys = {"threshold", "w_cos", "w_lex", "w_passage", "w_type", "w_reader", "w_reader_top",
                "reader_span_margin", "no_answer", "how", "weights_how", "without_reader",
                "fusion_weights", "fusion_how", "quote_model", "likely", "follow_up_threshold", "follow_up_how"}
        fields = {k: v for k, v in data.items() if k in keys}
        if fields.get("no_answer") is not None:  # parsed once here, not per question
            try:
                fields["no_answer"] = NoAnswerModel.from_dict(fields["no_answer"])
            except (KeyError, TypeError, ValueError) as e:  # its threshold is meaningless without it
                warnings.warn(f"{path}: unusable no-answer model ({e}); using the default calibration")
                return cls()
        if fields.get("fusion_weights") is not None:
            w = fields["fusion_weights"]
            if not (isinstance(w, list) and len(w) == 3 and all(isinstance(x, (int, float)) and x >= 0 for x in w)
                    and sum(w) > 0):
                warnings.warn(f"{path}: fusion_weights must be three non-negative numbers; using the default calibration")
                return cls()
            fields["fusion_weights"] = tuple(w)
        if fields.get("quote_model") is not None:
            try:
                fields["quote_model"] = NoAnswerModel.from_dict(fields["quote_model"], QUOTE_FEATURES)
            except (KeyError, TypeError, ValueError) as e:
                warnings.warn(f"{path}: unusable quote model ({e}); using the default calibration")
                return cls()
        return cls(**fields)

    def for_reader(self, present: bool) -> "Calibration":
        """The calibration to answer with when the reader is (not) present."""
        if present or not (self.w_reader or self.w_reader_top or self.no_answer is not None
                           or self.quote_model is not None):
            return self
        keys = {"threshold", "w_cos", "w_lex", "w_passage", "w_type", "how", "weights_how"}
        own = {k: v for k, v in (self.without_reader or {}).items() if k in keys}
        # its weights and threshold were fitted under RRF: it fuses by RRF
        return replace(self, w_reader=0.0, w_reader_top=0.0, no_answer=None, quote_model=None,
                       fusion_weights=None, without_reader=None, follow_up_threshold=None, **own)

    def for_follow_up(self) -> "Calibration":
        """The calibration for a question read with its earlier turn's words: its own bar."""
        if self.follow_up_threshold is None:
            return self
        return replace(self, threshold=self.follow_up_threshold)


@dataclass
class Candidate:
    sentence: Sentence
    idx: int  # position in its document
    cos: float
    lex: float
    passage: float
    typed: float = 0.0
    span: tuple[int, int] | None = None  # answer words within the sentence, if found
    reader: float = 0.0  # sigmoid of the reader's margin for its best span in the sentence
    reader_margin: float | None = None
    reader_score: float | None = None
    reader_top: float = 0.0  # exp(span score - best span score among the candidates)
    score: float = 0.0
    probability: float | None = None  # that it answers (with a quote model)
    ctx_cos: float = 0.0  # best cosine / overlap of the sentences either side (same passage)
    ctx_lex: float = 0.0
    missing: float = 0.0  # idf of the rarest question term the sentence lacks, over the rarest's


# --------------------------------------------------------------------------- lexical


def term_weights(q_terms: list[str], idf: dict[str, float], unseen: float) -> dict[str, float]:
    """Each distinct question term's idf (once per question, read for every sentence)."""
    return {t: idf.get(t, unseen) for t in set(q_terms)}


def lexical_overlap(weights: dict[str, float], s_terms: set[str]) -> float:
    """The idf-weighted share of the question's terms (``term_weights``) in the sentence."""
    total = sum(weights.values())
    hit = sum(w for t, w in weights.items() if t in s_terms)
    return hit / total if total else 0.0


def missing_term(weights: dict[str, float], s_terms: set[str]) -> float:
    """How rare the rarest question term absent from the sentence is, relative to the rarest
    question term (0: the sentence has them all; 1: it lacks the rarest)."""
    if not weights or max(weights.values()) <= 0:
        return 0.0
    absent = [w for t, w in weights.items() if t not in s_terms]
    return max(absent, default=0.0) / max(weights.values())


# --------------------------------------------------------------------------- spans

_Q_TYPES = [
    ("num", r"\bhow (many|much|old|long|far)\b|\bwhat (number|percent(age)?|proportion|share|age)\b"
            r"|\bwhat fraction\b"),
    ("date", r"\bwhen\b|\b(what|which|in what) (year|date|month|day|time|decade|century)\b"),
    ("who", r"\bwho(m|se)?\b|\b(what|which) (person|man|woman|official|leader|organi[sz]ation|group"
            r"|agency|newspaper|commission|body|company|church)\b"),
    ("where", r"\bwhere\b|\b(what|which|in what) (country|countries|city|cities|province|place"
              r"|region|state|town|river|border)\b"),
]
_MONTH = (r"(?:Jan(?:uary)?|Feb(?:ruary)?|Mar(?:ch)?|Apr(?:il)?|May|June?|July?|Aug(?:ust)?"
          r"|Sep(?:t(?:ember)?)?|Oct(?:ober)?|Nov(?:ember)?|Dec(?:ember)?)\.?")
_NUMWORD = (r"(?:one|two|three|four|five|six|seven|eight|nine|ten|eleven|twelve|fifteen|twenty"
            r"|thirty|forty|fifty|sixty|hundred|thousand|dozen|dozens|hundreds|thousands|millions"
            r"|tens of thousands)")
_PATTERNS = {
    "num": re.compile(
        r"(?:(?:about|around|at least|more than|over|nearly|almost|some|up to)\s)?"
        r"(?:\$\s?)?\d[\d,.]*(?:\s?-\s?\d[\d,.]*)?(?:\s?(?:%|percent|per cent|million|billion"
        r"|thousand|hundred))?(?:[- ](?:year|month|day|hour)s?(?:[- ]old)?)?"
        r"|\b(?:(?:about|around|at least|more than|over|nearly|some)\s)?(?:a\s)?" + _NUMWORD
        + r"(?:\s(?:of\s)?(?:hundred|thousand|million)s?)?\b",
        re.IGNORECASE,
    ),
    "date": re.compile(
        r"\b(?:(?:early|late|mid)[- ])?" + _MONTH + r"(?:\s\d{1,2}(?:st|nd|rd|th)?)?(?:,?\s\d{4})?"
        r"|\b\d{1,2}/\d{1,2}/\d{2,4}\b|\b(?:1[5-9]|20)\d\d(?:s)?\b"
        r"|\blast (?:Monday|Tuesday|Wednesday|Thursday|Friday|Saturday|Sunday|week|month|year)\b"
        r"|\b(?:Monday|Tuesday|Wednesday|Thursday|Friday|Saturday|Sunday)\b"
    ),
    "who": re.compile(
        r"\b[A-Z][\w’'\-.]*(?:\s(?:of|for|the|and|de|van|von|al|on)?\s?[A-Z][\w’'\-.]*)*"
        r"(?:\s\([A-Z]{2,}\))?"
    ),
}
_PATTERNS["where"] = _PATTERNS["who"]
_WORD = re.compile(r"\w+", re.UNICODE)


def _base(word: str) -> str:
    w = word.lower()
    return w[:-1] if len(w) > 3 and w.endswith("s") else w


def _trim_known_words(sentence: str, s: int, e: int, q_words: set[str]) -> tuple[int, int]:
    """Drop leading/trailing words of a name the question already says ("Chair", "Coalition")."""
    known = {_base(w) for w in q_words}
    words = list(_WORD.finditer(sentence, s, e))
    n = len(words)
    while len(words) > 1 and _base(words[0].group()) in known:
        words.pop(0)
    lead = n - len(words)
    while len(words) > 1 and _base(words[-1].group()) in known:
        words.pop()
    trail = n - lead - len(words)
    start = words[0].start() if lead else s
    end = words[-1].end() if trail else e  # untrimmed ends keep "%", "U.S." and the like
    return start, end


def question_type(question: str) -> str | None:
    q = question.lower()
    for name, pat in _Q_TYPES:
        if re.search(pat, q):
            return name
    return None


def answer_span(question: str, sentence: str) -> tuple[int, int] | None:
    """Offsets (within ``sentence``) of the words that answer ``question``, if recognisable.

    The candidate must be of the type the question asks for (a number for "how many",
    a date for "when", a name for "who"/"where"), must add words the question lacks,
    and is the one nearest the question's words in the sentence.
    """
    qtype = question_type(question)
    if qtype is None:
        return None
    q_words = {w.lower() for w in _WORD.findall(question)}
    anchors = [m.start() for m in _WORD.finditer(sentence)
               if m.group().lower() in q_words and len(m.group()) > 3]
    best: tuple[float, int, int] | None = None
    for m in _PATTERNS[qtype].finditer(sentence):
        s, e = m.start(), m.end()
        text = sentence[s:e].strip(" ,.;:")
        s = sentence.index(text, s) if text else s
        e = s + len(text)
        s, e = _trim_known_words(sentence, s, e, q_words)
        words = {w.lower() for w in _WORD.findall(sentence[s:e])}
        if not words or words <= q_words:
            continue
        if qtype in ("who", "where") and s == 0 and len(words) == 1:
            continue  # a capitalised first word is usually just the start of the sentence
        dist = min((abs(a - s) for a in anchors), default=0)
        key = (dist, s, e)
        if best is None or key < best:
            best = key
    return None if best is None else (best[1], best[2])


# --------------------------------------------------------------------------- selection


def with_aliases(terms: set[str], aliases: list[tuple[set[str], set[str]]]) -> set[str]:
    """A sentence's terms, with a name's where it writes its acronym and the acronym's where it
    writes the name: either counts as the other in the term overlap."""
    for acr, name in aliases:
        if acr & terms:
            terms = terms | name
        elif name and name <= terms:
            terms = terms | acr
    return terms


def candidates(index: Index, question: str, qvec: np.ndarray, passages: list[Passage],
               cal: Calibration, reader=None, aliases: tuple[tuple[str, str], ...] = ()) -> list[Candidate]:
    """Score every quotable sentence of the passages; best first. ``aliases``: (acronym, name)
    pairs the question is read with (``retrieval.read_with_acronyms``)."""
    if not passages:
        return []
    alias_terms = [(set(bm25_tokenize([a])[0]), set(bm25_tokenize([n])[0])) for a, n in aliases]
    reading = reader.read(question, [(p.doc_id, p.start, p.text) for p in passages]) if reader else None
    idf, unseen = index.term_idf
    q_weights = term_weights(bm25_tokenize([question])[0], idf, unseen)
    top_fused = max(p.score for p in passages)
    typed_question = question_type(question) is not None
    seen: dict[tuple[str, int], Candidate] = {}
    for p in passages:
        sents = index.sentences(p.doc_id, p.first_sentence, p.last_sentence)
        if not sents:
            continue
        vecs = np.stack([v for _, _, v in sents])
        cos = vecs @ qvec.astype(np.float32)
        s_terms_list = [with_aliases(set(t), alias_terms) for t in bm25_tokenize([s.text for _, s, _ in sents])]
        lexes = [lexical_overlap(q_weights, t) for t in s_terms_list]
        for n, ((idx, sent, _), c, s_terms, lex) in enumerate(zip(sents, cos, s_terms_list, lexes)):
            if not sent.quotable:
                continue
            key = (sent.doc_id, idx)
            rel = p.score / top_fused if top_fused else 0.0
            near = [m for m in (n - 1, n + 1) if 0 <= m < len(sents)]
            ctx_cos = max((float(cos[m]) for m in near), default=0.0)
            ctx_lex = max((lexes[m] for m in near), default=0.0)
            if key in seen:
                old = seen[key]
                old.passage = max(old.passage, rel)
                old.ctx_cos, old.ctx_lex = max(old.ctx_cos, ctx_cos), max(old.ctx_lex, ctx_lex)
                continue
            span = answer_span(question, sent.text) if typed_question else None
            cand = Candidate(sent, idx, float(c), lex, rel, float(span is not None), span,
                             ctx_cos=ctx_cos, ctx_lex=ctx_lex, missing=missing_term(q_weights, s_terms))
            if reading is not None:
                best = reading.best_in(sent.doc_id, sent.start, sent.end)
                if best is not None:
                    cand.reader_margin = best.margin
                    cand.reader_score = best.score
                    cand.reader = float(1.0 / (1.0 + np.exp(-best.margin)))
                    if best.margin >= cal.reader_span_margin:
                        cand.span = (best.start - sent.start, best.end - sent.start)
            seen[key] = cand
    out = list(seen.values())
    scored = [c.reader_score for c in out if c.reader_score is not None]
    if scored:
        top = max(scored)
        for c in out:
            if c.reader_score is not None:
                c.reader_top = float(np.exp(c.reader_score - top))
    for c in out:
        c.score = combine(c, cal)
    out.sort(key=lambda c: (-c.score, c.sentence.doc_id, c.idx))
    if cal.quote_model is not None and out:
        probs = cal.quote_model.probability(quote_features(question, out))
        for c, pr in zip(out, probs):
            c.probability = float(pr)
        out.sort(key=lambda c: (-c.probability, -c.score, c.sentence.doc_id, c.idx))
    return out


def combine(c: Candidate, cal: Calibration) -> float:
    return (cal.w_cos * c.cos + cal.w_lex * c.lex + cal.w_passage * c.passage + cal.w_type * c.typed
            + cal.w_reader * c.reader + cal.w_reader_top * c.reader_top)


# --------------------------------------------------------------------------- what is asked

# what a question asks for beyond a typed factoid (``question_type``), checked in this order
_INTENTS = [
    ("reason", r"\bwhy\b|\breasons?\b|\bwhat (makes|made|causes?|caused|drives?|drove|motivates?|pushe[sd])\b"
               r"|\bfor what purpose\b|\bhow come\b|\bexplain"),
    ("consequence", r"\bwhat (happens|happened|will happen|would happen|awaits|awaited|fate|becomes|became"
                    r"|is done|was done)\b|\bhappen(s|ed)? (to|if|when|after)\b|\bconsequences?\b|\boutcomes?\b"
                    r"|\bfate\b|\bpunish|\bface\b|\btreated\b|\btreatment\b"),
    ("attribution", r"\baccording to\b|\bwhat (does|did|do|has|have) .{1,80}\b(say|said|think|believe|argue|claim"
                    r"|describe|call|report|warn|want|ask|urge|find|found|document)\b|\bsays? about\b"
                    r"|\bview\b|\bposition on\b|\bstance\b"),
    ("manner", r"\bhow\b(?! (many|much|old|long|far|often|big|large|soon)\b)|\bin what way\b|\bby what means\b"),
]
# words a sentence that gives each kind of answer tends to hold
_CUES = {
    "reason": r"\bbecause\b|\bdue to\b|\breasons?\b|\bsince\b|\bas a result\b|\bin order to\b|\bso that\b"
              r"|\bfor fear\b|\bafraid\b|\bwant(s|ed)? to\b|\bto (avoid|escape|prevent|protect|find|seek|keep)\b"
              r"|\bas (traitors|a threat|enemies|illegal)\b|\bsees?\b|\bviews?\b|\bconsiders?\b|\bseeking\b"
              r"|\bhoping\b|\bstarving\b|\bfearing\b|\bbelieves?\b",
    "consequence": r"\b(faces?|faced|facing|punish\w*|tortur\w*|imprison\w*|execut\w*|camps?|prisons?|death"
                   r"|die[sd]?|killed|sent (back|to)|sold|traffick\w*|detain\w*|leads? to|led to|result\w*|fate"
                   r"|endur\w*|abus\w*|missing|disappear\w*|beaten|sentenced?|forced|interrogat\w*)\b",
    "manner": r"\bby\b|\bthrough\b|\bvia\b|\busing\b|\bwith the help\b|\bnetworks?\b|\bhelp(s|ed)?\b"
              r"|\bsmuggl\w*|\bbrokers?\b|\bcross(es|ed|ing)?\b",
    "attribution": r"\b(said|says|say|told|tells|according to|stated|states|wrote|writes|noted|notes|explained"
                   r"|explains|added|warned|argued|claimed|urged|called|calls|described|reported)\b|[“”\"]",
}
_INTENT_RE = [(n, re.compile(p, re.IGNORECASE)) for n, p in _INTENTS]
_CUE_RE = {n: re.compile(p, re.IGNORECASE) for n, p in _CUES.items()}


_LEAD_WH = re.compile(r"\b(why|how|what|which|who|whom|whose|when|where)\b", re.IGNORECASE)


def question_intent(question: str) -> str | None:
    """What the question asks for: a typed factoid ("num", "date", "who", "where"), a
    "reason", a "consequence", a speaker's words ("attribution"), a "manner", or None.

    A question whose first wh-word is who/when/where, or that asks how many/much, is its typed
    factoid; any other is read for the non-factoid intents first ("What happens to women who
    cross ..." asks for a consequence, not a name), then for its type."""
    typed = question_type(question)
    lead = _LEAD_WH.search(question)
    if typed == "num" or (typed and lead and lead.group(1).lower() in ("who", "whom", "whose", "when", "where")):
        return typed
    for name, rx in _INTENT_RE:
        if rx.search(question):
            return name
    return typed


QUOTE_FEATURES = ("score", "cos", "lex", "passage", "reader", "reader_top", "reader_margin", "reader_score",
                  "gap", "rank", "typed", "nonfactoid", "cue", "nf_cos", "nf_lex", "nf_margin", "length",
                  "ctx_cos", "ctx_lex", "missing")


def quote_features(question: str, cands: list[Candidate]) -> np.ndarray:
    """What the quote model reads (``QUOTE_FEATURES``), one row per candidate, in the order
    given (best score first): the score and its parts, the reader's clipped margin and span
    score, the gap to the best score, the log of the score rank, whether the question is a
    typed factoid whose type the sentence holds, whether it asks for a reason, consequence,
    manner or someone's words (non-factoid) and the sentence holds words such answers use,
    the non-factoid flag times cosine, overlap and margin, the log of the sentence length, the
    best cosine and overlap of the sentences beside it (an answer often follows the sentence
    that matches the question), and how rare a question term it lacks is (``missing_term``)."""
    intent = question_intent(question)
    nonfactoid = float(intent in ("reason", "consequence", "manner", "attribution"))
    cue_re = _CUE_RE.get(intent or "")
    best = cands[0].score if cands else 0.0
    rows = []
    for rank, c in enumerate(cands):
        margin, span = reader_clipped(c)
        cue = float(bool(cue_re and cue_re.search(c.sentence.text)))
        rows.append((c.score, c.cos, c.lex, c.passage, c.reader, c.reader_top, margin, span, c.score - best,
                     np.log1p(rank), c.typed, nonfactoid, cue, nonfactoid * c.cos, nonfactoid * c.lex,
                     nonfactoid * margin, np.log(max(len(c.sentence.text), 1)), c.ctx_cos, c.ctx_lex,
                     c.missing))
    return np.asarray(rows, dtype=np.float64).reshape(len(rows), len(QUOTE_FEATURES))


# --------------------------------------------------------------------------- no answer

NO_ANSWER_FEATURES = ("score", "cos", "lex", "reader_margin", "reader_score", "lead")
# reader margins and span scores are clipped to these (a few outliers lie beyond)
MARGIN_CLIP = 20.0
SPAN_SCORE_CLIP = (-15.0, 20.0)


def reader_clipped(c: Candidate) -> tuple[float, float]:
    """The reader's margin and span score for a candidate, clipped; a sentence the reader
    found no span in gets the clips' floors."""
    margin = -MARGIN_CLIP if c.reader_margin is None else c.reader_margin
    span = SPAN_SCORE_CLIP[0] if c.reader_score is None else c.reader_score
    return float(np.clip(margin, -MARGIN_CLIP, MARGIN_CLIP)), float(np.clip(span, *SPAN_SCORE_CLIP))


def decision_features(cands: list[Candidate]) -> np.ndarray:
    """What the no-answer model reads (``NO_ANSWER_FEATURES``), from the ranked candidates.

    A best sentence the reader found no span in gets the clips' floors; the lead is over
    the runner-up's score (0 when there is none).
    """
    b = cands[0]
    margin, span = reader_clipped(b)
    runner_up = cands[1].score if len(cands) > 1 else 0.0
    return np.array([b.score, b.cos, b.lex, margin, span, b.score - runner_up], dtype=np.float64)


@dataclass(frozen=True)
class NoAnswerModel:
    """Logistic regression on standardised features: by default ``decision_features``, the
    logit of "the best sentence answers the question"; the quote model is the same class on
    ``quote_features`` (``features=QUOTE_FEATURES``)."""

    mean: tuple[float, ...]
    scale: tuple[float, ...]
    coef: tuple[float, ...]
    bias: float
    features: tuple[str, ...] = NO_ANSWER_FEATURES
    how: str = ""  # how it was fitted

    def logit(self, x: np.ndarray) -> np.ndarray | float:
        z = (np.asarray(x, dtype=np.float64) - self.mean) / self.scale
        return z @ np.asarray(self.coef) + self.bias

    def probability(self, x: np.ndarray) -> np.ndarray | float:
        return 1.0 / (1.0 + np.exp(-self.logit(x)))

    @classmethod
    def fit(cls, X: np.ndarray, y: np.ndarray, l2: float = 1e-2, steps: int = 50,
            weight: np.ndarray | None = None, features: tuple[str, ...] | None = None) -> "NoAnswerModel":
        """Maximum likelihood with a small L2 penalty (not on the bias), by Newton's method;
        ``weight``: one per row (default 1)."""
        X, y = np.asarray(X, dtype=np.float64), np.asarray(y, dtype=np.float64)
        r = np.ones(len(y)) if weight is None else np.asarray(weight, dtype=np.float64)
        mean = np.average(X, axis=0, weights=r)
        scale = np.sqrt(np.average((X - mean) ** 2, axis=0, weights=r))
        scale[scale == 0] = 1.0
        Z = np.c_[(X - mean) / scale, np.ones(len(X))]
        w = np.zeros(Z.shape[1])
        penalty = l2 * np.r_[np.ones(Z.shape[1] - 1), 0.0]
        for _ in range(steps):
            p = 1.0 / (1.0 + np.exp(-(Z @ w)))
            grad = Z.T @ (r * (p - y)) + penalty * w
            hess = (Z * (r * p * (1 - p))[:, None]).T @ Z + np.diag(penalty) + 1e-9 * np.eye(len(w))
            step = np.linalg.solve(hess, grad)
            w -= step
            if np.abs(step).max() < 1e-10:
                break
        return cls(tuple(mean.tolist()), tuple(scale.tolist()), tuple(w[:-1].tolist()), float(w[-1]),
                   **({"features": tuple(features)} if features is not None else {}))

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict, features: tuple[str, ...] = NO_ANSWER_FEATURES) -> "NoAnswerModel":
        if tuple(d.get("features", ())) != features:
            raise ValueError(f"model for features {d.get('features')}, not {features}")
        n = len(features)
        mean, scale, coef = (tuple(float(x) for x in d[k]) for k in ("mean", "scale", "coef"))
        if not len(mean) == len(scale) == len(coef) == n:
            raise ValueError("wrong number of parameters")
        bias = float(d["bias"])
        if not np.isfinite([*mean, *scale, *coef, bias]).all() or min(scale) <= 0:
            raise ValueError("parameters must be finite, scales positive")
        return cls(mean, scale, coef, bias, features=features, how=str(d.get("how", "")))


def confidence(cands: list[Candidate], cal: Calibration) -> float | None:
    """What the no-answer threshold is compared with (None: no candidate at all): the best
    quote's probability with a quote model, else the no-answer model's logit when the
    calibration has one, else the best score."""
    if not cands:
        return None
    if cands[0].probability is not None:
        return cands[0].probability
    if cal.no_answer is not None:
        return float(cal.no_answer.logit(decision_features(cands)))
    return cands[0].score


# how much a passage's best candidate sentence counts against its fused retrieval score (as a
# share of the best read passage's) when the passages read are ranked again
# (scripts/tune_fusion.py --rerank, on the SQuAD train paragraphs the reader never learned from)
RERANK_WEIGHT = 1.0


def rerank(passages: list[Passage], cands: list[Candidate], read: int,
           weight: float = RERANK_WEIGHT) -> list[Passage]:
    """The passages with the first ``read`` (those the candidates come from) ordered again by
    their fused score, as a share of the best of them (the same scale in every retrieval mode),
    plus ``weight`` times the probability of the best candidate sentence they hold: open-domain
    QA systems rank paragraphs with their reader's score this way (BERTserini). Ties by document
    and position, as ``retrieval.retrieve`` orders them, so the order does not depend on the
    order given. The passages not read keep their places after them. Without a quote model (no
    probabilities) the order is left as retrieval gave it. Answers do not change: the same
    passages are read."""
    if not cands or cands[0].probability is None:
        return passages
    prob = {(c.sentence.doc_id, c.idx): c.probability or 0.0 for c in cands}
    head = passages[:read]
    top = max((p.score for p in head), default=0.0)

    def key(p: Passage) -> tuple[float, str, int]:
        best = max((prob.get((p.doc_id, i), 0.0) for i in range(p.first_sentence, p.last_sentence + 1)), default=0.0)
        return -((p.score / top if top > 0 else 0.0) + weight * best), p.doc_id, p.start

    return sorted(head, key=key) + passages[read:]


LIKELY, MAY, RELATED = "likely answers", "may answer", "related, not an answer"


def label(probability: float | None, cal: Calibration, answer: bool, first: bool = True) -> str:
    """A quote's probability in the words the browser shows. Without a quote model (no reader)
    only the best quote was checked against the threshold: it "likely answers", the quotes
    after it "may answer"; anything not an answer is "related, not an answer"."""
    if not answer or (probability is not None and probability < cal.threshold):
        return RELATED
    if probability is None:
        return LIKELY if first else MAY
    return LIKELY if probability >= max(cal.likely, cal.threshold) else MAY


def percent(probability: float) -> str:
    """A probability as people read it: "<1%", "37%", ">99%"."""
    if probability < 0.005:
        return "<1%"
    if probability >= 0.995:
        return ">99%"
    return f"{round(100 * probability)}%"


def _norm(text: str) -> str:
    return " ".join(text.split()).casefold()


_CLOSERS = "\"'”’» "  # closing quotation marks ("…he said:”" introduces too)


def introduces(sentence: str) -> bool:
    """A sentence that ends with a colon ("She said:", "…for two reasons:") introduces the next."""
    return sentence.rstrip().rstrip(_CLOSERS).endswith(":")


# a list item's marker: "- …", "• …", "2. …", "10." split off by the segmenter, "(a) …", "b) …"
_ITEM = re.compile(r"\s*(?:(?P<bullet>[-*•–▪◦·])|(?P<number>\d{1,2}[.)])|"
                   r"(?P<letter>\([a-z0-9]{1,3}\)|[a-z][.)]))(?:\s|$)")
RUN_MAX = 16  # sentences one quote holds, at most: an introducing sentence and its list


def _marker(x: Sentence) -> str | None:
    """The kind of list marker the sentence starts with (bullet, number, letter), if any."""
    m = _ITEM.match(x.text)
    return m.lastgroup if m else None


def _starts_run(x: Sentence, text: str) -> bool:
    """A sentence that introduces what follows and is not a heading: quotable, or too short to
    be quoted alone ("She said:") but not on a line by itself ("Background:", "## Why:")."""
    if x.kind == "furniture" or not introduces(x.text):
        return False
    return x.kind == "body" or not own_line(text, x.start, x.end)


def _run_from(near: dict[int, Sentence], i: int, text: str) -> int:
    """The last sentence of the run that sentence ``i`` starts: what an introducing sentence
    introduces (the next sentence, or list items, each to the end of its line; past a blank
    line only items with the same kind of marker), chained through sentences that introduce
    again."""
    j, marker = i, None  # marker: the kind of the list being read, None outside one
    while (nxt := near.get(j + 1)) is not None and nxt.kind != "furniture" and j + 1 - i < RUN_MAX:
        cur, kind, gap = near[j], _marker(nxt), text[near[j].end:nxt.start]
        if introduces(cur.text) and (kind or nxt.kind == "body"):
            marker = kind  # what it introduces: a list, or one sentence
        elif marker and "\n" not in gap:
            pass  # more of this item, on its line
        elif marker and kind and (kind == marker or gap.count("\n") < 2):
            marker = kind if gap.count("\n") < 2 else marker  # the next item
        else:
            break
        j += 1
    return j


def _boundary(near: dict[int, Sentence], i: int, text: str) -> bool:
    """No run holds both sentence ``i - 1`` and ``i``: ``i`` starts the document, or follows
    furniture, or starts a line that is not a list item after a sentence that introduces nothing."""
    if i == 0:
        return True
    prev = near.get(i - 1)
    if prev is None:
        return False
    return prev.kind == "furniture" or (not introduces(prev.text) and _marker(near[i]) is None
                                        and "\n" in text[prev.end:near[i].start])


def quoted_run(near: dict[int, Sentence], idx: int, text: str) -> tuple[int, int] | None:
    """The first and last sentence of the quote for sentence ``idx`` of a document whose
    sentences ``near`` holds by position (through RUN_MAX + 1 after ``idx``, where the document
    has them): the run of "She said:" and what she said, or of "…three demands:" and its list,
    that holds ``idx``; else ``idx`` alone. Runs are read from the last point before ``idx``
    that no run crosses (``_boundary``), so every sentence of a run finds the same run, and
    runs never overlap; None when ``near`` does not reach back to such a point."""
    i = next((b for b in range(idx, min(near) - 1, -1) if _boundary(near, b, text)), None)
    if i is None:
        return None
    while i <= idx:
        if _starts_run(near[i], text):
            end = _run_from(near, i, text)
            if end >= idx:
                return i, end
            i = end + 1
        else:
            i += 1
    return idx, idx


def _run_of(index: Index, doc_id: str, idx: int) -> tuple[int, int, dict[int, Sentence]]:
    """``quoted_run`` for sentence ``idx`` of a document, with the sentences it read (no
    vectors): one query, unless a chain of runs reaches back further than 2 * RUN_MAX."""
    text, back = index.document_text(doc_id), 2 * RUN_MAX
    while True:
        near = index.sentences_by_position(doc_id, max(0, idx - back), idx + RUN_MAX + 1)
        if (run := quoted_run(near, idx, text)) is not None:
            return (*run, near)
        back *= 4  # reaches the document's start, a boundary, in the end


NEIGHBOUR_SHARE = 0.5  # the second candidate joins the first quote at this share of its probability


def _with_neighbour(index: Index, best: Candidate, second: list[Candidate], first: int, last: int,
                    near: dict[int, Sentence]) -> tuple[int, int, dict[int, Sentence], Candidate, int]:
    """The first quote's run (``first``..``last`` of ``best``'s document, ``near`` its sentences)
    grown by the second candidate (``second``: its copies, the one in ``best``'s document
    preferred) when that is the sentence or run right before or after it and the quote model
    gives it at least NEIGHBOUR_SHARE of the first's probability. Torn between two neighbours,
    the answer often runs from one into the other ("…in a labour camp. Few survive it."): one
    quote of both shows it either way, and the decision still rests on the first's probability
    alone. Also which candidate's span is the answer (the reader's best of the two), and the
    side the neighbour joined on (1 after, -1 before, 0 none)."""
    runner = next((c for c in second if c.sentence.doc_id == best.sentence.doc_id), second[0])
    unchanged = first, last, near, best, 0
    if (best.probability is None or runner.probability is None
            or runner.sentence.doc_id != best.sentence.doc_id
            or runner.probability < NEIGHBOUR_SHARE * best.probability):
        return unchanged
    r_first, r_last, r_near = _run_of(index, runner.sentence.doc_id, runner.idx)
    if r_first != last + 1 and r_last != first - 1:
        return unchanged
    if max(last, r_last) - min(first, r_first) >= RUN_MAX:
        return unchanged  # one quote holds RUN_MAX sentences at most
    marked = runner if runner.span is not None and (best.span is None or runner.reader_top > best.reader_top) else best
    return min(first, r_first), max(last, r_last), {**near, **r_near}, marked, 1 if r_first > last else -1


def _copy_span(index: Index, o: Candidate, side: int) -> Span:
    """The span a copy of the first quote's document gives for candidate ``o``: its run, and
    the run right after it (``side`` 1) or before it (-1) when the first quote holds its neighbour."""
    first, last, near = _run_of(index, o.sentence.doc_id, o.idx)
    start, end = near[first].start, near[last].end
    other = first - 1 if side < 0 else last + 1
    if side and 0 <= other < index.sentence_count(o.sentence.doc_id):
        n_first, n_last, n_near = _run_of(index, o.sentence.doc_id, other)
        start, end = min(start, n_near[n_first].start), max(end, n_near[n_last].end)
    return Span(start, end)


def build_quotes(index: Index, cands: list[Candidate], top: int,
                 sources: dict[str, Source]) -> list[Quote]:
    """Group identical sentences across documents; return the ``top`` groups as quotes. A
    sentence that introduces what follows and what it introduces are quoted together, whichever
    was chosen (``quoted_run``): one span of the document, so the quote is still its text
    verbatim, and a sentence an earlier quote holds is not quoted again. The first quote also
    holds the second candidate when that is its neighbour and nearly as likely (``_with_neighbour``).
    "Also in" names the other documents holding the same quote."""
    groups: dict[str, list[Candidate]] = {}
    order: list[str] = []
    for c in cands:
        k = _norm(c.sentence.text)
        if k not in groups:
            groups[k] = []
            order.append(k)
        groups[k].append(c)
    quotes: list[Quote] = []
    taken: dict[str, list[Span]] = {}  # what the quotes so far hold, "also in" included
    for k in order:
        if len(quotes) == top:
            break
        best, *others = groups[k]
        s = best.sentence
        text = index.document_text(s.doc_id)
        # "She said:" is quoted with what she said, and what she said with "She said:"
        first, last, near = _run_of(index, s.doc_id, best.idx)
        marked, side = best, 0  # whose span is the answer; where a neighbour joined
        if not quotes and len(order) > 1:
            first, last, near, marked, side = _with_neighbour(index, best, groups[order[1]], first, last, near)
        start, end = near[first].start, near[last].end
        if any(sp.start < end and start < sp.end for sp in taken.get(s.doc_id, ())):
            continue  # an earlier quote holds some of it: no sentence is quoted twice
        ctx_start = near.get(first - 1, near[first]).start  # one sentence either side
        ctx_end = near.get(last + 1, near[last]).end
        answer_span = answer = None
        if marked.span is not None:
            answer_span = Span(marked.sentence.start + marked.span[0], marked.sentence.start + marked.span[1])
            answer = text[answer_span.start:answer_span.end]
        also = []
        seen_docs = {s.doc_id}
        for o in others:  # the same sentence elsewhere, where it is quoted the same (run and all)
            if o.sentence.doc_id not in seen_docs:
                seen_docs.add(o.sentence.doc_id)
                span = _copy_span(index, o, side)
                if _norm(index.document_text(o.sentence.doc_id)[span.start:span.end]) == _norm(text[start:end]):
                    also.append((sources[o.sentence.doc_id], span))
        for doc_id, span in [(s.doc_id, Span(start, end))] + [(src.doc_id, sp) for src, sp in also]:
            taken.setdefault(doc_id, []).append(span)
        pages = index.pages(s.doc_id)
        page = bisect.bisect_right(pages, start) if pages else None
        quotes.append(
            Quote(
                page=page,
                text=text[start:end], span=Span(start, end), score=best.score, reader_margin=best.reader_margin,
                probability=best.probability,
                source=sources[s.doc_id], also_in=tuple(also),
                answer=answer, answer_span=answer_span,
                context_before=text[ctx_start:start], context_after=text[end:ctx_end],
                context_span=Span(ctx_start, ctx_end),
            )
        )
    return quotes
