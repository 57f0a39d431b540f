import dataclasses
import json
import math
import os
import statistics
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from qa import evaluate as ev

from .conftest import REPO, SQUAD

QA = str(Path(sys.executable).with_name("qa"))


@pytest.mark.parametrize("pred,gold,em,f1", [
    ("The Denver Broncos", "Denver Broncos", 1.0, 1.0),
    ("Denver Broncos!", "the denver broncos", 1.0, 1.0),
    ("Broncos", "Denver Broncos", 0.0, 2 / 3),
    ("Carolina Panthers", "Denver Broncos", 0.0, 0.0),
])
def test_squad_em_f1(pred, gold, em, f1):
    assert ev.exact_match(pred, gold) == em
    assert ev.f1_score(pred, gold) == pytest.approx(f1)


def test_contains_answer_is_token_aligned_and_unicode_aware():
    assert ev.contains_answer("regards Christians as ‘traitors,’ who", ["traitors"])
    assert ev.contains_answer("a 26-year-old defector", ["26"])
    assert not ev.contains_answer("in 1967", ["67"])
    assert not ev.contains_answer("anything", ["", "   "])


def test_load_jsonl_reports_the_bad_line(tmp_path):
    f = tmp_path / "q.jsonl"
    f.write_text('{"question": "a?", "answers": ["b"]}\n{"question": 3}\n')
    with pytest.raises(ev.VerbatimError, match=r"q.jsonl:2"):
        ev.load_jsonl(f)


def test_shipped_set_shape():
    qs = ev.load_jsonl(ev.SHIPPED_SET)
    assert len(qs) >= 60 and sum(not q.answerable for q in qs) >= 10
    assert len({q.source for q in qs if q.source}) == 5
    for q in qs:  # gold answers really are in the cited article
        if q.source:
            text = (REPO / q.source).read_text()
            assert all(a in text for a in q.answers), q.id


def test_calibrate_picks_the_separating_threshold():
    P = lambda ans, conf, ok: ev.Prediction("i", "q", ans, False, None, None, None, None, None, conf, 1.0,
                                            None, ok, ok, ok, 0, 0, None, False, confidence=conf)
    a = [P(True, 0.6, True), P(True, 0.7, True), P(False, 0.3, False), P(False, 0.2, False)]
    b = [P(True, 0.5, True), P(False, 0.45, False)]
    out = ev.calibrate({"a": a, "b": b})
    assert 0.45 < out["threshold"] <= 0.5
    assert out["per_dataset_accuracy"] == {"a": 1.0, "b": 1.0} and out["objective"] == 1.0
    assert out["answered_share"] == out["no_answer_recall"] == {"a": 1.0, "b": 1.0}
    # a wrongly chosen sentence cannot be made right by any threshold: it does not move it
    c = b + [P(True, 0.9, False), P(True, 0.1, False)]
    assert ev.calibrate({"a": a, "b": c})["threshold"] == out["threshold"]
    # an unanswerable question with nothing retrieved is always declined
    none = ev.Prediction("i", "q", False, True, None, None, None, None, None, None, 1.0, None, False, False,
                         False, 0, 0, None, True)
    assert ev.calibrate({"a": a, "b": b + [none]})["per_dataset_accuracy"]["b"] == 1.0


