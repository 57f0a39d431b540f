"""Verbatim in the browser: `python app.py [--host 127.0.0.1] [--port 7860] [--corpus DIR] [--index DIR]`.

A thin launcher: the same `qa serve` that `make run` starts (the same checks, messages and app).
"""

import sys

from qa.cli import main

if __name__ == "__main__":
    sys.exit(main(["serve", *sys.argv[1:]]))
