"""Verbatim in the browser: `python app.py [--host 127.0.0.1] [--port 7860]`.

A thin launcher; the app itself is `qa.web` (the same one `qa serve` and `make run` start).
"""

import argparse
from pathlib import Path

from qa.config import DEFAULT_CORPUS, DEFAULT_INDEX
from qa.web import serve

if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--host", default="127.0.0.1", help="interface to bind (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=7860)
    p.add_argument("--corpus", default=str(DEFAULT_CORPUS))
    p.add_argument("--index", default=str(DEFAULT_INDEX))
    a = p.parse_args()
    serve(Path(a.corpus), Path(a.index), host=a.host, port=a.port)