def test_calibrate_weighs_each_set_to_the_unanswerable_share():
    """A set built half of unanswerable questions pulls the threshold up when each set counts
    at its own mix; weighed to users' share of unanswerable questions it answers more."""
    P = lambda ans, conf, ok=True: ev.Prediction("i", "q", ans, False, None, None, None, None, None, conf, 1.0,
                                                 None, ok, ok, ok, 0, 0, None, False, confidence=conf)
    # two answerable questions below two unanswerable ones, and two answerable ones above them
    half = [P(True, 0.1), P(True, 0.2), P(False, 0.3), P(False, 0.4), P(True, 0.8), P(True, 0.9)]
    own = ev.calibrate({"half": half})
    assert 0.4 < own["threshold"] <= 0.8 and own["unanswerable_share"] is None
    assert own["per_dataset_accuracy"]["half"] == round(4 / 6, 4)
    rare = ev.calibrate({"half": half}, unanswerable_share=0.1)
    assert rare["threshold"] <= 0.1, "answering all is right for 90% of questions asked"
    assert rare["per_dataset_accuracy"]["half"] == 0.9 and rare["answered_share"]["half"] == 1.0
    often = ev.calibrate({"half": half}, unanswerable_share=0.6)
    assert often["threshold"] == own["threshold"]
    assert often["per_dataset_accuracy"]["half"] == round(0.6 + 0.4 * 2 / 4, 4)
    with pytest.raises(ev.VerbatimError, match="share"):
        ev.calibrate({"half": half}, unanswerable_share=1.5)


def test_calibrate_rejects_a_bad_share_before_running_anything(tmp_path):
    p = subprocess.run([QA, "eval", "--calibrate", "--unanswerable-share", "1.5"], capture_output=True,
                       text=True, env={**os.environ, "VERBATIM_CACHE": str(tmp_path)}, timeout=120)
    assert p.returncode != 0 and "between 0 and 1" in p.stderr and "Traceback" not in p.stderr


@pytest.fixture()
def small_squad(tmp_path):
    data = json.loads((SQUAD / "dev-v1.1.json").read_text())
    art = data["data"][0]
    small = {"version": "1.1", "data": [{"title": art["title"], "paragraphs": art["paragraphs"][:6]}]}
    f = tmp_path / "small-squad.json"
    f.write_text(json.dumps(small))
    return f


def test_squad_open_corpus_eval_end_to_end(small_squad, tmp_path):
    env = {**os.environ, "VERBATIM_MODEL": "hashing-256", "VERBATIM_CACHE": str(tmp_path / "cache")}
    out = tmp_path / "m.json"
    preds = tmp_path / "p.jsonl"
    report = tmp_path / "r.html"
    p = subprocess.run([QA, "eval", str(small_squad), "--squad-corpus", "--compare", "bm25,hybrid",
                        "--metrics", str(out), "--predictions", str(preds), "--report", str(report)],
                       capture_output=True, text=True, env=env, timeout=300)
    assert p.returncode == 0, p.stderr
    assert "hit@10" in p.stdout and "bm25" in p.stdout
    m = json.loads(out.read_text())["modes"]
    assert set(m) == {"bm25", "hybrid"}
    assert m["bm25"]["questions"] > 20 and m["hybrid"]["hit@20"] > 0.5
    assert m["bm25"]["hit@20"] > 0.5  # BM25 finds the gold paragraph among 6 for most questions
    rows = [json.loads(l) for l in preds.read_text().splitlines()]
    assert {"id", "question", "no_answer", "quote", "answer", "path", "start", "end", "score",
            "top1_correct", "top3_correct"} <= set(rows[0])
    corpus = tmp_path / "cache" / "eval"
    for r in rows:  # every quote is verbatim from its paragraph file
        if r["quote"]:
            f = next(corpus.glob("*/" + r["path"]))
            assert f.read_text()[r["start"]:r["end"]] == r["quote"]
    assert "<svg" in report.read_text() and "Wrong answers" in report.read_text()


@pytest.mark.slow
def test_shipped_set_regression(real_service):
    """Floors a little below what was measured (see the README); a drop fails CI."""
    qs = ev.load_jsonl(ev.SHIPPED_SET)
    m = ev.metrics(ev.run_questions(real_service, qs, progress=False))
    assert m["hit@5"] >= 0.95
    for key, floor in FLOORS.items():
        assert m[key] >= floor, (key, m[key])


