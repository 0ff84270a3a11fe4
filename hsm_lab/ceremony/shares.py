"""Shamir shares of the master key: split, seal to a custodian, open, check, combine.

The sharing itself is pyshamir (a port of HashiCorp Vault's GF(2^8) scheme):
each share is len(secret)+1 bytes, the last byte its x coordinate. pyshamir
has no integrity of its own (too few, flipped or x=0 shares silently combine
to a wrong key), so integrity comes from here: every share has a commitment in
the signed manifest, checked when the share is presented, and the combined
key must match the manifest's KCV.

Inside its age envelope a share is a small versioned JSON document:
{"format": "clefs.share/v1", "ceremony_id": ..., "custodian": ..., "share": base64}.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from dataclasses import dataclass
from pathlib import Path

import pyrage
import pyshamir

from hsm_lab import errors
from hsm_lab.ceremony.custodians import Custodian, check_name
from hsm_lab.ceremony.jose import b64, b64_decode, canonical_json
from hsm_lab.fs import FILE_MODE, atomic_write_bytes, wipe

SHARE_FORMAT = "clefs.share/v1"
COMMITMENT_DOMAIN = b"clefs.share-commitment/v1\x00"
MIN_THRESHOLD = 2  # pyshamir's own floor
MAX_SHARES = 255  # GF(2^8) has 255 non-zero x coordinates
SECRET_LEN = 32


@dataclass
class Share:
    """One custodian's share, in memory only. `value` is wiped after use."""

    ceremony_id: str
    custodian: str
    value: bytearray  # y bytes followed by the x coordinate

    @property
    def x(self) -> int:
        return self.value[-1]

    def wipe(self) -> None:
        wipe(self.value)


def check_parameters(threshold: int, shares: int) -> None:
    """Vault's preconditions, each with its own message."""
    if shares < 2 or shares > MAX_SHARES:
        raise errors.InputError(f"share count {shares} is out of range: use 2 to {MAX_SHARES}")
    if threshold < MIN_THRESHOLD:
        raise errors.InputError(f"threshold {threshold} is below {MIN_THRESHOLD}")
    if threshold > shares:
        raise errors.InputError(f"threshold {threshold} is larger than the share count {shares}")


def split(secret: bytearray, threshold: int, shares: int) -> list[bytearray]:
    check_parameters(threshold, shares)
    if len(secret) != SECRET_LEN:
        raise errors.InputError(f"the master key is {SECRET_LEN} bytes, not {len(secret)}")
    parts = [bytearray(p) for p in pyshamir.split(bytes(secret), shares, threshold)]
    if len({p[-1] for p in parts}) != shares or any(p[-1] == 0 for p in parts):
        raise errors.QuorumError("split produced unusable x coordinates; run the step again")
    return parts


def combine(shares: list[Share], threshold: int) -> bytearray:
    """Combine exactly `threshold` distinct, already-verified shares."""
    if len(shares) < threshold:
        raise errors.QuorumError(
            f"{len(shares)} valid shares presented, {threshold} needed: ask "
            f"{threshold - len(shares)} more custodian(s)"
        )
    chosen = shares[:threshold]
    if len({s.x for s in chosen}) != len(chosen):
        raise errors.QuorumError("two shares have the same x coordinate; refusing to combine")
    return bytearray(pyshamir.combine([bytearray(s.value) for s in chosen]))


def commitment(ceremony_id: str, custodian: str, value: bytes | bytearray) -> str:
    """Binding, hiding (the share is 256 random bits) commitment to one share."""
    digest = hashlib.sha256()
    digest.update(COMMITMENT_DOMAIN)
    digest.update(canonical_json([ceremony_id, custodian, b64(bytes(value))]))
    return digest.hexdigest()


def matches_commitment(share: Share, expected: str) -> bool:
    return hmac.compare_digest(commitment(share.ceremony_id, share.custodian, share.value), expected)


def encode_share(share: Share) -> bytearray:
    return bytearray(
        canonical_json(
            {
                "format": SHARE_FORMAT,
                "ceremony_id": share.ceremony_id,
                "custodian": share.custodian,
                "share": b64(bytes(share.value)),
            }
        )
    )


def parse_share(payload: bytes, claimed: str = "unknown custodian") -> Share:
    """Strictly parse the JSON inside an age envelope; any defect is ShareRejected."""
    try:
        doc = json.loads(payload.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise errors.ShareRejected(f"{claimed}: the share is not a Clefs share document") from None
    if not isinstance(doc, dict) or set(doc) != {"format", "ceremony_id", "custodian", "share"}:
        raise errors.ShareRejected(f"{claimed}: the share document has unexpected fields")
    if doc["format"] != SHARE_FORMAT:
        raise errors.ShareRejected(
            f"{claimed}: share format {str(doc['format'])[:40]!r} is not {SHARE_FORMAT}"
        )
    ceremony_id = doc["ceremony_id"]
    if not isinstance(ceremony_id, str) or not 1 <= len(ceremony_id) <= 64:
        raise errors.ShareRejected(f"{claimed}: the share has no valid ceremony id")
    try:
        custodian = check_name(doc["custodian"])
        value = bytearray(b64_decode(doc["share"]))
    except (errors.InputError, ValueError):
        raise errors.ShareRejected(f"{claimed}: the share's custodian or value is malformed") from None
    if len(value) != SECRET_LEN + 1:
        raise errors.ShareRejected(f"{custodian}: the share is {len(value)} bytes, not {SECRET_LEN + 1}")
    if value[-1] == 0:
        raise errors.ShareRejected(f"{custodian}: the share has x coordinate 0, which is invalid")
    return Share(ceremony_id, custodian, value)


def seal(share: Share, custodian: Custodian, passphrase: str | None = None) -> bytes:
    """age-encrypt a share to its custodian (X25519 recipient or passphrase)."""
    plaintext = encode_share(share)
    sealed: bytes  # pyrage ships no type information: its results are typed here
    try:
        if custodian.recipient:
            recipient = pyrage.x25519.Recipient.from_str(custodian.recipient)
            sealed = pyrage.encrypt(bytes(plaintext), [recipient])
            return sealed
        if not passphrase:
            raise errors.InputError(f"custodian {custodian.name}: a passphrase is required")
        sealed = pyrage.passphrase.encrypt(bytes(plaintext), passphrase)
        return sealed
    finally:
        wipe(plaintext)


def unseal(
    sealed: bytes,
    claimed: str,
    identities: list[pyrage.x25519.Identity] | None = None,
    passphrase: str | None = None,
) -> Share:
    """Open an age envelope. Every failure to open is the same ShareRejected."""
    try:
        if passphrase is not None:
            payload = bytearray(pyrage.passphrase.decrypt(sealed, passphrase))
        elif identities:
            payload = bytearray(pyrage.decrypt(sealed, identities))
        else:
            raise errors.ShareRejected(f"{claimed}: no identity or passphrase to open the share")
    except errors.ShareRejected:
        raise
    except Exception:
        raise errors.ShareRejected(
            f"{claimed}: cannot open the share: wrong passphrase or identity, or the file was altered"
        ) from None
    try:
        return parse_share(bytes(payload), claimed)
    finally:
        wipe(payload)


def write_sealed(path: Path, blob: bytes) -> None:
    """A sealed share file, owner-only (0600), whole or absent."""
    atomic_write_bytes(path, blob, FILE_MODE)


def is_passphrase_sealed(sealed: bytes) -> bool:
    """True if the age header has an scrypt (passphrase) stanza."""
    header = sealed[:400]
    return b"\n-> scrypt " in header
