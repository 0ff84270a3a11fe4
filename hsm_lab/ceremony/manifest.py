"""The ceremony manifest: the public, signed description of one share set.

It says which ceremony, K of N, who the custodians are and how their shares
are sealed, one commitment per share, the master key's KCV, and which share
sets it retires, and the public half of the quorum authority key (derived from
L0; see `hsm_lab.ceremony.authority`). It is signed in the HSM by the ceremony signing
key (ES256, detached JWS over the canonical JSON); the public key travels
inside, and whether that key may sign is decided by the record
(`hsm_lab.ceremony.record`): only the pinned signer or a quorum-authorised one.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from hsm_lab import errors
from hsm_lab.ceremony.jose import (
    b64,
    b64_decode,
    b64url,
    canonical_json,
    jws_signing_input,
    jws_verify,
    key_id,
    public_key_der,
    sha256_hex,
)
from hsm_lab.fs import atomic_write_text
from hsm_lab.hsm import TokenSession

MANIFEST_FORMAT = "clefs.manifest/v2"
CEREMONY_ID = re.compile(r"^cer-[0-9]{8}T[0-9]{6}Z-[0-9a-f]{8}$")
REQUIRED_FIELDS = {
    "format",
    "ceremony_id",
    "created",
    "key_label",
    "kcv",
    "kcv_method",
    "threshold",
    "shares",
    "scheme",
    "share_format",
    "share_encryption",
    "custodians",
    "signer",
    "retires",
    "weakened",
    "quorum_authority",
}


@dataclass(frozen=True)
class SignedManifest:
    body: dict[str, Any]
    signature: dict[str, Any]

    @property
    def ceremony_id(self) -> str:
        return str(self.body["ceremony_id"])

    @property
    def threshold(self) -> int:
        return int(self.body["threshold"])

    @property
    def share_count(self) -> int:
        return int(self.body["shares"])

    @property
    def kcv(self) -> str:
        return str(self.body["kcv"])

    @property
    def key_label(self) -> str:
        return str(self.body["key_label"])

    @property
    def custodians(self) -> dict[str, dict[str, Any]]:
        return {c["name"]: c for c in self.body["custodians"]}

    @property
    def retired_ids(self) -> set[str]:
        return {r["ceremony_id"] for r in self.body["retires"]}

    @property
    def signer_key(self) -> ec.EllipticCurvePublicKey:
        key = serialization.load_der_public_key(b64_decode(self.body["signer"]["public_key"]))
        if not isinstance(key, ec.EllipticCurvePublicKey):
            raise errors.ManifestError("manifest signer key is not an EC key")
        return key

    @property
    def signer_fingerprint(self) -> str:
        return sha256_hex(public_key_der(self.signer_key))

    @property
    def quorum_authority_key(self) -> ec.EllipticCurvePublicKey:
        from hsm_lab.ceremony.authority import public_key

        return public_key(self.body["quorum_authority"])

    def to_json(self) -> str:
        return json.dumps({"manifest": self.body, "signature": self.signature}, indent=2) + "\n"

    def digest(self) -> str:
        """SHA-256 of the canonical body: how later manifests refer to this one."""
        return sha256_hex(canonical_json(self.body))

    def write(self, path: Path) -> None:
        atomic_write_text(path, self.to_json())


def sign_manifest(body: dict[str, Any], session: TokenSession) -> SignedManifest:
    """Sign `body` with the token's ceremony key; the key is recorded in the body."""
    public = session.signing_public_key()
    body = dict(body)
    body["signer"] = {
        "token": session.token_label,
        "key_id": key_id(public),
        "public_key": b64(public_key_der(public)),
        "algorithm": "ES256",
    }
    _check_body(body)
    protected = {"alg": "ES256", "kid": key_id(public), "typ": MANIFEST_FORMAT}
    header, signing_input = jws_signing_input(protected, canonical_json(body))

    return SignedManifest(body, {"protected": header, "signature": b64url(session.sign(signing_input))})


