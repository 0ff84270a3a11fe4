"""The token's own append-only records: its signer pin and one head per committed step.

Data objects created MODIFIABLE=False and DESTROYABLE=False (docs/softhsm.md): the
pin written at `init`, and for each committed step its seq, entry hash, ceremony
id and manifest hash. `hsm_lab.ceremony.verification.check_heads` holds the chain
to them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from hsm_lab import errors
from hsm_lab.ceremony.anchor import ANCHOR_FORMAT, Anchor
from hsm_lab.ceremony.jose import canonical_json
from hsm_lab.hsm import TokenSession

ANCHOR_LABEL = "clefs-anchor"
HEAD_PREFIX = "clefs-head/"
HEAD_RECORD_FORMAT = "clefs.head-record/v1"


@dataclass(frozen=True)
class TokenRecords:
    """What the token's append-only data objects say: its signer pin(s) and committed heads."""

    pins: list[str]
    heads: list[dict[str, Any]]


def read_token_records(session: TokenSession) -> TokenRecords:
    """One scan of the token's records; anything that is not ours, exactly, is refused."""
    pins: list[str] = []
    heads: list[dict[str, Any]] = []
    for value in session.record_values():
        try:
            doc = json.loads(value)
            kind = doc["format"]
            if kind == ANCHOR_FORMAT:
                pins.append(str(doc["fingerprint"]))
                continue
            assert kind == HEAD_RECORD_FORMAT and isinstance(doc["seq"], int) and isinstance(doc["hash"], str)
        except (json.JSONDecodeError, KeyError, TypeError, AssertionError, UnicodeDecodeError):
            raise errors.TranscriptError(
                f"token {session.token_label!r} holds a record that is not Clefs' (planted?): do not use it"
            ) from None
        heads.append(doc)
    heads.sort(key=lambda h: h["seq"])
    return TokenRecords(pins, heads)


def token_anchor(session: TokenSession, records: TokenRecords | None = None) -> str | None:
    """The fingerprint this token pinned at init (a non-destroyable data object)."""
    pins = (records or read_token_records(session)).pins
    if len(pins) > 1:
        raise errors.TranscriptError(
            f"token {session.token_label!r} holds {len(pins)} signer pins: one was added behind the lab's "
            "back; do not use this token"
        )
    return pins[0] if pins else None


def write_token_anchor(session: TokenSession, anchor: Anchor) -> None:
    doc = {"format": ANCHOR_FORMAT, "fingerprint": anchor.fingerprint, "token": anchor.token}
    session.write_record(ANCHOR_LABEL, canonical_json(doc))


def token_heads(session: TokenSession) -> list[dict[str, Any]]:
    """The token's committed heads, oldest first."""
    return read_token_records(session).heads


def head_label(seq: int) -> str:
    return f"{HEAD_PREFIX}{seq:08d}"


def head_record(entry: dict[str, Any]) -> tuple[str, bytes]:
    params = entry["params"]
    doc = {
        "format": HEAD_RECORD_FORMAT,
        "seq": entry["seq"],
        "hash": entry["hash"],
        "action": entry["action"],
        "ceremony_id": params.get("ceremony_id"),
        "manifest_sha256": params.get("manifest_sha256"),
    }
    return head_label(entry["seq"]), canonical_json(doc)
