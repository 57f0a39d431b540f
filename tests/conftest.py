"""Shared fixtures. Unit tests use the hashing encoder; end-to-end tests the real model."""

from __future__ import annotations

import ipaddress
import os
import shutil
import socket
from pathlib import Path

import pytest

from qa.config import SQUAD_DIR

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

REPO = Path(__file__).resolve().parent.parent
CORPUS = REPO / "corpus"
SEED = REPO.parent / "shared" / "seed-articles"
SQUAD = SQUAD_DIR

_real_connect = socket.socket.connect


def _loopback_only(self, address):
    """Tests talk only to loopback: any other destination is refused."""
    if isinstance(address, tuple) and self.family in (socket.AF_INET, socket.AF_INET6):
        host = address[0]
        try:
            ok = ipaddress.ip_address(host).is_loopback
        except ValueError:
            ok = host in ("localhost",)
        if not ok:
            raise ConnectionRefusedError(f"test tried to reach {host}: only loopback is allowed")
    return _real_connect(self, address)


socket.socket.connect = _loopback_only


@pytest.fixture()
def corpus_copy(tmp_path: Path) -> Path:
    """A private copy of the shipped corpus (articles and sidecars)."""
    dst = tmp_path / "corpus"
    shutil.copytree(CORPUS, dst)
    return dst


@pytest.fixture()
def hashing_service(corpus_copy: Path, tmp_path: Path):
    from qa import Verbatim
    from qa.config import IndexSettings

    return Verbatim(corpus_copy, tmp_path / "index", settings=IndexSettings(model="hashing-256"),
                    root=tmp_path)


@pytest.fixture(scope="session")
def real_service(tmp_path_factory):
    """The real model over the shipped corpus, index built once per test session."""
    from qa import Verbatim

    v = Verbatim(CORPUS, tmp_path_factory.mktemp("real") / "index", root=REPO)
    v.sync()
    return v
