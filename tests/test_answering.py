import json

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from qa.answering import answer_span, question_type
from qa.api import clean_question
from qa.errors import BadQuestion


@pytest.mark.parametrize("q,sentence,expected", [
    ("How many refugees did China repatriate in October 2023?",
     "In October 2023, the TJWG reported that China forcibly repatriated 600 North Korean refugees.", "600"),
    ("What share of the population is malnourished?",
     "A UN report from March 2017 states that 41 % of the population is malnourished.", "41 %"),
    ("When were the defectors arrested in Shenyang?",
     "The defectors were allegedly arrested in Shenyang on Nov. 4.", "Nov. 4"),
    ("Who chairs the North Korean Freedom Coalition?",
     "North Korean Freedom Coalition Chair Suzanne Scholte says torture awaits.", "Suzanne Scholte"),
    ("How many Chinese embassies received appeals?",
     "Activists are delivering appeals at more than a dozen Chinese embassies.", "more than a dozen"),
])
def test_answer_span_marks_the_answer_words(q, sentence, expected):
    span = answer_span(q, sentence)
    assert span is not None
    got = sentence[span[0]:span[1]]
    assert expected in got and len(got) <= len(expected) + 25


def test_no_span_for_why_questions_or_missing_type():
    assert answer_span("Why does China send refugees back?", "China fears collapse.") is None
    assert answer_span("How many were arrested?", "Nobody knows what happened.") is None
    assert question_type("Why is it so?") is None


@pytest.mark.parametrize("bad,msg", [
    ("", "please type a question"), ("   \n\t", "please type a question"),
    ("x" * 20000, "limited to 1,000 characters"), ("?!?", "no words"), (None, "must be text"),
])
def test_bad_questions_get_one_line_reasons(bad, msg):
    with pytest.raises(BadQuestion, match=msg):
        clean_question(bad)


def test_question_is_normalised():
    assert clean_question("  who\x00 won\n the   cup? ") == "who won the cup?"
    # a terminal's colour codes go whole, not leaving "[31m" behind
    assert clean_question("Who is \x01\x07Tim\x1b[31m Peters?\x1b[0m\x7f") == "Who is Tim Peters?"


@given(st.lists(st.from_regex(r"[A-Za-z0-9][A-Za-z0-9?']{0,7}", fullmatch=True), min_size=1, max_size=6),
       st.lists(st.from_regex(r"\x1b\[[0-9;]{0,6}[A-Za-z]|\x1b[@-Z]", fullmatch=True), max_size=8),
       st.randoms(use_true_random=False))
def test_escape_sequences_between_words_leave_the_question_as_typed(words, codes, rng):
    """Escape sequences pasted at the edges of a question's words (colours, cursor moves) are
    removed whole: the question reads as its words alone."""
    pieces = list(words)
    for code in codes:  # each sequence lands before or after a word
        at = rng.randrange(len(pieces))
        pieces[at] = code + pieces[at] if rng.random() < 0.5 else pieces[at] + code
    assert clean_question(" ".join(pieces)) == " ".join(words)


# --------------------------------------------------------------------------- no-answer model


def _cand(score, cos=0.5, lex=0.5, margin=None, span_score=None):
    from qa.answering import Candidate

    c = Candidate(None, 0, cos, lex, 1.0)
    c.score, c.reader_margin, c.reader_score = score, margin, span_score
    return c


def test_decision_features_clip_and_floor_missing_reader_values():
    from qa.answering import MARGIN_CLIP, SPAN_SCORE_CLIP, decision_features

    x = decision_features([_cand(1.4, 0.7, 0.2, margin=55.0, span_score=-40.0), _cand(1.1)])
    assert x.tolist() == pytest.approx([1.4, 0.7, 0.2, MARGIN_CLIP, SPAN_SCORE_CLIP[0], 0.3])
    alone = decision_features([_cand(0.9)])  # no reader span; no runner-up
    assert alone[3] == -MARGIN_CLIP and alone[4] == SPAN_SCORE_CLIP[0] and alone[5] == pytest.approx(0.9)


def test_no_answer_model_learns_the_separating_direction_and_round_trips():
    from qa.answering import NoAnswerModel

    rng = np.random.default_rng(0)
    X = rng.normal(size=(400, 6))
    y = (X[:, 3] + 0.5 * X[:, 1] + 0.3 * rng.normal(size=400)) > 0  # margin and cosine decide
    m = NoAnswerModel.fit(X, y)
    assert m.coef[3] > 1 and m.coef[1] > 0.5 and abs(m.coef[0]) < m.coef[1]
    assert ((m.logit(X) > 0) == y).mean() > 0.9
    again = NoAnswerModel.from_dict(json.loads(json.dumps(m.to_dict())))
    assert np.allclose(again.logit(X), m.logit(X))
    with pytest.raises(ValueError):
        NoAnswerModel.from_dict({**m.to_dict(), "features": ["score"]})


