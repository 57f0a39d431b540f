import pytest

from qa.answering import answer_span, question_type
from qa.api import clean_question
from qa.errors import BadQuestion


@pytest.mark.parametrize("q,sentence,expected", [
    ("How many refugees did China repatriate in October 2023?",
     "In October 2023, the TJWG reported that China forcibly repatriated 600 North Korean refugees.", "600"),
    ("What share of the population is malnourished?",
     "A UN report from March 2017 states that 41 % of the population is malnourished.", "41 %"),
    ("When were the defectors arrested in Shenyang?",
     "The defectors were allegedly arrested in Shenyang on Nov. 4.", "Nov. 4"),
    ("Who chairs the North Korean Freedom Coalition?",
     "North Korean Freedom Coalition Chair Suzanne Scholte says torture awaits.", "Suzanne Scholte"),
    ("How many Chinese embassies received appeals?",
     "Activists are delivering appeals at more than a dozen Chinese embassies.", "more than a dozen"),
])
def test_answer_span_marks_the_answer_words(q, sentence, expected):
    span = answer_span(q, sentence)
    assert span is not None
    got = sentence[span[0]:span[1]]
    assert expected in got and len(got) <= len(expected) + 25


def test_no_span_for_why_questions_or_missing_type():
    assert answer_span("Why does China send refugees back?", "China fears collapse.") is None
    assert answer_span("How many were arrested?", "Nobody knows what happened.") is None
    assert question_type("Why is it so?") is None


@pytest.mark.parametrize("bad,msg", [
    ("", "please type a question"), ("   \n\t", "please type a question"),
    ("x" * 20000, "limited to 1,000 characters"), ("?!?", "no words"), (None, "must be text"),
])
def test_bad_questions_get_one_line_reasons(bad, msg):
    with pytest.raises(BadQuestion, match=msg):
        clean_question(bad)


def test_question_is_normalised():
    assert clean_question("  who\x00 won\n the   cup? ") == "who won the cup?"
