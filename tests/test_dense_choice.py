"""Exact search while small, IVF above the threshold: chosen, tuned, recorded, kept in sync."""

import json

import faiss
import numpy as np
import pytest

from qa import Verbatim
from qa import dense as dense_mod
from qa import retrieval
from qa.config import IndexSettings
from qa.retrieval import Filter

from .conftest import SQUAD


def _paragraphs(n: int) -> list[str]:
    data = json.loads((SQUAD / "dev-v1.1.json").read_text())["data"]
    return [p["context"] for a in data for p in a["paragraphs"]][:n]


@pytest.fixture()
def squad_service(tmp_path, monkeypatch):
    monkeypatch.setattr(dense_mod, "EXACT_MAX", 300)
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for i, text in enumerate(_paragraphs(400)):
        (corpus / f"p{i:04d}.txt").write_text(text + "\n")
    return Verbatim(corpus, tmp_path / "index", settings=IndexSettings(model="hashing-256"),
                    root=tmp_path)


def _exact_top(idx, q, k):
    ids, vecs = dense_mod.stored_vectors(idx.db(), idx.manifest.dim)
    order = np.argsort(-(vecs @ q), kind="stable")[:k]
    return ids[order].tolist()


def test_small_index_is_exact(hashing_service):
    hashing_service.sync()
    idx = hashing_service.index()
    assert idx.dense_choice.kind == "flat"
    assert "exact" in idx.manifest.dense_index


def test_large_index_becomes_ivf_tuned_and_recorded(squad_service):
    squad_service.sync()
    idx = squad_service.index()
    choice = idx.dense_choice
    n = idx.manifest.counts["chunks"]
    assert n > 300 and choice.kind == "ivf"
    assert choice.trained_on == n and choice.nlist == dense_mod.nlist(n)
    # tuned to the target, or probing (almost) every list
    assert choice.recall_at_10 >= dense_mod.RECALL_TARGET or choice.nprobe >= choice.nlist // 2
    assert faiss.extract_index_ivf(idx.dense).nprobe == choice.nprobe
    assert f"nprobe {choice.nprobe}" in idx.manifest.dense_index
    # real questions: the approximate top 10 mostly equals the exact top 10
    qs = ["What did the Normans conquer?", "Which team won Super Bowl 50?", "Where is the Rhine?"]
    enc = squad_service.query_encoder
    hits = 0
    for q in qs:
        v = enc.encode_queries([q])[0]
        got, scores = retrieval.dense_search(idx, v, 10, None)
        hits += len(set(got) & set(_exact_top(idx, v, 10)))
        # quantised candidates, exact scores: re-ranked with the stored vectors
        assert np.allclose(scores, idx.chunk_vectors(np.array(got)) @ v, atol=1e-5)
        assert scores == sorted(scores, reverse=True)
    assert hits / 30 >= 0.8


def test_ivf_follows_edits_and_filters(squad_service, tmp_path):
    squad_service.sync()
    corpus = squad_service.corpus_dir
    (corpus / "p0001.txt").unlink()
    (corpus / "new.txt").write_text("The quokka is a small marsupial found on Rottnest Island.\n")
    r = squad_service.sync()
    assert r.added == ["corpus/new.txt"] and r.removed == ["corpus/p0001.txt"]
    idx = squad_service.index()
    assert idx.dense_choice.kind == "ivf"  # updated in place, not retrained
    ids = set(idx.chunk_ids())
    assert idx.dense.ntotal == len(ids)
    res = squad_service.ask("Where is the quokka found?")
    assert not res.no_answer and "Rottnest" in res.answers[0].text
    # a filter to one document is searched exactly over that document's passages
    doc = idx.doc_ids_for(["new.txt"])
    ps = retrieval.retrieve(idx, "marsupial", squad_service.query_encoder.encode_queries(["marsupial"])[0],
                            flt=Filter(doc_ids=frozenset(doc)))
    assert ps and {p.doc_id for p in ps} == doc


def test_shrinking_below_half_the_threshold_returns_to_exact(squad_service):
    squad_service.sync()
    for f in sorted(squad_service.corpus_dir.glob("p*.txt"))[60:]:
        f.unlink()
    squad_service.sync()
    idx = squad_service.index()
    assert idx.dense_choice.kind == "flat"
    assert idx.dense.ntotal == idx.manifest.counts["chunks"]


def test_recall_at_k():
    truth = np.array([[1, 2, 3], [4, 5, 6]])
    got = np.array([[3, 2, 9, 1], [7, 8, 9, 4]])
    assert dense_mod.recall_at_k(truth, got, 3) == pytest.approx(4 / 6)


def test_qa_sources_shows_the_index_choice(squad_service):
    import subprocess
    import sys
    from pathlib import Path

    squad_service.sync()
    qa = str(Path(sys.executable).with_name("qa"))
    out = subprocess.run([qa, "--corpus", str(squad_service.corpus_dir), "--index", str(squad_service.index_dir),
                          "--model", "hashing-256", "sources"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    choice = squad_service.index().dense_choice
    assert f"dense index: IVF{choice.nlist},SQ8 inner product, top {dense_mod.REFINE} re-ranked exactly, nprobe {choice.nprobe}" in out.stdout
    assert "recall@10 vs exact" in out.stdout and "BM25: base of" in out.stdout
