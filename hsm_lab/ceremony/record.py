"""The lab's ceremony record, and the one signer it trusts.

Every command that reads or appends checks three things together before it acts:

- the pinned signer (the anchor): the first token's ceremony signing key, fixed
  by `init`, kept in `<lab>/anchor.json` *and* in every token of the lab as a
  data object nobody can change or destroy. A witness reads its fingerprint
  aloud as words; an auditor may pin it out of band (`--expect-signer`).
- the transcript and the manifests: a hash chain whose head, and every manifest,
  must be signed by an authorised signer: the anchor, or a token key that a
  quorum authorised when it imported L0 (see `hsm_lab.authority`).
- the token's heads: one append-only record per committed step (seq, entry
  hash, ceremony id, manifest hash). The chain must agree with every one, so an
  edited, truncated or rolled-back record is caught by the token, not the files.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from mnemonic import Mnemonic

from hsm_lab import errors, txn
from hsm_lab.ceremony import authority
from hsm_lab.ceremony.jose import b64, b64_decode, canonical_json, key_id, public_key_der, sha256_hex
from hsm_lab.ceremony.manifest import CEREMONY_ID, SignedManifest, load_manifest
from hsm_lab.ceremony.transcripts import Transcript, Verified, check_chain
from hsm_lab.fs import atomic_write_text
from hsm_lab.hsm import SIGNING_LABEL, TokenSession
from hsm_lab.lab import Lab

ANCHOR_FORMAT = "clefs.anchor/v1"
ANCHOR_LABEL = "clefs-anchor"
HEAD_PREFIX = "clefs-head/"
HEAD_RECORD_FORMAT = "clefs.head-record/v1"
EXPECT_SIGNER_ENV = "CLEFS_EXPECT_SIGNER"
# Entries that change the HSM, the share set or KMS: each gets a record in the token.
COMMITTED_ACTIONS = frozenset(
    {"init", "generate", "import", "rekey", "byok.import", "byok.revoke", "recover", "import.aborted"}
)
WORD_COUNT = 8  # 88 bits of the fingerprint, read aloud by a witness


def fingerprint(public: ec.EllipticCurvePublicKey) -> str:
    """SHA-256 of the SubjectPublicKeyInfo, 64 hex digits."""
    return sha256_hex(public_key_der(public))


def fingerprint_words(value: str, count: int = WORD_COUNT) -> str:
    """The fingerprint's first 11*count bits as BIP-39 English words, for reading aloud."""
    words = Mnemonic("english").wordlist
    bits = int(value, 16) >> (len(value) * 4 - 11 * count)
    return " ".join(words[(bits >> (11 * (count - 1 - i))) & 0x7FF] for i in range(count))


def grouped(value: str) -> str:
    return " ".join(value[i : i + 4] for i in range(0, len(value), 4))


def parse_expected_signer(text: str | None) -> str | None:
    """A fingerprint given by a person: hex, any case, spaces or colons allowed, >= 16 digits."""
    if text is None or not text.strip():
        return None
    value = re.sub(r"[\s:]", "", text).lower()
    if not re.fullmatch(r"[0-9a-f]{16,64}", value):
        raise errors.InputError(
            "--expect-signer takes the signer's fingerprint as 16 to 64 hex digits (as `init` printed it)"
        )
    return value


def expected_signer(flag: str | None) -> str | None:
    return parse_expected_signer(flag if flag is not None else os.environ.get(EXPECT_SIGNER_ENV))


# -- the anchor -------------------------------------------------------------------


@dataclass(frozen=True)
class Anchor:
    fingerprint: str
    public_key: ec.EllipticCurvePublicKey
    token: str

    @property
    def key_id(self) -> str:
        return key_id(self.public_key)

    @classmethod
    def of(cls, public: ec.EllipticCurvePublicKey, token: str) -> Anchor:
        return cls(fingerprint(public), public, token)

    def to_doc(self) -> dict[str, Any]:
        return {
            "format": ANCHOR_FORMAT,
            "fingerprint": self.fingerprint,
            "token": self.token,
            "public_key": b64(public_key_der(self.public_key)),
        }

    def pem(self) -> str:
        return self.public_key.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        ).decode("ascii")


