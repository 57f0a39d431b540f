"""End to end with the real model on the shipped corpus, through the `qa` console script."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import CORPUS, REPO

pytestmark = pytest.mark.slow
QA = str(Path(sys.executable).with_name("qa"))


def _qa(*args, index: Path, check=True):
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    p = subprocess.run([QA, "--corpus", str(CORPUS), "--index", str(index), *args],
                       capture_output=True, text=True, env=env, cwd=REPO, timeout=300)
    assert "Traceback" not in p.stderr, p.stderr
    if check:
        assert p.returncode == 0, p.stderr
    return p


@pytest.fixture(scope="module")
def cli_index(tmp_path_factory):
    return tmp_path_factory.mktemp("cli") / "index"


def test_ask_builds_missing_index_and_quotes_600_verbatim(cli_index):
    p = _qa("ask", "--json", "How many North Korean refugees did China forcibly repatriate in October 2023?",
            index=cli_index)
    out = json.loads(p.stdout)
    assert out["no_answer"] is False
    first = out["answers"][0]
    assert "600" in first["quote"]
    assert first["source"]["path"] == "corpus/000_913f2efb5995b750.txt"
    assert "persecution.org" in first["source"]["publisher"]
    with open(REPO / first["source"]["path"]) as fh:
        assert fh.read()[first["start"]:first["end"]] == first["quote"]
    assert first["answer"] == "600"
    assert set(first["source"]) >= {"doc_id", "path", "title", "publisher", "date", "url"}
    assert isinstance(first["score"], float)


def test_unrelated_question_is_no_answer(cli_index):
    out = json.loads(_qa("ask", "--json", "Who won the 2022 FIFA World Cup?", index=cli_index).stdout)
    assert out["no_answer"] is True and out["answers"] == []
    assert all(c["answer"] is None for c in out["closest"])  # closest passages are not answers


def test_plain_output_and_bad_questions(cli_index):
    p = _qa("ask", "What percentage of North Korea's population is malnourished?", index=cli_index)
    assert "41 %" in p.stdout and "Danish European Mission" in p.stdout
    for bad in ["", "   ", "x" * 20000, "What did she say?"]:
        p = _qa("ask", bad, index=cli_index, check=False)
        assert p.returncode == 1 and len(p.stderr.strip().splitlines()) == 1
        # with --json, the same line also comes as JSON on standard output, as qa chat --json gives it
        p = _qa("ask", "--json", bad, index=cli_index, check=False)
        out = json.loads(p.stdout)
        assert p.returncode == 1 and out["error"] == p.stderr.strip().removeprefix("qa: ")
        assert out["question"] == bad[:200] and set(out) == {"question", "error"}
    p = _qa("sources", "--json", index=cli_index.parent / "no-index-here", check=False)
    assert p.returncode == 1 and json.loads(p.stdout) == {"error": p.stderr.strip().removeprefix("qa: ")}


QUESTIONS = [
    "How many North Korean refugees did China forcibly repatriate in October 2023?",
    "Who is the chair of the North Korean Freedom Coalition?",
    "What percentage of North Korea's population is malnourished?",
    "Where were the ten defectors arrested?",
    "When did Grace Jo come to the United States?",
    "Why does China refuse to treat North Koreans as refugees?",
    "How long was Grace Jo imprisoned in China?",
    "What did the UN Commission of Inquiry say about China in 2014?",
]


@pytest.mark.parametrize("question", QUESTIONS)
def test_every_quote_is_the_file_text_at_its_offsets(real_service, question):
    res = real_service.ask(question, top=5)
    for q in res.answers + res.closest:
        text = (REPO / q.source.path).read_text()
        assert text[q.start:q.end] == q.text
        assert text[q.context_span.start:q.start] == q.context_before
        assert text[q.end:q.context_span.end] == q.context_after
        if q.answer is not None:
            assert text[q.answer_span.start:q.answer_span.end] == q.answer
            assert q.start <= q.answer_span.start < q.answer_span.end <= q.end
        for src, sp in q.also_in:
            s, e = sp.start, sp.end
            assert (REPO / src.path).read_text()[s:e] == q.text


def test_answers_on_the_shipped_corpus(real_service):
    r = real_service.ask("Who is the chair of the North Korean Freedom Coalition?")
    assert not r.no_answer and "Suzanne Scholte" in r.answers[0].text
    assert r.answers[0].answer == "Suzanne Scholte"
    r = real_service.ask("What is the capital of France?")
    assert r.no_answer


def test_timings_add_up_and_reading_counts_as_answering(real_service, monkeypatch):
    """``timings_ms``: encoding, retrieval and answering (the reader's reading of the passages and
    the choice of quotes) make up the total; a slower reader shows under "answer"."""
    import time

    from qa import answering

    read = answering.candidates

    def slow_read(*a, **kw):
        time.sleep(0.05)
        return read(*a, **kw)

    monkeypatch.setattr(answering, "candidates", slow_read)
    t = real_service.ask("Who is the chair of the North Korean Freedom Coalition?").timings_ms
    assert set(t) == {"encode", "retrieve", "answer", "total"}
    assert t["encode"] + t["retrieve"] + t["answer"] == pytest.approx(t["total"])
    assert t["answer"] >= 50


def test_ranking_the_passages_again_changes_their_order_not_the_answers(real_service, monkeypatch):
    """The answerer's reading re-ranks the passages read (``answering.rerank``): answers are the
    same with retrieval's order, and the first passage becomes the one the first quote is from."""
    from qa import answering
    from qa.config import AskSettings

    questions = ["What happens to women who cross into China?", "Why does China send North Korean defectors back?",
                 "Who is Tim Peters?", "How many months pregnant was Ji Hyeona?", "What is the capital of France?"]
    asked = {q: real_service.ask_with_passages(q, AskSettings(top=3), retrieve=10) for q in questions}
    monkeypatch.setattr(answering, "rerank", lambda passages, cands, read, weight=0.0: passages)
    moved = 0
    for q, (res, passages) in asked.items():
        plain, retrieved = real_service.ask_with_passages(q, AskSettings(top=3), retrieve=10)
        a, b = res.to_dict(), plain.to_dict()
        a.pop("timings_ms"), b.pop("timings_ms")
        assert a == b, q
        assert sorted(p.chunk_id for p in passages) == sorted(p.chunk_id for p in retrieved)
        moved += [p.chunk_id for p in passages] != [p.chunk_id for p in retrieved]
        if res.answers:
            first = res.answers[0]
            assert passages[0].doc_id == first.source.doc_id, q
    assert moved  # the check above is not vacuous: some order did change


