import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
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
    P = lambda ans, score, ok: ev.Prediction("i", "q", ans, False, None, None, None, None, None, score, 1.0,
                                             None, ok, ok, ok, 0, 0, None, False)
    a = [P(True, 0.6, True), P(True, 0.7, True), P(False, 0.3, False), P(False, 0.2, False)]
    b = [P(True, 0.5, True), P(False, 0.45, False)]
    out = ev.calibrate({"a": a, "b": b})
    assert 0.45 < out["threshold"] <= 0.5
    assert out["per_dataset_accuracy"] == {"a": 1.0, "b": 1.0}
    assert out["w_margin"] == 0.0
    # with margins to weigh, the smallest weight that separates as well is kept
    assert ev.calibrate({"a": a, "b": b}, (0.0, 0.5))["w_margin"] == 0.0


def test_calibrate_weighs_the_readers_margin_when_the_score_alone_cannot_separate():
    def P(ans, score, margin):
        return ev.Prediction("i", "q", ans, False, None, None, None, None, None, score, 1.0,
                             None, ans, ans, ans, 0, 0, None, False, margin=margin)

    # same scores; the unanswerable ones have the reader only weakly preferring a span
    a = [P(True, 1.5, 9.0), P(True, 1.6, 6.0), P(False, 1.55, 0.5), P(False, 1.5, -3.0)]
    b = [P(True, 1.4, 8.0), P(False, 1.45, 1.0)]
    plain = ev.calibrate({"a": a, "b": b})
    assert plain["objective"] < 1.0
    out = ev.calibrate({"a": a, "b": b}, ev.MARGIN_WEIGHTS)
    assert out["objective"] == 1.0 and out["w_margin"] > 0
    # the stored rule is the one scored: each prediction decided with it comes out right
    for p in a + b:
        assert (p.confidence(out["w_margin"]) >= out["threshold"]) == p.answerable


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
                        "--json", str(out), "--predictions", str(preds), "--report", str(report)],
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


# measured 2026-11-23 (qa eval, hybrid, fourth-stage reader, threshold 1.2673, margin weight 0.1):
# top1 0.839, top3 0.903, span F1 0.653, no-answer recall 0.929, precision 0.765, source accuracy
# 0.871, hit@5 1.0
FLOORS = {"top1_contains_answer": 0.78, "top3_contains_answer": 0.85, "span_f1": 0.60,
          "no_answer_recall": 0.85, "no_answer_precision": 0.70, "source_accuracy": 0.80}
# without the reader (qa eval --no-reader, threshold 0.6032): top1 0.726, top3 0.887,
# no-answer recall 0.857, precision 0.750, source accuracy 0.871
FALLBACK_FLOORS = {"top1_contains_answer": 0.66, "top3_contains_answer": 0.83, "no_answer_recall": 0.78,
                   "no_answer_precision": 0.62, "source_accuracy": 0.80}


@settings(max_examples=150, deadline=None)
@given(st.lists(st.lists(st.tuples(st.booleans(), st.booleans(), st.floats(-1, 3, allow_nan=False),
                                   st.one_of(st.none(), st.floats(-20, 20, allow_nan=False))),
                         min_size=1, max_size=12), min_size=1, max_size=3))
def test_calibrate_stores_a_rule_that_scores_its_objective(sets):
    """The threshold (and weight) returned decide every set exactly as well as the objective
    says: ties far apart, or values closer than the stored rounding, cannot move it off."""
    datasets = {
        f"d{i}": [ev.Prediction("i", "q", ans, False, None, None, None, None, None, score, 1.0, None,
                                ok, ok, ans and ok, 0, 0, None, False, margin=margin)
                  for ans, ok, score, margin in rows]
        for i, rows in enumerate(sets)
    }
    out = ev.calibrate(datasets, ev.MARGIN_WEIGHTS)
    assert statistics.mean(out["per_dataset_accuracy"][n] for n in datasets) == pytest.approx(out["objective"], abs=1e-4)
    for n, ps in datasets.items():  # and the accuracy reported is the rule's
        said = [p.confidence(out["w_margin"]) >= out["threshold"] for p in ps]
        good = sum((p.answerable and p.best_contains and a) or (not p.answerable and not a) for p, a in zip(ps, said))
        assert round(good / len(ps), 4) == out["per_dataset_accuracy"][n]
