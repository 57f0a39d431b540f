import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qa import retrieval
from qa.retrieval import Filter


def test_rrf_sums_reciprocal_ranks():
    fused = retrieval.rrf([[1, 2, 3], [3, 1]], k=60)
    assert fused[1] == pytest.approx(1 / 61 + 1 / 62)
    assert fused[3] == pytest.approx(1 / 63 + 1 / 61)
    assert fused[2] == pytest.approx(1 / 62)
    assert retrieval.rrf([[], []]) == {}


def test_rrf_gives_tied_scores_one_rank_whatever_their_order():
    a = retrieval.rrf([[1, 2, 3, 4], [5]], k=60, scores=[[0.9, 0.5, 0.5, 0.1], [1.0]])
    b = retrieval.rrf([[1, 3, 2, 4], [5]], k=60, scores=[[0.9, 0.5, 0.5, 0.1], [1.0]])
    assert a == b
    assert a[2] == a[3] == pytest.approx(1 / 62) and a[4] == pytest.approx(1 / 64)


def test_dense_search_matches_brute_force(hashing_service):
    hashing_service.sync()
    idx = hashing_service.index()
    q = hashing_service.encoder.encode_queries(["refugees forcibly repatriated by China"])[0]
    ids = idx.chunk_ids()
    vecs = np.stack([idx.dense.reconstruct(int(i)) for i in ids])
    brute = [ids[i] for i in np.argsort(-(vecs @ q), kind="stable")[:7]]
    got, scores = retrieval.dense_search(idx, q, 7, None)
    assert set(got[:5]) == set(brute[:5])
    assert scores == sorted(scores, reverse=True)


def test_hybrid_returns_attributed_passages(hashing_service):
    hashing_service.sync()
    idx = hashing_service.index()
    q = "Tumen river Jilin Province North Hamgyong"
    ps = retrieval.retrieve(idx, q, hashing_service.encoder.encode_queries([q])[0], top=5)
    assert ps and "The Christian Post" in [p.source.publisher for p in ps[:3]]
    best_bm25 = min((p for p in ps if p.bm25_rank), key=lambda p: p.bm25_rank)
    assert best_bm25.bm25_rank == 1 and "Jilin Province" in best_bm25.text
    for p in ps:
        assert idx.document_text(p.doc_id)[p.start:p.end] == p.text
        assert p.dense_rank is not None or p.bm25_rank is not None
    assert [p.score for p in ps] == sorted([p.score for p in ps], reverse=True)


def test_modes_and_unknown_words(hashing_service):
    hashing_service.sync()
    idx = hashing_service.index()
    q = "zzzqqq xxyyzz"
    vec = hashing_service.encoder.encode_queries([q])[0]
    assert retrieval.retrieve(idx, q, vec, mode="bm25") == []
    bm = retrieval.retrieve(idx, "Shenyang police station", vec, mode="bm25")
    assert bm and all(p.dense_rank is None for p in bm)


def test_filters_by_document_and_date(hashing_service):
    hashing_service.sync()
    idx = hashing_service.index()
    q = "North Korean refugees repatriated"
    vec = hashing_service.encoder.encode_queries([q])[0]
    only = frozenset(idx.doc_ids_for(["corpus/001_3f75c32a2e97a8a6.txt"]))
    ps = retrieval.retrieve(idx, q, vec, top=8, flt=Filter(doc_ids=only))
    assert ps and {p.doc_id for p in ps} == set(only)
    ps = retrieval.retrieve(idx, q, vec, top=20, flt=Filter(date_from="2018-01-01", date_to="2018-12-31"))
    assert ps and {p.source.date for p in ps} <= {"2018-01", "2018-10-01"}
    assert retrieval.retrieve(idx, q, vec, flt=Filter(doc_ids=frozenset())) == []
    # a partial bound covers its whole year or month, at either end
    dates = lambda flt: {p.source.date for p in retrieval.retrieve(idx, q, vec, top=50, flt=flt)}
    assert dates(Filter(date_from="2018", date_to="2018")) == {"2018-01", "2018-10-01"}
    assert dates(Filter(date_to="2018-10")) == {"2017-11", "2018-01", "2018-10-01"}
    assert dates(Filter(date_to="2018-09")) == {"2017-11", "2018-01"}
    assert dates(Filter(date_from="2021-09", date_to="2021-09")) == {"2021-09"}


