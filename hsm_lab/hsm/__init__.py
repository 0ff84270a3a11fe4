"""The HSM: the PKCS#11 module, its tokens and sessions (SoftHSM2 facts: docs/softhsm.md).

`from hsm_lab.hsm import HSM` is the stable import path; the code lives in this package's modules:
`tokens` (HSM: one lab's module, its tokens, opening sessions), `session` (TokenSession),
`export` (ExportSession, for BYOK), `module` (finding, loading and probing the module),
`templates` (key templates and their read-back), `kdf` (L1 derivation inputs), `records`
(append-only data objects), `signing_key`, `token_init` (ctypes calls python-pkcs11 lacks)
and `p11` (typed views of python-pkcs11's objects).
"""

from hsm_lab.fs import wipe
from hsm_lab.hsm.export import ExportSession
from hsm_lab.hsm.kdf import L1_KDF_DOMAIN, class_key_derivation_data, class_key_label
from hsm_lab.hsm.module import (
    MODULE_ENV,
    REQUIRED_MECHANISMS,
    SOFTHSM_CANDIDATES,
    find_module,
    is_softhsm,
    probe_module,
    softhsm_config,
)
from hsm_lab.hsm.records import RECORD_APPLICATION
from hsm_lab.hsm.session import KCV_LEN, KeyInfo, TokenSession
from hsm_lab.hsm.signing_key import SIGNING_LABEL
from hsm_lab.hsm.templates import (
    CLASS_KEY_TEMPLATE,
    EPHEMERAL_PREFIXES,
    MASTER_KEY_TEMPLATE,
    SECRET_KEY_POLICY,
    TRANSPORT_KEY_TEMPLATE,
    enforce_template,
)
from hsm_lab.hsm.tokens import HSM

__all__ = [
    "CLASS_KEY_TEMPLATE",
    "EPHEMERAL_PREFIXES",
    "HSM",
    "KCV_LEN",
    "L1_KDF_DOMAIN",
    "MASTER_KEY_TEMPLATE",
    "MODULE_ENV",
    "RECORD_APPLICATION",
    "REQUIRED_MECHANISMS",
    "SECRET_KEY_POLICY",
    "SIGNING_LABEL",
    "SOFTHSM_CANDIDATES",
    "TRANSPORT_KEY_TEMPLATE",
    "ExportSession",
    "KeyInfo",
    "TokenSession",
    "class_key_derivation_data",
    "class_key_label",
    "enforce_template",
    "find_module",
    "is_softhsm",
    "probe_module",
    "softhsm_config",
    "wipe",
]
