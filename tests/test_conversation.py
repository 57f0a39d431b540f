"""Follow-up questions: which questions lean on earlier turns, what they are read with, and the
answers a conversation gets (real model), through the API, `qa chat` and `qa eval`."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qa.conversation import MAX_CONTEXT_WORDS, content_words, follow_up_cue, read_with, words
from qa.errors import BadQuestion, NothingToLookFor
from qa.types import Turn
from qa.web import parse_history

from .conftest import CORPUS, REPO

# a first question, and a follow-up that cannot be answered without it
FIRST = "What has China reportedly done to South Korean missionaries?"
SECOND = "What were they doing there?"
SECOND_ANSWER = "trying to help North Koreans defect"


@pytest.mark.parametrize("question,cue", [
    ("What does she say awaits defectors who are sent back?", "pronoun"),
    ("Who heads that group?", "pronoun"),
    ("Can that get them in trouble?", "pronoun"),
    ("When did it sign it?", "pronoun"),
    ("Where do they usually first come across Christianity?", "pronoun"),
    ("And what could possessing a Bible lead to?", "lead"),
    ("What about his?", "lead"),
    ("Despite what risk?", "short"),
    ("Why?", "short"),
    ("Who else used that formulation?", "pronoun"),
])
def test_questions_that_lean_on_earlier_turns_are_recognised(question, cue):
    assert follow_up_cue(question) == cue


@pytest.mark.parametrize("question", [
    "Who chairs the North Korean Freedom Coalition?",
    "What does China say it will do with the defectors?",  # "it": China
    "What happens to defectors when they are sent back?",  # "they": defectors
    "What does Tim Peters say about his work?",  # "his": Tim Peters
    "Why does USCIRF say that China repatriates refugees?",  # "that" opens a clause
    "Which group that reported the arrests is based in Seoul?",  # relative "that"
    "How many North Korean refugees did China forcibly repatriate in October 2023?",
])
def test_questions_that_stand_alone_are_not_follow_ups(question):
    assert follow_up_cue(question) is None


def test_read_with_puts_the_question_first_then_the_earlier_turn_and_its_answer():
    turn = Turn("Who chairs the North Korean Freedom Coalition?", "", "Suzanne Scholte")
    read = read_with("What does she say awaits defectors?", turn)
    assert read == "What does she say awaits defectors? chairs North Korean Freedom Coalition Suzanne Scholte"
    # a chain keeps its topic: the earlier question as it was read comes after its own words
    chained = read_with("And when?", Turn("What does she say awaits defectors?", read, "certain torture"))
    assert chained == ("And when? awaits defectors certain torture chairs North Korean Freedom Coalition "
                       "Suzanne Scholte")
    # a long answer is a clause, not an entity: not carried forward
    assert "torture" not in read_with("Why?", Turn("What awaits them?", "", " ".join(["torture"] * 9)))


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=120), st.text(max_size=200), st.text(max_size=60), st.text(max_size=200))
def test_read_with_keeps_the_question_and_adds_only_new_bounded_words(question, earlier, answer, read_as):
    read = read_with(question, Turn(earlier, read_as, answer))
    assert read.startswith(question)
    extra = read[len(question):].split()
    assert len(extra) <= MAX_CONTEXT_WORDS
    own = {w.lower() for w in words(question)}
    assert not [w for w in extra if w.lower() in own]
    assert len({w.lower() for w in extra}) == len(extra)
    supplied = {w for w in content_words(earlier) + content_words(answer) + content_words(read_as)}
    assert set(extra) <= supplied


def test_history_from_clients_is_checked():
    assert parse_history(None) == () and parse_history("") == ()
    turns = parse_history(["Who is Tim Peters?", {"question": "Where is he based?", "answer": "South Korea"}])
    assert turns == (Turn("Who is Tim Peters?"), Turn("Where is he based?", "", "South Korea"))
    for bad in ("Who is Tim Peters?", [3], [{"answer": "x"}], [{"question": "q", "answer": 5}],
                [{"question": "x" * 5000}]):
        with pytest.raises(BadQuestion):
            parse_history(bad)


# ---------------------------------------------------------------------------- real model


@pytest.mark.slow
def test_a_follow_up_is_answered_with_the_earlier_turn_and_says_so(real_service):
    first = real_service.ask(FIRST)
    assert not first.no_answer and first.follow_up is None
    with pytest.raises(NothingToLookFor):  # alone, it names nothing to look for: told so, no quote
        real_service.ask(SECOND)
    res = real_service.ask(SECOND, history=[first.turn()])
    assert not res.no_answer and SECOND_ANSWER in res.answers[0].text
    assert res.follow_up.earlier == FIRST and res.follow_up.read_as.startswith(SECOND)
    assert res.question == SECOND and res.to_dict()["follow_up"]["earlier_question"] == FIRST
    for q in res.answers + res.closest:  # quotes stay verbatim
        path = REPO / q.source.path
        assert path.read_text(encoding="utf-8")[q.start:q.end] == q.text


@pytest.mark.slow
def test_questions_that_stand_alone_get_the_same_answers_with_or_without_history(real_service):
    """First turns are answered exactly as before; a later question with no cue that is
    answered alone is answered the same inside a conversation."""
    def same(a, b):
        a, b = a.to_dict(), b.to_dict()
        for d in (a, b):
            d.pop("timings_ms")
        return a == b

    first_turns = [json.loads(line)["turns"][0]["question"]
                   for line in (REPO / "eval" / "dialogues-test.jsonl").read_text().splitlines()[:8]]
    earlier = real_service.ask(FIRST).turn()
    in_conversation = 0
    for q in first_turns:
        plain = real_service.ask(q)
        assert same(plain, real_service.ask(q, history=()))
        if not plain.no_answer and follow_up_cue(q) is None:
            assert same(plain, real_service.ask(q, history=[earlier]))
            in_conversation += 1
    assert in_conversation >= 3  # the check above ran, not skipped for every question


@pytest.mark.slow
def test_a_follow_up_read_with_its_earlier_turn_is_held_to_the_follow_up_bar_only(real_service):
    """The follow-up bar (fitted on the tuning dialogues) decides a question read with its
    earlier turn's words; a question that stands alone keeps the standalone bar."""
    from dataclasses import replace

    from qa import Verbatim

    stored = real_service.calibration
    assert stored.follow_up_threshold is not None and stored.follow_up_threshold < stored.threshold
    assert stored.for_follow_up().threshold == stored.follow_up_threshold
    assert stored.for_reader(False).follow_up_threshold is None
    earlier = real_service.ask(FIRST).turn()

    def asked(bar):
        v = Verbatim(real_service.corpus_dir, real_service.index_dir, root=real_service.root,
                     calibration=replace(stored, follow_up_threshold=bar))
        return v.ask(SECOND, history=[earlier]), v.ask(FIRST, history=[earlier]), v.ask(FIRST)

    (high, first_high, plain_high), (low, first_low, plain_low) = asked(1.01), asked(0.0)
    assert high.follow_up is not None and high.no_answer  # no quote reaches a bar above 1
    assert not low.no_answer and SECOND_ANSWER in low.answers[0].text
    assert low.follow_up.read_as == high.follow_up.read_as  # the same reading; only the bar differs
    for a, b in ((first_high, first_low), (plain_high, plain_low)):  # standalone: the bar does not move
        assert a.follow_up is None and [q.text for q in a.answers] == [q.text for q in b.answers]


