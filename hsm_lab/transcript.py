"""The ceremony transcript: a hash-chained JSON Lines log with an HSM-signed head.

Each line is one step: seq, time, actor, action, params (never a secret), the
previous entry's hash and its own hash (SHA-256 of the canonical entry without
"hash"). After each append the head (last seq and hash) is signed in the HSM by
the acting token's ceremony key and written to transcript.head.json, so an
edit anywhere in the chain, a truncation or a forged head is detected, and the
first broken entry is named.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec

from hsm_lab import errors
from hsm_lab.encoding import (
    b64url,
    canonical_json,
    jws_signing_input,
    jws_verify,
    key_id,
    sha256_hex,
)
from hsm_lab.fs import atomic_write_text
from hsm_lab.hsm import TokenSession

HEAD_FORMAT = "clefs.transcript-head/v1"
GENESIS = "0" * 64
ENTRY_FIELDS = {"seq", "time", "actor", "action", "params", "prev", "hash"}


def now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def entry_hash(entry: dict[str, Any]) -> str:
    return sha256_hex(canonical_json({k: v for k, v in entry.items() if k != "hash"}))


@dataclass(frozen=True)
class Verified:
    entries: int
    head: str
    signer_token: str
    signer_key_id: str


class Transcript:
    def __init__(self, path: Path, head_path: Path) -> None:
        self.path = path
        self.head_path = head_path

    def entries(self) -> list[dict[str, Any]]:
        if not self.path.exists():
            return []
        result = []
        for number, line in enumerate(self.path.read_text().splitlines(), start=1):
            try:
                entry = json.loads(line)
            except json.JSONDecodeError:
                raise errors.TranscriptError(f"transcript line {number} is not JSON") from None
            if not isinstance(entry, dict):
                raise errors.TranscriptError(f"transcript line {number} is not an object")
            result.append(entry)
        return result

    def append(
        self, session: TokenSession, actor: str, action: str, params: dict[str, Any]
    ) -> dict[str, Any]:
        """Append one entry and re-sign the head. Call inside the HSM session (lab lock held)."""
        existing = self.entries()
        if existing:
            self._check_chain(existing)
        prev = existing[-1]["hash"] if existing else GENESIS
        entry: dict[str, Any] = {
            "seq": len(existing) + 1,
            "time": now(),
            "actor": actor,
            "action": action,
            "params": params,
            "prev": prev,
        }
        entry["hash"] = entry_hash(entry)
        line = canonical_json(entry) + b"\n"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "ab") as handle:
            handle.write(line)
            handle.flush()
            os.fsync(handle.fileno())
        self._sign_head(session, entry)
        return entry

    def _sign_head(self, session: TokenSession, entry: dict[str, Any]) -> None:
        public = session.signing_public_key()
        head = {
            "format": HEAD_FORMAT,
            "seq": entry["seq"],
            "hash": entry["hash"],
            "token": session.token_label,
            "key_id": key_id(public),
        }
        protected = {"alg": "ES256", "kid": key_id(public), "typ": HEAD_FORMAT}
        header, signing_input = jws_signing_input(protected, canonical_json(head))
        signature = {"protected": header, "signature": b64url(session.sign(signing_input))}
        atomic_write_text(self.head_path, json.dumps({"head": head, "signature": signature}, indent=2) + "\n")

    def _check_chain(self, entries: list[dict[str, Any]]) -> None:
        prev = GENESIS
        for position, entry in enumerate(entries, start=1):
            where = f"transcript entry {position}"
            if set(entry) != ENTRY_FIELDS:
                raise errors.TranscriptError(f"{where}: fields are not {sorted(ENTRY_FIELDS)}")
            if entry["seq"] != position:
                raise errors.TranscriptError(f"{where}: seq is {entry['seq']}, expected {position}")
            if entry["prev"] != prev:
                raise errors.TranscriptError(
                    f"{where} ({entry['action']}): does not chain to entry {position - 1}"
                )
            if entry["hash"] != entry_hash(entry):
                raise errors.TranscriptError(
                    f"{where} ({entry['action']}): its hash does not match its content (edited)"
                )
            prev = entry["hash"]

    def read_head(self) -> tuple[dict[str, Any], dict[str, Any]]:
        try:
            doc = json.loads(self.head_path.read_text())
            return doc["head"], doc["signature"]
        except FileNotFoundError:
            raise errors.TranscriptError(f"no signed head at {self.head_path}") from None
        except (json.JSONDecodeError, KeyError, TypeError):
            raise errors.TranscriptError(f"{self.head_path} is malformed") from None

    def verify(self, public_key_for: Any) -> Verified:
        """Check the chain, then the head's HSM signature.

        `public_key_for(token_label)` returns the signing key read from that
        token through PKCS#11: the HSM, not a file, is the trust anchor.
        """
        entries = self.entries()
        if not entries:
            raise errors.TranscriptError(f"transcript {self.path} is empty")
        self._check_chain(entries)
        head, signature = self.read_head()
        last = entries[-1]
        if head.get("seq") != last["seq"] or head.get("hash") != last["hash"]:
            raise errors.TranscriptError(
                f"signed head is at entry {head.get('seq')}, the chain ends at entry "
                f"{last['seq']}: entries were added or removed after signing"
            )
        token = head.get("token")
        public: ec.EllipticCurvePublicKey = public_key_for(token)
        if key_id(public) != head.get("key_id"):
            raise errors.TranscriptError(
                f"signed head names key {head.get('key_id')}, token {token!r} holds {key_id(public)}"
            )
        try:
            jws_verify(public, signature, canonical_json(head))
        except ValueError:
            raise errors.TranscriptError(
                "the head signature does not verify against the HSM's ceremony key"
            ) from None
        return Verified(len(entries), last["hash"], str(token), key_id(public))
