"""The ceremony transcript: a hash-chained JSON Lines log with an HSM-signed head.

Each line is one step: seq, time, actor, action, params (never a secret), the
previous entry's hash and its own hash (SHA-256 of the canonical entry without
"hash"). After each append the head (last seq and hash) is signed in the HSM by
the acting token's ceremony key and written to transcript.head.json.

An append is crash-safe: the new entry and its signed head are first written
to a journal, then (for a committed step) an append-only record is created in
the token, which is the commit point, then the head and the line are written.
`recover_journal` finishes or discards an interrupted append: it rolls forward
only what the token itself vouches for (its record, or its own signature), so
a journal planted by someone else is never completed.

Which signers are trusted, and whether the chain agrees with the token's
records, is the record's business (`hsm_lab.ceremony.record`); this module checks the
chain and one head signature against a key it is given.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec

from hsm_lab import errors
from hsm_lab.ceremony.jose import (
    b64url,
    canonical_json,
    jws_signing_input,
    jws_verify,
    key_id,
    sha256_hex,
)
from hsm_lab.fs import atomic_write_text, fsync_dir
from hsm_lab.hsm import TokenSession

HEAD_FORMAT = "clefs.transcript-head/v1"
JOURNAL_FORMAT = "clefs.append-journal/v1"
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


def check_chain(entries: list[dict[str, Any]]) -> None:
    """Each entry well-formed, numbered, chained and hashed; names the first that is not."""
    prev = GENESIS
    for position, entry in enumerate(entries, start=1):
        where = f"transcript entry {position}"
        if set(entry) != ENTRY_FIELDS:
            raise errors.TranscriptError(f"{where}: fields are not {sorted(ENTRY_FIELDS)}")
        if entry["seq"] != position:
            raise errors.TranscriptError(f"{where}: seq is {entry['seq']}, expected {position}")
        if not isinstance(entry["params"], dict) or not isinstance(entry["action"], str):
            raise errors.TranscriptError(f"{where}: action or params malformed")
        if entry["prev"] != prev:
            raise errors.TranscriptError(
                f"{where} ({entry['action']}): does not chain to entry {position - 1}"
            )
        if entry["hash"] != entry_hash(entry):
            raise errors.TranscriptError(
                f"{where} ({entry['action']}): its hash does not match its content (edited)"
            )
        prev = entry["hash"]


def parse_lines(text: str) -> list[dict[str, Any]]:
    result = []
    for number, line in enumerate(text.splitlines(), start=1):
        try:
            entry = json.loads(line)
        except json.JSONDecodeError:
            raise errors.TranscriptError(f"transcript line {number} is not JSON (edited or torn)") from None
        if not isinstance(entry, dict):
            raise errors.TranscriptError(f"transcript line {number} is not an object")
        result.append(entry)
    return result


class Transcript:
    def __init__(self, path: Path, head_path: Path, journal_path: Path | None = None) -> None:
        self.path = path
        self.head_path = head_path
        self.journal_path = journal_path or path.with_name(".append-journal.json")

    def entries(self) -> list[dict[str, Any]]:
        if not self.path.exists():
            return []
        try:
            text = self.path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            raise errors.TranscriptError(f"transcript {self.path} is not UTF-8 (edited)") from None
        return parse_lines(text)

    def read_head(self) -> tuple[dict[str, Any], dict[str, Any]]:
        try:
            doc = json.loads(self.head_path.read_text())
            head, signature = doc["head"], doc["signature"]
        except FileNotFoundError:
            raise errors.TranscriptError(f"no signed head at {self.head_path}") from None
        except (json.JSONDecodeError, KeyError, TypeError, UnicodeDecodeError):
            raise errors.TranscriptError(f"{self.head_path} is malformed") from None
        if not isinstance(head, dict) or not isinstance(signature, dict):
            raise errors.TranscriptError(f"{self.head_path} is malformed")
        return head, signature

    def verify_head(
        self, entries: list[dict[str, Any]], key_for: dict[str, ec.EllipticCurvePublicKey]
    ) -> Verified:
        """The head names the last entry and is signed by one of `key_for` (key id -> key)."""
        if not entries:
            raise errors.TranscriptError(f"transcript {self.path} is empty")
        head, signature = self.read_head()
        last = entries[-1]
        if head.get("seq") != last["seq"] or head.get("hash") != last["hash"]:
            raise errors.TranscriptError(
                f"signed head is at entry {head.get('seq')}, the chain ends at entry "
                f"{last['seq']}: entries were added or removed after signing"
            )
        public = key_for.get(str(head.get("key_id")))
        if public is None:
            known = ", ".join(sorted(key_for)) or "none"
            raise errors.TranscriptError(
                f"the head is signed by key {head.get('key_id')} (token {head.get('token')!r}), which is not "
                f"an authorised signer of this lab (authorised: {known}); do not trust this transcript"
            )
        verify_head_signature(public, head, signature)
        return Verified(len(entries), last["hash"], str(head.get("token")), key_id(public))

    # -- appending ---------------------------------------------------------------

    def build(
        self, entries: list[dict[str, Any]], actor: str, action: str, params: dict[str, Any]
    ) -> dict[str, Any]:
        entry: dict[str, Any] = {
            "seq": len(entries) + 1,
            "time": now(),
            "actor": actor,
            "action": action,
            "params": params,
            "prev": entries[-1]["hash"] if entries else GENESIS,
        }
        entry["hash"] = entry_hash(entry)
        return entry

    def append(
        self,
        session: TokenSession,
        entry: dict[str, Any],
        record: tuple[str, bytes] | None = None,
    ) -> None:
        """Journal, then (commit) the token record, then head and line. Lab lock held."""
        head_doc = sign_head(session, entry)
        journal = {"format": JOURNAL_FORMAT, "token": session.token_label, "entry": entry, "head": head_doc}
        atomic_write_text(self.journal_path, json.dumps(journal) + "\n")
        _fault(f"append:{entry['action']}:journaled")
        if record is not None:
            session.write_record(*record)
        _fault(f"append:{entry['action']}:recorded")
        self._finish(entry, head_doc)

    def _finish(self, entry: dict[str, Any], head_doc: dict[str, Any]) -> None:
        atomic_write_text(self.head_path, json.dumps(head_doc, indent=2) + "\n")
        line = canonical_json(entry) + b"\n"
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        with os.fdopen(fd, "ab") as handle:
            handle.write(line)
            handle.flush()
            os.fsync(handle.fileno())
        fsync_dir(self.path.parent)
        self.journal_path.unlink(missing_ok=True)

    def recover_journal(
        self, session: TokenSession, recorded: set[str], needs_record: Callable[[str], bool]
    ) -> str | None:
        """Finish or discard an interrupted append; returns what was done, or None.

        Rolled forward only when the token vouches for the entry: it holds the
        record of it (`has_record`), or the journal's head is signed by this
        token's own key over exactly that entry. Anything else is discarded.
        """
        if not self.journal_path.exists():
            return None
        try:
            journal = json.loads(self.journal_path.read_text())
            entry, head_doc = journal["entry"], journal["head"]
            token = journal["token"]
        except (json.JSONDecodeError, KeyError, TypeError, UnicodeDecodeError):
            self.journal_path.unlink(missing_ok=True)
            return "discarded a malformed append journal"
        if token != session.token_label:
            return None  # that token's next command decides
        entries = self.entries_tolerating_torn_tail(entry)
        if entries and entries[-1].get("hash") == entry.get("hash"):
            self.journal_path.unlink(missing_ok=True)
            return None  # the line made it; the head may lag: rewrite it below
        vouched = entry.get("hash") in recorded
        if not vouched and not needs_record(str(entry.get("action"))):
            try:
                public = session.signing_public_key()
                vouched = key_id(public) == head_doc["head"].get("key_id") and head_doc["head"].get(
                    "hash"
                ) == entry_hash(entry)
                verify_head_signature(public, head_doc["head"], head_doc["signature"])
            except (errors.TranscriptError, KeyError, TypeError, AttributeError):
                vouched = False
        expected_seq = len(entries) + 1
        prev = entries[-1]["hash"] if entries else GENESIS
        fits = (
            entry.get("seq") == expected_seq
            and entry.get("prev") == prev
            and entry.get("hash") == entry_hash(entry)
        )
        if vouched and fits:
            self._finish(entry, head_doc)
            return f"completed the interrupted append of entry {entry['seq']} ({entry['action']})"
        self.journal_path.unlink(missing_ok=True)
        return f"discarded an uncommitted append ({entry.get('action')}) left by an interrupted command"

    def entries_tolerating_torn_tail(self, pending: dict[str, Any]) -> list[dict[str, Any]]:
        """Entries, after cutting a torn last line that is a prefix of the pending one."""
        if not self.path.exists():
            return []
        data = self.path.read_bytes()
        if data and not data.endswith(b"\n"):
            cut = data.rfind(b"\n") + 1
            torn = data[cut:]
            if (canonical_json(pending) + b"\n").startswith(torn):
                with open(self.path, "r+b") as handle:
                    handle.truncate(cut)
                    os.fsync(handle.fileno())
        return self.entries()


def sign_head(session: TokenSession, entry: dict[str, Any]) -> dict[str, Any]:
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
    return {"head": head, "signature": signature}


def verify_head_signature(
    public: ec.EllipticCurvePublicKey, head: dict[str, Any], signature: dict[str, Any]
) -> None:
    try:
        jws_verify(public, signature, canonical_json(head))
    except (ValueError, TypeError):
        raise errors.TranscriptError(
            "the head signature does not verify against the pinned ceremony key"
        ) from None


def _fault(point: str) -> None:
    from hsm_lab.faults import fault

    fault(point)
