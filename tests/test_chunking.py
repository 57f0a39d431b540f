import pytest
from hypothesis import given, settings, strategies as st

from qa import chunking, corpus

from .conftest import CORPUS


def _doc(text: str):
    return corpus.parse_text(text, "t.txt")


@pytest.mark.parametrize("text,expected", [
    ("The U.S. Congress met. It voted.", ["The U.S. Congress met.", "It voted."]),
    ("They were arrested on Nov. 4. Ten remain.", ["They were arrested on Nov. 4.", "Ten remain."]),
    ("Mr. Kim left at 5 p.m. on Monday. Then rain.", ["Mr. Kim left at 5 p.m. on Monday.", "Then rain."]),
    ("“I saw it,” she said. “It was awful.” He nodded.",
     ["“I saw it,” she said.", "“It was awful.”", "He nodded."]),
    ("In 1951... the Convention was signed. Fine.", ["In 1951... the Convention was signed.", "Fine."]),
    ("About 41 % were hungry. Others were not.", ["About 41 % were hungry.", "Others were not."]),
    ("Washington D.C. as well. The protest began.", ["Washington D.C. as well.", "The protest began."]),
])
def test_segmenter_handles_abbreviations_quotes_ellipses(text, expected):
    assert [text[s:e] for s, e in chunking.sentence_spans(text)] == expected


def test_lines_without_punctuation_are_their_own_sentences():
    text = "Most Popular\nMr. Smith went to Washington. He stayed.\n"
    assert [text[s:e] for s, e in chunking.sentence_spans(text)] == [
        "Most Popular", "Mr. Smith went to Washington.", "He stayed."]


def test_headings_are_not_quoted_as_answers_markdown_ones_included():
    text = ("# Forced repatriation\n\n## Why China sends them back:\n\n"
            "China calls them illegal migrants: it says so often.\n"
            "#MeToo reached Seoul in 2018 and changed the debate there.\n"
            "What happens next?\n")
    doc = corpus.parse_text(text, "t.md")
    kinds = {s.text: s.kind for s in chunking.split_sentences(doc)}
    assert kinds["# Forced repatriation"] == kinds["## Why China sends them back:"] == "heading"
    assert kinds["What happens next?"] == "heading"
    # a sentence that ends with a colon mid-line, and a hashtag that opens a sentence, are text
    assert kinds["China calls them illegal migrants: it says so often."] == "body"
    assert kinds["#MeToo reached Seoul in 2018 and changed the debate there."] == "body"


def test_hard_wrapped_lines_are_joined():
    text = ("Some North Koreans flee as the public food supply is insufficient and they\n"
            "can't always grow enough food. Others stay.")
    spans = chunking.sentence_spans(text)
    assert text[spans[0][0]:spans[0][1]].endswith("enough food.")


def test_long_sentence_is_split_within_limit():
    text = ("word " * 1000).strip()
    spans = chunking.sentence_spans(text, max_chars=200)
    assert all(e - s <= 200 for s, e in spans)
    assert " ".join(text[s:e] for s, e in spans) == text


_PIECES = list("abc XYZ.?!\n\t\"“”…'%0123456789-é\u00a0") + [
    "Mr. ", "U.S. ", "\r\n", "\n\n", "Nov. 4", "word ", "Photo: x", "(photo: y)", "Share article\n",
]
TEXT = st.one_of(
    st.lists(st.sampled_from(_PIECES), max_size=120).map("".join),
    st.text(max_size=300),
)


@settings(max_examples=300, deadline=None)
@given(TEXT)
def test_offsets_are_exact_for_arbitrary_text(raw):
    if not raw.strip():
        return
    text = raw.replace("\r\n", "\n").replace("\r", "\n")
    doc = _doc(text)
    sents = chunking.split_sentences(doc, max_chars=60)
    prev_end = 0
    for s in sents:
        assert doc.text[s.start:s.end] == s.text
        assert s.text.strip() and s.start >= prev_end
        prev_end = s.end
    # no word is lost: every non-space character is inside some sentence
    covered = set()
    for s in sents:
        covered.update(range(s.start, s.end))
    assert all(i in covered for i, ch in enumerate(text) if not ch.isspace())
    chunks = chunking.make_chunks(doc, sents, size=3, overlap=1)
    for c in chunks:
        assert doc.text[c.start:c.end] == c.text
        assert sents[c.first_sentence].start == c.start and sents[c.last_sentence].end == c.end
    in_chunks = {i for c in chunks for i in range(c.first_sentence, c.last_sentence + 1)}
    assert {i for i, s in enumerate(sents) if s.kind != "furniture"} <= in_chunks


@settings(max_examples=100, deadline=None)
@given(st.integers(1, 8), st.integers(0, 7))
def test_chunks_overlap_as_configured(size, overlap):
    if overlap >= size:
        return
    doc = corpus.load_file(CORPUS / "001_3f75c32a2e97a8a6.txt", CORPUS.parent)[0]
    sents = chunking.split_sentences(doc)
    chunks = chunking.make_chunks(doc, sents, size, overlap)
    for a, b in zip(chunks, chunks[1:]):
        assert b.first_sentence == a.last_sentence - overlap + 1
        assert a.last_sentence - a.first_sentence + 1 <= size