def test_confidence_is_the_models_logit_or_else_the_score(tmp_path):
    from dataclasses import asdict, replace

    from qa.answering import Calibration, NoAnswerModel, confidence, decision_features

    cands = [_cand(1.3, margin=4.0, span_score=9.0), _cand(1.0, margin=-2.0, span_score=3.0)]
    plain = Calibration()
    assert confidence([], plain) is None and confidence(cands, plain) == 1.3
    m = NoAnswerModel((0.0,) * 6, (1.0,) * 6, (0, 0, 0, 0.5, 0, 0), -1.0)
    cal = replace(plain, no_answer=m)
    assert confidence(cands, cal) == pytest.approx(0.5 * 4.0 - 1.0)
    assert confidence(cands, cal) == pytest.approx(float(m.logit(decision_features(cands))))
    # without the reader the model is not used (its features would be missing)
    assert confidence(cands, cal.for_reader(False)) == 1.3
    # a damaged model in the file: warned about, and the default calibration is used
    f = tmp_path / "calibration.json"
    f.write_text(json.dumps({"threshold": 0.2, "no_answer": {**m.to_dict(), "coef": [1, 2]}}))
    with pytest.warns(UserWarning, match="no-answer model"):
        assert Calibration.load(f) == Calibration()
    f.write_text(json.dumps({"threshold": 0.2, "no_answer": m.to_dict()}))
    assert Calibration.load(f).no_answer == m
    f.write_text(json.dumps(asdict(cal)))  # as `qa eval --calibrate` writes it back
    assert Calibration.load(f) == cal
    for bad in ({"scale": [0.0] * 6}, {"bias": float("nan")}, {"mean": "abcdef"}):
        f.write_text(json.dumps({"threshold": 0.2, "no_answer": {**m.to_dict(), **bad}}))
        with pytest.warns(UserWarning, match="no-answer model"):
            assert Calibration.load(f) == Calibration()


@pytest.mark.parametrize("q,intent", [
    ("Why does China send North Korean defectors back?", "reason"),
    ("What's the main reason Beijing refuses to call them refugees?", "reason"),
    ("What happens to women who cross into China?", "consequence"),
    ("What fate awaits those who are sent back?", "consequence"),
    ("What does Tim Peters say about the crackdown?", "attribution"),
    ("According to Open Doors, where does North Korea rank?", "where"),  # a typed factoid first
    ("How do defectors get out of China?", "manner"),
    ("How many were sent back in October 2023?", "num"),
    ("Who is Tim Peters?", "who"),
    ("Is China a member of the UN Security Council?", None),
])
def test_question_intent(q, intent):
    from qa.answering import question_intent

    assert question_intent(q) == intent


def test_quote_features_read_what_the_question_asks_for():
    from qa.answering import QUOTE_FEATURES, Candidate, quote_features
    from qa.types import Sentence

    def cand(text, score):
        c = Candidate(Sentence("d", 0, len(text), text), 0, 0.5, 0.3, 1.0)
        c.score = score
        return c

    cands = [cand("China sends them back.", 1.2),
             cand("The main reason is that China does not want to destabilize the regime.", 1.0)]
    x = quote_features("Why does China send them back?", cands)
    f = {n: x[:, i] for i, n in enumerate(QUOTE_FEATURES)}
    assert x.shape == (2, len(QUOTE_FEATURES))
    assert f["cue"].tolist() == [0.0, 1.0]  # "reason" answers a why-question
    assert f["nonfactoid"].tolist() == [1.0, 1.0] and f["nf_cos"].tolist() == [0.5, 0.5]
    assert f["gap"].tolist() == pytest.approx([0.0, -0.2])
    assert f["reader_margin"].tolist() == [-20.0, -20.0]  # no reader span: the clip's floor
    factoid = quote_features("How many were sent back?", cands)
    assert factoid[:, QUOTE_FEATURES.index("nonfactoid")].tolist() == [0.0, 0.0]


def test_quote_model_ranks_by_probability_and_labels_follow_the_bars():
    from dataclasses import replace

    from qa.answering import (LIKELY, MAY, QUOTE_FEATURES, RELATED, Calibration, NoAnswerModel,
                              label)

    n = len(QUOTE_FEATURES)
    cue = QUOTE_FEATURES.index("cue")
    coef = tuple(2.0 if i == cue else 0.0 for i in range(n))
    m = NoAnswerModel((0.0,) * n, (1.0,) * n, coef, -1.0, features=QUOTE_FEATURES)
    cal = replace(Calibration(), quote_model=m, threshold=0.3, likely=0.6)
    assert float(m.probability(np.eye(n)[cue])) == pytest.approx(1 / (1 + np.exp(-1.0)))
    assert label(0.9, cal, answer=True) == LIKELY
    assert label(0.4, cal, answer=True) == MAY
    assert label(0.2, cal, answer=True) == RELATED  # below the bar: never an answer
    assert label(0.9, cal, answer=False) == RELATED
    assert label(None, Calibration(), answer=True) == LIKELY  # no quote model: answers are answers


