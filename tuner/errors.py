"""The one exception base. Every error the tuner raises on purpose derives from ``TunerError``, so that a library
user can catch "any tuner error" in one clause, and the CLI turns each into one line and exit status 2.

Errors that are also a ``ValueError`` (bad input read from a file) keep that base too, because pydantic turns a
``ValueError`` raised in a validator into a located validation error.

``Cancelled`` is here as well, though it is no error: every layer that waits (for a GPU, a server, a replayed
trial) raises it when the tuner is stopping.
"""

from __future__ import annotations


class TunerError(Exception):
    """An error the tuner raises on purpose; its message is written for the user."""


class SetupError(TunerError):
    """A problem with the user's input or machine, reported as one line; nothing to do with a trial."""


class Cancelled(Exception):  # control flow like KeyboardInterrupt, not an error: no TunerError
    """The tuner is stopping (Ctrl-C, SIGTERM): the trial ends as interrupted."""