def test_index_is_intact_after_bad_files(tmp_path):
    import shutil

    corpus = tmp_path / "corpus"
    shutil.copytree(CORPUS, corpus)
    base = ["--corpus", str(corpus), "--index", str(tmp_path / "idx"), "--model", "hashing-256"]
    run = lambda *a: subprocess.run([QA, *base, *a], capture_output=True, text=True, timeout=300)
    assert run("index").returncode == 0
    q = "How many North Korean refugees did China forcibly repatriate in October 2023?"
    before = json.loads(run("ask", "--json", q).stdout)
    (corpus / "binary.txt").write_bytes(bytes(range(256)) * 10)
    (corpus / "empty.txt").write_bytes(b"")
    (corpus / "cp1252.txt").write_bytes("\x93Smart quotes\x94 from Windows.".encode("latin-1"))
    p = run("index")
    assert p.returncode == 0 and "Traceback" not in p.stderr
    lines = p.stderr.strip().splitlines()
    assert any("binary.txt: looks like a binary file" in l for l in lines)
    assert any("empty.txt: empty document" in l for l in lines)
    assert any("cp1252.txt: not valid UTF-8" in l for l in lines)
    after = json.loads(run("ask", "--json", q).stdout)
    # a source that is not indexed is a one-line error, not "no answer"
    p = run("ask", "--source", "nosuch.txt", q)
    assert p.returncode == 1 and "no indexed document matches 'nosuch.txt'" in p.stderr
    assert len(p.stderr.strip().splitlines()) == 1 and "No answer" not in p.stdout
    top = lambda r: [(a["quote"], a["source"]["path"], a["start"]) for a in r["answers"] + r["closest"]][0]
    assert top(after) == top(before)


