# Verbatim: `make run` starts the app on the shipped corpus; `make test` runs every test.
# Both install into .venv/ first when needed and are safe to repeat.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
SUDO   := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
HOST   ?= 127.0.0.1
PORT   ?= 7860

.PHONY: install run index test browser bench clean

install: $(STAMP)

# torch first, pinned: the CPU build comes from this machine's local wheel;
# installing sentence-transformers first would pull a multi-GB CUDA build.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e '.[test,cluster]'
	touch $(STAMP)

index: install
	$(BIN)/qa index

run: index
	$(BIN)/qa serve --host $(HOST) --port $(PORT)

# Debian's Chromium for the real-browser tests (Playwright drives it; no browser download).
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  echo "installing Debian chromium for the browser tests"; \
	  $(SUDO) apt-get update -qq && $(SUDO) DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; }

test: install browser
	$(BIN)/python -m pytest

bench: install
	$(BIN)/python bench/bench_foundation.py

clean:
	rm -rf $(VENV) embeddings/CURRENT embeddings/gen-* embeddings/.lock
