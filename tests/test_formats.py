"""Each supported format end to end: read, index, ask, quote verbatim from the extracted text."""

import json

import pytest

from qa import Verbatim, corpus
from qa.config import IndexSettings
from qa.errors import BadDocument


def make_pdf(pages: list[list[str]], title: str = "", author: str = "") -> bytes:
    """A minimal, valid PDF with one text line per entry (Helvetica), written by hand."""
    objs: list[bytes] = []
    kids = []
    n_pages = len(pages)
    font_id = 3 + 2 * n_pages
    for i, lines in enumerate(pages):
        page_id, content_id = 3 + 2 * i, 4 + 2 * i
        kids.append(f"{page_id} 0 R")
        esc = lambda t: t.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")
        body = "BT /F1 11 Tf 72 720 Td " + " ".join(f"({esc(l)}) Tj 0 -16 Td" for l in lines) + " ET"
        objs.append((page_id, f"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents {content_id} 0 R "
                              f"/Resources << /Font << /F1 {font_id} 0 R >> >> >>".encode()))
        objs.append((content_id, f"<< /Length {len(body)} >>\nstream\n{body}\nendstream".encode()))
    objs = [(1, b"<< /Type /Catalog /Pages 2 0 R >>"),
            (2, f"<< /Type /Pages /Kids [{' '.join(kids)}] /Count {n_pages} >>".encode())] + objs
    objs.append((font_id, b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>"))
    info_id = font_id + 1
    objs.append((info_id, f"<< /Title ({title}) /Author ({author}) >>".encode()))
    out = bytearray(b"%PDF-1.4\n")
    offsets = {}
    for oid, body in sorted(objs):
        offsets[oid] = len(out)
        out += f"{oid} 0 obj\n".encode() + body + b"\nendobj\n"
    xref = len(out)
    out += f"xref\n0 {info_id + 1}\n0000000000 65535 f \n".encode()
    for oid in range(1, info_id + 1):
        out += f"{offsets[oid]:010d} 00000 n \n".encode()
    out += f"trailer\n<< /Size {info_id + 1} /Root 1 0 R /Info {info_id} 0 R >>\nstartxref\n{xref}\n%%EOF\n".encode()
    return bytes(out)


HTML = """<!doctype html><html><head><title>Border report | Example News</title>
<meta name="author" content="Jane Roe"><meta property="article:published_time" content="2023-10-12T08:00:00Z">
<meta property="og:site_name" content="Example News"><link rel="canonical" href="https://example.org/border-report">
<script>document.write('<p>Injected paragraph about dolphins.</p>')</script></head>
<body><nav>Home | World | Subscribe to our newsletter</nav><script>alert('x')</script>
<article><h1>Border report</h1>
<p>Guards on the Yalu river detained 37 people trying to cross into Dandong last winter, a monitoring group said.</p>
<p>The group urged an end to the detentions. <img src=x onerror="alert(1)"></p>
<script>var stolen = document.cookie;</script></article><footer>Copyright 2023 Example News</footer></body></html>"""


@pytest.fixture()
def svc(tmp_path):
    (tmp_path / "corpus").mkdir()
    return Verbatim(tmp_path / "corpus", tmp_path / "index", settings=IndexSettings(model="hashing-256"),
                    root=tmp_path)


def _top(v, q):
    res = v.ask(q)
    return (res.answers or res.closest)[0]


def test_markdown_front_matter_gives_metadata_and_is_never_quoted(svc):
    (svc.corpus_dir / "note.md").write_text(
        "---\ntitle: Winter crossings\nauthor: Kim Min-ji and Lee Joon\ndate: 2023-02-01\n"
        "publisher: Field Notes\n---\n# Winter crossings\n\n"
        "Smugglers charged 8,000 dollars per person for winter crossings of the Tumen.\n")
    svc.sync()
    q = _top(svc, "How much did smugglers charge per person for winter crossings?")
    assert "8,000 dollars" in q.text
    assert q.source.title == "Winter crossings" and q.source.date == "2023-02-01"
    assert q.source.authors == ("Kim Min-ji", "Lee Joon")
    text = (svc.corpus_dir / "note.md").read_text()
    assert text[q.start:q.end] == q.text
    doc = corpus.load_file(svc.corpus_dir / "note.md", svc.root)[0]
    from qa.chunking import split_sentences
    assert not any("title:" in s.text for s in split_sentences(doc) if s.quotable)


def test_html_main_text_and_metadata_scripts_gone(svc):
    (svc.corpus_dir / "page.html").write_text(HTML)
    svc.sync()
    q = _top(svc, "How many people did guards on the Yalu river detain?")
    assert "37 people" in q.text
    assert q.source.title.startswith("Border report") and q.source.authors == ("Jane Roe",)
    assert q.source.date == "2023-10-12" and q.source.url == "https://example.org/border-report"
    text = svc.index().document_text(q.source.doc_id)
    assert text[q.start:q.end] == q.text  # offsets refer to the extracted text (`qa show`)
    assert "alert" not in text and "cookie" not in text and "dolphins" not in text and "Subscribe" not in text


def test_pdf_pages_are_kept_and_cited(svc):
    pdf = make_pdf([["Annual report on border detentions.", "The first page talks about methods."],
                    ["In 2022 the monitors counted 412 forced returns.", "Most returns went through Sinuiju."]],
                   title="Monitoring report 2022", author="Border Watch")
    (svc.corpus_dir / "report.pdf").write_bytes(pdf)
    svc.sync()
    res = svc.ask("How many forced returns did the monitors count in 2022?")
    q = (res.answers or res.closest)[0]
    assert "412 forced returns" in q.text and q.page == 2
    assert q.source.title == "Monitoring report 2022" and q.source.authors == ("Border Watch",)
    assert svc.index().document_text(q.source.doc_id)[q.start:q.end] == q.text
    assert res.to_dict()[("answers" if res.answers else "closest")][0]["page"] == 2


def test_jsonl_feed_one_document_per_line(svc):
    lines = [
        {"text": "The Dandong office opened in 2019 and serves 40 families.", "title": "Office news",
         "url": "https://example.org/a", "date": "2019-05-02", "publisher": "Feed A"},
        "not json at all",
        {"title": "no text field"},
        {"text": "Volunteers in Yanbian delivered 300 winter coats in December.", "title": "Coats",
         "date": "December 3, 2020", "publisher": "Feed B"},
    ]
    (svc.corpus_dir / "feed.jsonl").write_text("\n".join(json.dumps(l) if isinstance(l, dict) else l for l in lines))
    r = svc.sync()
    assert sorted(r.added) == ["corpus/feed.jsonl#1", "corpus/feed.jsonl#4"]
    assert any("line 2" in w for w in r.warnings) and any("line 3" in w for w in r.warnings)
    assert len(r.warnings) == 2  # reported once each, not once per article of the feed
    q = _top(svc, "How many winter coats did volunteers in Yanbian deliver?")
    assert "300 winter coats" in q.text and q.source.path == "corpus/feed.jsonl#4"
    assert q.source.date == "2020-12-03" and q.source.publisher == "Feed B"


def test_bad_inputs_get_messages_and_the_rest_is_indexed(svc):
    (svc.corpus_dir / "good.txt").write_text("The shelter in Bangkok housed 25 defectors in March.")
    (svc.corpus_dir / "corrupt.pdf").write_bytes(b"%PDF-1.4\n1 0 obj << /Type /Catalog >> garbage")
    (svc.corpus_dir / "scripts.html").write_text("<html><script>" + "alert(1);" * 500 + "</script></html>")
    (svc.corpus_dir / "latin1.txt").write_bytes("Caf\xe9 owners in Seoul hired 12 defectors.".encode("latin-1"))
    (svc.corpus_dir / "empty.md").write_text("---\ntitle: nothing\n---\n")
    r = svc.sync()
    assert any("corrupt.pdf: not a readable PDF" in s for s in r.skipped)
    assert any("scripts.html: no article text" in s for s in r.skipped)
    assert any("latin1.txt: not valid UTF-8" in w for w in r.warnings)
    assert any("empty.md: empty document" in s for s in r.skipped)
    assert sorted(r.added) == ["corpus/good.txt", "corpus/latin1.txt"]
    assert "25 defectors" in _top(svc, "How many defectors did the Bangkok shelter house?").text


def test_large_text_file_is_indexed_in_bounded_batches(svc, monkeypatch):
    from qa import sync as sync_mod

    sentence = "Refugee number {} crossed the river at night and reached the shelter safely. "
    (svc.corpus_dir / "big.txt").write_text("".join(sentence.format(i) for i in range(30000)))
    seen = []
    enc = svc.encoder
    orig = enc.encode_sums  # the index's encoder pass (passages are pooled from it)
    monkeypatch.setattr(enc, "encode_sums", lambda texts: (seen.append(len(texts)), orig(texts))[1])
    r = svc.sync()
    assert r.sentences_embedded == 30000
    assert max(seen) <= sync_mod._BATCH  # never the whole document at once
    # the last batch is indexed: its one distinctive token finds its passage first, and the
    # answer quotes the end of the document (the reader may mark a neighbour: the 30,000
    # sentences differ only in their number, which the question itself gives away)
    text = (svc.corpus_dir / "big.txt").read_text()
    res, passages = svc.ask_with_passages("Which refugee number 29999 crossed the river?")
    assert "Refugee number 29999 crossed" in passages[0].text
    q = (res.answers or res.closest)[0]
    assert q.start > len(text) - 2000 and text[q.start:q.end] == q.text


def test_bad_front_matter_is_a_clear_error(tmp_path):
    f = tmp_path / "x.md"
    f.write_text("---\ntitle: [unclosed\n---\nBody text here.\n")
    with pytest.raises(BadDocument, match="front matter is not valid YAML"):
        corpus.load_file(f, tmp_path)


def test_a_damaged_pdf_is_indexed_with_pypdfs_complaint_named_by_file(svc, capfd):
    """pypdf's own warnings ("incorrect startxref pointer") name no file: they come back as the
    document's warning, with its path, and nothing is printed unprefixed."""
    import re

    pdf = make_pdf([["Guards detained 37 people near Dandong in the winter."]])
    (svc.corpus_dir / "damaged.pdf").write_bytes(re.sub(rb"startxref\s+\d+", b"startxref\n99", pdf))
    r = svc.sync()
    assert r.added == ["corpus/damaged.pdf"]
    assert any(w.startswith("corpus/damaged.pdf: the PDF is damaged") and "startxref" in w for w in r.warnings)
    out, err = capfd.readouterr()
    assert "startxref" not in out + err
    assert "37 people" in svc.ask("How many people did guards detain near Dandong?").answers[0].text


def test_a_file_with_more_text_than_the_limit_is_skipped_with_how_to_split_it(svc, monkeypatch):
    """The limit is on the text to index (a 64 MiB PDF may hold little text); what is over it is
    skipped with a message that says how to split it, and the rest is indexed."""
    from qa import corpus as corpus_mod

    monkeypatch.setattr(corpus_mod, "MAX_TEXT_CHARS", 100_000)
    line = "Guards on the Yalu river detained 37 people trying to cross into Dandong last winter.\n"
    (svc.corpus_dir / "huge.txt").write_text(line * 1300)  # about 110,000 characters
    (svc.corpus_dir / "fine.txt").write_text(line * 1000)
    r = svc.sync()
    assert r.added == ["corpus/fine.txt"]
    assert any(s.startswith("corpus/huge.txt: 0.1 million characters of text, over the 0 million")
               and "split -C 15m --additional-suffix=.txt" in s for s in r.skipped), r.skipped


def test_a_long_update_logs_its_progress_when_not_on_a_terminal(svc, monkeypatch):
    from qa import sync as sync_mod

    monkeypatch.setattr(sync_mod, "_LOG_PROGRESS_CHARS", 10_000)
    monkeypatch.setattr(sync_mod, "_BATCH", 64)  # several groups, so progress moves in steps
    text = "".join(f"Report {n}: guards detained {n} people near Dandong in week {n}.\n" for n in range(2000))
    (svc.corpus_dir / "long.txt").write_text(text)
    said = []
    svc.sync(log=said.append)
    steps = [m for m in said if m.startswith("indexing: ")]
    assert len(steps) >= 5 and steps[0].startswith("indexing: 10% of 0.1 million characters")
    assert [int(m.split()[1].rstrip("%")) for m in steps] == sorted({int(m.split()[1].rstrip("%")) for m in steps})