@pytest.mark.slow
def test_shipped_set_without_the_reader_keeps_its_own_calibration(real_service):
    """The fallback (reader weights missing) answers as the sentence scorer did."""
    qs = ev.load_jsonl(ev.SHIPPED_SET)
    m = ev.metrics(ev.run_questions(real_service, qs, progress=False, reader=False))
    for key, floor in FALLBACK_FLOORS.items():
        assert m[key] >= floor, (key, m[key])


# measured 2026-12-01 (qa eval, 100 questions; convex fusion, quote model, answer bar 0.4675 on
# its probability): top1 0.816, top3 0.816, span F1 0.654, no-answer recall 0.958, precision 0.657,
# source accuracy 0.829, hit@5 1.0. Before the quote model (no-answer model, threshold -1.335):
# 0.829 / 0.882 / 0.684 / 0.875 / 0.778 / 0.855. The floors leave two or three questions of room
# (the same files move by a question or so on another processor: README, Evaluation).
FLOORS = {"top1_contains_answer": 0.78, "top3_contains_answer": 0.78, "span_f1": 0.62,
          "no_answer_recall": 0.87, "no_answer_precision": 0.60, "source_accuracy": 0.80}
# without the reader (qa eval --no-reader, threshold 0.518): top1 0.763, top3 0.908,
# no-answer recall 0.542, precision 0.867, source accuracy 0.908
FALLBACK_FLOORS = {"top1_contains_answer": 0.70, "top3_contains_answer": 0.85, "no_answer_recall": 0.48,
                   "no_answer_precision": 0.78, "source_accuracy": 0.84}


@example(sets=[[(False, False, -10.0), (True, True, -9.999999999999998)]], share=None)  # a float apart
@settings(max_examples=150, deadline=None)
@given(st.lists(st.lists(st.tuples(st.booleans(), st.booleans(),
                                   st.one_of(st.none(), st.floats(-10, 10, allow_nan=False))),
                         min_size=1, max_size=12), min_size=1, max_size=3),
       st.one_of(st.none(), st.floats(0, 1)))
def test_calibrate_stores_a_rule_that_scores_its_objective(sets, share):
    """The threshold returned decides every set exactly as well as the objective says: ties
    far apart, or values closer than the stored rounding, cannot move it off."""
    datasets = {
        f"d{i}": [ev.Prediction("i", "q", ans, False, None, None, None, None, None, conf, 1.0, None,
                                ok, ok, ans and ok, 0, 0, None, False, confidence=conf)
                  for ans, ok, conf in rows]
        for i, rows in enumerate(sets)
    }
    out = ev.calibrate(datasets, unanswerable_share=share)
    assert statistics.mean(out["per_dataset_accuracy"][n] for n in datasets) == pytest.approx(out["objective"], abs=1e-4)
    for n, ps in datasets.items():  # and the accuracy reported is the rule's
        said = [p.confidence is not None and p.confidence >= out["threshold"] for p in ps]
        declined = sum(not p.answerable and not a for p, a in zip(ps, said))
        right = sum(p.answerable and p.best_contains and a for p, a in zip(ps, said))
        n_un = sum(not p.answerable for p in ps)
        if share is None or n_un in (0, len(ps)):
            want = (declined + right) / len(ps)
        else:
            want = share * declined / n_un + (1 - share) * right / (len(ps) - n_un)
        assert out["per_dataset_accuracy"][n] == pytest.approx(want, abs=6e-5)


# --------------------------------------------------------------------------- kinds of question

PEOPLE = [REPO / "eval" / "people-tune.jsonl", REPO / "eval" / "people-test.jsonl"]


@pytest.mark.parametrize("q,word", [
    ("Why did the Normans invade?", "why"),
    ("In what year did the war end?", "what"),
    ("Whose army won?", "who"),
    ("The capital of France is which city?", "which"),
    ("Name the river.", "other"),
])
def test_question_word(q, word):
    assert ev.question_word(q) == word


