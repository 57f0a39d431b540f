"""Incremental indexing stories, with the deterministic hashing encoder."""

import dataclasses
import gc
import json
import shutil
import sqlite3
import threading
from pathlib import Path

import pytest

from qa import Verbatim
from qa import store, sync as sync_mod
from qa.embeddings import HashingEncoder
from qa.errors import VerbatimError
from qa.config import IndexSettings
from qa.errors import IndexBusy


# the content store is shared by generations: a generation holds the documents its paths name
HELD = "doc_id IN (SELECT doc_id FROM paths)"


def _all_quotable(v: Verbatim) -> list[str]:
    idx = v.index()
    rows = idx.db().execute(
        f"SELECT s.doc_id, s.start, s.\"end\" FROM sentences s WHERE kind='body' AND {HELD}").fetchall()
    return [idx.document_text(d)[a:b] for d, a, b in rows]


def _state(v: Verbatim):
    """Everything that defines the index content, independent of ids."""
    idx = v.index()
    db = idx.db()
    docs = sorted(db.execute(f"SELECT doc_id, text FROM documents WHERE {HELD}").fetchall())
    paths = sorted(db.execute("SELECT * FROM paths").fetchall())
    sents = sorted(db.execute(f'SELECT doc_id, idx, start, "end", kind, emb FROM sentences WHERE {HELD}').fetchall())
    chunks = sorted(db.execute(f'SELECT doc_id, start, "end" FROM chunks WHERE {HELD}').fetchall())
    return docs, paths, sents, chunks


def test_build_then_unchanged_sync_embeds_nothing(hashing_service):
    r1 = hashing_service.sync()
    assert len(r1.added) == 5 and r1.chunks_embedded > 0
    calls = hashing_service.encoder.calls
    gen = hashing_service.index().gen_dir
    r2 = hashing_service.sync()
    assert not r2.changed_anything and r2.unchanged == 5
    assert hashing_service.encoder.calls == calls  # nothing re-embedded
    assert hashing_service.index().gen_dir == gen  # no new generation written


def test_every_store_agrees_after_build(hashing_service):
    hashing_service.sync()
    idx = hashing_service.index()
    chunk_ids = set(idx.chunk_ids())
    assert idx.dense.ntotal == len(chunk_ids)
    assert idx.sparse.live_ids() == chunk_ids
    for cid in chunk_ids:  # FAISS holds exactly those ids
        idx.dense.reconstruct(int(cid))


def test_edit_replaces_old_wording_everywhere(hashing_service, corpus_copy):
    hashing_service.sync()
    f = corpus_copy / "000_913f2efb5995b750.txt"
    old = "China forcibly repatriated 600 North Korean refugees"
    new = "China forcibly repatriated 650 North Korean refugees"
    f.write_text(f.read_text().replace(old, new))
    r = hashing_service.sync()
    assert r.changed == [f"corpus/{f.name}"] and not r.added and not r.removed
    quotable = _all_quotable(hashing_service)
    assert not any(old in q for q in quotable)
    assert any(new in q for q in quotable)
    res = hashing_service.ask("How many refugees were forcibly repatriated in October 2023?", top=5)
    everything = res.answers + res.closest
    assert not any("600 North Korean" in q.text for q in everything)
    # the stores agree: no stale vector or BM25 row
    idx = hashing_service.index()
    ids = set(idx.chunk_ids())
    assert idx.dense.ntotal == len(ids) and idx.sparse.live_ids() == ids


def test_delete_removes_document_from_answers(hashing_service, corpus_copy):
    hashing_service.sync()
    (corpus_copy / "000_913f2efb5995b750.txt").unlink()
    r = hashing_service.sync()
    assert r.removed == ["corpus/000_913f2efb5995b750.txt"]
    docs = {d["path"] for d in hashing_service.index().documents()}
    assert "corpus/000_913f2efb5995b750.txt" not in docs and len(docs) == 4
    res = hashing_service.ask("Transitional Justice Working Group 600 refugees", top=5)
    assert all(q.source.doc_id != "bb29223ad260c96c" for q in res.answers + res.closest)


