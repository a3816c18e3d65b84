"""User-facing errors. Library code raises these; only the CLI and REPL print them."""

from __future__ import annotations


class SteerError(Exception):
    """Base of every error steerlang reports to a user (CLI exit code 1, no traceback)."""


class InputError(SteerError):
    """A bad argument, file or value given by the user."""


class ModelLoadError(SteerError):
    """A model folder or hub id that cannot be loaded."""


class DictionaryError(SteerError):
    """A dictionary (SAE) file that is missing, corrupt or does not fit the model."""


class SteerWarning(UserWarning):
    """A program runs, but not entirely as written (e.g. a model re-adds vision features after the
    layer an image edit is made at)."""
