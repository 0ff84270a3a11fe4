"""Canonical JSON and the detached JWS (ES256) that signs it.

Manifests and the transcript head are signed as JWS with a detached payload
(RFC 7515 appendix F) over the JSON Canonicalization Scheme form (RFC 8785)
of the document: any JOSE library can check them. JCS comes from the `rfc8785`
package; for our documents (ASCII keys, integers within 2^53) it gives the same
bytes as the sorted-keys form used before, so older signatures still verify
(tests/ceremony/test_canonical_json.py).
"""

from __future__ import annotations

import base64
import hashlib
import json
from typing import Any

import rfc8785
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature


def canonical_json(document: Any) -> bytes:
    """RFC 8785 (JCS) form; an integer beyond 2^53 or a NaN raises ValueError, never rounds."""
    try:
        return rfc8785.dumps(document)
    except rfc8785.CanonicalizationError as exc:
        raise ValueError(f"not canonicalisable as RFC 8785 JSON: {exc}") from None


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(text: str) -> bytes:
    if not isinstance(text, str):
        raise ValueError("not a base64url string")
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def b64_decode(text: str) -> bytes:
    if not isinstance(text, str):
        raise ValueError("not a base64 string")
    return base64.b64decode(text, validate=True)


def public_key_der(key: ec.EllipticCurvePublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def key_id(key: ec.EllipticCurvePublicKey) -> str:
    """Fingerprint of a signing key: SHA-256 of its SubjectPublicKeyInfo, 16 hex."""
    return sha256_hex(public_key_der(key))[:16]


def jws_signing_input(protected: dict[str, Any], payload: bytes) -> tuple[str, bytes]:
    header = b64url(canonical_json(protected))
    return header, f"{header}.{b64url(payload)}".encode("ascii")


def jws_verify(public_key: ec.EllipticCurvePublicKey, jws: dict[str, Any], payload: bytes) -> dict[str, Any]:
    """Check a detached ES256 JWS; returns its protected header or raises ValueError."""
    try:
        header_b64 = jws["protected"]
        signature = b64url_decode(jws["signature"])
        header = json.loads(b64url_decode(header_b64))
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError("malformed signature block") from exc
    if not isinstance(header, dict) or header.get("alg") != "ES256":
        raise ValueError("signature algorithm is not ES256")
    if len(signature) != 64:
        raise ValueError("ES256 signature is not 64 bytes")
    signing_input = f"{header_b64}.{b64url(payload)}".encode("ascii")
    der = encode_dss_signature(int.from_bytes(signature[:32], "big"), int.from_bytes(signature[32:], "big"))
    try:
        public_key.verify(der, signing_input, ec.ECDSA(hashes.SHA256()))
    except InvalidSignature:
        raise ValueError("signature does not verify") from None
    return header