def test_people_sets_are_a_clean_split_of_articles_answers():
    halves = [ev.load_jsonl(f) for f in PEOPLE]
    tune, test = halves
    assert not {q.id for q in tune} & {q.id for q in test}
    assert not {q.question for q in tune} & {q.question for q in test}
    both = tune + test
    assert len(both) >= 150 and sum(q.kind == "unanswerable-near" for q in both) >= 35
    answerable = [q for q in both if q.answerable]
    assert sum(q.kind in ev.NON_FACTOID_KINDS for q in answerable) >= len(answerable) / 2
    assert {q.kind for q in tune} == {q.kind for q in test}  # every kind on both sides
    for q in both:
        assert q.kind in (*ev.FACTOID_KINDS, *ev.NON_FACTOID_KINDS, "unanswerable-near", "unanswerable-far")
        assert q.answerable == (not q.kind.startswith("unanswerable")), q.id
        if q.answerable:  # each answer is the article's own text
            text = (REPO / q.source).read_text(encoding="utf-8")
            assert all(a in text for a in q.answers), q.id


def test_written_training_questions_quote_their_squad_train_paragraphs():
    """eval/written-squad-train.jsonl: training data only, over SQuAD *train* paragraphs."""
    data = json.loads((SQUAD / "train-v1.1.json").read_text())["data"]
    rows = [json.loads(line) for line in (REPO / "eval" / "written-squad-train.jsonl").read_text().splitlines()]
    assert len(rows) >= 500 and len({r["id"] for r in rows}) == len(rows)
    for r in rows:
        at = r["squad_train"]
        assert data[at["article"]]["title"] == at["title"], r["id"]
        para = data[at["article"]]["paragraphs"][at["paragraph"]]["context"]
        assert (r["kind"] == "unanswerable-near") == (not r["answers"]), r["id"]
        assert all(a in para for a in r["answers"]), r["id"]
        assert r["kind"] in (*ev.FACTOID_KINDS, *ev.NON_FACTOID_KINDS, "unanswerable-near"), r["id"]
    # the verifier's part is over paragraphs the quote model's fit never reads
    paras = {part: {(r["squad_train"]["article"], r["squad_train"]["paragraph"]) for r in rows if r["part"] == part}
             for part in ("quote-model", "verifier")}
    assert all(paras.values()) and not paras["quote-model"] & paras["verifier"]
    assert {r["part"] for r in rows} == set(paras)


def test_split_is_stratified_and_fixed_by_its_seed():
    sys.path.insert(0, str(REPO / "scripts"))
    from split_questions import split

    lines = [{"id": str(i), "kind": k} for i, k in enumerate("aaaaabbbcc" * 3)]
    tune, test = split(lines, 24)
    assert split(lines, 24) == (tune, test) and split(lines, 25) != (tune, test)
    assert sorted(o["id"] for o in tune + test) == sorted(o["id"] for o in lines)
    for k in "abc":
        n_tune, n_test = (sum(o["kind"] == k for o in half) for half in (tune, test))
        assert n_test - n_tune in (0, 1)


def _pred(kind, answerable, top1, no_answer, own=None, probs=()):
    return ev.Prediction("i", "q", answerable, no_answer, None, None, None, None, None, 0.5, 1.0, None,
                         top1, top1, top1, 0, 0, (own == 1) if answerable else None, not no_answer,
                         kind=kind, paragraph_rank=own, quote_probs=list(probs))


def test_metrics_by_kind_and_groups():
    preds = [_pred("why", True, True, False, own=1), _pred("why", True, False, True, own=2),
             _pred("who", True, True, False, own=1), _pred("unanswerable-near", False, False, True),
             _pred("unanswerable-near", False, False, False)]
    rows = ev.by_kind(preds)
    assert rows["why"]["n"] == 2 and rows["why"]["top1"] == 0.5 and rows["why"]["answered"] == 0.5
    assert rows["why"]["wrong_quote"] == 0.0 and rows["why"]["para_hit@1"] == 0.5
    assert rows["unanswerable-near"]["refused"] == 0.5 and rows["unanswerable-near"]["top1"] is None
    assert rows["non-factoid"]["n"] == 2 and rows["factoid (who/number/date)"]["top1"] == 1.0
    assert "why" in ev.kind_table(rows) and "refused" in ev.kind_table(rows)
    m = ev.metrics(preds)
    assert m["para_hit@1"] == pytest.approx(2 / 3) and m["para_mrr@10"] == pytest.approx((1 + 0.5 + 1) / 3)


