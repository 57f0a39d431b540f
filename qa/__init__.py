"""Verbatim: answers to questions, quoted exactly from your sources."""

from .api import Verbatim, clean_question
from .errors import VerbatimError

__all__ = ["Verbatim", "clean_question", "VerbatimError"]
__version__ = "0.1.0"
