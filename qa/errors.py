"""Errors a user can see. Each message is one clear sentence."""


class VerbatimError(Exception):
    """Base class: front ends print ``str(err)`` and exit non-zero, no traceback."""


class BadQuestion(VerbatimError):
    pass


class NothingToLookFor(BadQuestion):
    """A question with no word to search for ("Why?", "What did she say?") and no earlier turn
    to lend it one."""


class BadDocument(VerbatimError):
    pass


class IndexMissing(VerbatimError):
    pass


class IndexBusy(VerbatimError):
    pass


class ModelUnavailable(VerbatimError):
    pass


class ModelMismatch(VerbatimError):
    """The index was built with one embedding model and is being asked with another."""
