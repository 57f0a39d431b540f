"""How Verbatim's costs grow with the corpus: 1k, 10k, 100k and 1M passages.

    .venv/bin/python bench/bench_scale.py                       # 1k,10k,100k,1m
    .venv/bin/python bench/bench_scale.py --sizes 1k --model all-MiniLM-L6-v2

For each size it builds a corpus of real text (SQuAD v1.1 train + dev paragraphs,
one file each, with a sidecar; above the 20,963 paragraphs SQuAD has, paragraphs
are replicated with a marker line so each copy is a distinct document) and runs
the normal pipeline on it, measuring:

- build: seconds and passages/s of `qa index`, against the raw encoder on the
  same texts (every passage and sentence the build embedded); ratio = raw / build;
- retrieval latency (hybrid: dense + BM25 + fusion, question vector given) and
  full `ask` latency, p50/p95 over SQuAD dev questions, after a warm-up;
- recall@10 of the dense index against exact search on those questions;
- peak memory (max RSS) of the build process and of a process that loads the
  index and answers the questions;
- index size on disk; cold start (`qa ask` as a new process, to its answer);
- adding one document to the built index (median of repeats).

The 1M row is made by replicating the 100k index's rows 10-fold inside SQLite
(vectors with a little noise so that copies are distinct points), then building
its FAISS and BM25 structures the way `qa index` does: it measures memory and
latency, not build time. Each size runs in its own processes, so peak memory is
per size. Results: JSON and a Markdown table under --out.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from bench.common import SQUAD, pct  # noqa: E402

SIZES = {"1k": 1_000, "10k": 10_000, "100k": 100_000, "1m": 1_000_000}


def _paragraphs() -> list[tuple[str, str]]:
    out = []
    for split in ("train-v1.1.json", "dev-v1.1.json"):
        for art in json.loads((SQUAD / split).read_text())["data"]:
            for p in art["paragraphs"]:
                out.append((art["title"].replace("_", " "), p["context"]))
    return out


def _questions(n: int) -> list[str]:
    data = json.loads((SQUAD / "dev-v1.1.json").read_text())["data"]
    qs = [qa["question"] for a in data for p in a["paragraphs"] for qa in p["qas"]]
    return qs[:: max(1, len(qs) // n)][:n]


def _passages_of(text: str) -> int:
    from qa import chunking, corpus
    from qa.config import IndexSettings

    doc = corpus.parse_text(text + "\n", "x.txt")
    return len(chunking.segment(doc, IndexSettings())[1])


def make_corpus(folder: Path, target: int) -> tuple[int, int]:
    """Write paragraphs until about ``target`` passages; return (files, passages)."""
    folder.mkdir(parents=True)
    paras = _paragraphs()
    files = passages = 0
    copy = 0
    while passages < target:
        for title, text in paras:
            if passages >= target:
                break
            body = text if copy == 0 else f"{text}\n\n(Replica {copy}.)"
            name = f"p{files:07d}.txt"
            (folder / name).write_text(body + "\n")
            (folder / f"{name}.meta.json").write_text(
                json.dumps({"title": title, "publisher": "Wikipedia (SQuAD)"}))
            files += 1
            passages += _passages_of(body)
        copy += 1
    return files, passages


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _du_mb(path: Path) -> float:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) / 1e6


# --------------------------------------------------------------------------- child steps


def step_build(work: Path, model: str) -> dict:
    from qa import Verbatim
    from qa.config import IndexSettings

    v = Verbatim(work / "corpus", work / "index", settings=IndexSettings(model=model), root=work)
    v.encoder
    t = time.perf_counter()
    r = v.sync()
    build = time.perf_counter() - t
    idx = v.index()
    # the raw encoder on exactly the texts the build embedded
    rows = idx.db().execute(
        'SELECT substr(d.text, s.start + 1, s."end" - s.start) FROM sentences s '
        "JOIN documents d ON d.doc_id = s.doc_id").fetchall()
    rows += idx.db().execute(
        'SELECT substr(d.text, c.start + 1, c."end" - c.start) FROM chunks c '
        "JOIN documents d ON d.doc_id = c.doc_id").fetchall()
    texts = [r_[0] for r_ in rows]
    t = time.perf_counter()
    for i in range(0, len(texts), 1024):
        v.encoder.encode_documents(texts[i : i + 1024])
    raw = time.perf_counter() - t
    return {
        "passages": r.chunks_embedded, "sentences": r.sentences_embedded,
        "build_s": round(build, 2), "passages_per_s": round(r.chunks_embedded / build, 1),
        "raw_encoder_s": round(raw, 2), "throughput_ratio": round(raw / build, 3),
        "build_peak_mb": round(_rss_mb()), "dense_index": idx.manifest.dense_index,
        "disk_mb": round(_du_mb(work / "index"), 1),
    }


def step_query(work: Path, model: str, n_questions: int) -> dict:
    import faiss
    import numpy as np

    from qa import Verbatim, retrieval
    from qa.config import IndexSettings

    v = Verbatim(work / "corpus", work / "index", settings=IndexSettings(model=model), root=work)
    idx = v.index()
    enc = v.query_encoder
    qs = _questions(n_questions)
    qvecs = enc.encode_queries(qs)
    for q, qv in zip(qs[:5], qvecs[:5]):  # warm-up
        retrieval.retrieve(idx, q, qv)
        v.ask(q)
    # two loops: right after an ask, the reader's ONNX Runtime threads are still
    # spinning for a few ms and would be counted against retrieval
    ret, ask = [], []
    for q, qv in zip(qs, qvecs):
        t = time.perf_counter()
        retrieval.retrieve(idx, q, qv)
        ret.append((time.perf_counter() - t) * 1e3)
    for q in qs:
        t = time.perf_counter()
        v.ask(q)
        ask.append((time.perf_counter() - t) * 1e3)
    peak = _rss_mb()  # before the exact-search check below loads every vector
    # recall@10 of the dense index against exact search over the same vectors
    recall = 1.0
    if idx.dense_choice.kind != "flat":
        from qa.dense import stored_vectors, recall_at_k

        ids, vecs = stored_vectors(idx.db(), idx.manifest.dim)
        exact = faiss.IndexFlatIP(vecs.shape[1])
        exact.add(vecs)
        _, rows = exact.search(qvecs, 10)
        got = np.full((len(qvecs), 10), -1, dtype=np.int64)
        for i, qv in enumerate(qvecs):  # as retrieval searches (re-ranking included)
            top = retrieval.dense_search(idx, qv, 10, None)[0]
            got[i, : len(top)] = top
        recall = recall_at_k(ids[rows], got, 10)
        del vecs, exact
    return {
        "retrieval_p50_ms": round(pct(ret, 50), 2), "retrieval_p95_ms": round(pct(ret, 95), 2),
        "ask_p50_ms": round(pct(ask, 50), 2), "ask_p95_ms": round(pct(ask, 95), 2),
        "questions": len(qs), "recall_at_10": round(recall, 4),
        "serve_peak_mb": round(peak),
        "dense_index": idx.manifest.dense_index,
    }


def step_add(work: Path, model: str, repeats: int) -> dict:
    """Adding one document: told which file (upload, watcher, `qa index FILE`), and found
    by a scan of the whole corpus (`qa index`)."""
    from qa import Verbatim
    from qa.config import IndexSettings

    v = Verbatim(work / "corpus", work / "index", settings=IndexSettings(model=model), root=work)
    v.encoder
    time.sleep(2.1)  # past the 2 s window in which fresh files' stamps are not trusted
    v.sync()
    dev = json.loads((SQUAD / "dev-v2.0.json").read_text())["data"]
    extra = [p["context"] for a in dev[-3:] for p in a["paragraphs"]][: 2 * repeats]
    told, scanned = [], []
    for i, text in enumerate(extra):
        f = work / "corpus" / f"added{i}.txt"
        f.write_text(text + "\n")
        t = time.perf_counter()
        r = v.sync(only=[f]) if i < repeats else v.sync()
        (told if i < repeats else scanned).append(time.perf_counter() - t)
        assert r.added == [f"corpus/added{i}.txt"], r.summary()
    return {"add_one_s": round(statistics.median(told), 2), "add_one_min_s": round(min(told), 2),
            "add_one_max_s": round(max(told), 2),
            "add_one_scan_s": round(statistics.median(scanned), 2),
            "add_one_scan_min_s": round(min(scanned), 2), "add_one_scan_max_s": round(max(scanned), 2)}


def step_replicate(src: Path, dst: Path, factor: int, model: str) -> dict:
    """The 1M row: src's rows copied ``factor`` times, then dense + BM25 rebuilt."""
    import numpy as np

    from qa import dense as dense_mod, store, sparse as sparse_mod

    src_gen = store.current_generation(src / "index")
    (dst / "index").mkdir(parents=True)
    (dst / "corpus").mkdir()
    gen = dst / "index" / "gen-000001"
    gen.mkdir()
    manifest = store.Manifest.read(src_gen).to_dict()
    src_content = src / "index" / manifest["content"]
    shutil.copy(src_gen / "store.sqlite", gen / "store.sqlite")
    with sqlite3.connect(src_content) as a, sqlite3.connect(dst / "index" / manifest["content"]) as b:
        a.backup(b)  # includes what is still in the source's write-ahead log
    dim = int(manifest["dim"])
    t = time.perf_counter()
    conn = store.connect(gen, dst / "index" / manifest["content"], readonly=False)
    rng = np.random.default_rng(7)
    base = conn.execute("SELECT doc_id, start, \"end\", first_sentence, last_sentence, emb FROM chunks").fetchall()
    with conn:
        for r in range(1, factor):
            conn.execute("INSERT INTO documents SELECT doc_id || ?, text, n_sentences, n_chunks, pages "
                         "FROM documents WHERE doc_id NOT LIKE '%~%'", (f"~{r}",))
            conn.execute("INSERT INTO paths SELECT path || ?, doc_id || ?, title, publisher, date, url, "
                         "authors, furniture, stamp FROM paths WHERE doc_id NOT LIKE '%~%'",
                         (f"#copy{r}", f"~{r}"))
            conn.execute('INSERT INTO sentences (doc_id, idx, start, "end", kind, emb) SELECT doc_id || ?, '
                         'idx, start, "end", kind, emb FROM sentences WHERE doc_id NOT LIKE \'%~%\'', (f"~{r}",))
            rows = []
            for doc_id, s, e, f, l, emb in base:
                v = np.frombuffer(emb, dtype=np.float16).astype(np.float32)
                v = v + rng.normal(0, 0.02, dim).astype(np.float32)
                v /= np.linalg.norm(v)
                rows.append((doc_id + f"~{r}", s, e, f, l, v.astype(np.float16).tobytes()))
            conn.executemany('INSERT INTO chunks (doc_id, start, "end", first_sentence, last_sentence, emb) '
                             "VALUES (?,?,?,?,?,?)", rows)
        counts = {k: conn.execute(f"SELECT count(*) FROM {k}").fetchone()[0]
                  for k in ("documents", "paths", "chunks", "sentences")}
        chunks = conn.execute('SELECT c.id, substr(d.text, c.start + 1, c."end" - c.start) FROM chunks c '
                              "JOIN documents d ON d.doc_id = c.doc_id ORDER BY c.id").fetchall()
    copied = time.perf_counter() - t
    import faiss

    choice = dense_mod.DenseChoice.for_size(counts["chunks"], None)
    t = time.perf_counter()
    dense, choice = dense_mod.build_dense(conn, dim, choice)
    conn.close()
    faiss.write_index(dense, str(gen / "dense.faiss"))
    dense_s = time.perf_counter() - t
    del dense
    t = time.perf_counter()
    sparse_mod.write_full(gen, chunks)
    bm25_s = time.perf_counter() - t
    manifest.update(counts=counts, dense_index=choice.describe(), dense=choice.to_dict())
    (gen / "manifest.json").write_text(json.dumps(manifest, indent=2))
    (dst / "index" / "CURRENT").write_text(gen.name + "\n")
    return {"passages": counts["chunks"], "sentences": counts["sentences"], "replicated_from": src.name,
            "copy_rows_s": round(copied, 1), "dense_build_s": round(dense_s, 1),
            "bm25_build_s": round(bm25_s, 1), "build_peak_mb": round(_rss_mb()),
            "dense_index": choice.describe(), "disk_mb": round(_du_mb(dst / "index"), 1)}


