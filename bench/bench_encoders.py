"""Document encoding throughput: the checked ONNX export against the sentence-transformers model,
on the same texts, in the same process (the export is what `qa index` uses once it exists).

    .venv/bin/python bench/bench_encoders.py [--texts 2000] [--repeats 2]

Texts are the sentences and 4-sentence passages of SQuAD dev paragraphs, as the index embeds them.
Prints texts per second (median of the repeats), the ratio, and the largest vector difference.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.common import squad_paragraphs  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--texts", type=int, default=2000)
    ap.add_argument("--repeats", type=int, default=2)
    a = ap.parse_args()
    import numpy as np

    from qa import chunking
    from qa.config import IndexSettings
    from qa.corpus import parse_text
    from qa.embeddings import OnnxEncoder, ensure_onnx_export, load_encoder

    texts: list[str] = []
    for n, (_, para) in enumerate(squad_paragraphs()):
        doc = parse_text(para, f"p{n}.txt")
        sents, chunks = chunking.segment(doc, IndexSettings())
        texts += [s.text for s in sents] + [c.text for c in chunks]
        if len(texts) >= a.texts:
            break
    texts = texts[: a.texts]
    model = load_encoder("all-MiniLM-L6-v2")
    folder = Path(tempfile.mkdtemp(prefix="vb-onnx-")) / "onnx"
    assert ensure_onnx_export(model, folder), "the ONNX export failed its check"
    onnx = OnnxEncoder(folder)
    rates = {"onnx": [], "torch": []}
    for _ in range(a.repeats):
        for name, enc in (("onnx", onnx), ("torch", model)):
            t = time.perf_counter()
            vecs = enc.encode_documents(texts)
            rates[name].append(len(texts) / (time.perf_counter() - t))
            if name == "onnx":
                ov = vecs
            else:
                diff = float(np.abs(ov - vecs).max())
    o, t = statistics.median(rates["onnx"]), statistics.median(rates["torch"])
    print(f"{len(texts)} texts: ONNX export {o:.1f} texts/s, sentence-transformers {t:.1f} texts/s, "
          f"ratio {o / t:.2f}; largest vector difference {diff:.1e}")


if __name__ == "__main__":
    main()
