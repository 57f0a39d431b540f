"""Sentence vectors pooled from their passage's encoder pass: which tokens, which pass, and
the same vectors however the documents are grouped."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings, strategies as st

from qa import chunking, corpus
from qa.config import IndexSettings
from qa.embeddings import embed_segments, pool_spans


def test_pool_spans_averages_the_states_of_the_tokens_inside_each_span():
    text = "Alpha beta. Gamma delta epsilon."
    offsets = [(0, 0), (0, 5), (6, 10), (10, 11), (12, 17), (18, 23), (24, 31), (31, 32), (0, 0)]
    special = [1, 0, 0, 0, 0, 0, 0, 0, 1]
    hidden = np.arange(len(offsets) * 2, dtype=np.float32).reshape(-1, 2)
    out = pool_spans(text, hidden, offsets, special, [(0, 11), (12, 32), (3, 9), (40, 50)])
    first = hidden[1:4].mean(0)
    assert np.allclose(out[0], first / np.linalg.norm(first))
    second = hidden[4:8].mean(0)
    assert np.allclose(out[1], second / np.linalg.norm(second))
    assert np.isnan(out[2]).all()  # no whole token inside
    assert np.isnan(out[3]).all()  # past the text


def test_a_span_cut_off_by_truncation_is_not_pooled_but_one_followed_by_blanks_is():
    text = "One two three four five six"
    offsets = [(0, 0), (0, 3), (4, 7), (8, 13), (0, 0)]  # truncated after "three"
    special = [1, 0, 0, 0, 1]
    hidden = np.ones((5, 3), dtype=np.float32)
    out = pool_spans(text, hidden, offsets, special, [(0, 7), (8, 18), (8, 13)])
    assert not np.isnan(out[0]).any() and np.isnan(out[1]).all() and not np.isnan(out[2]).any()
    out = pool_spans("One two   ", hidden[:4], [(0, 0), (0, 3), (4, 7), (0, 0)], [1, 0, 0, 1], [(4, 10)])
    assert not np.isnan(out[0]).any()


class Marking:
    """An encoder whose pooled vectors say which pass (text) and span they came from."""

    name, dim = "marking", 4

    def __init__(self, cut: int = 10_000):
        self.cut = cut  # chars of each text the "model" sees (truncation)
        self.alone: list[str] = []

    def encode_documents(self, texts, progress=False):
        self.alone += list(texts)
        return np.asarray([[len(t), 0, 0, 1] for t in texts], dtype=np.float32)

    def encode_passages(self, texts, spans):
        pvecs = np.asarray([[len(t), 1, 0, 0] for t in texts], dtype=np.float32)
        svecs = [np.asarray([[hash(t) % 997, a, b, 2] if b <= self.cut else [np.nan] * 4 for a, b in ss],
                            dtype=np.float32).reshape(-1, 4) for t, ss in zip(texts, spans)]
        return pvecs, svecs


def _docs(texts):
    out = []
    for i, t in enumerate(texts):
        d = corpus.parse_text(t, f"d{i}.txt")
        out.append(chunking.segment(d, IndexSettings()))
    return out


def _collect(encoder, segs, pooled=True, batch=1024):
    vecs = {}
    for kind, refs, rows in embed_segments(encoder, segs, pooled, batch):
        for ref, v in zip(refs, rows):
            key = ("c" if kind == "chunks" else "s", *ref)
            assert key not in vecs  # one vector for each chunk and sentence
            vecs[key] = (kind, v)
    return vecs


TEXT = ("The first sentence opens the text. A second one follows it. The third adds detail. "
        "A fourth closes the first window. The fifth starts the next. Then a sixth. A seventh ends it.")


def test_each_sentence_is_read_within_the_first_passage_that_holds_all_of_it():
    segs = _docs([TEXT])
    sents, chunks = segs[0]
    assert len(chunks) == 2 and chunks[1].first_sentence == 3  # the fourth sentence is in both
    vecs = _collect(Marking(), segs)
    assert {k for k in vecs if k[0] == "s"} == {("s", 0, j) for j in range(len(sents))}
    for j, s in enumerate(sents):
        kind, v = vecs[("s", 0, j)]
        c = next(c for c in chunks if c.first_sentence <= j <= c.last_sentence)
        assert kind == "pooled" and v[0] == hash(c.text) % 997
        assert (v[1], v[2]) == (s.start - c.start, s.end - c.start)  # the sentence's own tokens
    # a sentence cut off by truncation in its first passage is read in the next one
    cut = len(chunks[0].text) - 5
    vecs = _collect(Marking(cut), segs)
    assert vecs[("s", 0, 3)][1][0] == hash(chunks[1].text) % 997
    # without pooling every sentence is encoded alone
    enc = Marking()
    vecs = _collect(enc, segs, pooled=False)
    assert all(kind == "sentences" for (k, *_), (kind, _) in vecs.items() if k == "s")
    assert sorted(enc.alone) == sorted([c.text for c in chunks] + [s.text for s in sents])


def test_a_sentence_in_no_passage_is_encoded_alone():
    segs = _docs(["Menu | Home | About\n\n" + TEXT])
    enc = Marking(cut=len(segs[0][1][-1].text) - 3)  # the last passage is cut off too
    vecs = _collect(enc, segs)
    alone = [j for (k, i, j), (kind, _) in vecs.items() if k == "s" and kind == "sentences"]
    assert alone and all(segs[0][0][j].text in enc.alone for j in alone)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.integers(min_value=1, max_value=12), min_size=1, max_size=5),
       st.integers(min_value=1, max_value=7), st.integers(min_value=30, max_value=400))
def test_the_vectors_do_not_depend_on_how_documents_are_grouped(lengths, batch, cut):
    words = TEXT.split(". ")
    texts = [". ".join(words[(i + k) % len(words)] for k in range(n)) + "." for i, n in enumerate(lengths)]
    segs = _docs(texts)
    together = _collect(Marking(cut), segs, batch=batch)
    apart = {}
    for i, seg in enumerate(segs):
        for (k, _, j), v in _collect(Marking(cut), [seg], batch=1024).items():
            apart[(k, i, j)] = v
    assert together.keys() == apart.keys()
    for key in together:
        assert together[key][0] == apart[key][0] and np.array_equal(together[key][1], apart[key][1])