def parse_manifest(
    text: str, source: str = "manifest", expected_key: ec.EllipticCurvePublicKey | None = None
) -> SignedManifest:
    """Parse and verify; any defect, including a failed signature, is ManifestError."""
    try:
        doc = json.loads(text)
    except json.JSONDecodeError:
        raise errors.ManifestError(f"{source}: not JSON") from None
    if not isinstance(doc, dict) or set(doc) != {"manifest", "signature"}:
        raise errors.ManifestError(f"{source}: expected {{manifest, signature}} at the top level")
    body, signature = doc["manifest"], doc["signature"]
    if not isinstance(body, dict) or not isinstance(signature, dict):
        raise errors.ManifestError(f"{source}: manifest and signature must be objects")
    try:
        _check_body(body)
    except errors.ManifestError as exc:
        raise errors.ManifestError(f"{source}: {exc}") from None
    manifest = SignedManifest(body, signature)
    try:
        signer = manifest.signer_key
    except (ValueError, TypeError):
        raise errors.ManifestError(f"{source}: the signer public key is malformed") from None
    if key_id(signer) != body["signer"]["key_id"]:
        raise errors.ManifestError(f"{source}: the signer key id does not match its key")
    if expected_key is not None and key_id(expected_key) != key_id(signer):
        raise errors.ManifestError(
            f"{source}: signed by key {key_id(signer)}, but the HSM's ceremony key is "
            f"{key_id(expected_key)}; do not trust this manifest"
        )
    try:
        jws_verify(signer, signature, canonical_json(body))
    except ValueError:
        raise errors.ManifestError(
            f"{source}: the signature does not verify: the manifest was edited after signing "
            "or is not from this ceremony"
        ) from None
    return manifest


def load_manifest(path: Path, expected_key: ec.EllipticCurvePublicKey | None = None) -> SignedManifest:
    try:
        text = path.read_text()
    except OSError as exc:
        raise errors.ManifestError(f"cannot read manifest {path}: {exc.strerror}") from None
    return parse_manifest(text, str(path), expected_key)


def _check_body(body: dict[str, Any]) -> None:
    """Structural checks, each a precise message (signature checked separately)."""
    missing = REQUIRED_FIELDS - set(body)
    if missing:
        raise errors.ManifestError(f"missing fields {sorted(missing)}")
    extra = set(body) - REQUIRED_FIELDS
    if extra:
        raise errors.ManifestError(f"unknown fields {sorted(extra)}")
    if body["format"] != MANIFEST_FORMAT:
        raise errors.ManifestError(f"format is not {MANIFEST_FORMAT}")
    if not isinstance(body["ceremony_id"], str) or not CEREMONY_ID.match(body["ceremony_id"]):
        raise errors.ManifestError("ceremony_id is malformed")
    k, n = body["threshold"], body["shares"]
    if not (isinstance(k, int) and isinstance(n, int) and 2 <= k <= n <= 255):
        raise errors.ManifestError("threshold and shares must satisfy 2 <= K <= N <= 255")
    if not isinstance(body["kcv"], str) or not re.fullmatch(r"[0-9a-f]{6}", body["kcv"]):
        raise errors.ManifestError("kcv must be 6 lowercase hex digits")
    _check_custodians(body["custodians"], n)
    signer = body["signer"]
    if signer is not None and (
        not isinstance(signer, dict) or set(signer) != {"token", "key_id", "public_key", "algorithm"}
    ):
        raise errors.ManifestError("signer must name token, key_id, public_key, algorithm")
    if not isinstance(body["retires"], list) or not isinstance(body["weakened"], list):
        raise errors.ManifestError("retires and weakened must be lists")
    quorum_authority = body["quorum_authority"]
    if not isinstance(quorum_authority, dict) or set(quorum_authority) != {"fingerprint", "public_key"}:
        raise errors.ManifestError("quorum_authority must name fingerprint and public_key")


def _check_custodians(custodians: Any, n: int) -> None:
    """The manifest's custodian list, checked at its place in `_check_body`'s reading order."""
    if not isinstance(custodians, list) or len(custodians) != n:
        raise errors.ManifestError(f"custodians must list exactly {n} entries")
    names = set()
    for entry in custodians:
        if not isinstance(entry, dict) or set(entry) != {"name", "kind", "recipient", "commitment"}:
            raise errors.ManifestError("each custodian needs name, kind, recipient, commitment")
        if not isinstance(entry["commitment"], str) or not re.fullmatch(r"[0-9a-f]{64}", entry["commitment"]):
            raise errors.ManifestError(f"custodian {entry.get('name')!r}: commitment is malformed")
        names.add(entry["name"])
    if len(names) != n:
        raise errors.ManifestError("custodian names must be distinct")
