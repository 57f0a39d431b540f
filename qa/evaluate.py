"""``qa eval``: how far to trust the answers, measured on a question set.

Questions come from JSONL (``{"id"?, "question", "answers": [...], "source"?, "kind"?}``; an
empty ``answers`` list means the corpus does not answer) or from a SQuAD v1.1/v2.0 file.
Every metric is also broken down by kind of question: the ``kind`` field of a JSONL line,
or for SQuAD the question's wh-word (``question_word``). With
``--squad-corpus`` the SQuAD paragraphs become their own corpus (one file per paragraph,
indexed by the same pipeline as ``qa index``) and every question searches all of them.
Answers are compared with SQuAD's official normalisation.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import random
import re
import string
import sys
import time
import unicodedata
from collections import Counter
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from .config import REPO_ROOT, SQUAD_DIR, AskSettings
from .errors import BadQuestion, NothingToLookFor, VerbatimError
from .types import AskResult

K_VALUES = (1, 5, 10, 20)
SHIPPED_SET = REPO_ROOT / "eval" / "shipped.jsonl"
CACHE = Path(os.environ.get("VERBATIM_CACHE", REPO_ROOT / ".cache")) / "eval"


# --------------------------------------------------------------------------- SQuAD metrics


def normalize_answer(s: str) -> str:
    """SQuAD's official normalisation: lower, drop punctuation and articles, squash spaces."""
    s = s.lower()
    s = "".join(ch for ch in s if ch not in set(string.punctuation))
    s = re.sub(r"\b(a|an|the)\b", " ", s)
    return " ".join(s.split())


def exact_match(pred: str, gold: str) -> float:
    return float(normalize_answer(pred) == normalize_answer(gold))


def f1_score(pred: str, gold: str) -> float:
    p, g = normalize_answer(pred).split(), normalize_answer(gold).split()
    common = Counter(p) & Counter(g)
    same = sum(common.values())
    if same == 0:
        return 0.0
    precision, recall = same / len(p), same / len(g)
    return 2 * precision * recall / (precision + recall)


def _containment_norm(s: str) -> str:
    """SQuAD normalisation, but any Unicode punctuation becomes a space.

    Used only to decide whether a quote *contains* an answer, so that “‘traitors’” holds
    "traitors" and "26-year-old" holds "26"; EM and F1 use the official normalisation.
    """
    s = "".join(" " if unicodedata.category(ch).startswith("P") or ch in string.punctuation else ch
                for ch in s.lower())
    s = re.sub(r"\b(a|an|the)\b", " ", s)
    return " ".join(s.split())


def contains_answer(text: str, golds: list[str]) -> bool:
    t = f" {_containment_norm(text)} "
    return any(f" {_containment_norm(g)} " in t for g in golds if _containment_norm(g))


# --------------------------------------------------------------------------- questions


@dataclass
class EvalQuestion:
    id: str
    question: str
    answers: list[str]
    source: str | None = None
    kind: str | None = None

    @property
    def answerable(self) -> bool:
        return bool(self.answers)


_WH = ("why", "how", "what", "which", "who", "when", "where")


def question_word(question: str) -> str:
    """The kind of a question without a ``kind`` field: its first wh-word ("why", "how", ...;
    "In what year ..." is a "what" question), else "other". "whom"/"whose" count as "who"."""
    from .answering import _LEAD_WH

    m = _LEAD_WH.search(question)
    if m is None:
        return "other"
    w = m.group(1).lower()
    return "who" if w in ("whom", "whose") else w


def _slug(title: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "_", title).strip("_")[:40] or "article"


def _lines(path: Path):
    """(line number, text) of each non-blank line of a JSONL file."""
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if line.strip():
            yield n, line


def load_jsonl(path: Path) -> list[EvalQuestion]:
    out = []
    for n, line in _lines(path):
        try:
            obj = json.loads(line)
            answers = obj.get("answers", [])
            kind = obj.get("kind")
            if (not isinstance(obj["question"], str) or not isinstance(answers, list)
                    or not isinstance(kind, (str, type(None)))):
                raise TypeError
        except (ValueError, KeyError, TypeError) as err:
            raise VerbatimError(
                f"{path}:{n}: expected {{\"question\": str, \"answers\": [str, ...]}} ({err or 'bad types'})"
            ) from err
        out.append(EvalQuestion(str(obj.get("id", n)), obj["question"], [str(a) for a in answers],
                                obj.get("source"), kind or None))
    return out


