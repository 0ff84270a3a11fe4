"""Step intents: what an interrupted step may have left, so the next command can undo it.

A step that changes the HSM or the lab's ceremonies (generate, import, rekey,
byok import) first writes an intent (fsync + rename) naming the key labels it may
create on which token and the ceremony directory it may add. The step commits
when its transcript entry, carrying the intent's id, is committed (token record).
The next command that opens the record rolls a committed step forward (CURRENT)
and an uncommitted one back (its objects destroyed, its directory removed),
with a transcript entry and a one-line warning. An intent is only a hint: what
it names is destroyed only when the verified record does not explain it.
"""

from __future__ import annotations

import json
import re
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from hsm_lab.fs import atomic_write_text, private_dir

INTENT_FORMAT = "clefs.step-intent/v1"
TXN_ID = re.compile(r"^txn-[0-9a-f]{16}$")


@dataclass(frozen=True)
class Intent:
    txn: str
    step: str
    token: str
    objects: tuple[str, ...]
    ceremony_id: str | None
    path: Path
    about: str = ""

    def finish(self) -> None:
        self.path.unlink(missing_ok=True)


def pending_dir(lab_root: Path) -> Path:
    return lab_root / "pending"


def begin(
    lab_root: Path,
    step: str,
    token: str,
    objects: list[str],
    ceremony_id: str | None = None,
    *,
    about: str = "",
) -> Intent:
    txn = f"txn-{secrets.token_hex(8)}"
    path = private_dir(pending_dir(lab_root)) / f"{txn}.json"
    doc = {
        "format": INTENT_FORMAT,
        "txn": txn,
        "step": step,
        "token": token,
        "objects": objects,
        "ceremony_id": ceremony_id,
        "about": about,
        "began": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    atomic_write_text(path, json.dumps(doc, indent=2) + "\n")
    return Intent(txn, step, token, tuple(objects), ceremony_id, path, about)


def pending(lab_root: Path) -> tuple[list[Intent], list[Path]]:
    """(intents, malformed files) waiting in `<lab>/pending`."""
    folder = pending_dir(lab_root)
    if not folder.is_dir():
        return [], []
    intents: list[Intent] = []
    malformed: list[Path] = []
    for path in sorted(folder.glob("txn-*.json")):
        try:
            doc = json.loads(path.read_text())
            intent = Intent(
                str(doc["txn"]),
                str(doc["step"]),
                str(doc["token"]),
                tuple(str(label) for label in doc["objects"]),
                None if doc["ceremony_id"] is None else str(doc["ceremony_id"]),
                path,
                str(doc.get("about", ""))[:200],
            )
        except (json.JSONDecodeError, KeyError, TypeError, UnicodeDecodeError):
            malformed.append(path)
            continue
        if doc.get("format") != INTENT_FORMAT or not TXN_ID.match(intent.txn) or path.stem != intent.txn:
            malformed.append(path)
            continue
        intents.append(intent)
    return intents, malformed
