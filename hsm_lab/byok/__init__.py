"""BYOK: class keys derived in the HSM, wrapped for KMS and imported into both regions."""

from hsm_lab.byok.importer import (
    WRAPPING_ALGORITHMS,
    WRAPPING_KEY_SPECS,
    Byok,
    ByokError,
    ImportParameters,
    ImportRecord,
    arn_key_id,
    arn_region,
    check_wrapping_key,
)

__all__ = [
    "WRAPPING_ALGORITHMS",
    "WRAPPING_KEY_SPECS",
    "Byok",
    "ByokError",
    "ImportParameters",
    "ImportRecord",
    "arn_key_id",
    "arn_region",
    "check_wrapping_key",
]