def load_squad(path: Path, corpus_dir: Path | None) -> list[EvalQuestion]:
    """SQuAD questions; with ``corpus_dir``, also write one file per paragraph there."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))["data"]
    except (ValueError, KeyError) as err:
        raise VerbatimError(f"{path}: not a SQuAD file ({err})") from err
    out = []
    if corpus_dir is not None:
        corpus_dir.mkdir(parents=True, exist_ok=True)
    for a, art in enumerate(data):
        for p, para in enumerate(art["paragraphs"]):
            rel = None
            if corpus_dir is not None:
                name = f"{a:03d}_{p:03d}_{_slug(art['title'])}.txt"
                f = corpus_dir / name
                if not f.exists():
                    f.write_text(para["context"], encoding="utf-8")
                    (corpus_dir / (name + ".meta.json")).write_text(json.dumps(
                        {"title": art["title"].replace("_", " "), "publisher": "Wikipedia (SQuAD)"}))
                rel = f"corpus/{name}"
            for qa in para["qas"]:
                answers = [] if qa.get("is_impossible") else [x["text"] for x in qa["answers"]]
                out.append(EvalQuestion(qa["id"], qa["question"], answers, rel, question_word(qa["question"])))
    return out


def sample(questions: list[EvalQuestion], limit: int | None, seed: int) -> list[EvalQuestion]:
    if limit is None or limit >= len(questions):
        return questions
    return random.Random(seed).sample(questions, limit)


# --------------------------------------------------------------------------- running


@dataclass
class Prediction:
    id: str
    question: str
    answerable: bool
    no_answer: bool
    quote: str | None
    answer: str | None
    path: str | None
    start: int | None
    end: int | None
    score: float | None  # the best candidate's score, also when it fell below the threshold
    latency_ms: float
    retrieval_rank: int | None  # rank of the first relevant passage
    top1_correct: bool  # the answer shown first contains a gold answer
    top3_correct: bool
    best_contains: bool  # the best candidate contains a gold answer (threshold ignored)
    em: float
    f1: float
    source_correct: bool | None
    no_answer_correct: bool
    expected: list[str] = field(default_factory=list)
    mode: str = "hybrid"
    margin: float | None = None  # the reader's margin for the best candidate's span
    confidence: float | None = None  # what the no-answer threshold was compared with
    kind: str | None = None
    paragraph_rank: int | None = None  # rank of the first passage from the question's own source file
    # (probability, holds a gold answer) of each quote returned, answers and related ones
    quote_probs: list = field(default_factory=list)
    # dialogues: which one and which turn, and how earlier turns were used (None: read alone)
    dialogue: str | None = None
    turn: int | None = None
    read_as: str | None = None
    cue: str | None = None


def _matches_source(source, gold: str | None) -> bool:
    if not gold:
        return False
    return gold == source.doc_id or gold in source.paths or any(p.endswith("/" + gold) for p in source.paths)


def run_questions(service, questions: list[EvalQuestion], mode: str = "hybrid",
                  progress: bool = True, reader: bool = True) -> list[Prediction]:
    from tqdm import tqdm

    preds = []
    cfg = AskSettings(top=3, mode=mode, reader=reader)
    for q in tqdm(questions, disable=not progress, desc=f"asking ({mode})", unit="q", leave=False):
        t = time.perf_counter()
        if (asked := _asked(service, q, cfg)) is None:
            continue  # an invalid question in the file: skipped, like a user's would be refused
        preds.append(predict(q, *asked, (time.perf_counter() - t) * 1e3, mode))
    return preds


def _asked(service, q: EvalQuestion, cfg: AskSettings, history=()):
    """``ask_with_passages`` for one question of a file: None for one that is not a question at
    all; a refusal for one that names nothing to look for ("Why?" asked alone), as the user is
    told that, not given a quote."""
    try:
        return service.ask_with_passages(q.question, cfg, retrieve=max(K_VALUES), history=history)
    except NothingToLookFor:
        return AskResult(q.question, (), True), []
    except BadQuestion:
        return None


def predict(q: EvalQuestion, res, passages: list, ms: float, mode: str = "hybrid") -> Prediction:
    """How one answer (``AskResult`` and its ranked passages) did on question ``q``."""
    rank = own = None
    for i, p in enumerate(passages[: max(K_VALUES)], 1):
        mine = _matches_source(p.source, q.source)
        if rank is None and ((q.answers and contains_answer(p.text, q.answers)) or mine):
            rank = i
        if mine:
            own = i
            break
    shown = list(res.answers)
    best = (res.answers or res.closest or (None,))[0]
    top1 = shown[0] if shown else None
    ans = top1.answer if top1 is not None else None
    em = max((exact_match(ans, g) for g in q.answers), default=0.0) if ans else 0.0
    f1 = max((f1_score(ans, g) for g in q.answers), default=0.0) if ans else 0.0
    return Prediction(
        id=q.id, question=q.question, answerable=q.answerable, no_answer=res.no_answer,
        quote=top1.text if top1 else None, answer=ans,
        path=top1.source.path if top1 else None,
        start=top1.start if top1 else None, end=top1.end if top1 else None,
        score=best.score if best is not None else None, latency_ms=ms, retrieval_rank=rank,
        paragraph_rank=own if q.source else None,
        top1_correct=bool(top1 and q.answers and contains_answer(top1.text, q.answers)),
        top3_correct=bool(q.answers and any(contains_answer(x.text, q.answers) for x in shown)),
        best_contains=bool(best is not None and q.answers and contains_answer(best.text, q.answers)),
        em=em, f1=f1,
        source_correct=(_matches_source(top1.source, q.source) if top1 else False) if q.source else None,
        no_answer_correct=res.no_answer == (not q.answerable),
        expected=q.answers, mode=mode, margin=best.reader_margin if best is not None else None,
        confidence=res.confidence, kind=q.kind,
        quote_probs=[(x.probability, bool(q.answers and contains_answer(x.text, q.answers)))
                     for x in (*res.answers, *res.closest) if x.probability is not None],
        read_as=res.follow_up.read_as if res.follow_up is not None else None,
        cue=res.follow_up.cue if res.follow_up is not None else None,
    )


# --------------------------------------------------------------------------- dialogues

# the kinds of a dialogue set's rows (``run_dialogues``)
FIRST, FOLLOW, LATER, FULL, ALONE = ("first turn", "follow-up", "later turn, stands alone",
                                     "follow-up written in full", "follow-up asked alone")


@dataclass
class DialogueTurn:
    question: EvalQuestion
    follow_up: bool
    full: str | None  # a follow-up written out in full (asked alone, to compare)


def is_dialogue_file(path: Path) -> bool:
    """A JSONL file of dialogues: its first line is an object with "turns"."""
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            try:
                first = json.loads(line)
            except ValueError:
                return False
            return isinstance(first, dict) and "turns" in first
    return False


def load_dialogues(path: Path) -> list[tuple[str, list[DialogueTurn]]]:
    """``{"id", "turns": [{"question", "answers", "source"?, "follow_up", "full"?}, ...]}`` per
    line: a conversation, in order; ``follow_up`` marks a turn that leans on earlier ones, and
    ``full`` is that turn written out so it stands alone."""
    out = []
    for n, line in _lines(path):
        try:
            obj = json.loads(line)
            turns = []
            for t, turn in enumerate(obj["turns"]):
                answers, full = turn.get("answers", []), turn.get("full")
                if (not isinstance(turn["question"], str) or not isinstance(answers, list)
                        or not isinstance(full, (str, type(None)))):
                    raise TypeError
                follow = bool(turn.get("follow_up"))
                kind = FIRST if t == 0 else FOLLOW if follow else LATER
                q = EvalQuestion(f"{obj.get('id', n)}.{t + 1}", turn["question"], [str(a) for a in answers],
                                 turn.get("source"), kind)
                turns.append(DialogueTurn(q, follow, full if follow else None))
            if not turns:
                raise ValueError("no turns")
        except (ValueError, KeyError, TypeError) as err:
            raise VerbatimError(
                f"{path}:{n}: expected {{\"id\", \"turns\": [{{\"question\": str, \"answers\": [str, ...], "
                f"\"follow_up\": bool, \"full\": str?}}, ...]}} ({err or 'bad types'})") from err
        out.append((str(obj.get("id", n)), turns))
    return out


def run_dialogues(service, dialogues: list[tuple[str, list[DialogueTurn]]], mode: str = "hybrid",
                  progress: bool = True, reader: bool = True) -> list[Prediction]:
    """Each dialogue asked turn by turn, each turn with the earlier turns *as Verbatim answered
    them* (kinds ``FIRST``/``FOLLOW``/``LATER``); then each follow-up asked alone twice, as written
    (``ALONE``) and written out in full (``FULL``), to compare."""
    from tqdm import tqdm

    preds = []
    cfg = AskSettings(top=3, mode=mode, reader=reader)

    def ask(q: EvalQuestion, history, dialogue: str, turn: int):
        t = time.perf_counter()
        if (asked := _asked(service, q, cfg, history)) is None:
            return None
        res, passages = asked
        p = predict(q, res, passages, (time.perf_counter() - t) * 1e3, mode)
        p.dialogue, p.turn = dialogue, turn
        preds.append(p)
        return res

    for did, turns in tqdm(dialogues, disable=not progress, desc="dialogues", unit="d", leave=False):
        history = []
        for n, t in enumerate(turns, 1):
            res = ask(t.question, tuple(history), did, n)
            if res is not None:
                history.append(res.turn())
        for n, t in enumerate(turns, 1):
            if t.follow_up:
                q = t.question
                ask(replace(q, id=q.id + "-alone", kind=ALONE), (), did, n)
                if t.full:
                    ask(replace(q, id=q.id + "-full", question=t.full, kind=FULL), (), did, n)
    return preds


def dialogue_summary(preds: list[Prediction]) -> dict:
    """Follow-ups in context against the same questions written in full: top-1 (answerable) and
    refusal (unanswerable) each way, their ratio, and first turns' top-1."""
    rows = {k: kind_row([p for p in preds if p.kind == k]) for k in (FIRST, FOLLOW, FULL, ALONE)}
    ctx, full = rows[FOLLOW]["top1"], rows[FULL]["top1"]
    return {
        "first_turn_top1": rows[FIRST]["top1"],
        "follow_up_top1": ctx, "follow_up_full_top1": full, "follow_up_alone_top1": rows[ALONE]["top1"],
        "follow_up_top1_ratio": ctx / full if ctx is not None and full else None,
        "follow_up_refused": rows[FOLLOW]["refused"], "follow_up_full_refused": rows[FULL]["refused"],
        "follow_up_alone_refused": rows[ALONE]["refused"],
        "follow_ups_read_with_context": _mean(p.read_as is not None for p in preds if p.kind == FOLLOW),
        "later_standalone_read_with_context": (_mean(p.read_as is not None for p in preds if p.kind == LATER)
                                               if any(p.kind == LATER for p in preds) else None),
    }