def test_removed_text_stays_readable_for_the_previous_generation_then_leaves_the_disk(
        hashing_service, corpus_copy):
    hashing_service.sync()
    old = hashing_service.index()
    doc = old.doc_ids_for(["000_913f2efb5995b750.txt"]).pop()
    cids = [c for c, row in old.chunks(old.chunk_ids()).items() if row[0] == doc]
    (corpus_copy / "000_913f2efb5995b750.txt").unlink()
    hashing_service.sync()
    # a question in flight on the previous generation can still read the removed document
    assert old.chunks(cids).keys() == set(cids)
    assert "forcibly repatriated" in old.document_text(doc)
    new = hashing_service.index()
    assert new.gen_dir != old.gen_dir and not set(cids) & set(new.chunk_ids())
    assert doc not in {d["doc_id"] for d in new.documents()}
    # the next sync, even one with nothing to change, deletes the rows (and the text)
    r = hashing_service.sync()
    assert not r.changed_anything
    content = store.content_path(new.gen_dir.parent, new.manifest)
    conn = sqlite3.connect(content)
    for table in ("documents", "sentences", "chunks"):
        assert conn.execute(f"SELECT count(*) FROM {table} WHERE doc_id=?", (doc,)).fetchone()[0] == 0
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # the freed pages reach the main file
    conn.close()
    assert b"600 North Korean refugees" not in content.read_bytes()


def test_add_new_document(hashing_service, corpus_copy):
    hashing_service.sync()
    (corpus_copy / "new.txt").write_text(
        "Title: Snow report\n\nThe village of Zermatt received 140 centimetres of snow in one night.\n")
    calls = hashing_service.encoder.calls
    r = hashing_service.sync()
    assert r.added == ["corpus/new.txt"] and r.unchanged == 5
    # one encoder pass per sentence; the passage's vector is pooled from theirs
    assert r.chunks_pooled == r.chunks_embedded == 1
    assert hashing_service.encoder.calls - calls == r.sentences_embedded <= 3
    res = hashing_service.ask("How much snow did Zermatt receive in one night?")
    top = (res.answers or res.closest)[0]
    assert "140 centimetres" in top.text and top.source.title == "Snow report"


def test_rename_is_not_reembedded_and_duplicates_are_indexed_once(hashing_service, corpus_copy):
    hashing_service.sync()
    calls = hashing_service.encoder.calls
    src = corpus_copy / "003_ba6c32f1455b1fa4.txt"
    src.rename(corpus_copy / "renamed.txt")
    r = hashing_service.sync()
    assert r.renamed == [("corpus/003_ba6c32f1455b1fa4.txt", "corpus/renamed.txt")]
    assert hashing_service.encoder.calls == calls
    shutil.copy(corpus_copy / "renamed.txt", corpus_copy / "copy.txt")
    hashing_service.sync()
    assert hashing_service.encoder.calls == calls
    docs = hashing_service.index().documents()
    assert len(docs) == 5
    dup = [d for d in docs if "corpus/copy.txt" in d["paths"]][0]
    assert dup["paths"] == ["corpus/copy.txt", "corpus/renamed.txt"]


def test_metadata_change_updates_without_reembedding(hashing_service, corpus_copy):
    hashing_service.sync()
    calls = hashing_service.encoder.calls
    side = corpus_copy / "004_16947189698fbbee.txt.meta.json"
    meta = json.loads(side.read_text())
    meta["title"] = "A corrected title"
    side.write_text(json.dumps(meta))
    r = hashing_service.sync()
    assert r.metadata_updated == ["corpus/004_16947189698fbbee.txt"]
    assert hashing_service.encoder.calls == calls
    assert hashing_service.index().sources(["5338c55b59e9d86d"])["5338c55b59e9d86d"].title == "A corrected title"