def _child(step: str, *args: str) -> dict:
    out = subprocess.run([sys.executable, __file__, "--step", step, *args], capture_output=True,
                         text=True, env={**os.environ, "TOKENIZERS_PARALLELISM": "false"})
    if out.returncode != 0:
        raise RuntimeError(f"{step} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def cold_start(work: Path, model: str, repeats: int) -> dict:
    times = []
    qa = Path(sys.executable).with_name("qa")
    for _ in range(repeats):
        t = time.perf_counter()
        out = subprocess.run([str(qa), "--corpus", str(work / "corpus"), "--index", str(work / "index"),
                              "--model", model, "ask", "--json", "What is the capital of France?"],
                             capture_output=True, text=True)
        times.append(time.perf_counter() - t)
        if out.returncode != 0:
            raise RuntimeError(out.stderr[-2000:])
    return {"cold_start_s": round(statistics.median(times), 2), "cold_start_min_s": round(min(times), 2),
            "cold_start_max_s": round(max(times), 2)}


# --------------------------------------------------------------------------- driver


def run_size(label: str, n: int, a, base: Path, results: dict) -> None:
    work = base / label
    row: dict = {"size": label, "target_passages": n, "date": time.strftime("%Y-%m-%d %H:%M")}
    if a.query_only:  # the index in --work is kept; query latency, recall and cold start again
        row = {**results[label], "date": row["date"]}
        model = row["model"]
    elif label == "1m":
        src = base / "100k"
        if not (src / "index").exists():
            raise SystemExit("the 1m row replicates the 100k index: include 100k in --sizes")
        row.update(_child("replicate", str(src), str(work), str(10), a.big_model))
        model = a.big_model
    else:
        model = a.model if n <= a.real_up_to else a.big_model
        t = time.perf_counter()
        files, passages = make_corpus(work / "corpus", n)
        row.update(files=files, corpus_write_s=round(time.perf_counter() - t, 1))
        row.update(_child("build", str(work), model))
        row.update(_child("add", str(work), model, str(a.repeats)))
    row["model"] = model
    row.update(_child("query", str(work), model, str(a.questions)))
    row.update(cold_start(work, model, a.repeats))
    results[label] = row
    print(json.dumps(row), flush=True)


def table(results: dict) -> str:
    cols = [("size", "size"), ("passages", "passages"), ("model", "model"),
            ("build_s", "build s"), ("throughput_ratio", "raw/build"),
            ("retrieval_p50_ms", "retrieve p50 ms"), ("retrieval_p95_ms", "p95"),
            ("ask_p50_ms", "ask p50 ms"), ("ask_p95_ms", "p95"), ("recall_at_10", "recall@10"),
            ("serve_peak_mb", "serve peak MB"), ("build_peak_mb", "build peak MB"),
            ("disk_mb", "disk MB"), ("cold_start_s", "cold start s"), ("add_one_s", "add one s"),
            ("add_one_scan_s", "add one, full scan s"),
            ("dense_index", "dense index")]
    lines = ["| " + " | ".join(h for _, h in cols) + " |", "|" + "---|" * len(cols)]
    for row in results.values():
        lines.append("| " + " | ".join(str(row.get(k, "—")) for k, _ in cols) + " |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="1k,10k,100k,1m")
    ap.add_argument("--model", default="all-MiniLM-L6-v2", help="encoder for sizes up to --real-up-to")
    ap.add_argument("--big-model", default="hashing-384",
                    help="encoder above --real-up-to (MiniLM embeds ~70 texts/s on 2 cores: 100k passages "
                         "and their 300k sentences would take hours)")
    ap.add_argument("--real-up-to", type=int, default=1_000)
    ap.add_argument("--questions", type=int, default=100)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", default=str(ROOT / "bench" / "results"))
    ap.add_argument("--work", default="", help="keep the corpora and indexes here (default: a temp dir)")
    ap.add_argument("--query-only", action="store_true",
                    help="re-measure queries and cold start on the indexes already in --work")
    ap.add_argument("--step", help=argparse.SUPPRESS)
    a, rest = ap.parse_known_args()
    if a.step:
        fn = {"build": lambda: step_build(Path(rest[0]), rest[1]),
              "query": lambda: step_query(Path(rest[0]), rest[1], int(rest[2])),
              "add": lambda: step_add(Path(rest[0]), rest[1], int(rest[2])),
              "replicate": lambda: step_replicate(Path(rest[0]), Path(rest[1]), int(rest[2]), rest[3])}
        print(json.dumps(fn[a.step]()))
        return
    base = Path(a.work) if a.work else Path(tempfile.mkdtemp(prefix="vb-scale-"))
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    # rows of sizes not run this time are kept from the previous results file
    previous = out / "scale.json"
    results: dict = json.loads(previous.read_text())["results"] if previous.exists() else {}
    try:
        for label in a.sizes.split(","):
            if not a.query_only:
                shutil.rmtree(base / label, ignore_errors=True)
            run_size(label, SIZES[label], a, base, results)
    finally:
        if not a.work:
            shutil.rmtree(base, ignore_errors=True)
        meta = {"machine": f"{os.cpu_count()} CPUs", "date": time.strftime("%Y-%m-%d %H:%M"),
                "command": " ".join(sys.argv)}
        (out / "scale.json").write_text(json.dumps({"meta": meta, "results": results}, indent=2))
        (out / "scale.md").write_text(table(results) + "\n")
        print(table(results))


if __name__ == "__main__":
    main()