def dialogue_table(summary: dict) -> str:
    return "\n".join(["[dialogues]"] + [f"  {k:<36}{_fmt(v):>12}" for k, v in summary.items()])


# --------------------------------------------------------------------------- metrics


def _pct(values: list[float], p: float) -> float:
    s = sorted(values)
    if not s:
        return 0.0
    k = (len(s) - 1) * p / 100
    lo, hi = int(k), min(int(k) + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


def _mean(xs) -> float:
    xs = list(xs)
    return sum(xs) / len(xs) if xs else 0.0


def reliability(pairs: list[tuple[float, bool]], bins: int = 10) -> list[tuple[float, float, int]]:
    """Per equal-width probability bin holding any (probability, right) pair: the mean
    probability, the share right, and the count."""
    out = []
    for b in range(bins):
        lo, hi = b / bins, (b + 1) / bins
        inside = [(p, ok) for p, ok in pairs if lo <= p < hi or (b == bins - 1 and p == 1.0)]
        if inside:
            out.append((_mean(p for p, _ in inside), _mean(ok for _, ok in inside), len(inside)))
    return out


def expected_calibration_error(pairs: list[tuple[float, bool]], bins: int = 10) -> float:
    """Expected calibration error: the count-weighted mean gap between each bin's mean
    probability and its share right."""
    n = len(pairs)
    return sum(c * abs(p - r) for p, r, c in reliability(pairs, bins)) / n if n else 0.0


CURVE_BARS = tuple(round(0.1 * k, 1) for k in range(1, 10))
DECLINED_SHARE = 0.8  # the operating point right_at_80_declined reads


def _at_bar(preds: list[Prediction], bar: float) -> dict:
    """What one bar on the best candidate's confidence would do (a question without one is declined)."""
    ans = [p for p in preds if p.answerable]
    una = [p for p in preds if not p.answerable]
    shown = lambda p: p.confidence is not None and p.confidence >= bar  # noqa: E731
    return {"bar": bar, "right_shown": _mean(p.best_contains and shown(p) for p in ans) if ans else None,
            "wrong_shown": _mean(not p.best_contains and shown(p) for p in ans) if ans else None,
            "declined": _mean(not shown(p) for p in una) if una else None}


def decision_curve(preds: list[Prediction], bars=CURVE_BARS) -> list[dict]:
    """The trade a bar makes, bar by bar: answerable questions whose best candidate is shown and
    right, shown and wrong; unanswerable ones declined. Two systems compare on it at the same
    share declined, which a bare top-1 hides (a model whose probabilities run higher answers more
    at the same bar, and refuses less)."""
    return [_at_bar(preds, b) for b in bars]


def right_at_declined(preds: list[Prediction], share: float = DECLINED_SHARE) -> float | None:
    """The answerable questions answered right at the lowest bar that declines ``share`` of the
    unanswerable ones: top-1 at a fixed refusal rate, whatever the probabilities' scale."""
    una = sorted(-math.inf if p.confidence is None else p.confidence for p in preds if not p.answerable)  # None: declined
    if not una or not any(p.answerable for p in preds):
        return None
    k = math.ceil(share * len(una) - 1e-9) - 1  # the k+1 lowest are declined, no fewer
    return _at_bar(preds, math.nextafter(una[k], math.inf) if k >= 0 else -math.inf)["right_shown"]


def metrics(preds: list[Prediction], build_seconds: float | None = None) -> dict:
    ans = [p for p in preds if p.answerable]
    una = [p for p in preds if not p.answerable]
    m: dict = {"questions": len(preds), "answerable": len(ans), "unanswerable": len(una)}
    for k in K_VALUES:
        m[f"hit@{k}"] = _mean(p.retrieval_rank is not None and p.retrieval_rank <= k for p in ans)
    m["mrr@10"] = _mean(1 / p.retrieval_rank if p.retrieval_rank and p.retrieval_rank <= 10 else 0 for p in ans)
    # binary relevance, one relevant passage counted (the first found): nDCG = 1/log2(rank+1)
    m["ndcg@10"] = _mean(1 / math.log2(p.retrieval_rank + 1) if p.retrieval_rank and p.retrieval_rank <= 10 else 0
                         for p in ans)
    # strict: the question's own source file (its SQuAD paragraph), not any passage holding the answer
    sourced = [p for p in ans if p.source_correct is not None]  # the questions that name a source
    for k in K_VALUES:
        m[f"para_hit@{k}"] = (_mean(p.paragraph_rank is not None and p.paragraph_rank <= k for p in sourced)
                              if sourced else None)
    m["para_mrr@10"] = (_mean(1 / p.paragraph_rank if p.paragraph_rank and p.paragraph_rank <= 10 else 0
                              for p in sourced) if sourced else None)
    m["top1_contains_answer"] = _mean(p.top1_correct for p in ans)
    m["top3_contains_answer"] = _mean(p.top3_correct for p in ans)
    m["best_candidate_contains_answer"] = _mean(p.best_contains for p in ans)
    m["answered_share"] = _mean(not p.no_answer for p in ans)
    with_span = [p for p in ans if p.answer]
    m["span_coverage"] = len(with_span) / len(ans) if ans else 0.0
    m["span_em"] = _mean(p.em for p in ans)
    m["span_f1"] = _mean(p.f1 for p in ans)
    m["span_em_when_given"] = _mean(p.em for p in with_span)
    m["span_f1_when_given"] = _mean(p.f1 for p in with_span)
    src = [p for p in ans if p.source_correct is not None]
    m["source_accuracy"] = _mean(p.source_correct for p in src) if src else None
    tp = sum(p.no_answer and not p.answerable for p in preds)
    fp = sum(p.no_answer and p.answerable for p in preds)
    fn = sum(not p.no_answer and not p.answerable for p in preds)
    m["no_answer_precision"] = tp / (tp + fp) if una and tp + fp else None
    m["no_answer_recall"] = tp / (tp + fn) if una and tp + fn else None
    m["right_at_80_declined"] = right_at_declined(preds)
    m["decision_curve"] = decision_curve(preds)
    pairs = [pc for p in preds for pc in p.quote_probs]
    m["quote_ece"] = expected_calibration_error(pairs) if pairs else None
    m["quote_mean_probability"] = _mean(pr for pr, _ in pairs) if pairs else None
    m["quote_share_right"] = _mean(ok for _, ok in pairs) if pairs else None
    lat = [p.latency_ms for p in preds]
    m["latency_ms_p50"] = _pct(lat, 50)
    m["latency_ms_p95"] = _pct(lat, 95)
    m["latency_ms_max"] = max(lat) if lat else 0.0
    m["index_build_seconds"] = build_seconds
    return m



# kinds of the people-style sets (eval/people-*.jsonl), grouped for the summary rows
FACTOID_KINDS = ("who", "number", "date")
NON_FACTOID_KINDS = ("why", "how", "what-happens", "attribution", "paraphrase", "list", "comparison")
KIND_COLUMNS = ("n", "top1", "top3", "answered", "wrong_quote", "refused", "para_hit@1")


def kind_row(preds: list[Prediction]) -> dict:
    """The per-kind figures: answerable questions' top-1/top-3 (a quote holding a gold answer
    shown first / among the answers), the share answered, the share answered with a wrong
    first quote; unanswerable questions' share refused."""
    ans = [p for p in preds if p.answerable]
    una = [p for p in preds if not p.answerable]
    sourced = [p for p in ans if p.source_correct is not None]
    return {
        "n": len(preds),
        "top1": _mean(p.top1_correct for p in ans) if ans else None,
        "top3": _mean(p.top3_correct for p in ans) if ans else None,
        "answered": _mean(not p.no_answer for p in ans) if ans else None,
        "wrong_quote": _mean(not p.no_answer and not p.top1_correct for p in ans) if ans else None,
        "refused": _mean(p.no_answer for p in una) if una else None,
        "para_hit@1": _mean(p.paragraph_rank == 1 for p in sourced) if sourced else None,
    }


def by_kind(preds: list[Prediction]) -> dict[str, dict]:
    """``kind_row`` for each kind of question (most common first), and for the factoid and
    non-factoid groups when the set uses those kinds."""
    kinds = Counter(p.kind or "other" for p in preds)
    out = {k: kind_row([p for p in preds if (p.kind or "other") == k]) for k, _ in kinds.most_common()}
    if set(kinds) - set(_WH) - {"other"}:  # a set with kinds of its own, not SQuAD's wh-words
        for group, members in (("factoid (who/number/date)", FACTOID_KINDS), ("non-factoid", NON_FACTOID_KINDS)):
            chosen = [p for p in preds if p.kind in members]
            if chosen:
                out[group] = kind_row(chosen)
    return out


def kind_table(rows: dict[str, dict]) -> str:
    w = max([len(k) for k in rows] + [4]) + 2
    lines = ["by kind" + " " * (w - 7) + "".join(f"{c:>12}" for c in KIND_COLUMNS)]
    for k, r in rows.items():
        lines.append(f"{k:<{w}}" + "".join(f"{_fmt(r[c]):>12}" for c in KIND_COLUMNS))
    return "\n".join(lines)


ROWS = [
    ("retrieval", ["hit@1", "hit@5", "hit@10", "hit@20", "mrr@10", "ndcg@10"]),
    ("retrieval, strict (own paragraph/file)", ["para_hit@1", "para_hit@5", "para_hit@10", "para_mrr@10"]),
    ("answers", ["top1_contains_answer", "top3_contains_answer", "answered_share", "span_coverage",
                 "span_em", "span_f1", "source_accuracy"]),
    ("no answer", ["no_answer_precision", "no_answer_recall", "right_at_80_declined"]),
    ("quote probability", ["quote_ece", "quote_mean_probability", "quote_share_right"]),
    ("cost", ["latency_ms_p50", "latency_ms_p95", "latency_ms_max", "index_build_seconds"]),
]


def _fmt(v) -> str:
    if v is None:
        return "—"
    if isinstance(v, float):
        return f"{v:.3f}" if v <= 1.0 else f"{v:.1f}"
    return str(v)


def table(columns: dict[str, dict]) -> str:
    """Metrics as an aligned text table, one column per run (e.g. per retrieval mode)."""
    names = list(columns)
    first = next(iter(columns.values()))
    lines = [f"questions: {first['questions']} ({first['answerable']} answerable, "
             f"{first['unanswerable']} unanswerable)"]
    w = max(len(k) for _, ks in ROWS for k in ks) + 2
    lines.append(" " * w + "".join(f"{n:>12}" for n in names))
    for section, keys in ROWS:
        lines.append(f"[{section}]")
        for k in keys:
            lines.append(f"  {k:<{w - 2}}" + "".join(f"{_fmt(columns[n].get(k)):>12}" for n in names))
    return "\n".join(lines)


# --------------------------------------------------------------------------- report


def _histogram_svg(series: dict[str, list[float]], title: str, lo: float, hi: float, bins: int = 20,
                   colors=("#2b8a3e", "#c92a2a", "#1864ab")) -> str:
    width, height, pad = 520, 200, 30
    edges = [lo + (hi - lo) * i / bins for i in range(bins + 1)]
    counts = {}
    for name, vals in series.items():
        c = [0] * bins
        for v in vals:
            i = min(bins - 1, max(0, int((v - lo) / (hi - lo) * bins))) if hi > lo else 0
            c[i] += 1
        counts[name] = c
    top = max([max(c) for c in counts.values()] + [1])
    bw = (width - 2 * pad) / bins / max(1, len(series))
    rects = []
    for si, (name, c) in enumerate(counts.items()):
        for i, n in enumerate(c):
            h = (height - 2 * pad) * n / top
            x = pad + i * (width - 2 * pad) / bins + si * bw
            rects.append(f"<rect x='{x:.1f}' y='{height - pad - h:.1f}' width='{bw:.1f}' height='{h:.1f}' "
                         f"fill='{colors[si % len(colors)]}'><title>{name}: {n}</title></rect>")
    legend = "".join(
        f"<text x='{pad + 150 * i}' y='14' font-size='12' fill='{colors[i % len(colors)]}'>■ "
        f"{_esc(n)} ({len(series[n])})</text>" for i, n in enumerate(series))
    ticks = "".join(f"<text x='{pad + (width - 2 * pad) * i / 4:.0f}' y='{height - 8}' font-size='10'>"
                    f"{edges[0] + (edges[-1] - edges[0]) * i / 4:.2f}</text>" for i in range(5))
    return (f"<figure><figcaption>{_esc(title)}</figcaption><svg width='{width}' height='{height}' "
            f"xmlns='http://www.w3.org/2000/svg'>{legend}{''.join(rects)}{ticks}</svg></figure>")


def _reliability_svg(pairs: list[tuple[float, bool]], title: str) -> str:
    """A reliability diagram: per probability bin, the share of quotes that answer (dots sized
    by count) against the diagonal of perfect calibration, with the expected calibration error."""
    if not pairs:
        return ""
    size, pad = 260, 34
    span = size - 2 * pad
    xy = lambda px, py: (pad + px * span, size - pad - py * span)
    x0, y0 = xy(0, 0)
    x1, y1 = xy(1, 1)
    bins = reliability(pairs)
    top = max(c for *_, c in bins)
    dots = "".join(
        f"<circle cx='{xy(p_, r)[0]:.1f}' cy='{xy(p_, r)[1]:.1f}' r='{3 + 7 * (c / top) ** 0.5:.1f}' "
        f"fill='#1864ab' fill-opacity='.7'><title>mean probability {p_:.2f}: {r:.2f} answer ({c} quotes)"
        f"</title></circle>" for p_, r, c in bins)
    ticks = "".join(f"<text x='{xy(t, 0)[0]:.0f}' y='{size - pad + 14}' font-size='10' text-anchor='middle'>{t}</text>"
                    f"<text x='{pad - 6}' y='{xy(0, t)[1] + 3:.0f}' font-size='10' text-anchor='end'>{t}</text>"
                    for t in (0, 0.5, 1))
    return (f"<figure><figcaption>{_esc(title)}: expected calibration error "
            f"{expected_calibration_error(pairs):.3f} over {len(pairs)} quotes</figcaption>"
            f"<svg width='{size}' height='{size}' xmlns='http://www.w3.org/2000/svg'>"
            f"<rect x='{x0}' y='{y1}' width='{span}' height='{span}' fill='none' stroke='#ccc'/>"
            f"<line x1='{x0}' y1='{y0}' x2='{x1}' y2='{y1}' stroke='#999' stroke-dasharray='4'/>{dots}{ticks}"
            f"<text x='{size / 2}' y='{size - 4}' font-size='11' text-anchor='middle'>stated probability</text>"
            f"<text x='10' y='{size / 2}' font-size='11' transform='rotate(-90 10 {size / 2})' "
            f"text-anchor='middle'>share that answer</text></svg></figure>")


def _esc(s) -> str:
    import html

    return html.escape(str(s))


def _outcome(p: Prediction) -> str:
    if not p.answerable:
        return "refused (right)" if p.no_answer else "answered (should refuse)"
    return "right" if p.top1_correct else "refused" if p.no_answer else "wrong quote"


def dialogue_section(columns: dict[str, dict], preds: list[Prediction]) -> str:
    """For a dialogue set: the summary, then every dialogue's turns as asked in it (how each
    was read, the first quote, the outcome), with each follow-up's outcome written in full."""
    if not any(p.dialogue for p in preds):
        return ""
    out = []
    for n, col in columns.items():
        rows = "".join(f"<tr><td>{_esc(k)}</td><td>{_fmt(v)}</td></tr>" for k, v in col.get("dialogues", {}).items())
        out.append(f"<h2>Follow-up questions ({_esc(n)})</h2><table>{rows}</table>")
    full = {(p.mode, p.dialogue, p.turn): p for p in preds if p.kind == FULL}
    out.append("<h2>Dialogues, turn by turn</h2><table><tr><th>dialogue</th><th>turn</th><th>kind</th>"
               "<th>question</th><th>read as</th><th>expected</th><th>first quote</th><th>outcome</th>"
               "<th>written in full: outcome</th></tr>")
    for p in preds:
        if p.kind not in (FIRST, FOLLOW, LATER):
            continue
        f = full.get((p.mode, p.dialogue, p.turn))
        out.append(
            f"<tr><td>{_esc(p.dialogue)}</td><td>{p.turn}</td><td>{_esc(p.kind)}</td><td>{_esc(p.question)}</td>"
            f"<td>{_esc(p.read_as or '')}</td><td>{_esc(' | '.join(p.expected) or '(no answer)')}</td>"
            f"<td>{'(no answer)' if p.no_answer else _esc(p.quote)}</td><td>{_outcome(p)}</td>"
            f"<td>{_esc(_outcome(f)) if f else ''}</td></tr>")
    return "".join(out) + "</table>"


def html_report(name: str, columns: dict[str, dict], preds: list[Prediction], threshold: float) -> str:
    right = [p.confidence for p in preds if p.answerable and p.best_contains and p.confidence is not None]
    wrong = [p.confidence for p in preds if p.answerable and not p.best_contains and p.confidence is not None]
    unans = [p.confidence for p in preds if not p.answerable and p.confidence is not None]
    allv = right + wrong + unans or [0.0, 1.0]
    scores = _histogram_svg({"answerable, right sentence": right, "answerable, wrong sentence": wrong,
                             "unanswerable": unans},
                            f"Best-candidate confidence (no-answer threshold {threshold:.3f})", min(allv), max(allv))
    reliab = _reliability_svg([pc for p in preds for pc in p.quote_probs], "Reliability of the quote probability")
    lat = [p.latency_ms for p in preds]
    latency = _histogram_svg({"latency ms": lat}, "Per-question latency (ms)", 0, max(lat + [1.0]))
    wrong_rows = "".join(
        f"<tr><td>{_esc(p.id)}</td><td>{_esc(p.kind or '')}</td><td>{_esc(p.question)}</td><td>{_esc(' | '.join(p.expected) or '(no answer)')}</td>"
        f"<td>{'(no answer)' if p.no_answer else _esc(p.quote)}</td><td>{_esc(p.answer or '')}</td>"
        f"<td>{_esc(p.path or '')}</td><td>{_fmt(p.score)}</td></tr>"
        for p in preds
        if (p.answerable and not p.top1_correct) or (not p.answerable and not p.no_answer)
    )
    kinds = "".join(
        f"<h2>By kind of question ({_esc(n)})</h2><table><tr><th>kind</th>"
        + "".join(f"<th>{_esc(c)}</th>" for c in KIND_COLUMNS) + "</tr>"
        + "".join(f"<tr><td>{_esc(k)}</td>" + "".join(f"<td>{_fmt(r[c])}</td>" for c in KIND_COLUMNS) + "</tr>"
                  for k, r in col.get("by_kind", {}).items()) + "</table>"
        for n, col in columns.items())
    curves = "".join(
        f"<h2>What each bar would do ({_esc(n)})</h2><p>On the best candidate's confidence, one bar for "
        f"every question; the bar in use is {threshold:.3f}. Answerable questions answered at "
        f"the bar that declines {DECLINED_SHARE:.0%} of the unanswerable ones: {_fmt(col.get('right_at_80_declined'))}.</p>"
        "<table><tr><th>bar</th><th>answerable: right shown</th><th>wrong shown</th><th>unanswerable declined</th></tr>"
        + "".join(f"<tr><td>{r['bar']:.1f}</td><td>{_fmt(r['right_shown'])}</td><td>{_fmt(r['wrong_shown'])}</td>"
                  f"<td>{_fmt(r['declined'])}</td></tr>" for r in col.get("decision_curve", [])) + "</table>"
        for n, col in columns.items() if col.get("decision_curve"))
    head = "".join(f"<th>{_esc(n)}</th>" for n in columns)
    body = "".join(
        f"<tr><td>{k}</td>" + "".join(f"<td>{_fmt(columns[n].get(k))}</td>" for n in columns) + "</tr>"
        for _, keys in ROWS for k in keys)
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>Verbatim eval: {_esc(name)}</title>
<style>body{{font:14px sans-serif;margin:2rem}}table{{border-collapse:collapse}}td,th{{border:1px solid #ddd;
padding:3px 6px;vertical-align:top}}figure{{display:inline-block;margin:1rem}}</style></head><body>
<h1>Verbatim evaluation: {_esc(name)}</h1><p>{time.strftime('%Y-%m-%d %H:%M')}</p>
<table><tr><th>metric</th>{head}</tr>{body}</table>{kinds}{dialogue_section(columns, preds)}{curves}{scores}{reliab}{latency}
<h2>Wrong answers ({wrong_rows.count('<tr>')})</h2>
<table><tr><th>id</th><th>kind</th><th>question</th><th>expected</th><th>top quote</th><th>span</th><th>source</th><th>score</th></tr>
{wrong_rows}</table></body></html>"""


# --------------------------------------------------------------------------- service setup


def file_hash(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:12]


def squad_service(path: Path, log=print, calibration=None):
    """A service over the SQuAD file's paragraphs, cached under .cache/eval/ by file hash."""
    from .api import Verbatim

    work = CACHE / f"{path.stem}-{file_hash(path)}"
    questions = load_squad(path, work / "corpus")
    v = Verbatim(work / "corpus", work / "index", root=work, calibration=calibration)
    t = time.perf_counter()
    report = v.sync(progress=sys.stderr.isatty(), log=log)
    build = time.perf_counter() - t if report.chunks_embedded else None
    if report.chunks_embedded:
        log(f"indexed {len(report.added)} SQuAD paragraphs in {build:.1f} s")
    return v, questions, build


def share_of_unanswerable(value) -> float:
    """A share of unanswerable questions, checked (for ``calibrate`` and ``--unanswerable-share``)."""
    share = float(value)
    if not 0 <= share <= 1:
        raise VerbatimError(f"the share of unanswerable questions must be between 0 and 1, not {value}")
    return share


def calibrate(datasets: dict[str, list[Prediction]], unanswerable_share: float | None = None,
              decline_wrong: bool = False) -> dict:
    """Pick the no-answer threshold that maximises the mean per-dataset decision accuracy.

    A question is handled well at threshold t when it is unanswerable and the best
    candidate's confidence is below t, or answerable, the best candidate holds a gold
    answer and its confidence is at least t. With ``decline_wrong``, an answerable question
    whose best candidate does not hold the answer is handled well when it is declined (a
    refusal is better than a wrong quote shown as the answer). Each dataset counts equally,
    so a large set does not drown a small one.

    With `unanswerable_share` s, each dataset's accuracy is taken at that mix of questions:
    s * (share of its unanswerable questions declined) + (1 - s) * (share of its answerable
    ones rightly answered), so a set built half of unanswerable questions (SQuAD v2.0) is
    weighed as if it came in the proportion users ask them. Without it, each dataset's own
    mix.
    """
    import numpy as np

    if unanswerable_share is not None:
        unanswerable_share = share_of_unanswerable(unanswerable_share)

    def rule(ps):
        """Sorted confidences of the unanswerable questions and of the rightly chosen answerable
        ones, the count of unanswerable ones with none (always right), and the weight of one
        unanswerable and of one answerable question."""
        unans = np.sort([p.confidence for p in ps if not p.answerable and p.confidence is not None])
        right = np.sort([p.confidence for p in ps if p.answerable and p.best_contains and p.confidence is not None])
        wrong_all = [p.confidence for p in ps if decline_wrong and p.answerable and not p.best_contains]
        wrong = np.sort([c for c in wrong_all if c is not None])
        n_un = sum(not p.answerable for p in ps)
        n_ans = len(ps) - n_un
        if unanswerable_share is None or not n_un or not n_ans:  # the set's own mix
            w_un = w_ans = 1 / len(ps) if ps else 0.0
        else:
            w_un, w_ans = unanswerable_share / n_un, (1 - unanswerable_share) / n_ans
        return unans, right, n_un - len(unans), w_un, w_ans, wrong, len(wrong_all) - len(wrong)

    def acc(r, t):  # t: an array of thresholds -> decision accuracy at each
        unans, right, none, w_un, w_ans, wrong, wrong_none = r
        declined = np.searchsorted(unans, t, "left") + none
        answered_right = len(right) - np.searchsorted(right, t, "left")
        declined_wrong = np.searchsorted(wrong, t, "left") + wrong_none
        return w_un * declined + w_ans * (answered_right + declined_wrong)

    rules = {n: rule(ps) for n, ps in datasets.items()}
    # accuracy changes only at the confidence of an unanswerable, a rightly chosen or (with
    # decline_wrong) a wrongly chosen question
    cuts = np.unique(np.concatenate([x for unans, right, _, _, _, wrong, _ in rules.values()
                                     for x in (unans, right, wrong)]))
    lo_end, hi_end = (cuts[0], cuts[-1]) if len(cuts) else (0.0, 0.0)
    cuts = np.concatenate([[lo_end - 0.01], cuts, [hi_end + 0.01]])  # answer all / none
    scored = np.mean([acc(r, cuts) for r in rules.values()], axis=0)
    top = scored.max()
    # answering needs confidence >= t, so a cut t stands for the interval (previous cut, t];
    # consecutive best cuts make one interval (best cuts apart from each other do not):
    # take the middle of the widest
    runs, start = [], None
    for k, v in enumerate(list(scored == top) + [False]):
        if v and start is None:
            start = k
        elif not v and start is not None:
            runs.append((float(cuts[max(start - 1, 0)]), float(cuts[k - 1])))
            start = None
    lo, hi = max(runs, key=lambda r: r[1] - r[0])
    threshold = (lo + hi) / 2
    if not lo < threshold <= hi:  # lo and hi a float apart: their middle rounds to lo
        threshold = hi
    if lo < round(threshold, 4) <= hi:  # stored rounded where that decides the same
        threshold = round(threshold, 4)
    return {
        "threshold": threshold,
        "objective": round(float(top), 4),
        "unanswerable_share": unanswerable_share,
        "per_dataset_accuracy": {n: round(float(acc(r, np.array([threshold]))[0]), 4) for n, r in rules.items()},
        "sizes": {n: len(ps) for n, ps in datasets.items()},
        # what the rule trades: answerable questions it answers, unanswerable ones it declines
        "answered_share": {n: round(_mean(p.confidence is not None and p.confidence >= threshold
                                          for p in ps if p.answerable), 4) for n, ps in datasets.items()},
        "no_answer_recall": {n: round(_mean(p.confidence is None or p.confidence < threshold
                                            for p in ps if not p.answerable), 4) for n, ps in datasets.items()},
    }


# --------------------------------------------------------------------------- CLI


def add_eval_parser(command) -> None:
    """``qa eval``; ``command(name, help=...)`` makes a subcommand parser with the common options."""
    s = command("eval", help="evaluate on a question set (JSONL or SQuAD JSON)")
    s.add_argument("file", nargs="?", metavar="FILE", help="questions: .jsonl, or a SQuAD v1.1/v2.0 .json "
                   "(default: eval/shipped.jsonl)")
    s.add_argument("--squad-corpus", action="store_true",
                   help="index the SQuAD file's paragraphs as the corpus (open-corpus setting)")
    s.add_argument("--limit", type=int, metavar="N", help="evaluate a random sample of N questions")
    s.add_argument("--seed", type=int, default=13, metavar="N", help="seed for --limit (default 13)")
    s.add_argument("--mode", choices=["hybrid", "dense", "bm25"], default="hybrid")
    s.add_argument("--compare", metavar="MODES", help="comma-separated retrieval modes to run side by side, "
                   "e.g. bm25,dense,hybrid")
    s.add_argument("--json", action="store_true",
                   help="print all metrics as JSON (instead of the tables)")
    s.add_argument("--metrics", metavar="FILE", help="write all metrics as JSON to FILE")
    s.add_argument("--predictions", metavar="FILE", help="write one JSON object per question to this JSONL file")
    s.add_argument("--report", metavar="FILE", help="write an HTML report (metrics, score and latency plots, wrong answers)")
    s.add_argument("--calibrate", action="store_true",
                   help="choose the no-answer threshold from the shipped set and SQuAD v2.0 dev "
                   "(open corpus) and store it in qa/calibration.json")
    s.add_argument("--squad-v2", default=str(SQUAD_DIR / "dev-v2.0.json"), metavar="FILE",
                   help="SQuAD v2.0 file used by --calibrate")
    s.add_argument("--unanswerable-share", type=float, metavar="SHARE",
                   help="with --calibrate: weigh each set as if this share of the questions asked were "
                   "unanswerable (default: the shipped set's own share)")
    s.add_argument("--calibration", metavar="FILE", help="answer with this calibration file instead of qa/calibration.json "
                   "(e.g. an earlier one, to compare)")
    s.add_argument("--no-reader", action="store_true",
                   help="answer without the extractive reader (sentence scorer and span heuristic only)")
    s.add_argument("--reader-gold", action="store_true",
                   help="SQuAD file: the reader alone, given each question's gold paragraph "
                   "(official EM/F1 of its best span)")
    s.set_defaults(func=cmd_eval)


def _log(msg: str) -> None:
    print(f"qa: {msg}", file=sys.stderr)


def cmd_eval(args) -> int:
    from .cli import _service

    if args.calibrate:
        return _cmd_calibrate(args)
    path = Path(args.file) if args.file else SHIPPED_SET
    if args.reader_gold:
        return _cmd_reader_gold(path, args)
    if not path.is_file():
        raise VerbatimError(f"question file {path} does not exist")
    cal = None
    if args.calibration:
        from .answering import Calibration

        try:
            cal = Calibration.load(Path(args.calibration), strict=True)
        except ValueError as e:
            raise VerbatimError(str(e)) from None
    build = None
    dialogues = None
    if path.suffix == ".jsonl":
        if args.squad_corpus:
            raise VerbatimError("--squad-corpus needs a SQuAD .json file")
        if is_dialogue_file(path):
            dialogues = sample(load_dialogues(path), args.limit, args.seed)
            questions = [t.question for _, turns in dialogues for t in turns]
        else:
            questions = load_jsonl(path)
        service = _service(args, calibration=cal)
        t = time.perf_counter()
        if service.ensure_index(log=_log) is not None:
            build = time.perf_counter() - t
    else:
        if args.squad_corpus:
            service, questions, build = squad_service(path, log=_log, calibration=cal)
        else:
            questions = load_squad(path, None)
            service = _service(args, calibration=cal)
            service.ensure_index(log=_log)
    if dialogues is None:
        questions = sample(questions, args.limit, args.seed)
    if not questions:
        raise VerbatimError(f"{path} holds no questions")
    modes = [m.strip() for m in args.compare.split(",")] if args.compare else [args.mode]
    bad = [m for m in modes if m not in ("hybrid", "dense", "bm25")]
    if bad:
        raise VerbatimError(f"unknown retrieval mode {bad[0]!r}: use bm25, dense or hybrid")
    service.index()  # the index's model encodes the questions (another --model: one line)
    service.query_encoder  # load before timing
    use_reader = not args.no_reader and service.reader is not None
    columns: dict[str, dict] = {}
    all_preds: list[Prediction] = []
    t0 = time.perf_counter()
    for mode in modes:
        if dialogues is None:
            preds = run_questions(service, questions, mode, progress=sys.stderr.isatty(), reader=use_reader)
            columns[mode] = metrics(preds, build)
        else:  # the metrics are the turns asked in their dialogue; the comparison rows are by kind
            preds = run_dialogues(service, dialogues, mode, progress=sys.stderr.isatty(), reader=use_reader)
            columns[mode] = metrics([p for p in preds if p.kind in (FIRST, FOLLOW, LATER)], build)
            columns[mode]["dialogues"] = dialogue_summary(preds)
        columns[mode]["by_kind"] = by_kind(preds)
        all_preds += preds
    wall = time.perf_counter() - t0
    cal = service.answer_calibration(use_reader)
    threshold = cal.threshold
    result = {"file": str(path), "threshold": threshold,
              "no_answer_model": cal.no_answer is not None and cal.quote_model is None,
              "quote_model": cal.quote_model is not None, "reader": use_reader,
              "modes": columns, "wall_seconds": wall}
    _write_or_print(result, args)
    if not args.json:
        print_tables(path, dialogues, questions, use_reader, cal, wall, build, columns)
    if args.predictions:
        with open(args.predictions, "w", encoding="utf-8") as fh:
            for p in all_preds:
                fh.write(json.dumps(asdict(p), ensure_ascii=False) + "\n")
    if args.report:
        Path(args.report).write_text(html_report(path.name, columns, all_preds, threshold),
                                     encoding="utf-8")
    return 0


def _write_or_print(result: dict, args) -> None:
    """The metrics as JSON: to ``--metrics FILE``, and on standard output with ``--json``."""
    text = json.dumps(result, indent=2, ensure_ascii=False)
    if args.metrics:
        Path(args.metrics).write_text(text, encoding="utf-8")
    if args.json:
        print(text)


def print_tables(path: Path, dialogues, questions, use_reader: bool, cal, wall: float, build,
                 columns: dict[str, dict]) -> None:
    threshold = cal.threshold
    print(f"{path.name}: " + (f"{len(dialogues)} dialogues, " if dialogues is not None else "")
          + f"{len(questions)} questions, {'reader' if use_reader else 'no reader'}, "
          f"threshold {threshold:.3f}" + (" on the quote probability" if cal.quote_model is not None else
                                          " on the no-answer model's logit" if cal.no_answer is not None else "") + ", "
          f"{wall:.1f} s asking" + (f", index built in {build:.1f} s" if build else ""))
    print(table(columns))
    for mode, col in columns.items():
        if len(col["by_kind"]) > 1:
            print(("" if len(columns) == 1 else f"[{mode}] ") + kind_table(col["by_kind"]))
        if "dialogues" in col:
            print(("" if len(columns) == 1 else f"[{mode}] ") + dialogue_table(col["dialogues"]))


def reader_gold(path: Path, limit: int | None, seed: int, progress: bool = False) -> dict:
    """The reader alone on each question's gold paragraph: official EM/F1 of its best span."""
    import random

    from tqdm import tqdm

    from .reader import MODEL_DIR, load_reader

    reader = load_reader()
    if reader is None:
        raise VerbatimError(f"no reader weights in {MODEL_DIR}")
    items = []
    for art in json.loads(path.read_text(encoding="utf-8"))["data"]:
        for para in art["paragraphs"]:
            for qa in para["qas"]:
                golds = [a["text"] for a in qa["answers"]]
                if golds:  # SQuAD v2.0 unanswerables have no span to score
                    items.append((qa["question"], para["context"], golds))
    if limit and limit < len(items):
        items = random.Random(seed).sample(items, limit)
    em = f1 = 0.0
    times = []
    for q, ctx, golds in tqdm(items, disable=not progress, desc="reading", unit="q", leave=False):
        t = time.perf_counter()
        span = reader.read(q, [("p", 0, ctx)]).best_in("p", 0, len(ctx))
        times.append((time.perf_counter() - t) * 1e3)
        pred = ctx[span.start:span.end] if span else ""
        em += max(exact_match(pred, g) for g in golds)
        f1 += max(f1_score(pred, g) for g in golds)
    n = max(len(items), 1)
    size = sum(f.stat().st_size for f in MODEL_DIR.iterdir() if f.is_file())
    return {"questions": len(items), "exact_match": round(100 * em / n, 2), "f1": round(100 * f1 / n, 2),
            "latency_p50_ms": round(_pct(times, 50), 1), "model_mb": round(size / 1e6, 1)}


def _cmd_reader_gold(path: Path, args) -> int:
    if path.suffix != ".json":
        raise VerbatimError("--reader-gold needs a SQuAD .json file")
    r = reader_gold(path, args.limit, args.seed, progress=sys.stderr.isatty())
    if not args.json:
        print(f"{path.name}: reader on the gold paragraph, {r['questions']} questions: EM {r['exact_match']:.1f}, "
              f"F1 {r['f1']:.1f}; {r['latency_p50_ms']:.0f} ms per question (p50); model {r['model_mb']} MB")
    _write_or_print({"file": str(path), "reader_gold": r}, args)
    return 0


def _cmd_calibrate(args) -> int:
    from .answering import CALIBRATION_FILE, Calibration
    from .cli import _service

    shipped_questions = load_jsonl(SHIPPED_SET)
    if args.unanswerable_share is not None:  # checked before the questions are run
        share = share_of_unanswerable(args.unanswerable_share)
    else:  # the in-domain set is our estimate of how often the sources cannot answer
        share = round(_mean(not q.answerable for q in shipped_questions), 4)
    if Calibration.load().quote_model is not None and not args.no_reader:
        raise VerbatimError("the answer bar of the quote model is chosen with the model, on tuning data only: "
                            "run scripts/tune_quotes.py --write (qa eval --calibrate sets the fallback's, with --no-reader)")
    shipped = _service(args)
    shipped.ensure_index(log=_log)
    use_reader = not args.no_reader and shipped.reader is not None
    sets = {"shipped": run_questions(shipped, shipped_questions, progress=sys.stderr.isatty(),
                                     reader=use_reader)}
    v2 = Path(args.squad_v2)
    if v2.is_file():
        service, questions, _ = squad_service(v2, log=_log)
        questions = sample(questions, args.limit, args.seed)
        sets["squad-v2-dev-open"] = run_questions(service, questions, progress=sys.stderr.isatty(),
                                                  reader=use_reader)
    else:
        _log(f"{v2} not found: calibrating on the shipped set alone")
    result = calibrate(sets, unanswerable_share=share)
    cal = Calibration.load()
    how = (f"qa eval --calibrate on {time.strftime('%Y-%m-%d')}: threshold"
           + (" on the no-answer model's logit" if use_reader and cal.no_answer is not None else "")
           + " maximising the mean over datasets of decision accuracy (unanswerable -> best confidence "
           f"below it; answerable -> best sentence holds a gold answer and its confidence is at least it), "
           f"each set weighed to {share:.0%} unanswerable questions; "
           f"sizes {result['sizes']}; accuracy {result['per_dataset_accuracy']}")
    if use_reader:
        old = cal.threshold
        out = {**asdict(cal), "threshold": result["threshold"], "how": how}
    else:  # the fallback's own threshold, beside the reader's
        fallback = cal.for_reader(False)
        old = fallback.threshold
        kept = {k: getattr(fallback, k) for k in ("w_cos", "w_lex", "w_passage", "w_type", "weights_how")}
        out = {**asdict(cal), "without_reader": {**kept, "threshold": result["threshold"],
                                                 "how": how + " (without the reader)"}}
    CALIBRATION_FILE.write_text(json.dumps(out, indent=2) + "\n")
    print(f"threshold {result['threshold']:.4f} (was {old:.4f})"
          + ("" if use_reader else ", without the reader"))
    print(how)
    print(f"answered share of answerable questions {result['answered_share']}; "
          f"unanswerable ones declined {result['no_answer_recall']}")
    return 0