def test_expected_calibration_error():
    assert ev.expected_calibration_error([(0.8, True)] * 8 + [(0.8, False)] * 2) == pytest.approx(0.0)
    assert ev.expected_calibration_error([(0.9, False)] * 5 + [(0.1, True)] * 5) == pytest.approx(0.9)
    assert ev.expected_calibration_error([]) == 0.0
    bins = ev.reliability([(0.05, False), (0.95, True), (1.0, True)])
    assert bins == [(0.05, 0.0, 1), (pytest.approx(0.975), 1.0, 2)]


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.floats(0, 1), st.booleans()), min_size=1, max_size=60))
def test_ece_is_between_zero_and_one_and_counts_every_pair(pairs):
    assert 0 <= ev.expected_calibration_error(pairs) <= 1
    assert sum(c for *_, c in ev.reliability(pairs)) == len(pairs)


def test_html_report_shows_kinds_and_a_reliability_diagram():
    preds = [_pred("why", True, True, False, own=1, probs=[(0.9, True), (0.2, False)]),
             _pred("unanswerable-near", False, False, True, probs=[(0.1, False)])]
    cols = {"hybrid": {**ev.metrics(preds), "by_kind": ev.by_kind(preds)}}
    html = ev.html_report("people-test.jsonl", cols, preds, 0.4)
    assert "By kind of question" in html and "unanswerable-near" in html
    assert "Reliability of the quote probability" in html and html.count("<circle") == 3
    assert "expected calibration error" in html
    assert "What each bar would do" in html and html.count("<td>0.5</td>") == 1


def _conf(answerable, right, confidence):
    p = _pred("k", answerable, right, False)
    return dataclasses.replace(p, confidence=confidence)


def test_right_at_declined_sees_through_a_shift_in_the_probabilities():
    """Two systems that order every question the same, one with probabilities 0.15 higher: at
    the shipped bar the second answers more, and refuses less; at the same share declined they are
    the same system."""
    rows = [(True, True, 0.9), (True, True, 0.6), (True, False, 0.5), (True, True, 0.35), (True, False, 0.3),
            (False, False, 0.55), (False, False, 0.4), (False, False, 0.2), (False, False, 0.1), (False, False, 0.05)]
    low = [_conf(a, r, c) for a, r, c in rows]
    high = [_conf(a, r, c + 0.15) for a, r, c in rows]
    at = lambda preds: ev._at_bar(preds, 0.45)  # noqa: E731
    assert at(high)["right_shown"] > at(low)["right_shown"] and at(high)["declined"] < at(low)["declined"]
    # 4 of 5 unanswerable declined: the bar just above 0.4 (0.55 with the shift)
    assert ev.right_at_declined(low) == ev.right_at_declined(high) == pytest.approx(2 / 5)
    curve = ev.decision_curve(low)
    assert [r["bar"] for r in curve] == list(ev.CURVE_BARS)
    assert curve[4] == {"bar": 0.5, "right_shown": 0.4, "wrong_shown": 0.2, "declined": 0.8}
    assert ev.right_at_declined([p for p in low if p.answerable]) is None  # nothing to decline


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.booleans(), st.booleans(), st.one_of(st.none(), st.floats(0, 1))), min_size=1, max_size=40),
       st.floats(0.0, 1.0))
