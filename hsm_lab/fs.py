"""Files that are either whole or absent, and buffers that are wiped.

Every file the lab writes goes through a temp file in the same directory and
an atomic rename, so an interrupted step never leaves a half-written manifest,
share or transcript head.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def atomic_write_bytes(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Write `data` to `path` atomically (temp file, fsync, rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str, mode: int = 0o644) -> None:
    atomic_write_bytes(path, text.encode("utf-8"), mode)


def wipe(*buffers: bytearray | None) -> None:
    """Overwrite secret buffers with zeros (best effort: Python may hold copies)."""
    for buffer in buffers:
        if buffer is not None:
            buffer[:] = bytes(len(buffer))
