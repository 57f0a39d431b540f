"""Passage vectors pooled from their sentences' encoder passes: what each chunk's vector is, that
sentence vectors stay their own, and the same vectors however the documents are grouped."""

from __future__ import annotations

import hashlib

import numpy as np
from hypothesis import given, settings, strategies as st

from qa import chunking, corpus
from qa.config import IndexSettings
from qa.embeddings import HashingEncoder, embed_segments


def _mark(text: str) -> np.ndarray:
    h = hashlib.blake2b(text.encode(), digest_size=8).digest()
    return np.frombuffer(h, dtype=np.uint8)[:4].astype(np.float32) + 1


class Summing:
    """An encoder whose token sums and counts are known for each text."""

    name, dim = "summing", 4

    def __init__(self):
        self.alone: list[str] = []

    def encode_documents(self, texts, progress=False):
        self.alone += list(texts)
        return np.asarray([_mark(t) / np.linalg.norm(_mark(t)) for t in texts], dtype=np.float32).reshape(-1, 4)

    def encode_sums(self, texts):
        vecs = self.encode_documents(texts)
        return vecs, np.asarray([_mark(t) * len(t.split()) for t in texts], dtype=np.float32).reshape(-1, 4), \
            np.asarray([len(t.split()) for t in texts], dtype=np.float32)


def _docs(texts):
    return [chunking.segment(corpus.parse_text(t, f"d{i}.txt"), IndexSettings()) for i, t in enumerate(texts)]


def _collect(encoder, segs, pooled=True, batch=1024):
    vecs, order = {}, []
    for kind, refs, rows in embed_segments(encoder, segs, pooled, batch):
        for ref, v in zip(refs, rows):
            key = ("s" if kind == "sentences" else "c", *ref)
            assert key not in vecs  # one vector for each chunk and sentence
            vecs[key] = (kind, v)
            order.append(key)
    chunks = [k for k in order if k[0] == "c"]
    assert chunks == sorted(chunks)  # chunks come in document order: their ids are a local build's
    return vecs


TEXT = ("The first sentence opens the text. A second one follows it. The third adds detail. "
        "A fourth closes the first window. The fifth starts the next. Then a sixth. A seventh ends it.")


def test_a_passage_vector_is_the_mean_of_its_sentences_token_states_and_sentences_keep_their_own():
    segs = _docs([TEXT, "Menu | Home | About\n\n" + TEXT])
    enc = Summing()
    vecs = _collect(enc, segs)
    assert sorted(enc.alone) == sorted(s.text for ss, _ in segs for s in ss)  # one pass per sentence, none per chunk
    for i, (sents, chunks) in enumerate(segs):
        assert len(chunks) >= 2
        for j, s in enumerate(sents):
            kind, v = vecs[("s", i, j)]
            assert kind == "sentences" and np.allclose(v, enc.encode_documents([s.text])[0])
        for k, c in enumerate(chunks):
            words = [s.text for s in sents[c.first_sentence : c.last_sentence + 1]]
            want = sum(_mark(w) * len(w.split()) for w in words) / sum(len(w.split()) for w in words)
            kind, v = vecs[("c", i, k)]
            assert kind == "pooled" and np.allclose(v, want / np.linalg.norm(want), atol=1e-6)


def test_without_pooling_each_passage_is_encoded_alone():
    segs = _docs([TEXT])
    enc = Summing()
    vecs = _collect(enc, segs, pooled=False)
    assert sorted(enc.alone) == sorted([c.text for c in segs[0][1]] + [s.text for s in segs[0][0]])
    assert all(kind == "chunks" for (k, *_), (kind, _) in vecs.items() if k == "c")


def test_a_bag_of_words_pooled_from_its_sentences_is_the_passage_own_bag():
    segs = _docs([TEXT])
    enc = HashingEncoder(64)
    vecs = _collect(enc, segs)
    for k, c in enumerate(segs[0][1]):
        assert float(vecs[("c", 0, k)][1] @ enc.encode_documents([c.text])[0]) > 0.999


@settings(max_examples=40, deadline=None)
@given(st.lists(st.integers(min_value=1, max_value=12), min_size=1, max_size=5), st.integers(min_value=1, max_value=7))
def test_the_vectors_do_not_depend_on_how_documents_are_grouped(lengths, batch):
    words = TEXT.split(". ")
    texts = [". ".join(words[(i + k) % len(words)] for k in range(n)) + "." for i, n in enumerate(lengths)]
    segs = _docs(texts)
    together = _collect(Summing(), segs, batch=batch)
    apart = {}
    for i, seg in enumerate(segs):
        for (k, _, j), v in _collect(Summing(), [seg]).items():
            apart[(k, i, j)] = v
    assert together.keys() == apart.keys()
    for key in together:
        assert together[key][0] == apart[key][0] and np.allclose(together[key][1], apart[key][1], atol=1e-6)