def test_right_at_declined_is_the_best_any_bar_declining_that_share_does(rows, share):
    preds = [_conf(a, r and a, c) for a, r, c in rows]
    value = ev.right_at_declined(preds, share)
    if not any(p.answerable for p in preds) or all(p.answerable for p in preds):
        assert value is None
        return
    confs = {p.confidence for p in preds if p.confidence is not None}
    bars = [-math.inf, math.inf] + [b for c in confs for b in (c, math.nextafter(c, math.inf))]
    una = [p for p in preds if not p.answerable]
    feasible = [ev._at_bar(preds, b) for b in bars]
    feasible = [r for r in feasible if r["declined"] * len(una) >= share * len(una) - 1e-9]
    assert value == max(r["right_shown"] for r in feasible)


def test_squad_wh_words_get_no_people_groups():
    preds = [_pred("who", True, True, False), _pred("why", True, False, False), _pred("what", True, True, False)]
    assert set(ev.by_kind(preds)) == {"who", "why", "what"}


def test_calibrate_can_count_declining_a_wrong_best_quote_as_right():
    P = lambda ans, conf, ok: ev.Prediction("i", "q", ans, False, None, None, None, None, None, conf, 1.0,
                                            None, ok, ok, ok, 0, 0, None, False, confidence=conf)
    ps = [P(True, 0.9, True), P(True, 0.6, False), P(True, 0.5, False), P(False, 0.3, False)]
    plain = ev.calibrate({"a": ps})
    assert plain["threshold"] == pytest.approx(0.6)  # the middle of (0.3, 0.9]: wrong answers do not count
    assert plain["per_dataset_accuracy"]["a"] == 0.5
    out = ev.calibrate({"a": ps}, decline_wrong=True)
    assert 0.6 < out["threshold"] <= 0.9 and out["per_dataset_accuracy"]["a"] == 1.0


# measured 2026-12-01 on eval/people-test.jsonl (108 questions, never tuned on): non-factoid top-1
# 0.450 (before the quote model and the convex fusion: 0.583), factoid 0.778 (0.722), near
# unanswerables refused 0.783 (0.391), far ones 1.000, quote ECE 0.039, strict hit@1 0.846.
PEOPLE_FLOORS = {"non-factoid": ("top1", 0.40), "factoid (who/number/date)": ("top1", 0.70),
                 "unanswerable-near": ("refused", 0.70), "unanswerable-far": ("refused", 0.85)}


@pytest.mark.slow
def test_people_test_half_by_kind(real_service):
    preds = ev.run_questions(real_service, ev.load_jsonl(PEOPLE[1]), progress=False)
    rows = ev.by_kind(preds)
    for kind, (column, floor) in PEOPLE_FLOORS.items():
        assert rows[kind][column] >= floor, (kind, rows[kind])
    assert ev.metrics(preds)["quote_ece"] <= 0.07


def test_dialogue_set_shape_for_follow_up_questions():
    """eval/dialogues-{tune,test}.jsonl (written from the articles alone, for follow-up
    questions; split once by seed 23): turns that lean on earlier ones carry the question written
    out in full; answers are article text."""
    dialogues = [json.loads(line) for half in ("tune", "test")
                 for line in (REPO / "eval" / f"dialogues-{half}.jsonl").read_text().splitlines()]
    assert len(dialogues) >= 40 and len({d["id"] for d in dialogues}) == len(dialogues)
    follow_ups = [t for d in dialogues for t in d["turns"][1:] if t["follow_up"]]
    assert len(follow_ups) >= 40 and sum(not t["answers"] for t in follow_ups) >= 10
    for d in dialogues:
        assert 2 <= len(d["turns"]) <= 4 and not d["turns"][0]["follow_up"], d["id"]
        for t in d["turns"]:
            assert bool(t["follow_up"]) == bool(t["full"]), d["id"]
            if t["answers"]:
                text = (REPO / t["source"]).read_text(encoding="utf-8")
                assert all(a in text for a in t["answers"]), d["id"]
