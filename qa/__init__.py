"""Verbatim: answers to questions, quoted exactly from your sources."""

from .api import Verbatim, ask, clean_question
from .errors import VerbatimError

__all__ = ["Verbatim", "ask", "clean_question", "VerbatimError"]
__version__ = "0.1.0"
