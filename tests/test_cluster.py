"""`qa index --ray`: the rows step on a local Ray cluster the tests start (127.0.0.1 only),
against a single-process build of the same corpus."""

import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from qa import Verbatim
from qa.config import IndexSettings
from qa.index import Index

from .conftest import CORPUS, SQUAD

needs_ray = pytest.mark.skipif(importlib.util.find_spec("ray") is None, reason="Ray is not installed")

QUESTIONS = ["How many North Korean refugees did China forcibly repatriate in October 2023?",
             "Who chairs the North Korean Freedom Coalition?", "What did the Normans speak?"]


def _corpus(root: Path, extra: int = 40) -> Path:
    """The shipped articles and ``extra`` SQuAD paragraphs: more documents than one batch."""
    corpus = root / "corpus"
    shutil.copytree(CORPUS, corpus)
    paras = [p["context"] for a in json.loads((SQUAD / "dev-v1.1.json").read_text())["data"][:3]
             for p in a["paragraphs"]][:extra]
    for n, text in enumerate(paras):
        (corpus / f"squad-{n:03d}.txt").write_text(text + "\n")
    return corpus


def _service(root: Path, corpus: Path, name: str, passage_vectors: str = "sentences") -> Verbatim:
    return Verbatim(corpus, root / name, root=root,
                    settings=IndexSettings(model="hashing-256", passage_vectors=passage_vectors))


def _content(v: Verbatim) -> dict:
    idx = Index.load(v.index_dir)
    db = idx.db()
    out = {
        "paths": db.execute("SELECT path, doc_id, title FROM paths ORDER BY path").fetchall(),
        "documents": db.execute("SELECT doc_id, text, n_sentences, n_chunks FROM documents ORDER BY doc_id").fetchall(),
        "sentences": db.execute('SELECT doc_id, idx, start, "end", kind FROM sentences ORDER BY doc_id, idx').fetchall(),
        "chunks": db.execute('SELECT id, doc_id, start, "end", first_sentence, last_sentence FROM chunks '
                             "ORDER BY id").fetchall(),
    }
    for table, order in (("sentences", "doc_id, idx"), ("chunks", "id")):
        out[table + "_vecs"] = np.stack([np.frombuffer(r[0], dtype=np.float16).astype(np.float32)
                                         for r in db.execute(f"SELECT emb FROM {table} ORDER BY {order}")])
    return out


def _same(a: dict, b: dict) -> None:
    for k in ("paths", "documents", "sentences", "chunks"):
        assert a[k] == b[k], k
    for k in ("sentences_vecs", "chunks_vecs"):
        assert a[k].shape == b[k].shape and float(np.abs(a[k] - b[k]).max()) <= 1e-5, k


def _answers(v: Verbatim) -> list:
    out = []
    for q in QUESTIONS:
        d = v.ask(q).to_dict()
        d.pop("timings_ms")
        out.append(d)
    return out


@needs_ray
@pytest.mark.slow
@pytest.mark.parametrize("passage_vectors", ["sentences", "own"])
def test_a_ray_build_equals_a_local_build_and_updates_stay_incremental(tmp_path, passage_vectors):
    from qa.cluster import Cluster

    corpus = _corpus(tmp_path)
    local = _service(tmp_path, corpus, "local", passage_vectors)
    ray_built = _service(tmp_path, corpus, "ray", passage_vectors)
    local.sync()
    said = []
    r = ray_built.sync(cluster=Cluster(None, 2), log=said.append)
    assert r.added and r.chunks_embedded == local.index().manifest.counts["chunks"]
    assert (r.chunks_pooled == r.chunks_embedded) == (passage_vectors == "sentences") and r.chunks_embedded
    assert r.cluster_batches > 1  # results streamed back batch by batch, not the corpus at once
    assert said[-1] == f"cluster: {len(r.added)} of {len(r.added)} documents embedded"
    _same(_content(ray_built), _content(local))
    assert _answers(ray_built) == _answers(local)
    # an update on the cluster: only the new and changed files go there; deletions as today
    (corpus / "new.txt").write_text("Rescuers in Laos sheltered 14 North Korean women near the Mekong in May.\n")
    (corpus / "squad-000.txt").write_text("Edited: the Normans gave their name to Normandy in the 10th century.\n")
    (corpus / "squad-001.txt").unlink()
    r_local, r_ray = local.sync(), ray_built.sync(cluster=Cluster(None, 2))
    assert (r_ray.added, r_ray.changed, r_ray.removed) == (r_local.added, r_local.changed, r_local.removed)
    assert r_ray.chunks_embedded == r_local.chunks_embedded and r_ray.unchanged == r_local.unchanged
    _same(_content(ray_built), _content(local))


