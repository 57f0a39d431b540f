"""Reindexing never loses anything: SIGKILL at any point, locks, uploads, removal, watching."""

import gc
import json
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from qa import Verbatim
from qa import index as index_mod
from qa.config import IndexSettings
from qa.errors import IndexBusy, VerbatimError
from qa.manage import add_file, safe_filename, watch

from .conftest import SQUAD
from .test_index import _state

QA = str(Path(sys.executable).with_name("qa"))
SETTINGS = IndexSettings(model="hashing-256")


def _paragraphs(n, offset=0):
    data = json.loads((SQUAD / "dev-v1.1.json").read_text())["data"]
    paras = [p["context"] for a in data for p in a["paragraphs"]]
    return paras[offset:offset + n]


def _svc(root: Path, index="index") -> Verbatim:
    return Verbatim(root / "corpus", root / index, settings=SETTINGS, root=root)


def test_sigkill_at_any_point_keeps_a_loadable_index_and_converges(tmp_path):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for i, p in enumerate(_paragraphs(150)):
        (corpus / f"a{i:03d}.txt").write_text(p)
    _svc(tmp_path).sync()
    # a big change: 150 new documents, 20 edited, 20 deleted
    for i, p in enumerate(_paragraphs(150, 150)):
        (corpus / f"b{i:03d}.txt").write_text(p)
    for i in range(20):
        f = corpus / f"a{i:03d}.txt"
        f.write_text(f.read_text() + " Edited.")
        (corpus / f"a{i + 100:03d}.txt").unlink()
    cmd = [QA, "--corpus", str(corpus), "--index", str(tmp_path / "index"), "--model", "hashing-256", "index"]
    t = time.perf_counter()
    probe = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path)  # measure, on a copy
    full = time.perf_counter() - t
    assert probe.returncode == 0, probe.stderr
    # each round starts from the old index (a saved copy) and is killed at a point of the run
    import shutil

    old_corpus = tmp_path / "old-corpus"
    old_corpus.mkdir()
    for i, p in enumerate(_paragraphs(150)):
        (old_corpus / f"a{i:03d}.txt").write_text(p)
    seed = Verbatim(old_corpus, tmp_path / "seed-index", settings=SETTINGS, root=tmp_path)
    seed.sync()
    outcomes = []
    for frac in (0.05, 0.2, 0.4, 0.6, 0.8, 0.95):
        shutil.rmtree(tmp_path / "index", ignore_errors=True)
        shutil.copytree(tmp_path / "seed-index", tmp_path / "index")
        p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=tmp_path)
        time.sleep(full * frac)
        p.send_signal(signal.SIGKILL)
        p.wait()
        v = _svc(tmp_path)
        idx = index_mod.Index.load(v.index_dir)  # always loadable
        n_docs = idx.manifest.counts["documents"]
        outcomes.append(n_docs)
        assert n_docs in (150, 150 + 150 - 20)  # the old generation or the complete new one
        res = v.ask("What is the name of the stadium?")
        assert res.answers or res.closest
    # the next run converges to exactly what a clean build gives; the last round's readers are
    # let go first (a generation a reader holds is removed only at a later sync)
    del v, idx, res
    gc.collect()
    v = _svc(tmp_path)
    v.sync()
    assert len(list((tmp_path / "index").glob("gen-*"))) == 1
    clean = _svc(tmp_path, "clean")
    clean.sync()
    assert _state(v)[0] == _state(clean)[0]
    assert _state(v)[1] == _state(clean)[1]
    assert [r[:5] for r in _state(v)[2]] == [r[:5] for r in _state(clean)[2]]
    assert _state(v)[3] == _state(clean)[3]
    q = "How many people attended the game?"
    a, b = v.ask(q), clean.ask(q)
    assert [(x.text, x.start) for x in a.answers + a.closest] == [(x.text, x.start) for x in b.answers + b.closest]
    assert 150 in outcomes  # at least one kill landed before the switch (the early ones)


def test_lock_of_a_killed_process_is_recovered(tmp_path):
    (tmp_path / "corpus").mkdir()
    (tmp_path / "corpus" / "a.txt").write_text("A sentence about the Tumen river crossing.")
    v = _svc(tmp_path)
    v.sync()
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; from pathlib import Path; from qa.store import WriteLock\n"
        f"l = WriteLock(Path({str(v.index_dir)!r})).__enter__(); print('locked', flush=True); time.sleep(60)")],
        stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "locked"
    with pytest.raises(IndexBusy, match=f"pid {holder.pid}"):
        v.sync(wait=False)
    p = subprocess.run([QA, "--corpus", str(v.corpus_dir), "--index", str(v.index_dir), "--model",
                        "hashing-256", "index", "--no-wait"], capture_output=True, text=True)
    assert p.returncode == 1 and "being updated by pid" in p.stderr and "Traceback" not in p.stderr
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    (tmp_path / "corpus" / "b.txt").write_text("Another sentence about Dandong.")
    assert v.sync(wait=False).added == ["corpus/b.txt"]  # the dead holder's lock is gone


