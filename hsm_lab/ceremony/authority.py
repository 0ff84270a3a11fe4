"""The quorum authority: a signing key that only a quorum of custodians can use.

Its private key is derived from L0 (HKDF-SHA256, then a P-256 scalar), so it
exists only while K shares have been combined in memory (generate, import,
rekey) and is wiped with L0. Its public key is in every manifest, which the
pinned ceremony key signs. With it, a quorum that imports L0 into a new HSM
token can authorise that token's signing key, and an auditor can check the
authorisation offline: pinned key -> manifest -> quorum authority -> new signer.
A token key that no quorum authorised can sign nothing the lab will accept.
"""

from __future__ import annotations

from typing import Any

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from hsm_lab import errors
from hsm_lab.ceremony.jose import (
    b64,
    b64_decode,
    b64url,
    canonical_json,
    jws_signing_input,
    jws_verify,
    sha256_hex,
)
from hsm_lab.ceremony.jose import public_key_der as _spki

AUTHORITY_INFO = b"clefs.quorum-authority/v1"
AUTHORISATION_FORMAT = "clefs.signer-authorisation/v1"
_P256_ORDER = int("FFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551", 16)


def derive(master_key: bytearray) -> ec.EllipticCurvePrivateKey:
    """The quorum authority key for this L0 (deterministic; nothing is stored)."""
    material = HKDF(algorithm=hashes.SHA256(), length=48, salt=None, info=AUTHORITY_INFO).derive(
        bytes(master_key)
    )
    scalar = int.from_bytes(material, "big") % (_P256_ORDER - 1) + 1
    return ec.derive_private_key(scalar, ec.SECP256R1())


def describe(private: ec.EllipticCurvePrivateKey) -> dict[str, str]:
    """The manifest's `quorum_authority` field: fingerprint and public key."""
    public = private.public_key()
    return {"fingerprint": sha256_hex(_spki(public)), "public_key": b64(_spki(public))}


def public_key(entry: dict[str, Any]) -> ec.EllipticCurvePublicKey:
    try:
        key = serialization.load_der_public_key(b64_decode(entry["public_key"]))
    except (KeyError, TypeError, ValueError):
        raise errors.ManifestError("the manifest's quorum authority key is malformed") from None
    if not isinstance(key, ec.EllipticCurvePublicKey) or sha256_hex(_spki(key)) != entry.get("fingerprint"):
        raise errors.ManifestError("the manifest's quorum authority key does not match its fingerprint")
    return key


def _payload(fingerprint: str, token: str, ceremony_id: str) -> bytes:
    return canonical_json(
        {
            "format": AUTHORISATION_FORMAT,
            "fingerprint": fingerprint,
            "token": token,
            "ceremony_id": ceremony_id,
        }
    )


def authorise(
    private: ec.EllipticCurvePrivateKey, fingerprint: str, token: str, ceremony_id: str
) -> dict[str, str]:
    """A detached JWS (ES256) by the quorum authority over the new signer's fingerprint."""
    header, signing_input = jws_signing_input(
        {"alg": "ES256", "typ": AUTHORISATION_FORMAT}, _payload(fingerprint, token, ceremony_id)
    )
    r, s = decode_dss_signature(private.sign(signing_input, ec.ECDSA(hashes.SHA256())))
    return {"protected": header, "signature": b64url(r.to_bytes(32, "big") + s.to_bytes(32, "big"))}


def check(
    authority: ec.EllipticCurvePublicKey, jws: dict[str, Any], fingerprint: str, token: str, ceremony_id: str
) -> None:
    try:
        jws_verify(authority, jws, _payload(fingerprint, token, ceremony_id))
    except (ValueError, TypeError):
        raise errors.TranscriptError(
            f"the authorisation of signer {fingerprint[:16]} (token {token!r}) is not signed by the quorum "
            f"authority of ceremony {ceremony_id}"
        ) from None