def test_a_damaged_quote_model_falls_back_to_the_default_calibration(tmp_path):
    from qa.answering import QUOTE_FEATURES, Calibration, NoAnswerModel

    n = len(QUOTE_FEATURES)
    m = NoAnswerModel((0.0,) * n, (1.0,) * n, (0.1,) * n, 0.0, features=QUOTE_FEATURES)
    f = tmp_path / "calibration.json"
    f.write_text(json.dumps({"threshold": 0.4, "quote_model": m.to_dict()}))
    assert Calibration.load(f).quote_model == m
    f.write_text(json.dumps({"threshold": 0.4, "quote_model": {**m.to_dict(), "features": ["score"]}}))
    with pytest.warns(UserWarning, match="quote model"):
        assert Calibration.load(f) == Calibration()


def test_weighted_fit_counts_a_row_of_weight_two_as_two_rows():
    from qa.answering import NoAnswerModel

    rng = np.random.default_rng(1)
    X = rng.normal(size=(200, 3))
    y = (X[:, 0] + rng.normal(size=200)) > 0
    w = rng.integers(1, 3, size=200)
    weighted = NoAnswerModel.fit(X, y, weight=w)
    repeated = NoAnswerModel.fit(np.repeat(X, w, axis=0), np.repeat(y, w))
    assert np.allclose(weighted.logit(X), repeated.logit(X), atol=1e-6)


def test_missing_term_weighs_the_rarest_absent_question_word():
    from qa.answering import missing_term, term_weights

    idf = {"china": 1.0, "convention": 2.0, "reply": 4.0}
    w = lambda *terms: term_weights(list(terms), idf, 5.0)
    assert missing_term(w("china", "reply"), {"china", "reply"}) == 0.0
    assert missing_term(w("china", "reply"), {"china"}) == 1.0  # lacks the rarest
    assert missing_term(w("china", "reply", "convention"), {"reply"}) == pytest.approx(0.5)
    assert missing_term(w("letter"), set()) == 1.0  # unseen words are the rarest
    assert missing_term(w(), {"x"}) == 0.0


def _length_model(bias: float):
    """A quote model that reads only the sentence length: longer sentences are likelier."""
    from qa.answering import QUOTE_FEATURES, NoAnswerModel

    n = len(QUOTE_FEATURES)
    coef = tuple(3.0 if f == "length" else 0.0 for f in QUOTE_FEATURES)
    return NoAnswerModel((0.0,) * n, (1.0,) * n, coef, bias, features=QUOTE_FEATURES)


def test_the_ask_path_ranks_by_probability_and_splits_answers_from_related(hashing_service):
    from dataclasses import replace

    from qa.answering import RELATED, Calibration

    hashing_service.sync()
    q = "What happens to defectors who are sent back to North Korea?"
    model = _length_model(-13.0)  # p = 0.5 at about 77 characters
    hashing_service.calibration = replace(Calibration(), quote_model=model, threshold=0.0)
    everything = hashing_service.ask(q, top=5)
    probs = [x.probability for x in everything.answers]
    assert len(probs) == 5 and not everything.closest
    assert probs == sorted(probs, reverse=True)  # ranked by probability, not by score
    for x in everything.answers:  # the probability is the model's, on the sentence's own length
        assert x.probability == pytest.approx(1 / (1 + np.exp(-(3 * np.log(len(x.text)) - 13))))
    bar = (probs[1] + probs[2]) / 2
    assert probs[1] > bar > probs[2], "the five quotes have distinct lengths"
    cal = replace(Calibration(), quote_model=model, threshold=bar)
    hashing_service.calibration = cal
    r = hashing_service.ask(q, top=5)
    quotes = list(r.answers) + list(r.closest)
    assert [x.text for x in quotes] == [x.text for x in everything.answers]
    assert len(r.answers) == 2 and all(x.probability >= bar and x.label != RELATED for x in r.answers)
    assert all(x.probability < bar and x.label == RELATED and x.answer is None for x in r.closest)
    assert r.confidence == pytest.approx(quotes[0].probability) and not r.no_answer
    # a bar no quote reaches: no answer, every quote shown as related
    hashing_service.calibration = replace(cal, threshold=0.9999)
    refused = hashing_service.ask(q, top=5)
    assert refused.no_answer and not refused.answers
    assert [x.text for x in refused.closest] == [x.text for x in quotes]
    assert all(x.label == RELATED for x in refused.closest)


def test_percent_reads_as_people_read_it():
    from qa.answering import percent

    assert [percent(p) for p in (0.0, 0.004, 0.37, 0.994, 0.995, 1.0)] == ["<1%", "<1%", "37%", "99%", ">99%", ">99%"]