def test_questions_use_the_checked_onnx_export_which_agrees_with_the_model(real_service):
    from qa.embeddings import OnnxEncoder, SentenceTransformerEncoder

    assert (real_service.onnx_dir / "checked").exists()
    fast = OnnxEncoder(real_service.onnx_dir)
    full = real_service.encoder
    assert isinstance(full, SentenceTransformerEncoder)
    idx = real_service.index()
    texts = [s.text for _, s, _ in idx.sentences(idx.documents()[0]["doc_id"], 0, 40)]
    texts += ["Who won the FIFA World Cup?", "x" * 3000]  # the long one is truncated alike
    cos = (fast.encode_queries(texts) * full.encode_queries(texts)).sum(1)
    assert cos.min() > 0.9999


def test_damaged_onnx_export_falls_back_to_the_model(real_service, tmp_path):
    import shutil

    from qa import Verbatim
    from qa.embeddings import SentenceTransformerEncoder

    index = tmp_path / "index"
    shutil.copytree(real_service.index_dir, index)
    (index / real_service.onnx_dir.name / "model.onnx").write_bytes(b"not a model")
    v = Verbatim(real_service.corpus_dir, index, root=real_service.root)
    assert isinstance(v.query_encoder, SentenceTransformerEncoder)
    res = v.ask("How many North Korean refugees did China forcibly repatriate in October 2023?")
    assert not res.no_answer and res.answers[0].answer == "600"


def test_without_the_reader_answers_use_the_fallback_calibration(real_service):
    from qa.config import AskSettings

    cal = real_service.calibration
    assert cal.w_reader > 0 and cal.without_reader, "the shipped calibration has both modes"
    fallback = cal.for_reader(False)
    assert fallback.w_reader == fallback.w_reader_top == 0
    assert fallback.threshold == cal.without_reader["threshold"] != cal.threshold
    assert cal.for_reader(True) is cal
    off = AskSettings(reader=False)
    r, _ = real_service.ask_with_passages("Who is the chair of the North Korean Freedom Coalition?", off)
    assert not r.no_answer and "Suzanne Scholte" in r.answers[0].text
    r, _ = real_service.ask_with_passages("What is the capital of France?", off)
    assert r.no_answer


def test_the_no_answer_decision_is_the_confidence_against_the_threshold(real_service):
    """With the shipped calibration, confidence is the no-answer model's logit; it is in the
    JSON, higher for an answer the corpus holds than for one it lacks, and the question is
    answered exactly when it reaches the threshold."""
    from dataclasses import replace

    from qa import Verbatim, answering

    cal = real_service.calibration
    assert isinstance(cal.no_answer, answering.NoAnswerModel)
    q = "How many North Korean refugees did China forcibly repatriate in October 2023?"
    r = real_service.ask(q)
    top = r.answers[0]
    assert top.answer == "600" and top.reader_margin > 1.0
    assert top.to_dict()["reader_margin"] == round(top.reader_margin, 3)
    assert r.to_dict()["confidence"] == round(r.confidence, 4)
    off = real_service.ask("What is the capital of France?")
    assert off.no_answer and off.confidence < cal.threshold <= r.confidence
    for threshold, refused in ((r.confidence - 1e-6, False), (r.confidence + 1e-6, True)):
        v = Verbatim(real_service.corpus_dir, real_service.index_dir, root=real_service.root,
                     calibration=replace(cal, threshold=threshold))
        assert v.ask(q).no_answer is refused


def test_each_quote_carries_a_probability_and_only_those_that_clear_the_bar_are_answers(real_service):
    """The issue's "Who is Tim Peters?": quotes about others are shown as related, not answers."""
    from qa.answering import label

    cal = real_service.answer_calibration()
    assert cal.quote_model is not None
    r = real_service.ask("Who is Tim Peters?")
    assert not r.no_answer and "Tim Peters" in r.answers[0].text
    for q in r.answers:
        assert q.probability >= cal.threshold and q.label == label(q.probability, cal, answer=True)
    assert r.closest, "the quotes below the bar are shown as related"
    for q in r.closest:
        assert q.probability < cal.threshold and q.label == "related, not an answer" and q.answer is None
    assert not any("Gina Goh" in q.text or "Grace Jo" in q.text for q in r.answers)