@needs_ray
@pytest.mark.slow
def test_a_worker_killed_mid_job_is_retried_and_the_build_still_equals_a_clean_one(tmp_path, monkeypatch):
    from qa.cluster import Cluster

    corpus = _corpus(tmp_path, extra=30)
    pids = tmp_path / "pids"
    pids.mkdir()
    monkeypatch.setenv("VERBATIM_TEST_RAY_PIDS", str(pids))
    monkeypatch.setenv("VERBATIM_TEST_RAY_PAUSE", "0.7")  # each batch takes a while: time to kill one
    v = _service(tmp_path, corpus, "ray")
    result: dict = {}
    t = threading.Thread(target=lambda: result.update(report=v.sync(cluster=Cluster(None, 2))))
    t.start()
    deadline = time.time() + 120
    while not list(pids.iterdir()) and time.time() < deadline:
        time.sleep(0.1)
    time.sleep(1.0)  # a batch or so in
    victim = int(sorted(pids.iterdir())[0].name)
    assert t.is_alive()  # mid-job
    os.kill(victim, signal.SIGKILL)
    t.join(300)
    assert not t.is_alive() and "report" in result
    # every document came back (the killed actor's task retried on a live or a restarted actor)
    n_docs = len(list(corpus.glob("*.txt")))
    assert len(result["report"].added) == n_docs and result["report"].cluster_batches >= 2
    clean = _service(tmp_path, corpus, "clean")
    clean.sync()
    _same(_content(v), _content(clean))


@needs_ray
def test_an_unreachable_cluster_is_one_line_before_anything_is_written(tmp_path):
    qa = str(Path(sys.executable).with_name("qa"))
    p = subprocess.run([qa, "--corpus", str(CORPUS), "--index", str(tmp_path / "idx"), "--model", "hashing-256",
                        "index", "--ray", "127.0.0.1:1"], capture_output=True, text=True, timeout=120)
    assert p.returncode == 1
    assert p.stderr.startswith("qa: cannot reach the Ray cluster at 127.0.0.1:1") and p.stderr.count("\n") == 1
    assert not (tmp_path / "idx").exists()


def test_without_ray_nothing_imports_it(tmp_path):
    code = ("import sys; from qa.cli import main; main(['--corpus', sys.argv[1], '--index', sys.argv[2], "
            "'--model', 'hashing-256', 'index']); print('ray' in sys.modules)")
    p = subprocess.run([sys.executable, "-c", code, str(CORPUS), str(tmp_path / "idx")],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0 and p.stdout.strip().endswith("False"), p.stdout + p.stderr


@needs_ray
@pytest.mark.slow
def test_the_driver_killed_mid_job_leaves_the_previous_generation_live(tmp_path):
    corpus = _corpus(tmp_path, extra=0)
    v = _service(tmp_path, corpus, "index")
    v.sync()
    before = Index.load(v.index_dir).gen_dir.name
    for n in range(24):
        (corpus / f"new-{n:02d}.txt").write_text(f"Report {n}: guards detained {n + 3} people near Dandong.\n")
    pids = tmp_path / "pids"
    pids.mkdir()
    env = {**os.environ, "VERBATIM_TEST_RAY_PIDS": str(pids), "VERBATIM_TEST_RAY_PAUSE": "2"}
    qa = str(Path(sys.executable).with_name("qa"))
    driver = subprocess.Popen([qa, "--corpus", str(corpus), "--index", str(v.index_dir), "--model", "hashing-256",
                               "index", "--ray", "--ray-workers", "1"], env=env, start_new_session=True,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 120
        while not list(pids.iterdir()) and time.time() < deadline:
            time.sleep(0.1)
        assert list(pids.iterdir()), "no worker started"
        os.kill(driver.pid, signal.SIGKILL)  # the driver only: its Ray is left to the cleanup below
        driver.wait(30)
    finally:
        try:
            os.killpg(driver.pid, signal.SIGKILL)  # the local Ray the driver started, same session
        except ProcessLookupError:
            pass
    idx = Index.load(v.index_dir)
    assert idx.gen_dir.name == before and idx.manifest.counts["documents"] == 5
    r = v.sync()  # the next sync finishes the job and removes the leftovers
    assert len(r.added) == 24 and Index.load(v.index_dir).manifest.counts["documents"] == 29