def anchor_from_doc(doc: object, source: str) -> Anchor:
    try:
        assert isinstance(doc, dict) and doc["format"] == ANCHOR_FORMAT
        public = serialization.load_der_public_key(b64_decode(doc["public_key"]))
        assert isinstance(public, ec.EllipticCurvePublicKey)
        anchor = Anchor.of(public, str(doc["token"]))
    except (AssertionError, KeyError, TypeError, ValueError):
        raise errors.TranscriptError(f"{source} is not a Clefs signer anchor (edited?)") from None
    if anchor.fingerprint != doc["fingerprint"]:
        raise errors.TranscriptError(f"{source}: the fingerprint does not match its public key (edited)")
    return anchor


def anchor_path(lab: Lab) -> Path:
    return lab.root / "anchor.json"


def load_anchor(path: Path) -> Anchor | None:
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    try:
        doc = json.loads(text)
    except json.JSONDecodeError:
        raise errors.TranscriptError(f"{path} is not JSON (edited?)") from None
    return anchor_from_doc(doc, str(path))


def require_anchor(lab: Lab) -> Anchor:
    anchor = load_anchor(anchor_path(lab))
    if anchor is None:
        raise errors.TranscriptError(
            f"lab {lab.root} has no pinned ceremony signer: run `hsm-lab init` (it pins the first "
            "token's key)"
        )
    return anchor


def save_anchor(lab: Lab, anchor: Anchor) -> None:
    atomic_write_text(anchor_path(lab), json.dumps(anchor.to_doc(), indent=2) + "\n")


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


# -- verification ---------------------------------------------------------------


@dataclass(frozen=True)
class Signer:
    fingerprint: str
    public_key: ec.EllipticCurvePublicKey
    token: str
    how: str  # "pinned at init" or "authorised by the quorum of <ceremony> (entry N)"


@dataclass
class RecordState:
    """What a verified record says: who may sign, which share set is current, what is retired."""

    anchor: Anchor
    entries: list[dict[str, Any]] = field(default_factory=list)
    signers: dict[str, Signer] = field(default_factory=dict)
    manifests: dict[str, SignedManifest] = field(default_factory=dict)
    current: str | None = None
    retired: dict[str, str] = field(default_factory=dict)
    head: Verified | None = None
    token_heads: int | None = None  # None: the token's records were not read
    heads: list[dict[str, Any]] = field(default_factory=list)

    def key_ids(self) -> dict[str, ec.EllipticCurvePublicKey]:
        return {key_id(s.public_key): s.public_key for s in self.signers.values()}

    def manifest(self) -> SignedManifest:
        if self.current is None:
            raise errors.ManifestError("no ceremony in this lab's record: run `hsm-lab generate` first")
        return self.manifests[self.current]

    def explained_keys(self, token: str) -> set[str]:
        """Key labels that committed steps put on `token`."""
        return {
            str(e["params"].get("key_label"))
            for e in self.entries
            if e["action"] in ("generate", "import") and e["params"].get("token") == token
        }


ManifestPath = Callable[[str], Path]


def verify_record(
    transcript: Transcript,
    manifest_path: ManifestPath,
    anchor: Anchor,
    *,
    heads: list[dict[str, Any]] | None = None,
    expect: str | None = None,
) -> RecordState:
    """Chain, manifests, signers, head signature, and (if given) the token's heads."""
    if expect is not None and not anchor.fingerprint.startswith(expect):
        raise errors.TranscriptError(
            f"the record's pinned signer is {anchor.fingerprint[:16]}…, not the expected {expect[:16]}…: "
            "this is not the ceremony you witnessed; do not trust it"
        )
    state = RecordState(anchor)
    state.signers[anchor.fingerprint] = Signer(
        anchor.fingerprint, anchor.public_key, anchor.token, "pinned at init"
    )
    state.entries = transcript.entries()
    check_chain(state.entries)
    for entry in state.entries:
        _apply(state, entry, manifest_path)
    if state.entries:
        state.head = transcript.verify_head(state.entries, state.key_ids())
    if heads is not None:
        check_heads(state.entries, heads)
        state.token_heads = len(heads)
        state.heads = heads
    return state