def test_a_near_unanswerable_question_is_refused_with_related_quotes(real_service):
    r = real_service.ask("How many of the 600 repatriated refugees were later released?")
    assert r.no_answer and r.answers == ()
    assert r.closest and all(q.label == "related, not an answer" for q in r.closest)
    assert r.confidence == pytest.approx(r.closest[0].probability)  # the best quote's own probability


def test_serve_refuses_a_bad_or_busy_port_in_one_line(tmp_path):
    import socket

    base = [QA, "--corpus", str(CORPUS), "--index", str(tmp_path / "idx"), "serve"]
    p = subprocess.run([*base, "--port", "99999"], capture_output=True, text=True, timeout=60)
    assert p.returncode == 1 and "between 1 and 65535" in p.stderr and "Traceback" not in p.stderr
    assert "running at" not in p.stdout and len(p.stderr.strip().splitlines()) == 1
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        p = subprocess.run([*base, "--port", str(port)], capture_output=True, text=True, timeout=60)
    assert p.returncode == 1 and f"cannot serve on 127.0.0.1:{port}" in p.stderr and "Traceback" not in p.stderr
    assert "running at" not in p.stdout and not (tmp_path / "idx").exists()  # nothing built first


def test_a_file_name_with_a_newline_keeps_qa_sources_one_line_per_document(tmp_path):
    import shutil

    corpus = tmp_path / "corpus"
    shutil.copytree(CORPUS, corpus)
    (corpus / "two\nlines.txt").write_text("An article whose file name holds a newline, about the Yalu river.\n")
    base = [QA, "--corpus", str(corpus), "--index", str(tmp_path / "idx"), "--model", "hashing-256"]
    assert subprocess.run([*base, "index"], capture_output=True, text=True, timeout=300).returncode == 0
    p = subprocess.run([*base, "sources"], capture_output=True, text=True, timeout=300)
    assert p.returncode == 0
    lines = p.stdout.strip().splitlines()
    assert lines[0].startswith("6 documents") and len(lines) == 3 + 6
    assert any("two\\nlines.txt" in line for line in lines)