def test_a_sync_that_waited_keeps_the_settings_the_writer_before_it_chose(tmp_path):
    """An update that waits for the lock reads the built settings after it gets it: a rebuild
    with a setting named by the writer before it is kept, not undone by a second rebuild."""
    (tmp_path / "corpus").mkdir()
    (tmp_path / "corpus" / "a.txt").write_text("A sentence about the Tumen river. " * 3)
    _svc(tmp_path).sync()
    writer = subprocess.Popen([sys.executable, "-c", (
        "import sys; from pathlib import Path; from qa import Verbatim; from qa.config import IndexSettings\n"
        "from qa.store import WriteLock\n"
        f"root = Path({str(tmp_path)!r})\n"
        "with WriteLock(root / 'index'):\n"
        "    print('locked', flush=True); sys.stdin.readline()\n"
        "    Verbatim(root / 'corpus', root / 'index', root=root, named={'chunk_sentences'},\n"
        "             settings=IndexSettings(model='hashing-256', chunk_sentences=2)).sync()\n")],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert writer.stdout.readline().strip() == "locked"
        waiting, reports = threading.Event(), []
        later = Verbatim(tmp_path / "corpus", tmp_path / "index", root=tmp_path, named=())  # names nothing
        t = threading.Thread(target=lambda: reports.append(later.sync(log=lambda msg: waiting.set())), daemon=True)
        t.start()
        assert waiting.wait(30)  # it is waiting for the writer's lock
        writer.stdin.write("go\n")
        writer.stdin.close()
        assert writer.wait(60) == 0
        t.join(60)
    finally:
        writer.kill()
    assert reports and not reports[0].rebuilt_reason and not reports[0].changed_anything
    assert index_mod.Index.load(tmp_path / "index").manifest.settings["chunk_sentences"] == 2


@pytest.mark.parametrize("name,expected", [
    ("../../etc/passwd.txt", "passwd.txt"), ("..\\..\\evil.md", "evil.md"), (".bashrc", "bashrc.txt"),
    ("report final (v2).PDF", "report_final_v2.pdf"), ("a/b/c/../../x.html", "x.html"),
    ("ｆｕｌｌｗｉｄｔｈ.txt", "fullwidth.txt"), ("", "article.txt"),
])
def test_safe_filename(name, expected):
    assert safe_filename(name) == expected


@pytest.mark.parametrize("name", ["readme.md", "README.md", "../ReadMe.MD", "sub/readme.md"])
def test_an_upload_the_indexer_would_ignore_is_refused_not_added(tmp_path, name):
    with pytest.raises(VerbatimError, match="readme.md is taken for the folder's notes"):
        add_file(tmp_path, name, b"# Notes\nA real article about refugees.")
    assert list(tmp_path.iterdir()) == []


def test_upload_with_hostile_names_stays_in_corpus_and_never_overwrites(tmp_path):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (tmp_path / "secret.txt").write_text("do not touch")
    saved = add_file(corpus, "../secret.txt", b"Uploaded text about the Yalu river.", {"title": "Up"})
    assert saved == (corpus / "secret.txt").resolve()
    assert (tmp_path / "secret.txt").read_text() == "do not touch"
    assert json.loads((corpus / "secret.txt.meta.json").read_text()) == {"title": "Up"}
    with pytest.raises(VerbatimError, match="already exists"):
        add_file(corpus, "secret.txt", b"Different text.")
    assert (corpus / "secret.txt").read_text() == "Uploaded text about the Yalu river."
    add_file(corpus, "secret.txt", b"Replaced text.", overwrite=True)
    assert (corpus / "secret.txt").read_text() == "Replaced text."
    with pytest.raises(VerbatimError, match="not supported"):
        add_file(corpus, "tool.exe", b"MZ")
    with pytest.raises(VerbatimError, match="binary"):
        add_file(corpus, "fake.txt", b"\x00\x01\x02ELF")
    with pytest.raises(VerbatimError, match="limit"):
        add_file(corpus, "huge.txt", b"a" * 2000, max_bytes=1000)
    assert sorted(p.name for p in corpus.iterdir()) == ["secret.txt", "secret.txt.meta.json"]


def test_web_upload_handler_indexes_and_is_off_by_default(tmp_path):
    from qa.web import WebApp

    (tmp_path / "corpus").mkdir()
    (tmp_path / "corpus" / "a.txt").write_text("The first article mentions Hyesan.")
    v = _svc(tmp_path)
    v.sync()
    off = WebApp(v)
    assert "switched off" in off.add_article(None, "text", "", "", "", "", "", False)
    web = WebApp(v, allow_upload=True)
    msg = web.add_article(None, "Pasted: the Hyesan market reopened in 2021 with 300 stalls.", "../../x",
                          "Market news", "Daily NK", "2021-06-01", "", False)
    assert msg.startswith("Added **x.txt**"), msg
    assert (tmp_path / "corpus" / "x.txt").exists() and not (tmp_path / "x.txt").exists()
    res = v.ask("How many stalls did the Hyesan market reopen with?")
    assert "300 stalls" in (res.answers or res.closest)[0].text
    assert (res.answers or res.closest)[0].source.publisher == "Daily NK"
    assert "already exists" in web.add_article(None, "Other", "x.txt", "", "", "", "", False)
    assert "date must look like" in web.add_article(None, "Other", "y", "", "", "soon", "", False)


def test_remove_moves_the_file_aside_and_unindexes(tmp_path):
    (tmp_path / "corpus").mkdir()
    (tmp_path / "corpus" / "a.txt").write_text("Alpha article about Sinuiju.")
    (tmp_path / "corpus" / "a.txt.meta.json").write_text('{"title": "A"}')
    (tmp_path / "corpus" / "b.txt").write_text("Beta article about Hoeryong.")
    base = ["--corpus", str(tmp_path / "corpus"), "--index", str(tmp_path / "index"), "--model", "hashing-256"]
    assert subprocess.run([QA, *base, "index"], capture_output=True).returncode == 0
    p = subprocess.run([QA, *base, "remove", "a.txt"], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    assert "1 removed" in p.stdout
    assert not (tmp_path / "corpus" / "a.txt").exists()
    kept = list((tmp_path / "corpus" / ".removed").rglob("a.txt*"))
    assert sorted(k.name for k in kept) == ["a.txt", "a.txt.meta.json"]
    out = subprocess.run([QA, *base, "sources", "--json"], capture_output=True, text=True).stdout
    assert [d["path"] for d in json.loads(out)["documents"]] == ["corpus/b.txt"]


def test_removing_one_copy_keeps_the_other_file_with_the_same_text(tmp_path):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "a.txt").write_text("Alpha article about Sinuiju.")
    (corpus / "b_copy.txt").write_text("Alpha article about Sinuiju.")
    base = ["--corpus", str(corpus), "--index", str(tmp_path / "index"), "--model", "hashing-256"]
    assert subprocess.run([QA, *base, "index"], capture_output=True).returncode == 0
    p = subprocess.run([QA, *base, "remove", "b_copy.txt"], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    assert (corpus / "a.txt").exists() and not (corpus / "b_copy.txt").exists()
    out = subprocess.run([QA, *base, "sources", "--json"], capture_output=True, text=True).stdout
    assert [d["path"] for d in json.loads(out)["documents"]] == ["corpus/a.txt"]
    # a document id still names every file holding that text
    doc_id = json.loads(out)["documents"][0]["doc_id"]
    assert subprocess.run([QA, *base, "remove", doc_id], capture_output=True).returncode == 0
    assert not (corpus / "a.txt").exists()


def test_watch_reindexes_after_a_burst_of_changes(tmp_path):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "a.txt").write_text("First.")
    calls = []
    stop = threading.Event()
    t = threading.Thread(target=watch, args=(corpus, calls.append, 0.5, stop), daemon=True)
    t.start()
    time.sleep(0.5)
    for i in range(5):
        (corpus / f"n{i}.txt").write_text(f"New {i}.")
        time.sleep(0.05)
    (corpus / ".upload-tmp.txt").write_text("hidden: ignored")
    deadline = time.time() + 10
    while not calls and time.time() < deadline:
        time.sleep(0.1)
    time.sleep(1.0)
    stop.set()
    t.join(5)
    assert len(calls) == 1  # one update for the whole burst
    # told which files changed (the hidden upload-in-progress is not among them)
    assert {Path(p).name for p in calls[0]} == {f"n{i}.txt" for i in range(5)}


def test_an_index_kept_inside_the_corpus_is_not_read_as_articles(corpus_copy, tmp_path):
    from qa import Verbatim
    from qa.config import IndexSettings

    v = Verbatim(corpus_copy, corpus_copy / "embeddings", settings=IndexSettings(model="hashing-256"), root=tmp_path)
    first = v.sync()
    assert len(first.added) == 5
    (corpus_copy / "new.txt").write_text("A new article about the Tumen river crossing.\n")
    again = v.sync()
    assert again.skipped == [] and [a for a in again.added] and len(v.index().documents()) == 6