def test_without_a_quote_model_only_the_first_answer_is_likely():
    from qa.answering import LIKELY, MAY, RELATED, Calibration, label

    cal = Calibration()
    assert label(None, cal, answer=True, first=True) == LIKELY
    assert label(None, cal, answer=True, first=False) == MAY
    assert label(None, cal, answer=False) == RELATED


def test_a_named_calibration_file_that_cannot_be_used_is_an_error(tmp_path):
    from qa.answering import Calibration

    f = tmp_path / "c.json"
    for text in ("{not json", '{"fusion_weights": [1, -1, 0]}'):
        f.write_text(text)
        with pytest.raises(ValueError, match="not a usable calibration"):
            Calibration.load(f, strict=True)
    with pytest.raises(ValueError):
        Calibration.load(tmp_path / "missing.json", strict=True)
    f.write_text('{"threshold": 0.3}')
    assert Calibration.load(f, strict=True).threshold == 0.3


@pytest.mark.parametrize("sentence,runs_on", [
    ("She said:", True), ("…for two reasons: ", True), ("He wrote:”", True),
    ("No colon here.", False), ("The ratio was 3:1 in 2023.", False), ('He said: "go."', False),
])
def test_a_sentence_ending_with_a_colon_introduces_the_next(sentence, runs_on):
    from qa.answering import introduces

    assert introduces(sentence) is runs_on


def _hashing_service(tmp_path, files):
    """A service over ``files`` (name -> text) with the hashing encoder, indexed; its index."""
    from qa import Verbatim
    from qa.config import IndexSettings

    (tmp_path / "corpus").mkdir()
    for name, body in files.items():
        (tmp_path / "corpus" / name).write_text(body)
    v = Verbatim(tmp_path / "corpus", tmp_path / "index", settings=IndexSettings(model="hashing-256"),
                 root=tmp_path)
    v.sync()
    return v, v.index()


def _doc_sentences(idx, name):
    """The document of corpus file ``name`` and its sentences, in order."""
    doc_id = next(iter(idx.doc_ids_for([f"corpus/{name}"])))
    return doc_id, [x for _, x, _ in idx.sentences(doc_id, 0, idx.sentence_count(doc_id) - 1)]


def _quote_of(idx, name, starts_with, others=()):
    """build_quotes for the sentence of ``name`` that starts so (with the same sentence of
    ``others`` files grouped with it)."""
    from qa.answering import Candidate, build_quotes

    cands, sources = [], {}
    for n in (name, *others):
        doc_id, sents = _doc_sentences(idx, n)
        sources.update(idx.sources([doc_id]))
        i = next(i for i, x in enumerate(sents) if x.text.startswith(starts_with))
        cands.append(Candidate(sents[i], i, 0.0, 0.0, 0.0))
    (q,) = build_quotes(idx, cands, 1, sources)
    return q


def test_a_quote_that_introduces_the_next_sentence_runs_on_into_it_verbatim(tmp_path):
    doc = ("Grace Jo spoke at the hearing in Seoul about the Onsong camp.\n\n"
           "Asked about the Onsong camp, the witness Grace Jo said:\n\n"
           "\u201cEvery night, I heard the screams of women in the prison camp.\u201d\n\n"
           "The hearing in Seoul ended at noon.")
    v, idx = _hashing_service(tmp_path, {"a.txt": doc})
    r = v.ask("What did the witness Grace Jo say about the Onsong camp?", top=5)
    quotes = list(r.answers) + list(r.closest)
    text = idx.document_text(quotes[0].source.doc_id)
    assert text == doc
    for x in quotes:
        assert x.text == text[x.span.start:x.span.end]  # verbatim, whatever its length
    said = [x for x in quotes if x.text.startswith("Asked about")]
    assert len(said) == 1
    assert said[0].text == ("Asked about the Onsong camp, the witness Grace Jo said:\n\n"
                            "\u201cEvery night, I heard the screams of women in the prison camp.\u201d")
    assert said[0].context_after == "\n\nThe hearing in Seoul ended at noon."
    # the sentence it ran into is not quoted again on its own
    assert not [x for x in quotes if x.text.startswith("\u201cEvery night")]
    assert len(quotes) == 3
    # whichever of the two is chosen first, the quote is the same span; each sentence alone
    from qa.answering import Candidate, build_quotes

    doc_id, sents = _doc_sentences(idx, "a.txt")
    assert len(sents) == 4
    cands = [Candidate(x, i, 0.0, 0.0, 0.0) for i, x in enumerate(sents)]
    sources = {doc_id: quotes[0].source}
    said, first, last = (sents[1].start, sents[2].end), (sents[0].start, sents[0].end), (sents[3].start, sents[3].end)
    for order, spans in (([1, 2, 0, 3], [said, first, last]), ([2, 1, 0, 3], [said, first, last]),
                         ([0, 3, 1, 2], [first, last, said]), ([0, 2, 3, 1], [first, said, last])):
        built = build_quotes(idx, [cands[i] for i in order], 5, sources)
        assert [(q.span.start, q.span.end) for q in built] == spans, order
        assert all(q.text == doc[q.span.start:q.span.end] for q in built)


