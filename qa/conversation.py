"""Follow-up questions, extractively: what earlier turns of a chat supply to the next question.

People ask a chat the way they ask a person: "Who chairs the North Korean Freedom Coalition?"
then "What does she say awaits defectors?". The second question cannot be searched alone. The
systems that handle this let a language model rewrite the question; Verbatim generates no text,
so it *reads* the question with words the conversation already holds:

* a question leans on earlier turns when it says so (``follow_up_cue``): a pronoun or "that X"
  with nothing in the question it could point to ("What does *she* say ..."), a leading "and",
  "so", "what about", "what if" ("And his?"), or too few words of its own to search with
  ("Despite what risk?", "How many refugees?");
* such a question is read with the earlier question's content words (the earlier question as
  it was read, so a chain of follow-ups keeps its topic) and the answer words of the quote that
  answered it ("Suzanne Scholte"), appended after the question (``read_with``); the question's
  own words come first, so what it asks for (a reason, a number, a name) is still read from them;
* a question without a cue is answered exactly as it would be alone; when it is refused alone
  and there are earlier turns, it is read with them once more (``Verbatim.ask`` keeps that
  reading only if it then answers).

Quotes are never touched: the context only chooses which sentences are read. The reply says
which earlier question was used (``FollowUp``), so a user can tell, and start a new topic.
"""

from __future__ import annotations

import re

from .types import Turn

_WORD = re.compile(r"\w+(?:[’'\-.]+\w+)*", re.UNICODE)  # linear (a run of quotes cannot backtrack)

# words that carry no topic: question words, auxiliaries, pronouns, articles, prepositions
_FUNCTION = frozenset("""
a an the and or but so nor if then than also too else instead what which who whom whose when where why
how whether is are was were be been being am do does did done doing has have had having can could will
would shall should may might must ought of in on at to for from by with without about against between
into through during before after above below up down out off over under again further once here there
all any both each few more most other some such no not only own same very just now ever still yet
i me my mine we us our ours you your yours he him his she her hers it its they them their theirs
this that these those one ones kind sort thing things someone something anyone anything many much
say says said tell told according get got make made let happen happens happened go goes went
despite regarding via per like within among toward towards upon since until because while though although
""".split())

# pronouns that point outside the question when nothing in it can be what they point to
_PERSON = frozenset("he him his she her hers himself herself".split())
_PLURAL = frozenset("they them their theirs themselves".split())
_THING = frozenset("it its itself".split())
_DEMONSTRATIVE = frozenset("this that these those".split())
_AUX = frozenset("is are was were has have had will would can could do does did who which that may might".split())
_LEADS = re.compile(r"^(and|so|but|also|then|plus|what about|how about|what if|what else|and if|or)\b",
                    re.IGNORECASE)
_OTHER = re.compile(r"\b(else|instead|the same|too|either|another)\b", re.IGNORECASE)
# "that" after these verbs introduces a clause ("say that China ..."), not a reference
_CLAUSE_VERBS = frozenset("say says said claim claims claimed report reports reported believe believes "
                          "think thinks mean means show shows know knows argue argues state states "
                          "warn warns find finds found note notes suggest suggests so such".split())
MIN_OWN_TERMS = 2  # a question with fewer content words than this cannot be searched alone
MAX_ANSWER_WORDS = 8  # longer answer words are a clause, not an entity to carry forward
MAX_CONTEXT_WORDS = 16  # words a follow-up is read with (the reader's window is 128 tokens)


def words(text: str) -> list[str]:
    return _WORD.findall(text)


def content_words(text: str) -> list[str]:
    """The words that carry a topic, in order, each once (case kept: names stay names)."""
    seen, out = set(), []
    for w in words(text):
        k = w.lower().replace("’", "'").strip("'")
        if "'" in k and k.split("'")[0] in _FUNCTION:  # what's, they're, who've, don't
            continue
        if k in _FUNCTION or k in seen or len(k) < 2 and not k.isdigit():
            continue
        seen.add(k)
        out.append(w)
    return out


def _capitalised(w: str, first: bool) -> bool:
    return not first and w[:1].isupper() and w.lower() not in _FUNCTION


def _plural(w: str) -> bool:
    k = w.lower()
    return len(k) > 3 and k.endswith("s") and not k.endswith("ss") and k not in _FUNCTION


def _points_outside(before: list[str], after: list[str]) -> bool:
    """Whether a "this/that/these/those" refers to something said earlier ("Who heads that
    group?", "Can that get them in trouble?"), not a clause ("say that China ...") or a relative
    clause ("the group that reported ...", "those who cross")."""
    prev = before[-1].lower() if before else ""
    nxt = after[0].lower() if after else ""
    if prev in _CLAUSE_VERBS:
        return False
    if not prev or prev in _FUNCTION:
        return True
    return not (nxt in _AUX or nxt.endswith("ed"))


def pointer(question: str) -> tuple[int, int, str] | None:
    """The first word of ``question`` that points outside it (start, end, "person", "plural",
    "thing" or "demonstrative"), or None."""
    ms = list(_WORD.finditer(question))
    ws = [m.group() for m in ms]
    for n, w in enumerate(ws):
        k = w.lower()
        before = ws[:n]
        kind = None
        if k in _PERSON:
            if not any(_capitalised(b, i == 0) for i, b in enumerate(before)):
                kind = "person"
        elif k in _PLURAL:
            if not any(_capitalised(b, i == 0) or _plural(b) for i, b in enumerate(before)):
                kind = "plural"
        elif k in _THING:
            if not any(_capitalised(b, i == 0) for i, b in enumerate(before)):
                kind = "thing"
        elif k in _DEMONSTRATIVE and _points_outside(before, ws[n + 1:]):
            kind = "demonstrative"
        if kind:
            return ms[n].start(), ms[n].end(), kind
    return None


def follow_up_cue(question: str) -> str | None:
    """Why ``question`` leans on earlier turns ("pronoun", "lead", "short", "other"), or None
    when it stands alone. A pronoun is a cue only when no earlier word of the question can be
    what it points to ("What does China say it will do?" stands alone)."""
    if _LEADS.search(question.strip()):
        return "lead"
    if pointer(question) is not None:
        return "pronoun"
    if len(content_words(question)) < MIN_OWN_TERMS:
        return "short"
    if _OTHER.search(question):
        return "other"
    return None


def context_words(turn: Turn) -> list[str]:
    """What an earlier turn supplies, most telling first: its question's content words, the
    answer words of the quote that answered it (when short enough to be an entity), then what
    that question was itself read with (a chain of follow-ups keeps its topic)."""
    out = content_words(turn.question)
    if turn.answer and len(words(turn.answer)) <= MAX_ANSWER_WORDS:
        out += content_words(turn.answer)
    if turn.read_as:
        out += content_words(turn.read_as)
    return out


def read_with(question: str, turn: Turn) -> str:
    """``question`` followed by the words of ``turn`` it does not already have."""
    own = {w.lower() for w in words(question)}
    extra, seen = [], set()
    for w in context_words(turn):
        k = w.lower()
        if k not in own and k not in seen:
            seen.add(k)
            extra.append(w)
    extra = extra[:MAX_CONTEXT_WORDS]
    return question if not extra else f"{question} {' '.join(extra)}"
