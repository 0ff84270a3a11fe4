"""The L1 key derivation's inputs: what the HSM encrypts under L0 to make a class key.

The derivation itself runs in the HSM (`TokenSession.derive_class_key`, AES_ECB_ENCRYPT_DATA);
this module only computes its label and its 32 input bytes.
"""

from __future__ import annotations

import hashlib

from hsm_lab import errors

L1_KDF_DOMAIN = b"clefs.l1-kdf/v1\x00"


def class_key_label(data_class: str, version: int) -> str:
    return f"clefs-l1/{data_class}/v{version}"


def class_key_derivation_data(data_class: str, version: int) -> bytes:
    """The 32 bytes AES_ECB_ENCRYPT_DATA encrypts under the master key.

    L1 = AES-ECB(L0, X1) || AES-ECB(L0, X2), with
    Xi = SHA-256("clefs.l1-kdf/v1" 0x00 || i || data_class || 0x00 || version as u32)[0:16].
    AES under L0 is a PRF (a permutation), so distinct (class, version) inputs give
    distinct, independent-looking keys; the same inputs always give the same key.
    SP 800-108 and HKDF are not in SoftHSM2, ECB_ENCRYPT_DATA is.
    """
    if not data_class or len(data_class.encode()) > 64:
        raise errors.InputError(f"data class {data_class!r} must be 1 to 64 bytes")
    if not 1 <= version < 2**32:
        raise errors.InputError(f"key version {version} must be 1 to 2^32-1")
    blocks = []
    for counter in (1, 2):
        digest = hashlib.sha256(
            L1_KDF_DOMAIN + bytes([counter]) + data_class.encode() + b"\x00" + version.to_bytes(4, "big")
        ).digest()
        blocks.append(digest[:16])
    return b"".join(blocks)