_KINDS = {"plain": ("A plain sentence.", "body"), "intro": ("It said:", "heading"),
          "intro-body": ("The report makes these demands:", "body"), "item": ("- an item", "heading"),
          "item-body": ("- An item that is a sentence.", "body"), "furniture": ("Share this:", "furniture"),
          "md-heading": ("## Three findings:", "heading"), "number-item": ("1. A numbered sentence.", "body"),
          "number-split": ("10.", "heading"), "short": ("Right now.", "heading")}


@example(parts=[("intro-body", "\n")] * 70)  # a chain of runs longer than the window
@example(parts=[("intro-body", "\n"), ("item-body", "\n"), ("item-body", "\n\n"), ("number-item", "\n"),
                ("plain", "\n")])  # past a blank line, a list goes on only with the same marker
@settings(max_examples=400, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(sorted(_KINDS)), st.sampled_from([" ", "\n", "\n\n"])),
                min_size=1, max_size=80))
def test_runs_hold_their_sentence_start_at_what_introduces_them_and_never_overlap(parts):
    from qa.answering import RUN_MAX, introduces, quoted_run
    from qa.chunking import own_line
    from qa.types import Sentence

    text, near = "", {}
    for i, (k, sep) in enumerate(parts):
        words, kind = _KINDS[k]
        near[i] = Sentence("d", len(text), len(text) + len(words), words, kind)
        text += words + sep
    for i, x in near.items():  # as the chunker says: a markdown heading is text when not a line by itself
        if x.text.startswith("#") and not own_line(text, x.start, x.end):
            near[i] = Sentence("d", x.start, x.end, x.text, "body")
    quotable = [i for i, x in near.items() if x.kind == "body"]  # what a candidate can be
    runs = {}
    for idx in quotable:
        window = {i: x for i, x in near.items() if idx - 2 * RUN_MAX <= i <= idx + RUN_MAX + 1}
        run = quoted_run(window, idx, text)  # None: the window does not reach back far enough
        first, last = runs[idx] = run if run is not None else quoted_run(near, idx, text)
        assert first <= idx <= last and last - first < RUN_MAX
        if (first, last) != (idx, idx):
            assert introduces(near[first].text)  # where it starts: not a heading
            assert near[first].kind == "body" or not own_line(text, near[first].start, near[first].end)
            assert all(near[i].kind != "furniture" for i in range(first, last + 1))
    for i in quotable:  # two runs are the same or apart: no sentence is quoted twice
        for j in quotable:
            (a, b), (c, d) = runs[i], runs[j]
            assert (a, b) == (c, d) or b < c or d < a, (i, j)


def test_a_list_is_quoted_whole_with_the_sentence_that_introduces_it(tmp_path):
    from qa.answering import Candidate, build_quotes

    doc = ("# Demands\n\nThe coalition's report makes three demands of China:\n\n"
           "- stop forced repatriations\n- give the UNHCR access to refugees\n- prosecute traffickers\n\n"
           "The report was published in Seoul in 2023.")
    v, idx = _hashing_service(tmp_path, {"a.md": doc})
    doc_id, sents = _doc_sentences(idx, "a.md")
    text = idx.document_text(doc_id)
    intro = next(i for i, x in enumerate(sents) if x.text.startswith("The coalition"))
    items = [i for i, x in enumerate(sents) if x.text.startswith("- ")]
    assert items == [intro + 1, intro + 2, intro + 3]
    sources = idx.sources([doc_id])
    whole = text[text.index("The coalition"):text.index("traffickers") + len("traffickers")]
    for chosen in (intro, items[1]):
        (q,) = build_quotes(idx, [Candidate(sents[chosen], chosen, 0.0, 0.0, 0.0)], 3, sources)
        assert q.text == whole == text[q.span.start:q.span.end]
        assert q.context_after == "\n\nThe report was published in Seoul in 2023."


def test_a_list_item_of_two_sentences_stays_in_the_list_and_a_heading_starts_no_run(tmp_path):
    doc = ("Background:\n\nThe camp held hundreds of women.\n\n"
           "The report makes three demands:\n\n- Stop forced repatriations. This has gone on for years.\n"
           "- Give the UNHCR access.\n- Prosecute traffickers.\n\nThe report ends there.")
    v, idx = _hashing_service(tmp_path, {"a.txt": doc})
    whole = doc[doc.index("The report makes"):doc.index("traffickers.") + len("traffickers.")]
    for chosen in ("The report makes", "This has gone on", "- Prosecute"):
        assert _quote_of(idx, "a.txt", chosen).text == whole
    assert _quote_of(idx, "a.txt", "The camp held").text == "The camp held hundreds of women."


