"""BYOK: class keys derived in the HSM, wrapped for KMS and imported into both regions.

Modules: `importer` (Byok, the import flow), `wrap` (import parameters, the wrapping key's
check, the composed RSA-AES wrap), `records` (what was imported where, read from the
transcript, and the material checks), `kms` (KMS calls and key ARNs). The class keys'
derivation inputs are the HSM's (`hsm_lab.hsm.kdf`): the HSM derives them.
"""

from hsm_lab.byok.importer import Byok
from hsm_lab.byok.kms import ByokError, arn_key_id, arn_region
from hsm_lab.byok.records import ImportRecord
from hsm_lab.byok.wrap import WRAPPING_ALGORITHMS, WRAPPING_KEY_SPECS, ImportParameters, check_wrapping_key

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