def test_bad_dates_get_a_clear_message():
    from qa.errors import BadQuestion

    for bad in ("last year", "2024-13-45", "2023-02-29", "2024-00", "24-01-01"):
        with pytest.raises(BadQuestion, match="dates must be real dates written like 2024-08-23"):
            Filter(date_from=bad)
    assert Filter(date_from="2018", date_to="2018-12-31").active
    assert Filter(date_to="2024-02-29").active


def test_impossible_dates_are_not_metadata():
    from qa.corpus import normalise_date

    assert normalise_date("2024-13-45") == "" and normalise_date("2023-02-29") == ""
    assert normalise_date("2024-02-29") == "2024-02-29" and normalise_date("2018") == "2018"


def test_a_tie_at_the_candidate_cut_is_kept_whole():
    assert retrieval._cut([1, 2, 3, 4, 5], [0.9, 0.5, 0.5, 0.5, 0.1], 2) == ([1, 2, 3, 4], [0.9, 0.5, 0.5, 0.5])
    assert retrieval._cut([1, 2, 3], [0.9, 0.5, 0.4], 2) == ([1, 2], [0.9, 0.5])
    assert retrieval._cut([1], [0.9], 5) == ([1], [0.9])
    assert retrieval._cut([], [], 5) == ([], [])


def test_convex_fusion_normalises_each_list_and_weighs_them():
    dense = ([1, 2, 3], [0.9, 0.7, 0.5])
    bm25 = ([3, 4], [12.0, 2.0])
    fused = retrieval.convex([dense, bm25], [0.6, 0.4])
    assert fused[1] == pytest.approx(0.6)  # dense best, absent from BM25
    assert fused[2] == pytest.approx(0.6 * 0.5)
    assert fused[3] == pytest.approx(0.6 * 0.0 + 0.4 * 1.0)
    assert fused[4] == pytest.approx(0.0)
    assert retrieval.convex([([5], [0.3]), ([], [])], [0.5, 0.5]) == {5: pytest.approx(0.5)}  # one hit: full marks
    sent = ([4, 1], [0.8, 0.2])
    three = retrieval.fuse(dense, bm25, weights=(0.2, 0.3, 0.5), sentence=sent)
    assert three[4] == pytest.approx(0.5) and three[1] == pytest.approx(0.2)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.floats(-5, 5, allow_nan=False), min_size=1, max_size=12),
       st.lists(st.floats(0, 30, allow_nan=False), min_size=1, max_size=12),
       st.floats(0, 1))
def test_convex_fusion_is_bounded_and_its_ends_are_the_single_retrievers(ds, bs, alpha):
    dense = (list(range(len(ds))), sorted(ds, reverse=True))
    bm25 = (list(range(100, 100 + len(bs))), sorted(bs, reverse=True))
    fused = retrieval.fuse(dense, bm25, weights=(alpha, 1 - alpha, 0))
    assert all(-1e-9 <= v <= 1 + 1e-9 for v in fused.values())
    only_dense = retrieval.fuse(dense, bm25, weights=(1, 0, 0))
    order = sorted(dense[0], key=lambda c: -only_dense[c])
    assert [dense[1][c] for c in order] == dense[1]  # dense weight 1 keeps the dense order
    assert all(only_dense[c] == 0 for c in bm25[0])


def test_fuse_without_weights_is_rrf():
    d, b = ([1, 2], [0.9, 0.1]), ([2, 3], [5.0, 1.0])
    fused = retrieval.fuse(d, b, rrf_k=60)
    assert fused[2] == pytest.approx(1 / 62 + 1 / 61)  # second in dense, first in BM25
    assert fused[1] == pytest.approx(1 / 61) and fused[3] == pytest.approx(1 / 62)