def test_also_in_names_only_documents_that_quote_the_same_run(tmp_path):
    said = "The minister told the reporters:"
    files = {"a.txt": f"{said}\n\nWe will close the camp next year.\n\nNothing else was said.",
             "b.txt": f"{said}\n\nWe will close the camp next year.\n\nThe reporters left.",
             "c.txt": f"{said}\n\nThe camp will stay open.\n\nThe reporters left."}
    v, idx = _hashing_service(tmp_path, files)
    q = _quote_of(idx, "a.txt", said, others=("b.txt", "c.txt"))
    assert q.text == f"{said}\n\nWe will close the camp next year."
    assert [src.path for src, _ in q.also_in] == ["corpus/b.txt"]
    (src, span), = q.also_in
    assert idx.document_text(src.doc_id)[span.start:span.end] == q.text


@pytest.mark.parametrize("doc,chosen,quoted", [
    ("The plan has eleven steps:\n" + "\n".join(f"{i}. Step number {i} is taken." for i in range(1, 12))
     + "\n\nIt passed in May.", "5. Step", ("The plan has", "11 is taken.")),
    ("The demands were these:\n- Stop forced repatriations. Right now.\n- Give access.\n- Prosecute traffickers."
     "\n\nThe report ends.", "The demands", ("The demands", "Prosecute traffickers.")),
    ("It has two parts:\n- A first part.\n- A second part.\n\n1. Unrelated numbered paragraph begins here."
     "\n\nIt passed in May.", "- A second", ("It has two", "A second part.")),
    ("Three options remain:\n(a) Talks with China.\n(b) Sanctions on officials.\n(c) Asylum in the South."
     "\n\nNone was taken.", "(b) Sanctions", ("Three options", "Asylum in the South.")),
])
def test_a_list_runs_through_its_items_and_stops_at_what_is_not_one(tmp_path, doc, chosen, quoted):
    v, idx = _hashing_service(tmp_path, {"a.txt": doc})
    q = _quote_of(idx, "a.txt", chosen)
    assert q.text == doc[doc.index(quoted[0]):doc.index(quoted[1]) + len(quoted[1])]


def test_a_run_in_two_copies_of_a_document_is_quoted_once(tmp_path):
    from qa.answering import Candidate, build_quotes

    run = ("The report makes three demands of the government:\n\n- Stop forced repatriations now.\n"
           "- Give the agency access to refugees.\n\n")
    v, idx = _hashing_service(tmp_path, {"a.txt": run + "Nothing else was said in the report.",
                                         "b.txt": run + "The reporters left the room quickly."})
    cands, sources = [], {}
    for name, i in (("a.txt", 0), ("b.txt", 1), ("a.txt", 1), ("b.txt", 0), ("a.txt", 3)):
        doc_id, sents = _doc_sentences(idx, name)
        sources.update(idx.sources([doc_id]))
        cands.append(Candidate(sents[i], i, 0.0, 0.0, 0.0))
    quotes = build_quotes(idx, cands, 3, sources)
    assert [q.text for q in quotes] == [run.rstrip(), "Nothing else was said in the report."]
    assert [src.path for src, _ in quotes[0].also_in] == ["corpus/b.txt"]


def test_the_first_quote_holds_its_neighbour_when_the_model_is_torn_between_them(tmp_path):
    from dataclasses import replace

    from qa.answering import NEIGHBOUR_SHARE, Candidate, build_quotes

    doc = ("Returned defectors are questioned by the security police. Those who met missionaries are sent "
           "to a labour camp. Few survive it. The border is guarded on both sides.")
    other = "A different article says that the camps are crowded and that food is scarce there."
    v, idx = _hashing_service(tmp_path, {"a.txt": doc, "b.txt": other})
    doc_id, sents = _doc_sentences(idx, "a.txt")
    b_id, b_sents = _doc_sentences(idx, "b.txt")
    text = idx.document_text(doc_id)
    sources = idx.sources([doc_id, b_id])
    assert len(sents) == 4

    def cand(i, p, sents=sents, span=None, top=0.0):
        return Candidate(sents[i], i, 0.0, 0.0, 0.0, probability=p, span=span, reader_top=top)

    def spans(cands):
        quotes = build_quotes(idx, cands, 3, sources)
        assert all(q.text == idx.document_text(q.source.doc_id)[q.span.start:q.span.end] for q in quotes)
        return [(q.span.start, q.span.end) for q in quotes]

    one, two, three = ((x.start, x.end) for x in sents[1:4])
    # torn between sentence 1 and its neighbour 2 (either side): one quote of both
    assert spans([cand(1, 0.6), cand(2, 0.6 * NEIGHBOUR_SHARE), cand(3, 0.1)]) == [(one[0], two[1]), three]
    assert spans([cand(2, 0.6), cand(1, 0.5), cand(3, 0.1)]) == [(one[0], two[1]), three]
    # a neighbour far less likely, one further away, or another document's sentence: apart
    assert spans([cand(1, 0.6), cand(2, 0.6 * NEIGHBOUR_SHARE - 0.01)]) == [one, two]
    assert spans([cand(1, 0.6), cand(3, 0.5)]) == [one, three]
    assert spans([cand(1, 0.6), cand(0, 0.5, b_sents)])[0] == one
    # without probabilities (no quote model) nothing is joined
    assert spans([cand(1, None), cand(2, None)]) == [one, two]
    # the answer words marked are the reader's best span, in whichever sentence it is
    first, runner = cand(1, 0.6, span=(0, 10), top=0.3), cand(2, 0.5, span=(0, 3), top=1.0)
    (q, *_) = build_quotes(idx, [first, runner], 3, sources)
    assert q.answer == "Few" == text[q.answer_span.start:q.answer_span.end]
    (q, *_) = build_quotes(idx, [replace(first, reader_top=1.0), replace(runner, reader_top=0.3)], 3, sources)
    assert q.answer == "Those who " and q.text.startswith("Those who") and q.text.endswith("Few survive it.")


