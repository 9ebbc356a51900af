"""Writing files so that a reader, or a run killed half-way, sees the old file or the new one, never half of one."""

from __future__ import annotations

import hashlib
import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def temp_path_beside(path: str | os.PathLike) -> Iterator[Path]:
    """Yield an unused temporary path in ``path``'s folder, removed on leaving whatever happened.

    A plain name (not ``tempfile.mkstemp``) so that a file written there gets the usual umask permissions; it
    starts with ``.NAME.tmp`` so that a clean-up after a killed process finds it.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}-{uuid.uuid4().hex[:8]}")
    try:
        yield tmp
    finally:
        tmp.unlink(missing_ok=True)


@contextmanager
def atomic_path(path: str | os.PathLike, fsync: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside ``path`` to write; on success it replaces ``path``, on failure it is removed.

    Beside, because ``os.replace`` is atomic only within one file system. ``fsync`` flushes the file to disk
    first, for files a crash must not lose (checkpoints).
    """
    with temp_path_beside(path) as tmp:
        yield tmp
        if fsync:
            with open(tmp, "rb") as f:
                os.fsync(f.fileno())
        os.replace(tmp, path)


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` (UTF-8, newlines as given) to ``path`` atomically; returns ``path``."""
    with atomic_path(path) as tmp:
        with open(tmp, "w", encoding="utf-8", newline="") as f:
            f.write(text)
    return Path(path)



def file_sha256(path: str | os.PathLike) -> str:
    """The SHA-256 of a file's bytes, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def walk(folder: str | os.PathLike, unreadable: list[tuple[str, str]] | None = None
         ) -> Iterator[tuple[str, list[str], list[str]]]:
    """``os.walk`` in sorted order that follows links to folders (each real folder once, so a link to a parent
    ends) and appends ``(folder, reason)`` to ``unreadable`` for each folder it cannot list, instead of passing
    over either in silence. Prune ``dirnames`` in place, as with ``os.walk``."""
    def failed(error: OSError) -> None:
        if unreadable is not None:
            unreadable.append((str(error.filename), error.strerror or str(error)))

    seen = set()
    for dirpath, dirnames, filenames in os.walk(folder, onerror=failed, followlinks=True):
        real = os.path.realpath(dirpath)
        if real in seen:
            dirnames.clear()
            continue
        seen.add(real)
        dirnames.sort()
        filenames.sort()
        yield dirpath, dirnames, filenames
