"""Reader training data: what a stage learns from, and what it must leave unseen for tuning."""

import argparse
import importlib.util
import json
import re
from pathlib import Path

import pytest

from .conftest import SQUAD

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tr():
    spec = importlib.util.spec_from_file_location("train_reader", ROOT / "scripts" / "train_reader.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def small_train(tmp_path_factory):
    """The first three articles of SQuAD v1.1 train (real text, ~150 paragraphs)."""
    data = json.loads((SQUAD / "train-v1.1.json").read_text())
    path = tmp_path_factory.mktemp("squad") / "train-small.json"
    path.write_text(json.dumps({"version": "1.1", "data": data["data"][:3]}))
    return path


@pytest.fixture(scope="module")
def tok(tr):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tr.base_model_path())


def _args(train: Path, **kw):
    base = dict(train=str(train), exclude="", holdout=0, holdout_of="", examples=0, neg_rate=0.5,
                max_len=192, stride=64, seed=3)
    return argparse.Namespace(**{**base, **kw})


def test_a_later_stage_skips_excluded_questions_and_keeps_held_out_paragraphs_unread(
        tr, tok, small_train, tmp_path):
    qs = tr.load_questions(small_train)
    # an earlier stage used the first 40% of the questions
    earlier = [q["id"] for q in qs[: len(qs) * 2 // 5]]
    excl = tmp_path / "used.json"
    excl.write_text(json.dumps(earlier))
    args = _args(small_train, exclude=str(excl), holdout=5)

    avail = [q for q in qs if q["id"] not in set(earlier)]
    held = tr.held_out_paragraphs(qs, avail, 5, args.seed)
    assert len(held) == 5
    for key in held:  # whole paragraphs none of whose questions any stage used
        assert all(q["id"] not in set(earlier) for q in qs if (q["article"], q["paragraph"]) == key)
    assert held == tr.held_out_paragraphs(qs, avail[::-1], 5, args.seed)  # seeded, order-free

    used: list[str] = []
    feats = tr.build_features(args, tok, used)
    assert feats and used
    assert not set(used) & set(earlier)
    held_ids = {q["id"] for q in qs if (q["article"], q["paragraph"]) in held}
    assert not set(used) & held_ids
    # neither as a question's own paragraph nor as a hard negative is held-out text read
    # (compared as the tokenizer's decoded, lower-cased text: a paragraph's opening words)
    held_heads = {tok.decode(tok(ctx)["input_ids"][1:-1])[:60]
                  for ctx in {q["context"] for q in qs if (q["article"], q["paragraph"]) in held}}
    window_texts = [tok.decode([t for t, s in zip(f["input_ids"], f["token_type_ids"]) if s == 1][:-1])
                    for f in feats]
    for head in held_heads:
        assert not any(head in w for w in window_texts)
    # without --holdout the same stage does learn from those paragraphs
    used_all: list[str] = []
    tr.build_features(_args(small_train, exclude=str(excl)), tok, used_all)
    assert set(used_all) & held_ids


def test_holdout_of_keeps_an_earlier_stages_held_out_paragraphs_in_a_later_stage(tr, tok, small_train, tmp_path):
    qs = tr.load_questions(small_train)
    first = tmp_path / "first_used.json"
    first.write_text(json.dumps([q["id"] for q in qs[: len(qs) // 3]]))
    # the second stage holds out 4 paragraphs and learns from some of the rest; its
    # config is all a later stage reads
    stage2 = tmp_path / "stage2"
    stage2.mkdir()
    (stage2 / "config.json").write_text(json.dumps({"exclude": str(first), "holdout": 4, "seed": 5}))
    used2: list[str] = []
    tr.build_features(_args(small_train, exclude=str(first), holdout=4, seed=5, examples=80), tok, used2)
    held = tr.run_held_out(str(stage2), small_train, tok)
    assert len(held) == 4
    held_ids = {q["id"] for q in qs if (q["article"], q["paragraph"]) in held}
    assert held_ids and not held_ids & set(used2)

    # a third stage on every question the first two left: with --holdout-of it leaves the
    # same paragraphs unread, without it it learns from them
    both = tmp_path / "both_used.json"
    both.write_text(json.dumps(json.loads(first.read_text()) + used2))
    kept: list[str] = []
    tr.build_features(_args(small_train, exclude=str(both), holdout_of=str(stage2), seed=9), tok, kept)
    assert kept and not set(kept) & held_ids
    assert {q["id"] for q in qs} - set(kept) - set(json.loads(both.read_text())) == held_ids
    plain: list[str] = []
    tr.build_features(_args(small_train, exclude=str(both), seed=9), tok, plain)
    assert set(plain) >= held_ids


def test_cut_answer_leaves_the_paragraph_verbatim_without_the_answer_sentences(tr, small_train):
    """Every question of three real articles: what is left is the paragraph's own sentences,
    in order, none of them the one the answer is in, and never the answer's words."""
    from qa.chunking import sentence_spans

    qs = tr.load_questions(small_train)
    made = 0
    for q in qs:
        a0, text, ctx = q["answer_start"], q["answer_text"], q["context"]
        cut = tr.cut_answer(ctx, a0, text)
        if cut is None:
            continue
        made += 1
        assert text not in cut and len(cut.split()) >= 8
        kept = [ctx[s:e] for s, e in sentence_spans(ctx) if not (s < a0 + len(text) and a0 < e)]
        assert cut == " ".join(kept)
        answer_sentence = next(ctx[s:e] for s, e in sentence_spans(ctx) if s <= a0 < e)
        assert answer_sentence not in cut
    assert made > len(qs) * 3 // 4  # most paragraphs have sentences besides the answer's


def test_cut_rate_adds_near_miss_no_answer_windows_and_zero_changes_nothing(tr, tok, small_train):
    plain = tr.build_features(_args(small_train, neg_rate=0.0), tok)
    assert plain == tr.build_features(_args(small_train, neg_rate=0.0, cut_rate=0.0), tok)  # earlier runs reproduce
    with_cut = tr.build_features(_args(small_train, neg_rate=0.0, cut_rate=1.0), tok)
    no_answer = lambda feats: sum(f["start"] == 0 for f in feats)  # noqa: E731
    assert len(with_cut) > len(plain) and no_answer(with_cut) > no_answer(plain) + len(plain) // 2
    assert sum(f["start"] > 0 for f in with_cut) == sum(f["start"] > 0 for f in plain)


def test_swap_entity_asks_about_another_thing_of_the_same_kind_the_paragraph_holds(tr, small_train):
    """Every question of three real articles: a swap replaces one name, year, number or month
    of the question that its paragraph holds with another of the same kind from the paragraph,
    never one in the answer or already in the question; the rest of the question is unchanged."""
    import random

    qs = tr.load_questions(small_train)
    rng, made = random.Random(5), 0
    for q in qs:
        question, ctx, answer = q["question"], q["context"], q["answer_text"]
        swapped = tr.swap_entity(question, ctx, answer, rng)
        if swapped is None:
            continue
        made += 1
        # one whole word or name of the question replaced by one of the same kind from the paragraph
        def whole(x):
            return re.compile(rf"(?<![\w.]){re.escape(x)}(?![\w])")

        old = [(k, e) for k, e in tr.typed_spans(question) if e not in answer and whole(e).search(ctx)]
        new = [(k, f) for k, f in tr.typed_spans(ctx, mid_sentence=True) if f not in answer and f not in question]
        assert any(swapped == whole(e).sub(lambda m: f, question, count=1)
                   for k, e in old for kk, f in new if kk == k), (question, swapped)
        assert not re.search(r"\w\.\?$", swapped[-3:]) or re.search(r"\w\.\?$", question[-3:])  # no "Sue.?"
    assert made > len(qs) // 3
    # the kinds stay apart: a year never takes a name's place, a two-word name never a one-word one's
    ctx = "In 1998 Jane Doe met Bob in Paris. In 2004 she wrote 300 letters to Mary Roe in May."
    for seed in range(20):
        assert tr.swap_entity("What did Jane Doe do in 1998?", ctx, "met Bob", random.Random(seed)) in (
            "What did Mary Roe do in 1998?", "What did Jane Doe do in 2004?")
    # a number is replaced where it stands alone, never inside a year; a name never inside a longer word
    ctx = "In 2012 the 12 ships and the 40 boats left Annabel's port for Ann Arbor Bay."
    for seed in range(20):
        out = tr.swap_entity("In 2012, how many of the 12 ships left?", ctx, "the 40 boats", random.Random(seed))
        assert out in (None, "In 2012, how many of the 40 ships left?"), out


def test_used_ids_of_a_second_pass_count_every_earlier_stages_questions(tr, tok, small_train, tmp_path):
    """A stage that starts from earlier weights without --exclude (a second pass over the data)
    has still learned from the earlier stages' questions: tuning must keep away from them too."""
    qs = tr.load_questions(small_train)
    earlier = tmp_path / "stage1"
    earlier.mkdir()
    first = [q["id"] for q in qs[:50]]
    (earlier / "used_question_ids.json").write_text(json.dumps(first))
    stage = tmp_path / "stage2"
    stage.mkdir()
    cfg = dict(examples=40, neg_rate=0.0, max_len=192, stride=64, seed=3, cut_rate=0.5,
               init={"from": str(earlier)})
    (stage / "config.json").write_text(json.dumps(cfg))
    tr.used_ids(argparse.Namespace(ckpt=str(stage), train=str(small_train)))
    used = json.loads((stage / "used_question_ids.json").read_text())
    own: list[str] = []
    tr.build_features(_args(small_train, examples=40, neg_rate=0.0, cut_rate=0.5), tok, own)
    assert used[:50] == first and set(used) == set(first) | set(own) and len(used) == len(set(used))
    assert set(own) - set(first)  # the stage did learn from questions of its own


def test_used_ids_are_recomputed_from_the_shipped_config_chain_after_the_runs_are_gone(
        tr, tok, small_train, tmp_path):
    """Three stages as they are really chained (a first pass; a second that skips the first's
    questions and holds paragraphs out; a third pass over everything, cut-out windows added,
    keeping the second's paragraphs out). The last config alone, which nests the others, gives
    the same ids once the earlier runs' directories are deleted."""
    import shutil

    s1, s2, s3 = (tmp_path / n for n in ("s1", "s2", "s3"))
    for d in (s1, s2, s3):
        d.mkdir()
    common = dict(examples=40, neg_rate=0.3, max_len=192, stride=64)
    cfg1 = {**common, "seed": 3, "cut_rate": 0.0}
    own1: list[str] = []
    tr.build_features(_args(small_train, **cfg1), tok, own1)
    (s1 / "config.json").write_text(json.dumps(cfg1))
    (s1 / "used_question_ids.json").write_text(json.dumps(own1))

    excl = str(s1 / "used_question_ids.json")
    cfg2 = {**common, "seed": 5, "cut_rate": 0.0, "holdout": 4, "exclude": excl,
            "init": {"from": str(s1), "config": cfg1}}
    own2: list[str] = []
    tr.build_features(_args(small_train, **{k: v for k, v in cfg2.items() if k != "init"}), tok, own2)
    (s2 / "config.json").write_text(json.dumps(cfg2))
    (s2 / "used_question_ids.json").write_text(json.dumps(list(dict.fromkeys(own1 + own2))))

    cfg3 = {**common, "seed": 7, "cut_rate": 0.5, "exclude": "", "holdout_of": str(s2),
            "train_sha256": tr.sha256(small_train), "init": {"from": str(s2), "config": cfg2}}
    own3: list[str] = []
    tr.build_features(_args(small_train, **{k: v for k, v in cfg3.items() if k not in ("init", "train_sha256")}),
                      tok, own3)
    held2 = tr.run_held_out(str(s2), small_train, tok)
    held_ids = {q["id"] for q in tr.load_questions(small_train) if (q["article"], q["paragraph"]) in held2}
    expected = list(dict.fromkeys(own1 + own2 + own3))
    assert len(held_ids) >= 4 and not set(expected) & held_ids
    assert set(own3) - set(own1) - set(own2)  # each stage brings questions of its own

    shutil.rmtree(s1)
    shutil.rmtree(s2)
    assert tr.chain_used_ids(cfg3, small_train, tok) == expected
    (s3 / "config.json").write_text(json.dumps(cfg3))
    # a fourth stage started from s3 that keeps its paragraphs out (--holdout-of s3) finds them
    # from s3's config alone, though the s2 it names is gone
    assert tr.run_held_out(str(s3), small_train, tok) == held2
    own4: list[str] = []
    tr.build_features(_args(small_train, examples=40, neg_rate=0.3, seed=9, holdout_of=str(s3)), tok, own4)
    assert own4 and not set(own4) & held_ids
    out = tmp_path / "ids.json"
    tr.used_ids(argparse.Namespace(ckpt=str(s3), train=str(small_train), out=str(out)))
    assert json.loads(out.read_text()) == expected

    other = tmp_path / "other.json"  # a different train file is refused, not silently used
    other.write_text(small_train.read_text().replace("Notre Dame", "Notre-Dame", 1))
    with pytest.raises(SystemExit):
        tr.chain_used_ids(cfg3, other, tok)


def test_a_stage_can_start_from_the_shipped_int8_reader(tr, tok):
    """The shipped ONNX weights, dequantised into the torch model, score real SQuAD dev windows
    as ONNX Runtime does (the small gap is int8 activations), so a new stage needs no
    checkpoint that .cache/ may have lost."""
    import numpy as np
    import onnxruntime as ort
    import torch

    shipped = ROOT / "qa" / "models" / "reader"
    model = tr.make_model(tr.base_model_path())
    tr.load_init(model, shipped)
    model.eval()
    sess = ort.InferenceSession(str(shipped / "reader.int8.onnx"), providers=["CPUExecutionProvider"])
    data = json.loads((SQUAD / "dev-v1.1.json").read_text())["data"]
    agree = total = 0
    corr = []
    for art in data[:3]:
        for para in art["paragraphs"][:3]:
            for qa in para["qas"][:2]:
                f = tr.featurize(tok, qa["question"], para["context"], None, 192, 64)[0]
                ids = torch.tensor([f["input_ids"]])
                tt = torch.tensor([f["token_type_ids"]])
                am = torch.ones_like(ids)
                with torch.no_grad():
                    s, e = model(ids, am, tt)
                so, eo = sess.run(None, {"input_ids": ids.numpy(), "attention_mask": am.numpy(),
                                         "token_type_ids": tt.numpy()})
                agree += int(s.argmax() == so.argmax()) + int(e.argmax() == eo.argmax())
                total += 2
                corr += [np.corrcoef(s.numpy().ravel(), so.ravel())[0, 1],
                         np.corrcoef(e.numpy().ravel(), eo.ravel())[0, 1]]
    assert total == 36 and agree >= 0.8 * total
    assert min(corr) > 0.98

    # the base model alone (nothing loaded) does not: the test can tell weights apart
    torch.manual_seed(0)
    base = tr.make_model(tr.base_model_path()).eval()
    with torch.no_grad():
        s0, _ = base(ids, am, tt)
    assert np.corrcoef(s0.numpy().ravel(), so.ravel())[0, 1] < 0.9


def test_a_path_that_named_several_stages_is_read_as_each_stage_found_it(tr, tok, small_train, tmp_path):
    """Stages started with --init D --holdout-of D, each exported back to D (as every stage from
    qa/models/reader is): D names a different run for each of them. A stage that added paragraphs
    of its own to the held-out set must pass them on to the next, though all are called D."""
    d = str(tmp_path / "shipped")
    cfg_a = {"seed": 3, "holdout": 3}
    cfg_b = {"seed": 5, "holdout": 2, "holdout_of": d, "init": {"from": d, "config": cfg_a}}
    cfg_c = {"seed": 7, "holdout_of": d, "init": {"from": d, "config": cfg_b}}
    held_a = tr._Chain(cfg_a, small_train, tok).held(cfg_a)
    held_b = tr._Chain(cfg_b, small_train, tok).held(cfg_b)
    assert len(held_a) == 3 and held_a < held_b  # b kept a's paragraphs out and added its own
    Path(d).mkdir()
    Path(d, "config.json").write_text(json.dumps(cfg_c))  # D as shipped after the third stage
    assert tr.run_held_out(d, small_train, tok) == held_b
