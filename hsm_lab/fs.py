"""Files that are either whole or absent, and buffers that are wiped.

Every file the lab writes goes through a temp file in the same directory and
an atomic rename, so an interrupted step never leaves a half-written manifest,
share or transcript head.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

FILE_MODE = 0o600  # every file the lab writes: owner only
DIR_MODE = 0o700


LAB_MARKERS = ("softhsm2.conf", "tokens", "transcript.jsonl", "anchor.json", "ceremonies")


def private_dir(path: Path) -> Path:
    """Create `path` (and parents) owner-only; tighten an existing one that is ours.

    Tightened only when it is empty or holds lab files, is owned by us and has no
    sticky bit: a lab pointed at /tmp or a home directory must not change it.
    """
    path.mkdir(parents=True, exist_ok=True, mode=DIR_MODE)
    info = path.stat()
    ours = info.st_uid == os.getuid() and not info.st_mode & 0o1000
    looks_like_lab = not any(path.iterdir()) or any((path / m).exists() for m in LAB_MARKERS)
    if info.st_mode & 0o077 and ours and looks_like_lab:
        os.chmod(path, DIR_MODE)
    return path


def fsync_dir(path: Path) -> None:
    """Make a rename or a new file in `path` durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write_bytes(path: Path, data: bytes, mode: int = FILE_MODE) -> None:
    """Write `data` to `path` atomically (temp file 0600, fsync, rename, fsync the directory).

    A missing parent is created owner-only; an existing one is left as it is (it may
    be a shared directory the caller chose): the lab's own directories are made
    private by `Lab`.
    """
    path.parent.mkdir(parents=True, exist_ok=True, mode=DIR_MODE)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
        fsync_dir(path.parent)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str, mode: int = FILE_MODE) -> None:
    atomic_write_bytes(path, text.encode("utf-8"), mode)


def wipe(*buffers: bytearray | None) -> None:
    """Overwrite secret buffers with zeros (best effort: Python may hold copies)."""
    for buffer in buffers:
        if buffer is not None:
            buffer[:] = bytes(len(buffer))
