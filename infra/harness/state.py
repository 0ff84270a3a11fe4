"""The harness's state file: what a stack created, so a second apply reconciles it."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from infra.harness.common import HarnessError

STATE_FORMAT = "clefs.harness-state/v1"


def load_state(path: Path | None) -> dict[str, Any]:
    """The harness state of a stack (empty when there is none yet)."""
    if path is None or not path.exists():
        return {"format": STATE_FORMAT, "resources": {}}
    try:
        state = json.loads(path.read_text())
    except (OSError, ValueError):
        raise HarnessError(f"{path} is not a harness state file; move it aside and apply again") from None
    if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
        raise HarnessError(f"{path} is not a {STATE_FORMAT} file; move it aside and apply again")
    state.setdefault("resources", {})
    return state


def save_state(path: Path, state: Mapping[str, Any]) -> None:
    """Write the state atomically (temp file + rename): never half-written."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(state, handle, indent=2, sort_keys=True, default=str)
            handle.write("\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