def test_settings_change_forces_rebuild(hashing_service, corpus_copy, tmp_path):
    hashing_service.sync()
    v2 = Verbatim(corpus_copy, hashing_service.index_dir, root=tmp_path,
                  settings=IndexSettings(model="hashing-256", chunk_sentences=3))
    msgs = []
    r = v2.sync(log=msgs.append)
    assert r.rebuilt_reason == "the index settings changed (chunk_sentences)"
    assert any("rebuilding" in m for m in msgs)
    assert v2.index().manifest.settings["chunk_sentences"] == 3
    v3 = Verbatim(corpus_copy, hashing_service.index_dir, root=tmp_path,
                  settings=IndexSettings(model="hashing-128", chunk_sentences=3))
    assert "embedding model changed" in v3.sync().rebuilt_reason
    assert v3.index().dense.d == 128


def test_crash_mid_write_leaves_previous_index_loadable(hashing_service, corpus_copy, monkeypatch):
    hashing_service.sync()
    before = _state(hashing_service)
    (corpus_copy / "000_913f2efb5995b750.txt").unlink()
    (corpus_copy / "extra.txt").write_text("A brand new sentence about the Yalu river.")

    def boom(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(sync_mod.sparse, "write_full", boom)
    with pytest.raises(KeyboardInterrupt):
        hashing_service.sync()
    monkeypatch.undo()
    fresh = Verbatim(corpus_copy, hashing_service.index_dir, root=hashing_service.root,
                     settings=hashing_service.settings)
    assert _state(fresh) == before  # the old generation is still live and intact
    gens = lambda: {g.name for g in hashing_service.index_dir.glob("gen-*")}
    old = store.current_generation(hashing_service.index_dir).name
    assert len(gens()) == 2  # the half-written one
    fresh.sync()  # converges, and cleans up the leftover
    new = store.current_generation(hashing_service.index_dir).name
    assert gens() == {old, new}  # the previous one stays while readers hold it
    fresh.index(), hashing_service.index()  # both readers move on to the new generation
    gc.collect()
    fresh.sync()
    assert gens() == {new}
    # ...to exactly what a clean build gives
    clean = Verbatim(corpus_copy, hashing_service.index_dir.parent / "clean", root=hashing_service.root,
                     settings=hashing_service.settings)
    clean.sync()
    assert _state(fresh) == _state(clean)


def test_concurrent_writer_gets_a_clear_message(hashing_service):
    """Another thread's lock is another writer's (the lock is re-entrant only in its own thread)."""
    hashing_service.sync()
    locked, done = threading.Event(), threading.Event()

    def writer():
        with store.WriteLock(hashing_service.index_dir):
            locked.set()
            done.wait(30)

    t = threading.Thread(target=writer, daemon=True)
    t.start()
    try:
        assert locked.wait(30)
        with pytest.raises(IndexBusy, match="being updated by pid"):
            hashing_service.sync(wait=False)
    finally:
        done.set()
        t.join()
    with store.WriteLock(hashing_service.index_dir, wait=False), store.WriteLock(hashing_service.index_dir, wait=False):
        assert hashing_service.sync(wait=False).changed_anything is False  # its own thread's: no wait


def test_bad_files_are_skipped_and_index_intact(hashing_service, corpus_copy):
    hashing_service.sync()
    before = _state(hashing_service)
    (corpus_copy / "binary.txt").write_bytes(b"\x7fELF\x00\x00\x01\x02" * 100)
    (corpus_copy / "empty.txt").write_text("")
    (corpus_copy / "latin1.txt").write_bytes("Caf\xe9 society in Pyongyang is small.".encode("latin-1"))
    (corpus_copy / "image.png").write_bytes(b"\x89PNG\r\n")
    r = hashing_service.sync()
    assert any("binary" in s for s in r.skipped)
    assert any("empty document" in s for s in r.skipped)
    assert any("unsupported file type" in s for s in r.skipped)
    assert any("not valid UTF-8" in w for w in r.warnings)
    assert r.added == ["corpus/latin1.txt"]
    docs, paths, sents, chunks = _state(hashing_service)
    assert [p for p in paths if p[0] != "corpus/latin1.txt"] == before[1]


def test_same_sentence_in_two_documents_is_one_quote_with_both_sources(hashing_service, corpus_copy):
    shared = ("Christian Solidarity Worldwide is calling on the Chinese government to refrain from "
              "repatriating the defectors who were allegedly arrested in Shenyang on Nov. 4.")
    (corpus_copy / "wire.txt").write_text(
        "Title: Wire copy\n\nA different opening sentence about the weather in Seoul.\n" + shared + "\n")
    hashing_service.sync()
    res = hashing_service.ask("Who is calling on China to refrain from repatriating the defectors arrested in Shenyang?")
    quotes = res.answers or res.closest
    hit = [q for q in quotes if q.text == shared]
    assert len(hit) == 1
    q = hit[0]
    others = {s.path for s, _ in q.also_in}
    assert {q.source.path} | others == {"corpus/004_16947189698fbbee.txt", "corpus/wire.txt"}
    for src, sp in q.also_in:
        s, e = sp.start, sp.end
        assert (hashing_service.root / src.path).read_text()[s:e] == shared


def test_unchanged_files_are_not_reread_but_same_size_edits_are_caught(hashing_service, corpus_copy, monkeypatch):
    import os

    from qa import corpus as corpus_mod

    past = 1_700_000_000
    for f in corpus_copy.iterdir():
        os.utime(f, (past, past))
    hashing_service.sync()
    reads = []
    orig = corpus_mod.load_file
    monkeypatch.setattr(corpus_mod, "load_file", lambda p, r: (reads.append(p.name), orig(p, r))[1])
    assert not hashing_service.sync().changed_anything
    assert reads == []  # size and mtime unchanged: nothing read
    f = corpus_copy / "000_913f2efb5995b750.txt"
    f.write_text(f.read_text().replace("600 North", "650 North"))  # same size
    os.utime(f, (past + 10, past + 10))
    r = hashing_service.sync()
    assert reads == [f.name] and r.changed == [f"corpus/{f.name}"]
    assert hashing_service.sync(rehash=True).unchanged == 5  # --rehash reads everything again
    assert len(reads) == 6


def _bm25_exact(v: Verbatim, question: str, k: int = 10):
    """BM25 as a from-scratch rebuild of the current passages would rank them."""
    from qa import sparse

    idx = v.index()
    rows = idx.db().execute('SELECT c.id, substr(d.text, c.start + 1, c."end" - c.start) FROM chunks c '
                            f"JOIN documents d ON d.doc_id = c.doc_id WHERE c.{HELD} ORDER BY c.id").fetchall()
    tmp = idx.gen_dir.parent / "bm25-check"
    tmp.mkdir()
    try:
        sparse.write_full(tmp, rows)
        ids, _ = sparse.Sparse.load(tmp).search(sparse.tokenize([question])[0], k, None)
    finally:
        shutil.rmtree(tmp)
    return ids


def test_bm25_delta_tracks_adds_and_deletes_like_a_rebuild(hashing_service, corpus_copy, monkeypatch):
    from qa import retrieval, sparse

    monkeypatch.setattr(sparse, "MIN_BASE", 0)
    monkeypatch.setattr(sparse, "REBUILD_SHARE", 10.0)
    hashing_service.sync()
    base = hashing_service.index().manifest.bm25
    assert base["delta"] == 0 and base["deleted"] == 0
    base_file = hashing_service.index().gen_dir / "bm25_ids.npy"
    inode = base_file.stat().st_ino
    (corpus_copy / "000_913f2efb5995b750.txt").unlink()
    (corpus_copy / "quokka.txt").write_text(
        "The quokka lives on Rottnest Island. Tumen River crossings were watched by quokkas.\n")
    hashing_service.sync()
    idx = hashing_service.index()
    info = idx.manifest.bm25
    assert info["base"] == base["base"] and info["delta"] >= 1 and info["deleted"] >= 1
    ids = set(idx.chunk_ids())
    assert idx.sparse.live_ids() == ids
    # the base files are hard links to the previous generation's (the same inode), not copies
    assert idx.gen_dir != base_file.parent
    assert (idx.gen_dir / "bm25_ids.npy").stat().st_ino == inode
    for q in ("quokka Rottnest", "Tumen River crossings", "forcibly repatriated 600 refugees October"):
        got, _ = retrieval.bm25_search(idx, q, 10, None)
        assert got[:3] == _bm25_exact(hashing_service, q)[:3], q
    got, _ = retrieval.bm25_search(idx, "quokka", 10, None)
    assert got and idx.chunks(got[:1])[got[0]][0] in idx.doc_ids_for(["quokka.txt"])
    # a filter applies to both segments
    only = idx.doc_ids_for(["quokka.txt"])
    allowed = retrieval.allowed_chunk_ids(idx, retrieval.Filter(doc_ids=frozenset(only)))
    got, _ = retrieval.bm25_search(idx, "Tumen River", 10, allowed)
    assert got and set(got) <= set(allowed.tolist())


def test_bm25_base_is_rebuilt_once_the_delta_is_large(hashing_service, corpus_copy, monkeypatch):
    from qa import sparse

    monkeypatch.setattr(sparse, "MIN_BASE", 0)
    hashing_service.sync()
    (corpus_copy / "big.txt").write_text(" ".join(f"Sentence number {i} is here." for i in range(300)))
    hashing_service.sync()  # more than 10% new passages: a new base
    info = hashing_service.index().manifest.bm25
    assert info["delta"] == 0 and info["base"] == hashing_service.index().manifest.counts["chunks"]


def test_syncing_only_the_touched_files_converges_with_a_full_scan(hashing_service, corpus_copy, tmp_path):
    """What uploads, `qa remove`, `qa index FILE` and the watcher do: tell sync which files
    changed. After every step a full scan finds nothing left to do, and the result equals
    a clean build of the same folder."""
    import random

    hashing_service.sync()
    rng = random.Random(5)
    names = sorted(p.name for p in corpus_copy.glob("*.txt"))
    texts = [(corpus_copy / n).read_text() for n in names]
    ops = ["add", "edit", "delete", "rename", "sidecar", "hidden", "unsupported"] * 2
    rng.shuffle(ops)
    for step, op in enumerate(ops):
        files = sorted(p for p in corpus_copy.glob("*.txt"))
        f = rng.choice(files)
        if op == "add":
            touched = [corpus_copy / f"new{step}.txt"]
            touched[0].write_text(rng.choice(texts)[:1500] + f"\nStep {step} added this line about quokkas.\n")
        elif op == "edit":
            touched = [f]
            f.write_text(f.read_text().replace("the", "a", 3) + f"\nEdited at step {step}.\n")
        elif op == "delete" and len(files) > 2:
            touched = [f]
            f.unlink()
        elif op == "rename":
            touched = [f, corpus_copy / f"renamed{step}.txt"]
            f.rename(touched[1])
        elif op == "sidecar":
            touched = [Path(f"{f}.meta.json")]
            touched[0].write_text(json.dumps({"title": f"Retitled at step {step}"}))
        elif op == "hidden":
            touched = [corpus_copy / f".draft{step}.txt"]
            touched[0].write_text("A hidden draft is never indexed.\n")
        else:
            touched = [corpus_copy / f"notes{step}.xyz"]
            touched[0].write_text("Not a supported type.\n")
        hashing_service.sync(only=touched)
        full = hashing_service.sync(rehash=True)
        assert not (full.added or full.removed or full.changed or full.renamed or full.metadata_updated), (
            op, full.summary())
    clean = Verbatim(corpus_copy, tmp_path / "clean-index", settings=hashing_service.settings,
                     root=corpus_copy.parent)
    clean.sync()
    drop_stamp = lambda state: (state[0], [row[:-1] for row in state[1]], *state[2:])  # noqa: E731
    assert drop_stamp(_state(hashing_service)) == drop_stamp(_state(clean))


def test_a_folder_hint_falls_back_to_a_full_scan(hashing_service, corpus_copy):
    hashing_service.sync()
    sub = corpus_copy / "more"
    sub.mkdir()
    (sub / "x.txt").write_text("A quokka report in a new folder.\n")
    (corpus_copy / "000_913f2efb5995b750.txt").unlink()  # not hinted, but the full scan sees it
    r = hashing_service.sync(only=[sub])
    assert r.added == ["corpus/more/x.txt"] and r.removed == ["corpus/000_913f2efb5995b750.txt"]


def test_a_generation_a_reader_holds_is_kept_until_it_lets_go(hashing_service, corpus_copy):
    hashing_service.sync()
    held = hashing_service.index()  # a question in progress on this generation
    (corpus_copy / "extra.txt").write_text("A brand new sentence about the Yalu river.")
    hashing_service.sync()
    assert held.gen_dir.exists() and held.sources([d["doc_id"] for d in held.documents()])  # still readable
    hashing_service.sync()  # a further sync while the reader holds it: still kept
    assert held.gen_dir.exists()
    gen_dir = held.gen_dir
    del held
    hashing_service.index()  # the service moves on to the new generation
    gc.collect()
    (corpus_copy / "extra2.txt").write_text("Another sentence about Dandong.")
    hashing_service.sync()
    assert not gen_dir.exists()


def test_the_manifest_is_typed_and_one_check_decides_what_an_index_can_serve(hashing_service):
    from qa.errors import IndexMissing
    from qa.index import Index

    hashing_service.sync()
    m = hashing_service.index().manifest
    assert isinstance(m, store.Manifest) and m.model == "hashing-256" and m.dim == 256
    assert m.differs("hashing-256", 256, m.settings) == "" and m.differs("hashing-256") == ""
    assert m.differs("all-MiniLM-L6-v2") == "the embedding model changed from hashing-256 to all-MiniLM-L6-v2"
    assert m.differs("hashing-256", 256, {**m.settings, "chunk_sentences": 3}) == "the index settings changed (chunk_sentences)"
    # an index from before passage vectors could be pooled was built as "own" is: kept as it is
    old = dataclasses.replace(m, settings={k: v for k, v in m.settings.items() if k != "passage_vectors"})
    assert m.settings["passage_vectors"] == "sentences" and old.differs("hashing-256", 256, m.settings) == \
        "the index settings changed (passage_vectors)"
    assert old.differs("hashing-256", 256, {**m.settings, "passage_vectors": "own"}) == ""
    # a field this version does not know (an index from a later or an abandoned version): rebuilt
    odd = dataclasses.replace(m, settings={**m.settings, "sentence_vectors": "passage"})
    assert odd.differs("hashing-256", 256, m.settings) == "the index settings changed (sentence_vectors)"
    # a damaged manifest: a one-line error for readers, and the next sync rebuilds
    gen = store.current_generation(hashing_service.index_dir)
    (gen / "manifest.json").write_text("{")
    with pytest.raises(IndexMissing, match=r"cannot be used: its manifest cannot be read .*run `qa index`"):
        Index.load(hashing_service.index_dir)
    assert not store.index_is_current(hashing_service.index_dir)
    r = hashing_service.sync()
    assert r.rebuilt_reason.startswith("the index cannot be updated (its manifest cannot be read")
    assert Index.load(hashing_service.index_dir).manifest.counts["documents"] == 5


def test_passage_vectors_are_chosen_once_and_kept(corpus_copy, tmp_path, capsys, monkeypatch):
    """A new index pools each passage's vector from its sentences' passes; `qa index
    --passage-vectors own` encodes passages alone too, recorded in the manifest; a plain
    `qa index` keeps what the index has; naming the other rebuilds."""
    from qa.cli import main

    index = tmp_path / "own"
    args = ["--corpus", str(corpus_copy), "--index", str(index), "--model", "hashing-256", "index", "--json"]
    assert main(args) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["chunks_pooled"] == r["chunks_embedded"] > 0
    assert main(args + ["--passage-vectors", "own"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["rebuilt_reason"] == "the index settings changed (passage_vectors)" and r["chunks_pooled"] == 0
    assert store.live_manifest(index).settings["passage_vectors"] == "own"
    (corpus_copy / "new.txt").write_text("Title: Snow report\n\nZermatt received 140 centimetres of snow in one night. "
                                         "The roads were closed for two days.\n")
    assert main(["--corpus", str(corpus_copy), "--index", str(index), "index", "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["added"] == ["corpus/new.txt"] and not r["rebuilt_reason"] and r["chunks_pooled"] == 0
    assert store.live_manifest(index).settings["passage_vectors"] == "own"
    top = Verbatim(corpus_copy, index, root=tmp_path).ask("How much snow did Zermatt receive in one night?").answers[0]
    assert "140 centimetres" in top.text
    # naming the index's own model (--model, VERBATIM_MODEL) changes nothing else
    assert main(args) == 0
    r = json.loads(capsys.readouterr().out)
    assert not r["rebuilt_reason"] and store.live_manifest(index).settings["passage_vectors"] == "own"
    monkeypatch.setenv("VERBATIM_MODEL", "hashing-256")
    assert main(["--corpus", str(corpus_copy), "--index", str(index), "index", "--json", "--rehash"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert not r["rebuilt_reason"] and store.live_manifest(index).settings["passage_vectors"] == "own"


class _NotMeanPooled(HashingEncoder):
    mean_pooled = False  # e.g. a CLS-pooled model: its token sums would not give its vectors


def test_a_model_that_is_not_mean_pooled_encodes_passages_alone(corpus_copy, tmp_path):
    v = Verbatim(corpus_copy, tmp_path / "index", root=tmp_path, named=())
    v.settings = IndexSettings(model="hashing-256")
    v._query_encoder = _NotMeanPooled(256)
    r = v.sync()
    assert r.chunks_embedded and r.chunks_pooled == 0
    assert store.live_manifest(v.index_dir).settings["passage_vectors"] == "own"
    asked = Verbatim(corpus_copy, tmp_path / "other", root=tmp_path,
                     settings=IndexSettings(model="hashing-256", passage_vectors="sentences"), named=["passage_vectors"])
    asked._query_encoder = _NotMeanPooled(256)
    with pytest.raises(VerbatimError, match="cannot pool passage vectors .* use --passage-vectors own"):
        asked.sync()


def test_only_a_transformer_mean_pooled_and_normalised_is_poolable():
    from qa.embeddings import _is_mean_pooled

    def mod(kind, **attrs):  # a module of that class name, with those attributes
        m = type(kind, (), {})()
        vars(m).update(attrs)
        return m

    mean = mod("Pooling", pooling_mode="mean")
    assert _is_mean_pooled([mod("Transformer", do_lower_case=False), mean, mod("Normalize")])
    assert _is_mean_pooled([mod("Transformer"), mod("Pooling", pooling_mode_mean_tokens=True, pooling_mode_cls_token=False)])
    assert not _is_mean_pooled([mod("Transformer"), mod("Pooling", pooling_mode="cls"), mod("Normalize")])
    assert not _is_mean_pooled([mod("Transformer"), mean, mod("Dense")])
    assert not _is_mean_pooled([mod("Transformer", do_lower_case=True), mean])
    assert not _is_mean_pooled([mod("Transformer"), mod("Pooling", pooling_mode_mean_tokens=True, pooling_mode_max_tokens=True)])
