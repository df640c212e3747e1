"""Atomic file replacement: the one way this project writes a file that others may be reading.

A file is built under a temporary name in the same folder (same file system, so the final
rename is atomic on POSIX), fsynced, renamed over the target, and the folder entry is fsynced:
a crash or an exception never leaves a half-written file under the real name, and a reader that
holds the old file keeps reading the old inode.

- :func:`temporary_path` + :func:`commit`: for writers that keep the file open across many calls
  (:class:`ainerd_core.dataset.DatasetWriter`);
- :func:`atomic_write`: ``with atomic_write(path) as tmp: <write tmp>`` for one-shot writers
  (``torch.save``, HDF5 copies, text).
- :func:`atomic_write_text`.
"""
from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import Iterator

from .errors import InputError


def temporary_path(path) -> Path:
    """A new empty file beside ``path`` (``.<name>.<random>.tmp``), with the permissions of an
    ordinary new file (mkstemp's are 0600)."""
    path = Path(path)
    if not path.parent.exists():
        raise InputError(path, "the output folder does not exist")
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(name, 0o666 & ~umask)
    return Path(name)


def commit(tmp, path) -> None:
    """fsync the finished temporary file and rename it over ``path``; then make the rename
    itself durable (fsync of the folder, where the file system allows it)."""
    with open(tmp, "rb+") as fh:
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    try:
        dfd = os.open(Path(path).parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError:
        pass


@contextlib.contextmanager
def atomic_write(path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on a clean exit it replaces ``path`` (see
    :func:`commit`), on an exception it is removed and ``path`` is untouched."""
    tmp = temporary_path(path)
    try:
        yield tmp
        commit(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_text(path, text: str) -> Path:
    """Replace the text file ``path`` atomically (UTF-8)."""
    with atomic_write(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)