@pytest.mark.slow
def test_a_follow_up_the_articles_do_not_answer_is_refused(real_service):
    first = real_service.ask("Who is Tim Peters?")
    res = real_service.ask("What's his phone number?", history=[first.turn()])
    assert res.follow_up is not None and res.no_answer


@pytest.mark.slow
def test_qa_chat_reads_one_question_per_line_and_prints_json_per_turn(real_service):
    qa = str(Path(sys.executable).with_name("qa"))
    lines = [FIRST, SECOND, "", "/new", SECOND, "   "]
    proc = subprocess.run([qa, "--corpus", str(CORPUS), "--index", str(real_service.index_dir), "chat", "--json"],
                          input="\n".join(lines) + "\n", capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    out = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [o.get("question") for o in out] == [FIRST, SECOND, None, SECOND]
    first, follow, reset, alone = out
    # the qa ask --json shape, plus the context used
    asked = subprocess.run([qa, "--corpus", str(CORPUS), "--index", str(real_service.index_dir), "ask", "--json",
                            FIRST], capture_output=True, text=True, timeout=300)
    plain = json.loads(asked.stdout)
    assert set(plain) == set(first)
    for d in (plain, first):
        d.pop("timings_ms")
    assert plain == first and first["follow_up"] is None
    assert follow["follow_up"]["earlier_question"] == FIRST and SECOND_ANSWER in follow["answers"][0]["quote"]
    assert reset == {"new_topic": True}
    assert set(alone) == {"question", "error"} and alone["question"] == SECOND  # alone: told it names nothing
    assert "nothing to look for" in alone["error"]
    # a terminal-less chat without --json: the answers as text, the context line included
    proc = subprocess.run([qa, "--corpus", str(CORPUS), "--index", str(real_service.index_dir), "chat"],
                          input=f"{FIRST}\n{SECOND}\n", capture_output=True, text=True, timeout=300)
    assert f"(read with your earlier question: {FIRST})" in proc.stdout
    assert SECOND_ANSWER in proc.stdout.split("(read with your earlier question")[1]


@pytest.mark.slow
def test_qa_eval_on_a_dialogue_set_reports_follow_ups_against_full_questions(real_service, tmp_path, capsys):
    from qa.cli import main

    dialogues = tmp_path / "dialogues.jsonl"
    dialogues.write_text(json.dumps({"id": "t1", "turns": [
        {"question": FIRST, "answers": ["expelled hundreds of South Korean missionaries"], "follow_up": False,
         "full": None},
        {"question": SECOND, "answers": [SECOND_ANSWER], "follow_up": True,
         "full": "What were the South Korean missionaries expelled from China doing there?"},
        {"question": "What's their phone number?", "answers": [], "follow_up": True,
         "full": "What is the phone number of the South Korean missionaries expelled from China?"},
    ]}) + "\n")
    out, report = tmp_path / "m.json", tmp_path / "r.html"
    assert main(["--corpus", str(CORPUS), "--index", str(real_service.index_dir), "eval", str(dialogues),
                 "--json", "--metrics", str(out), "--report", str(report)]) == 0
    printed = json.loads(capsys.readouterr().out)  # --json: the metrics on standard output, no tables
    assert printed == json.loads(out.read_text())
    col = printed["modes"]["hybrid"]
    d = col["dialogues"]
    assert d["first_turn_top1"] == 1.0 and d["follow_up_top1"] == 1.0 and d["follow_up_alone_top1"] == 0.0
    assert d["follow_up_refused"] == 1.0
    assert col["questions"] == 3 and set(col["by_kind"]) >= {"first turn", "follow-up", "follow-up written in full"}
    html = report.read_text()
    assert "Dialogues, turn by turn" in html and "What were they doing there?" in html


def test_words_are_found_in_linear_time_and_a_cue_without_words_to_add_is_not_a_follow_up(hashing_service):
    assert content_words("'" * 4000) == [] and content_words("Kim Jong-un's U.S. visit") == ["Kim", "Jong-un's", "U.S", "visit"]
    hashing_service.sync()
    res = hashing_service.ask("Why China?", history=[Turn("Why?")])  # nothing the earlier turn can add
    assert res.follow_up is None and res.to_dict()["follow_up"] is None
    with pytest.raises(NothingToLookFor):  # and nothing to look for, with it or without it
        hashing_service.ask("Why?", history=[Turn("Why?")])


@pytest.mark.slow
def test_a_long_question_and_its_follow_up_are_read_not_crashed_on(real_service):
    """The reader reads a long question by its first 64 tokens (its tokenizer fails on a
    question that fills the window); a follow-up appends words to it, through any front end."""
    first = real_service.ask("Who chairs the North Korean Freedom Coalition " + "and what about the refugees " * 20)
    res = real_service.ask("What does she say awaits defectors?", history=[first.turn()])
    assert res.follow_up is not None
    huge = Turn("x " + "-".join(["word"] * 600))
    assert real_service.ask("What does she say awaits defectors?", history=[huge]).follow_up is not None
