"""What KMS asks BYOK to wrap with, checked before the HSM wraps anything, and the composed wrap.

RSAES_OAEP_SHA_1 is done entirely in the HSM. RSA_AES_KEY_WRAP_SHA_256 is composed
(docs/softhsm.md: SoftHSM2's OAEP is SHA-1 only): the HSM wraps the class key with
AES-KWP under an ephemeral TRUSTED AES transport key, and `compose_rsa_aes` wraps that
transport key to KMS with OAEP-SHA-256 in Python.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from hsm_lab.byok.kms import ByokError, arn_region

WRAPPING_ALGORITHMS = ("RSAES_OAEP_SHA_1", "RSA_AES_KEY_WRAP_SHA_256")
WRAPPING_KEY_SPECS = ("RSA_2048", "RSA_3072", "RSA_4096")


def check_wrapping_key(params: ImportParameters) -> None:
    """The public key KMS returned is what was asked for, before the HSM wraps anything."""
    try:
        key = serialization.load_der_public_key(params.public_key)
    except (ValueError, TypeError):
        raise ByokError(f"the wrapping key returned for {params.key_arn} is not a public key") from None
    expected_bits = int(params.wrapping_key_spec.removeprefix("RSA_"))
    if not isinstance(key, rsa.RSAPublicKey) or key.key_size != expected_bits:
        raise ByokError(
            f"the wrapping key returned for {params.key_arn} is not {params.wrapping_key_spec}; "
            "nothing was wrapped"
        )


@dataclass(frozen=True)
class ImportParameters:
    """What GetParametersForImport returned, and for which key it is valid."""

    key_arn: str
    wrapping_algorithm: str
    wrapping_key_spec: str
    public_key: bytes
    import_token: bytes
    valid_to: str

    @property
    def region(self) -> str:
        return arn_region(self.key_arn)

    @property
    def fingerprint(self) -> str:
        """SHA-256 of the wrapping public key as KMS sent it (DER SubjectPublicKeyInfo)."""
        return hashlib.sha256(self.public_key).hexdigest()


def compose_rsa_aes(params: ImportParameters, transport: bytearray, wrapped: bytes) -> bytes:
    """RSA_AES_KEY_WRAP_SHA_256: the transport key under KMS's key (OAEP-SHA-256), then the HSM's KWP."""
    kms_public = serialization.load_der_public_key(params.public_key)
    assert isinstance(kms_public, rsa.RSAPublicKey)  # checked by check_wrapping_key
    wrapped_transport = kms_public.encrypt(
        bytes(transport),
        padding.OAEP(mgf=padding.MGF1(hashes.SHA256()), algorithm=hashes.SHA256(), label=None),
    )
    return wrapped_transport + wrapped