def _apply(state: RecordState, entry: dict[str, Any], manifest_path: ManifestPath) -> None:
    """Fold one verified-chain entry into the state; refuse what the signers cannot vouch for."""
    action, params, seq = entry["action"], entry["params"], entry["seq"]
    where = f"transcript entry {seq} ({action})"
    if action in ("generate", "rekey"):
        ceremony_id = str(params.get("ceremony_id"))
        if not CEREMONY_ID.match(ceremony_id):
            raise errors.TranscriptError(f"{where}: ceremony id is malformed")
        try:
            manifest = load_manifest(manifest_path(ceremony_id))
        except errors.ManifestError as exc:
            raise errors.TranscriptError(f"{where}: {exc}") from None
        if manifest.digest() != params.get("manifest_sha256"):
            raise errors.TranscriptError(
                f"{where}: manifest of {ceremony_id} is not the one committed (replaced after signing)"
            )
        signer = fingerprint(manifest.signer_key)
        if signer not in state.signers:
            raise errors.TranscriptError(
                f"{where}: manifest of {ceremony_id} is signed by {signer[:16]}…, not by an "
                "authorised signer "
                f"(pinned: {state.anchor.fingerprint[:16]}…)"
            )
        if action == "rekey":
            old = str(params.get("old_ceremony_id"))
            if old != state.current:
                raise errors.TranscriptError(
                    f"{where}: retires {old}, but the current set was {state.current}"
                )
            state.retired[old] = ceremony_id
        state.manifests[ceremony_id] = manifest
        state.current = ceremony_id
    new_signer = params.get("signer_authorised") if action == "import" else None
    if new_signer is not None:
        _authorise(state, new_signer, params, where, seq)


def _authorise(state: RecordState, new: dict[str, Any], params: dict[str, Any], where: str, seq: int) -> None:
    ceremony_id = str(params.get("ceremony_id"))
    manifest = state.manifests.get(ceremony_id)
    if manifest is None or ceremony_id != state.current:
        raise errors.TranscriptError(f"{where}: authorises a signer with ceremony {ceremony_id}, not current")
    try:
        public = serialization.load_der_public_key(b64_decode(new["public_key"]))
        assert isinstance(public, ec.EllipticCurvePublicKey)
        token = str(new["token"])
        jws = new["authorisation"]
    except (KeyError, TypeError, ValueError, AssertionError):
        raise errors.TranscriptError(f"{where}: the signer authorisation is malformed") from None
    value = fingerprint(public)
    authority.check(manifest.quorum_authority_key, jws, value, token, ceremony_id)
    state.signers[value] = Signer(
        value, public, token, f"authorised by the quorum of {ceremony_id} (entry {seq})"
    )


def check_heads(entries: list[dict[str, Any]], heads: list[dict[str, Any]]) -> None:
    """Every committed head the token holds must be in the chain, exactly."""
    for head in heads:
        seq = head["seq"]
        if seq > len(entries) or seq < 1:
            raise errors.TranscriptError(
                f"the token holds committed entry {seq} ({head.get('action')}), but the transcript ends at "
                f"entry {len(entries)}: it was truncated or rolled back"
            )
        entry = entries[seq - 1]
        if entry["hash"] != head["hash"]:
            raise errors.TranscriptError(
                f"transcript entry {seq} ({entry['action']}) is not the entry the token recorded when it was "
                f"committed ({head.get('action')}): the record was rewritten"
            )


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


