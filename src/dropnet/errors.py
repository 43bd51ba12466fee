"""Exceptions raised by dropnet for bad input; the CLI turns them into one-line errors."""


class DropnetError(Exception):
    """Base class of every error dropnet raises on purpose."""


class InputError(DropnetError, ValueError):
    """A file, folder or array given to dropnet is missing, malformed or inconsistent."""