def test_common_options_go_after_the_subcommand_too_and_show_in_its_help(cli_index):
    p = subprocess.run([QA, "ask", "--index", str(cli_index), "--corpus", str(CORPUS), "--json",
                        "How many North Korean refugees did China forcibly repatriate in October 2023?"],
                       capture_output=True, text=True, cwd=REPO, timeout=300)
    assert p.returncode == 0, p.stderr
    assert "600" in json.loads(p.stdout)["answers"][0]["quote"]
    for cmd in ("index", "ask", "sources", "show", "serve", "remove", "watch", "eval"):
        out = subprocess.run([QA, cmd, "--help"], capture_output=True, text=True, timeout=60).stdout
        assert all(opt in out for opt in ("--corpus", "--index", "--model")), cmd
    # given before the subcommand, a value is not reset by the subcommand's parser
    p = subprocess.run([QA, "--index", str(cli_index), "--corpus", str(CORPUS), "sources"],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0 and p.stdout.startswith("5 documents"), p.stderr


def test_app_py_is_the_same_serve_path():
    p = subprocess.run([sys.executable, str(REPO / "app.py"), "--port", "0"], capture_output=True, text=True,
                       cwd=REPO, timeout=60)
    assert p.returncode == 1 and "--port must be between 1 and 65535" in p.stderr and "Traceback" not in p.stderr


def test_the_index_says_which_model_encodes_the_questions(tmp_path):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = str(s.getsockname()[1])
    base = [QA, "--corpus", str(CORPUS), "--index", str(tmp_path / "idx")]
    run = lambda *a: subprocess.run([*base, *a], capture_output=True, text=True, timeout=120, cwd=REPO)
    assert run("--model", "hashing-256", "index").returncode == 0
    q = "How many North Korean refugees did China forcibly repatriate in October 2023?"
    # no --model: the index's own model encodes the question
    p = run("ask", "--json", q)
    assert p.returncode == 0 and "Traceback" not in p.stderr, p.stderr
    assert json.loads(p.stdout)["answers"] or json.loads(p.stdout)["closest"]
    # another model named: one line naming both, non-zero, for ask, eval and serve
    for args in (("--model", "hashing-128", "ask", q), ("ask", "--model", "all-MiniLM-L6-v2", q),
                 ("--model", "hashing-128", "serve", "--port", port),
                 ("eval", "--model", "hashing-128", str(REPO / "eval" / "people-test.jsonl"))):
        p = run(*args)
        assert p.returncode == 1 and "Traceback" not in p.stderr, p.stderr
        line = p.stderr.strip()
        assert len(line.splitlines()) == 1 and "built with the model hashing-256" in line, line
    # qa index without --model keeps the index's model (no silent rebuild with the default)
    p = run("index", "--json")
    assert p.returncode == 0 and json.loads(p.stdout)["rebuilt_reason"] == ""
    # and a named model rebuilds, as asked
    p = run("--model", "hashing-128", "index", "--json")
    assert p.returncode == 0 and json.loads(p.stdout)["rebuilt_reason"]


def test_readme_command_table_and_cli_doc_match_help():
    """The README's command table and docs/cli.md are generated from the parser; when a command
    or option changes without `scripts/cli_reference.py --write`, this fails. The README stays a
    short front door."""
    p = subprocess.run([sys.executable, str(REPO / "scripts" / "cli_reference.py")], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    assert "| `qa chat` |" in readme and "`--metrics FILE`" in readme
    assert len(readme.encode()) < 12 * 1024


@pytest.mark.slow
def test_documents_are_encoded_through_the_checked_onnx_export_and_an_update_never_imports_torch(
        real_service, tmp_path):
    """The export questions use also encodes articles: its vectors are within 1e-5 of the
    model's on the shipped corpus, and `qa index FILE` adding an article loads no torch."""
    import shutil

    import numpy as np

    from qa import chunking, corpus
    from qa.embeddings import OnnxEncoder, SentenceTransformerEncoder

    assert isinstance(real_service.document_encoder, OnnxEncoder)
    docs = [d for f in sorted(CORPUS.glob("*.txt")) for d in corpus.load_file(f, REPO)]
    texts = [s.text for d in docs for s in chunking.split_sentences(d, 800)]
    model = real_service.encoder
    assert isinstance(model, SentenceTransformerEncoder)
    diff = np.abs(real_service.document_encoder.encode_documents(texts) - model.encode_documents(texts))
    assert len(texts) > 150 and float(diff.max()) < 1e-5
    # the sums of token states a passage's vector is pooled from agree as well
    (fast_v, fast_s, fast_n), (full_v, full_s, full_n) = (e.encode_sums(texts) for e in (real_service.document_encoder, model))
    assert float(np.abs(fast_v - full_v).max()) < 1e-5 and float(np.abs(fast_v - model.encode_documents(texts)).max()) < 1e-5
    assert np.array_equal(fast_n, full_n) and float(np.abs(fast_s - full_s).max() / np.abs(full_s).max()) < 1e-5
    shutil.copytree(CORPUS, tmp_path / "corpus")
    shutil.copytree(real_service.index_dir, tmp_path / "index")
    new = tmp_path / "corpus" / "new.txt"
    new.write_text("Rescuers in Laos sheltered 14 North Korean women in a safe house near the Mekong in May.\n")
    code = ("import sys; from qa.cli import main; rc = main(['--corpus', sys.argv[1], '--index', sys.argv[2], "
            "'index', sys.argv[3]]); print('torch imported' if 'torch' in sys.modules else 'no torch'); sys.exit(rc)")
    p = subprocess.run([sys.executable, "-c", code, str(tmp_path / "corpus"), str(tmp_path / "index"), str(new)],
                       capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert p.returncode == 0, p.stderr
    assert "1 added" in p.stdout and p.stdout.strip().endswith("no torch"), p.stdout
