from pathlib import Path

import pytest

from qa import chunking, corpus
from qa.errors import BadDocument

from .conftest import CORPUS, SEED

FURNITURE = [
    "Share article", "Get Our Latest News for FREE", "Subscribe to get daily/weekly email",
    "Was this article helpful?", "Most Popular", "Select Page", "Support", "(photo:",
    "Photo: REUTERS", "Pictured above", "Pictured right", ".jpg", "Source:", "Date:",
    "Giving hope to persecuted Christians since 1995", "Follow Samuel Smith on Twitter",
]


def test_shipped_corpus_is_byte_identical_to_the_seed_articles():
    seeds = sorted(SEED.glob("*.txt"))
    assert len(seeds) == 5
    for s in seeds:
        assert (CORPUS / s.name).read_bytes() == s.read_bytes()


def test_sidecar_metadata_wins():
    doc = corpus.load_file(CORPUS / "004_16947189698fbbee.txt", CORPUS.parent)[0]
    assert doc.metadata.publisher == "The Christian Post"
    assert doc.metadata.authors == ("Samuel Smith",)
    assert doc.metadata.date == "2017-11"
    assert doc.path == "corpus/004_16947189698fbbee.txt"


def _seed_without_sidecar(tmp_path, name: str):
    f = tmp_path / "article.txt"
    f.write_bytes((SEED / name).read_bytes())
    return corpus.load_file(f, tmp_path)[0]


def test_header_lines_give_metadata_without_sidecar(tmp_path):
    doc = _seed_without_sidecar(tmp_path, "000_913f2efb5995b750.txt")
    assert doc.metadata.date == "2024-08-23"
    assert doc.metadata.publisher == "www.persecution.org"
    assert doc.metadata.url == "https://www.persecution.org"
    # the image file name and the header lines are not the title
    assert doc.metadata.title.startswith("China/North Korea (International Christian Concern)")


def test_heuristics_first_line_title_and_dateline(tmp_path):
    doc = _seed_without_sidecar(tmp_path, "003_ba6c32f1455b1fa4.txt")
    assert doc.metadata.date == "2018-10-01"
    assert doc.metadata.title == "Giving hope to persecuted Christians since 1995"


@pytest.mark.parametrize("raw,iso", [
    ("August 23, 2024", "2024-08-23"), ("10/01/2018", "2018-10-01"), ("2017-11", "2017-11"),
    ("Sept. 22, 2019", ""), ("Nov 4, 2017", "2017-11-04"), ("23 August 2024", "2024-08-23"),
    ("March 2017", "2017-03"), ("2021", "2021"), ("next Tuesday", ""), ("September 24th, 2021", "2021-09-24"),
])
def test_normalise_date(raw, iso):
    assert corpus.normalise_date(raw) == iso


def test_bad_sidecar_is_a_clear_error(tmp_path):
    (tmp_path / "c.txt").write_text("A sentence about refugees.")
    (tmp_path / "c.txt.meta.json").write_text("{not json")
    with pytest.raises(BadDocument, match="sidecar is not valid JSON"):
        corpus.load_file(tmp_path / "c.txt", tmp_path)[0]


def test_furniture_is_never_quotable_or_in_a_passage():
    for path in sorted(CORPUS.glob("*.txt")):
        doc = corpus.load_file(path, CORPUS.parent)[0]
        sents = chunking.split_sentences(doc)
        chunks = chunking.make_chunks(doc, sents)
        quotable = [s.text for s in sents if s.quotable]
        for phrase in FURNITURE:
            assert not any(phrase in q for q in quotable), (path.name, phrase)
            assert not any(phrase in c.text for c in chunks), (path.name, phrase)
        # but the furniture is still in the document text, untouched
        assert doc.text == path.read_text()


def test_caption_repeated_without_credit_is_furniture():
    doc = corpus.load_file(CORPUS / "004_16947189698fbbee.txt", CORPUS.parent)[0]
    sents = chunking.split_sentences(doc)
    tumen = [s for s in sents if s.text.startswith("The frozen Tumen river")]
    assert len(tumen) == 2 and all(s.kind == "furniture" for s in tumen)


def test_decode_binary_empty_and_invalid_utf8():
    with pytest.raises(BadDocument, match="binary"):
        corpus.decode(b"\x89PNG\r\n\x1a\n\x00\x00\x00", "x.txt")
    with pytest.raises(BadDocument, match="empty"):
        corpus.decode(b"  \n\t\n", "y.txt")
    text, warnings = corpus.decode(b"caf\xe9 au lait.", "z.txt")
    assert text == "caf\ufffd au lait." and "not valid UTF-8" in warnings[0]


def test_decode_matches_open_read_for_crlf(tmp_path):
    f = tmp_path / "crlf.txt"
    f.write_bytes(b"First line.\r\nSecond line.\rThird.\n")
    text, _ = corpus.decode(f.read_bytes())
    assert text == open(f).read()


def test_list_sources_skips_unsupported_and_sidecars(tmp_path):
    (tmp_path / "a.txt").write_text("Text.")
    (tmp_path / "a.txt.meta.json").write_text("{}")
    (tmp_path / "b.exe").write_bytes(b"MZ")
    (tmp_path / ".hidden.txt").write_text("Hidden.")
    files, skipped = corpus.list_sources(tmp_path)
    assert [f.name for f in files] == ["a.txt"]
    assert len(skipped) == 1 and "unsupported file type" in skipped[0].reason


def test_utf16_with_a_byte_order_mark_is_text_not_binary():
    text = "Les réfugiés “forcés” — 600.\nSecond line."
    for encoding in ("utf-16", "utf-16-be"):
        data = text.encode(encoding)
        if encoding == "utf-16-be":
            data = b"\xfe\xff" + data
        got, warnings = corpus.decode(data, "w.txt")
        assert got == text and not warnings
    with pytest.raises(corpus.BadDocument, match="binary"):  # UTF-16 without a mark stays unread
        corpus.decode(text.encode("utf-16-le"), "x.txt")


def test_sidecars_are_regular_files_beside_the_article(tmp_path):
    import os

    doc = tmp_path / "corpus" / "a.txt"
    doc.parent.mkdir()
    doc.write_text("A sentence about refugees.\n")
    side = doc.with_name("a.txt.meta.json")
    outside = tmp_path / "secret.json"
    outside.write_text('{"title": "SECRET TITLE"}')
    side.symlink_to(outside)
    with pytest.raises(BadDocument, match="symbolic link, which is not followed"):
        corpus.read_sidecar(doc)
    side.unlink()
    os.mkfifo(side)  # reading it would block forever
    with pytest.raises(BadDocument, match="not a regular file"):
        corpus.read_sidecar(doc)
    side.unlink()
    side.write_text("  \n")
    with pytest.raises(BadDocument, match=r"empty; write \{\} in it"):
        corpus.read_sidecar(doc)
    side.write_text('{"title": "T"}')
    assert corpus.read_sidecar(doc) == {"title": "T"}
