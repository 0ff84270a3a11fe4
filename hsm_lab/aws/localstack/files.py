"""A lab's LocalStack files: where they live, atomic writes, the pid file."""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hsm_lab.aws.localstack.config import LAB_ENV


@dataclass(frozen=True)
class LabPaths:
    root: Path
    dir: Path
    data: Path
    log: Path
    pid: Path
    tls: Path  # 0700: ca.pem (public), server.pem (server key + certificate, 0600)

    @property
    def ca(self) -> Path:
        return self.tls / "ca.pem"

    @property
    def server_pem(self) -> Path:
        return self.tls / "server.pem"


def paths(lab_dir: str | os.PathLike[str]) -> LabPaths:
    root = Path(lab_dir).resolve()
    base = root / "localstack"
    return LabPaths(root, base, base / "data", base / "localstack.log", base / "localstack.pid", base / "tls")


def default_lab() -> Path:
    return Path(os.environ.get(LAB_ENV) or "lab").resolve()


def _atomic_write(path: Path, text: str, mode: int = 0o644) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _read_pid_file(pid_path: Path) -> dict[str, Any] | None:
    try:
        record = json.loads(pid_path.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(record, dict) or not isinstance(record.get("pid"), int):
        return None
    return record