def test_sentence_signal_is_each_passages_best_sentence(hashing_service):
    hashing_service.sync()
    idx = hashing_service.index()
    q = hashing_service.encoder.encode_queries(["Tumen river Jilin Province"])[0]
    ids = idx.chunk_ids()[:6]
    got_ids, got = retrieval.sentence_max(idx, ids, q)
    assert sorted(got_ids) == sorted(ids) and got == sorted(got, reverse=True)
    rows = idx.chunks(ids)
    for cid, score in zip(got_ids, got):
        doc, _, _, first, last = rows[cid]
        brute = max(float(v @ q) for _, _, v in idx.sentences(doc, first, last))
        assert score == pytest.approx(brute, abs=1e-5)


@pytest.mark.parametrize("question,used,expected", [
    ("Who is the chief executive of Christian Solidarity Worldwide?", {"CSW"}, ["CSW"]),
    ("Does the U.S. Commission on International Religious Freedom say so?", {"USCIRF"}, ["USCIRF"]),
    ("What does the United Nations High Commissioner for Refugees say?", {"UNHCR", "UN"}, ["UNHCR"]),
    ("Which Germans could understand Luther?", {"WG"}, []),  # no 2-letter ones, no opening word
    ("What did the People's Republic of China promise?", {"PRC"}, ["PRC"]),
    ("Is Christian Solidarity Worldwide (CSW) at the UN?", {"CSW"}, []),  # already in the question
    ("Who chairs the North Korean Freedom Coalition?", {"CSW"}, []),  # the corpus never writes NKFC
    ("who heads christian solidarity worldwide?", {"CSW"}, []),  # no capitalised name
    ("WHO HEADS CHRISTIAN SOLIDARITY WORLDWIDE?", {"CSW", "WHCSW", "HCSW"}, []),  # capitals: no names
])
def test_acronyms_are_the_initials_of_a_questions_names_that_the_corpus_uses(question, used, expected):
    found = retrieval.acronyms(question, lambda acr, name: acr in used)
    assert [a for a, _ in found] == expected
    for acr, name in found:  # the name is the question's own words
        assert name in question


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(["Christian", "Solidarity", "Worldwide", "of", "the", "for", "U.S.", "who", "is",
                                 "Commission", "Refugees", "?", "(CSW)", "A.", "Zeta"]), max_size=14))
def test_acronyms_are_initials_the_corpus_uses_and_the_question_lacks(words):
    question = " ".join(words)
    every = retrieval.acronyms(question, lambda a, n: True)
    assert retrieval.acronyms(question, lambda a, n: False) == []
    assert len({a for a, _ in every}) == len(every)
    for acr, name in every:
        assert acr.isupper() and acr.isalpha() and 3 <= len(acr) <= 7 and f"({acr})" not in question
        assert name in question[1:]  # never from the question's first word
        assert name in question and len(name.split()) >= 2


def test_a_question_is_read_with_the_acronyms_the_shipped_articles_use(hashing_service):
    hashing_service.sync()
    idx = hashing_service.index()
    q = "Who is the chief executive of Christian Solidarity Worldwide?"
    assert retrieval.read_with_acronyms(idx, q) == (q + " (CSW)", (("CSW", "Christian Solidarity Worldwide"),))
    read, _ = retrieval.read_with_acronyms(idx, "How many did the Transitional Justice Working Group count?")
    assert read.endswith("count? (TJWG)")
    # the articles never write NKFC; they write "who" and "me", never WHO or ME
    for alone in ("Who chairs the North Korean Freedom Coalition?", "What did the World Health Organization say?",
                  "What did the Ministry of Education say?"):
        assert retrieval.read_with_acronyms(idx, alone) == (alone, ())


def test_how_the_corpus_writes_a_name_is_read_once_per_generation(hashing_service, monkeypatch):
    hashing_service.sync()
    idx = hashing_service.index()
    calls = []
    search = retrieval.bm25_search
    monkeypatch.setattr(retrieval, "bm25_search", lambda *a: calls.append(a[1]) or search(*a))
    q = "Who is the chief executive of Christian Solidarity Worldwide?"
    first = retrieval.read_with_acronyms(idx, q)
    n = len(calls)
    assert n > 0 and "CSW" in calls
    assert retrieval.read_with_acronyms(idx, "What does Christian Solidarity Worldwide want?")[1] == first[1]
    assert len(calls) == n  # the same name: nothing read again
    assert idx.memo("k", lambda: 1) == 1 and idx.memo("k", lambda: 2) == 1