def test_a_joined_quote_in_two_copies_of_a_document_is_quoted_once_and_names_the_copy(tmp_path):
    from qa.answering import Candidate, build_quotes

    doc = ("Returned defectors are questioned by the security police. Those who met missionaries are sent "
           "to a labour camp. Few survive it.")
    v, idx = _hashing_service(tmp_path, {"a.txt": doc + " The border is guarded.", "b.txt": doc + " Rain fell."})
    sents, sources = {}, {}
    for name in ("a.txt", "b.txt"):
        doc_id, sents[name] = _doc_sentences(idx, name)
        sources.update(idx.sources([doc_id]))

    def cand(name, i, p):
        return Candidate(sents[name][i], i, 0.0, 0.0, 0.0, probability=p)

    joined = "Those who met missionaries are sent to a labour camp. Few survive it."
    # whichever copy of the neighbour ranks first, the first quote holds it and names the copy
    for order in ([cand("a.txt", 1, 0.6), cand("b.txt", 1, 0.6), cand("a.txt", 2, 0.5), cand("b.txt", 2, 0.5)],
                  [cand("a.txt", 1, 0.6), cand("b.txt", 1, 0.6), cand("b.txt", 2, 0.5), cand("a.txt", 2, 0.5)]):
        quotes = build_quotes(idx, order + [cand("a.txt", 3, 0.1)], 3, sources)
        assert [q.text for q in quotes] == [joined, "The border is guarded."]
        assert [src.path for src, _ in quotes[0].also_in] == ["corpus/b.txt"]
        (src, span), = quotes[0].also_in
        assert idx.document_text(src.doc_id)[span.start:span.end] == joined

    # a neighbour that would make the quote longer than RUN_MAX sentences is not joined
    from qa.answering import RUN_MAX

    items = "".join(f"- Demand number {n} is a sentence.\n" for n in range(1, RUN_MAX))
    long = "The report makes these demands:\n" + items + "\nThe report ended there."
    (tmp_path / "long").mkdir()
    v, idx = _hashing_service(tmp_path / "long", {"c.txt": long})
    doc_id, c = _doc_sentences(idx, "c.txt")
    assert len(c) == RUN_MAX + 1
    quotes = build_quotes(idx, [Candidate(c[0], 0, 0.0, 0.0, 0.0, probability=0.6),
                                Candidate(c[RUN_MAX], RUN_MAX, 0.0, 0.0, 0.0, probability=0.5)], 3,
                          idx.sources([doc_id]))
    assert [q.text for q in quotes] == [long[:long.index("\n\nThe report ended")], "The report ended there."]


def test_a_name_and_its_acronym_count_as_each_other_in_a_sentences_terms():
    from qa.answering import with_aliases
    from qa.sparse import tokenize

    aliases = [(set(tokenize(["CSW"])[0]), set(tokenize(["Christian Solidarity Worldwide"])[0]))]
    name = set(tokenize(["Christian Solidarity Worldwide"])[0])
    short = set(tokenize(["CSW Chief Executive Merwyn Thomas said"])[0])
    long = set(tokenize(["Christian Solidarity Worldwide is calling on China"])[0])
    assert with_aliases(short, aliases) == short | name
    assert with_aliases(long, aliases) == long | {"csw"}
    part = set(tokenize(["Christian groups worldwide"])[0])  # not the whole name
    assert with_aliases(part, aliases) == part
    assert with_aliases(short, []) == short


# --------------------------------------------------------------------------- re-ranking


def _passage(doc, start, score, first, last):
    from qa.types import Passage, Source

    return Passage(chunk_id=start, doc_id=doc, start=start, end=start + 10, text="x" * 10, score=score,
                   dense_score=None, bm25_score=None, dense_rank=None, bm25_rank=None,
                   source=Source(doc, f"{doc}.txt", doc, "", "", ""), first_sentence=first, last_sentence=last)


