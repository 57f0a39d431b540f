"""Warm answer latency as seen through the browser app's API (gradio_client -> /ask).

    .venv/bin/python bench/bench_web.py [--n 50]

Starts the app on 127.0.0.1 (a free port) over the shipped corpus, warms it up, then
times N calls of the `ask` endpoint end to end (HTTP, queue, retrieval, answering, JSON).
"""

from __future__ import annotations

import argparse
import shutil
import socket
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.bench_foundation import QUESTIONS  # noqa: E402
from bench.common import REPO, pct  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=50)
    a = ap.parse_args()
    import uvicorn
    from gradio_client import Client

    from qa import Verbatim
    from qa.web import build_app

    tmp = Path(tempfile.mkdtemp(prefix="vb-web-"))
    try:
        v = Verbatim(REPO / "corpus", tmp / "index", root=REPO)
        v.sync()
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        server = uvicorn.Server(uvicorn.Config(build_app(v), host="127.0.0.1", port=port, log_level="warning"))
        threading.Thread(target=server.run, daemon=True).start()
        while not server.started:
            time.sleep(0.05)
        client = Client(f"http://127.0.0.1:{port}/", verbose=False)
        for q in QUESTIONS:
            client.predict(q, 3, api_name="/ask")
        lat = []
        for i in range(a.n):
            t = time.perf_counter()
            client.predict(QUESTIONS[i % len(QUESTIONS)], 3, api_name="/ask")
            lat.append((time.perf_counter() - t) * 1e3)
        print(f"browser API /ask, warm, shipped corpus, {a.n} questions: "
              f"p50 {pct(lat, 50):.1f} ms, p95 {pct(lat, 95):.1f} ms, max {max(lat):.1f} ms")
        server.should_exit = True
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
