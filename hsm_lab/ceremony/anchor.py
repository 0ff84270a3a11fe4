"""The one signer a lab trusts: its fingerprint, the words a witness reads aloud, the anchor file.

The pinned signer (the anchor) is the first token's ceremony signing key, fixed by
`init`, kept in `<lab>/anchor.json` and, as a data object nobody can change or
destroy, in every token of the lab (`hsm_lab.ceremony.token_records`). How the
record uses it: `hsm_lab.ceremony.record`.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from mnemonic import Mnemonic

from hsm_lab import errors
from hsm_lab.ceremony.jose import b64, b64_decode, key_id, public_key_der, sha256_hex
from hsm_lab.fs import atomic_write_text
from hsm_lab.lab import Lab

ANCHOR_FORMAT = "clefs.anchor/v1"
EXPECT_SIGNER_ENV = "CLEFS_EXPECT_SIGNER"
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