# -- the record opened on a token ----------------------------------------------------


def lab_transcript(lab: Lab) -> Transcript:
    return Transcript(lab.transcript, lab.transcript_head, lab.root / "pending" / "append-journal.json")


class Record:
    """The lab's record, verified and opened for appending on one logged-in token.

    `open` checks the pin, recovers an interrupted append, verifies everything,
    removes ephemeral leftovers, and rolls interrupted steps forward or back;
    what it did is in `warnings` (one line each) and in the transcript.
    """

    def __init__(self, lab: Lab, session: TokenSession, state: RecordState) -> None:
        self.lab = lab
        self.session = session
        self.state = state
        self.transcript = lab_transcript(lab)
        self.warnings: list[str] = []
        self.own = fingerprint(session.signing_public_key())
        self._size = self._transcript_size()

    @classmethod
    def open(
        cls, lab: Lab, session: TokenSession, *, expect: str | None = None, actor: str = "clefs"
    ) -> Record:
        anchor = require_anchor(lab)
        found = read_token_records(session)
        pinned = token_anchor(session, found)
        if pinned is None:
            raise errors.TranscriptError(
                f"token {session.token_label!r} holds no signer pin: it was not initialised by this lab "
                f"(run `hsm-lab init --token {session.token_label}`)"
            )
        if pinned != anchor.fingerprint:
            raise errors.TranscriptError(
                f"token {session.token_label!r} pins signer {pinned[:16]}…, but {anchor_path(lab)} pins "
                f"{anchor.fingerprint[:16]}…: the lab's pin was replaced; do not trust this lab"
            )
        transcript = lab_transcript(lab)
        heads = found.heads
        recovered = transcript.recover_journal(
            session, {h["hash"] for h in heads}, lambda action: action in COMMITTED_ACTIONS
        )
        state = verify_record(transcript, lab.manifest_path, anchor, heads=heads, expect=expect)
        record = cls(lab, session, state)
        if recovered:
            record.warnings.append(recovered)
        record._sweep(actor)
        record._recover_steps(actor)
        record._check_current()
        return record

    @property
    def authorised(self) -> bool:
        return self.own in self.state.signers

    def require_signer(self) -> None:
        if not self.authorised:
            raise errors.TranscriptError(
                f"token {self.session.token_label!r} (signing key {self.own[:16]}…) is not an authorised "
                f"signer of this lab (pinned: {self.state.anchor.fingerprint[:16]}…): import the master key "
                "into it with a quorum and --authorise-signer first"
            )

    def append(self, actor: str, action: str, params: dict[str, Any]) -> dict[str, Any]:
        """Append one entry signed by this token; committed steps also get a token record."""
        authorising = action == "import" and params.get("signer_authorised") is not None
        if not authorising:
            self.require_signer()
        if self._transcript_size() != self._size:
            raise errors.TranscriptError(
                "the transcript changed on disk while this command ran; run it again"
            )
        entry = self.transcript.build(self.state.entries, actor, action, params)
        record = head_record(entry) if action in COMMITTED_ACTIONS else None
        if authorising:  # check the authorisation before the token signs anything
            probe = RecordState(self.state.anchor, list(self.state.entries), dict(self.state.signers))
            probe.manifests, probe.current = self.state.manifests, self.state.current
            _apply(probe, entry, self.lab.manifest_path)
        self.transcript.append(self.session, entry, record)
        self.state.entries.append(entry)
        _apply(self.state, entry, self.lab.manifest_path)
        self._size = self._transcript_size()
        return entry

    def _transcript_size(self) -> int:
        try:
            return self.lab.transcript.stat().st_size
        except FileNotFoundError:
            return 0

    def _sweep(self, actor: str) -> None:
        removed = self.session.sweep_ephemeral()
        if not removed:
            return
        line = f"removed {len(removed)} leftover object(s) of an interrupted step: {', '.join(removed)}"
        self.warnings.append(line)
        if self.authorised:
            self.append(actor, "recover", {"token": self.session.token_label, "destroyed": removed})

    def _recover_steps(self, actor: str) -> None:
        intents, malformed = txn.pending(self.lab.root)
        for path in malformed:
            path.unlink(missing_ok=True)
            self.warnings.append(f"removed a malformed step intent {path.name}")
        for intent in intents:
            self._recover(intent, actor)

    def _recover(self, intent: txn.Intent, actor: str) -> None:
        committed = any(e["params"].get("txn") == intent.txn for e in self.state.entries)
        if committed:
            if intent.ceremony_id and intent.ceremony_id == self.state.current:
                self.lab.set_current_ceremony(intent.ceremony_id)
            intent.finish()
            self.warnings.append(f"completed the interrupted {intent.step} ({intent.txn}): it had committed")
            return
        if intent.token != self.session.token_label:
            self.warnings.append(
                f"an interrupted {intent.step} on token {intent.token!r} is rolled back by the next "
                "command there"
            )
            return
        explained = self.state.explained_keys(intent.token)
        destroyed = []
        for label in intent.objects:
            # An intent is only a hint (a planted one too): only a secret key that no
            # committed step explains is ever destroyed; never the signing key or a record.
            if label in explained or label == SIGNING_LABEL:
                continue
            for _ in range(self.session.destroy_secret_keys(label)):
                destroyed.append(label)
        removed = None
        if intent.ceremony_id and intent.ceremony_id not in self.state.manifests:
            folder = self.lab.ceremony_dir(intent.ceremony_id)
            if CEREMONY_ID.match(intent.ceremony_id) and folder.is_dir():
                shutil.rmtree(folder)
                removed = intent.ceremony_id
        params = {
            "txn": intent.txn,
            "step": intent.step,
            "token": intent.token,
            "destroyed": destroyed,
            "removed_ceremony": removed,
            "at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        }
        note = ""
        if self.authorised:
            self.append(actor, "recover", params)
        else:
            note = f" (not recorded: token {intent.token!r} is not an authorised signer)"
        intent.finish()
        what = ", ".join(destroyed) or "no HSM object"
        if intent.step == "byok.import":
            note += f"; KMS may already hold the material ({intent.about}): run `byok import` again"
        self.warnings.append(
            f"rolled back the interrupted {intent.step} ({intent.txn}): destroyed {what}{note}"
        )

    def _check_current(self) -> None:
        marker = self.lab.ceremonies / "CURRENT"
        on_disk = marker.read_text().strip() if marker.is_file() else None
        if on_disk != self.state.current:
            raise errors.TranscriptError(
                f"{marker} says {on_disk or 'nothing'}, the verified record says "
                f"{self.state.current or 'none'}: the lab was rolled back or edited; restore it, "
                "or compare with the witnessed record"
            )


def reconcile(state: RecordState, token: str, inventory: list[Any]) -> tuple[list[str], list[str]]:
    """(objects on the token the record does not explain, keys the record puts there that are gone)."""
    explained = state.explained_keys(token)
    unexplained: list[str] = []
    seen: set[str] = set()
    for item in inventory:
        if item.object_class == "data" and (item.label == ANCHOR_LABEL or item.label.startswith(HEAD_PREFIX)):
            continue
        if item.label == SIGNING_LABEL and item.object_class in ("private_key", "public_key"):
            continue
        if item.object_class == "secret_key" and item.label in explained:
            seen.add(item.label)
            continue
        unexplained.append(f"{item.object_class} {item.label!r}")
    missing = sorted(explained - seen)
    return unexplained, missing


def verify_lab(lab: Lab, *, expect: str | None = None) -> RecordState:
    """Verify the files alone (no token records): for reading without a PIN."""
    return verify_record(lab_transcript(lab), lab.manifest_path, require_anchor(lab), expect=expect)
