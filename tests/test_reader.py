"""The shipped extractive reader: real SQuAD text, exact offsets, graceful absence."""

import json
import random
import warnings

import pytest
from hypothesis import given, settings, strategies as st

from qa import reader as reader_mod
from qa.evaluate import f1_score

from .conftest import CORPUS, SQUAD


@pytest.fixture(scope="module")
def reader():
    r = reader_mod.load_reader()
    assert r is not None, "the reader weights ship in qa/models/reader"
    return r


def _dev_sample(n: int, seed: int = 5):
    items = [(qa["question"], p["context"], [a["text"] for a in qa["answers"]])
             for a in json.loads((SQUAD / "dev-v1.1.json").read_text())["data"]
             for p in a["paragraphs"] for qa in p["qas"]]
    return random.Random(seed).sample(items, n)


def test_reader_finds_answers_in_gold_squad_dev_paragraphs(reader):
    f1 = 0.0
    sample = _dev_sample(60)
    for q, ctx, golds in sample:
        span = reader.read(q, [("p", 0, ctx)]).best_in("p", 0, len(ctx))
        assert span is not None and 0 <= span.start < span.end <= len(ctx)
        f1 += max(f1_score(ctx[span.start:span.end], g) for g in golds)
    assert f1 / len(sample) > 0.55  # full dev figures: README; an untrained head scores ~0.05


def test_reader_prefers_the_answer_over_no_answer_only_where_there_is_one(reader):
    text = (CORPUS / "000_913f2efb5995b750.txt").read_text()
    a = text.index("In October 2023, the Transitional Justice")
    b = text.index(".", a) + 1
    r = reader.read("How many North Korean refugees did China forcibly repatriate in October 2023?",
                    [("d", a, text[a:b])])
    span = r.best_in("d", a, b)
    assert text[span.start:span.end] == "600" and span.margin > 0
    r = reader.read("Who won the FIFA World Cup in 2018?", [("d", a, text[a:b])])
    assert r.best_in("d", a, b).margin < 0


def test_long_passages_are_read_in_overlapping_windows(reader):
    text = (CORPUS / "000_913f2efb5995b750.txt").read_text()
    r = reader.read("How many North Korean refugees did China forcibly repatriate in October 2023?",
                    [("d", 0, text)])
    assert len(r.windows) > 1
    span = r.best_in("d", 0, len(text))
    assert text[span.start:span.end] == "600"


@settings(max_examples=40, deadline=None)
@given(text=st.text(min_size=1, max_size=400), q=st.text(min_size=1, max_size=60),
       offset=st.integers(0, 10_000), cut=st.tuples(st.integers(0, 400), st.integers(0, 400)))
def test_spans_stay_inside_the_asked_range_for_any_text(reader, text, q, offset, cut):
    r = reader.read(q, [("d", offset, text)])
    for w in r.windows:
        assert ((w.offs[:, 0] >= 0) & (w.offs[:, 1] <= len(text)) & (w.offs[:, 0] <= w.offs[:, 1])).all()
    a, b = sorted(cut)
    span = r.best_in("d", offset + a, offset + b)
    if span is not None:
        assert offset + a <= span.start < span.end <= offset + b


def test_missing_weights_fall_back_to_the_sentence_scorer(hashing_service, tmp_path, monkeypatch):
    monkeypatch.setattr(reader_mod, "MODEL_DIR", tmp_path / "nowhere")
    hashing_service.sync()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert hashing_service.reader is None
    assert any("reader unavailable" in str(w.message) for w in caught)
    res = hashing_service.ask("How many North Korean refugees did China forcibly repatriate in October 2023?")
    assert res.answers and res.answers[0].answer == "600"  # the typed-span heuristic