def _sentence_cand(doc, i, probability):
    from qa.answering import Candidate
    from qa.types import Sentence

    c = Candidate(Sentence(doc, 0, 1, "x"), i, 0.5, 0.5, 1.0)
    c.probability = probability
    return c


def test_the_passages_read_are_ranked_again_by_their_best_sentence():
    from qa.answering import rerank

    a, b, c = _passage("a", 0, 0.9, 0, 2), _passage("b", 0, 0.6, 0, 2), _passage("a", 50, 0.45, 3, 5)
    unread = _passage("d", 0, 0.4, 0, 1)
    cands = [_sentence_cand("b", 1, 0.8), _sentence_cand("a", 4, 0.3), _sentence_cand("a", 1, 0.05),
             _sentence_cand("d", 0, 0.99)]  # d's passage was not read: it stays where it was
    # fused scores as a share of the best read (0.9): a 1.0, b 0.667, c 0.5
    got = rerank([a, b, c, unread], cands, read=3, weight=1.0)
    assert got == [b, a, c, unread]  # 1.467, 1.05, 0.8
    assert rerank([a, b, c, unread], cands, read=3, weight=0.0) == [a, b, c, unread]
    without_model = [_sentence_cand("b", 1, None)]
    assert rerank([a, b, c, unread], without_model, read=3) == [a, b, c, unread]
    assert rerank([a, b, c, unread], [], read=3) == [a, b, c, unread]
    # the fused score counts as a share of the best read passage's, whatever its scale
    small, smaller = _passage("a", 0, 0.05, 0, 1), _passage("b", 0, 0.025, 0, 1)
    assert rerank([small, smaller], [_sentence_cand("b", 0, 0.3)], read=2) == [small, smaller]  # 1.0 > 0.8


def test_a_passage_counts_its_best_sentence_from_first_to_last():
    from qa.answering import rerank

    low, high = _passage("a", 0, 1.0, 2, 4), _passage("b", 0, 0.8, 0, 3)
    # b's best sentence is its last (listed after a weaker one of its own); a's edges are in it
    got = rerank([low, high], [_sentence_cand("b", 1, 0.1), _sentence_cand("b", 3, 0.9),
                               _sentence_cand("a", 5, 0.95), _sentence_cand("a", 1, 0.95)], read=2)
    assert got == [high, low]  # 0.8 + 0.9 against 1.0 + 0 (sentences 5 and 1 are outside a)
    edge = rerank([low, high], [_sentence_cand("a", 2, 0.5), _sentence_cand("b", 0, 0.6)], read=2)
    assert edge == [low, high]  # 1.5 against 1.4: a's first sentence is its own
    # a sentence two passages share lifts both; equal keys go by document, then position
    x, y = _passage("b", 100, 0.5, 0, 2), _passage("a", 200, 0.5, 2, 4)
    assert rerank([x, y], [_sentence_cand("a", 2, 0.7), _sentence_cand("b", 2, 0.7)], read=2) == [y, x]


def _key(p, cands, weight, top):
    best = max((c.probability for c in cands
                if c.sentence.doc_id == p.doc_id and p.first_sentence <= c.idx <= p.last_sentence), default=0.0)
    return (p.score / top if top > 0 else 0.0) + weight * best


@settings(max_examples=80, deadline=None)
@given(st.lists(st.tuples(st.sampled_from("abc"), st.integers(0, 5), st.floats(0, 1)), min_size=1, max_size=8,
                unique_by=lambda t: (t[0], t[1])),
       st.lists(st.tuples(st.sampled_from("abc"), st.integers(0, 12), st.floats(0, 1)), max_size=12,
                unique_by=lambda t: (t[0], t[1])),
       st.integers(0, 8), st.floats(0, 3))
def test_re_ranking_sorts_the_passages_read_by_score_and_best_sentence(ps, cs, read, weight):
    from qa.answering import rerank

    passages = [_passage(d, n * 100, s, n * 2, n * 2 + 1) for d, n, s in ps]
    cands = sorted((_sentence_cand(d, i, p) for d, i, p in cs), key=lambda c: -c.probability)
    got = rerank(passages, cands, read, weight)
    assert sorted(map(id, got)) == sorted(map(id, passages))
    assert got[read:] == passages[read:]
    if not cands:  # nothing read: retrieval's order stands
        assert got == passages
        return
    head = passages[:read]
    top = max((p.score for p in head), default=0.0)
    keys = [_key(p, cands, weight, top) for p in got[:read]]
    assert all(k1 >= k2 - 1e-12 for k1, k2 in zip(keys, keys[1:]))
    assert rerank(passages, cands, read, 0.0)[:read] == sorted(head, key=lambda p: (-p.score, p.doc_id, p.start))
