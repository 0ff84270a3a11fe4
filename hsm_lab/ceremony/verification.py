"""Verifying the record: chain, manifests, who may sign, the signed head, the token's heads.

`verify_record` folds the hash-chained transcript into a `RecordState`: each
manifest must be the one committed and signed by an authorised signer (the
anchor, or a token key a quorum authorised: `hsm_lab.ceremony.authority`), and
every committed head the token holds must be in the chain, exactly.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from hsm_lab import errors
from hsm_lab.ceremony import authority
from hsm_lab.ceremony.anchor import Anchor, fingerprint
from hsm_lab.ceremony.jose import b64_decode, key_id
from hsm_lab.ceremony.manifest import CEREMONY_ID, SignedManifest, load_manifest
from hsm_lab.ceremony.transcripts import Transcript, Verified, check_chain


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
        apply_entry(state, entry, manifest_path)
    if state.entries:
        state.head = transcript.verify_head(state.entries, state.key_ids())
    if heads is not None:
        check_heads(state.entries, heads)
        state.token_heads = len(heads)
        state.heads = heads
    return state


def apply_entry(state: RecordState, entry: dict[str, Any], manifest_path: ManifestPath) -> None:
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
