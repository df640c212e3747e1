"""Exceptions that the CLI turns into one clear line (no traceback unless --debug)."""
from __future__ import annotations

import os


class AinerdError(Exception):
    """Base class of every error that a user can fix (bad input, missing file, bad option)."""


class InputError(AinerdError):
    """A file or an argument is unusable.

    The message always names the file (or option) and the problem, on one line:
    ``"<path>: <problem>"``.
    """

    def __init__(self, path: str | os.PathLike | None, problem: str):
        self.path = None if path is None else os.fspath(path)
        self.problem = " ".join(str(problem).split())  # keep it on one line
        super().__init__(self.problem if self.path is None else f"{self.path}: {self.problem}")
