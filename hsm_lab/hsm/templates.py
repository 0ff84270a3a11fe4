"""Key templates, spelled out in full, and the read-back that enforces them.

Every key Clefs makes in the HSM is made from one of these templates and read back
attribute by attribute afterwards (`enforce_template`): a module that does not keep what
was asked for loses the object and the step fails (docs/softhsm.md).
"""

from __future__ import annotations

import pkcs11
from pkcs11 import Attribute
from pkcs11 import exceptions as p11

from hsm_lab import errors

# Every key template is spelled out and read back after creation (docs/softhsm.md:
# unwrap and create_object default to permissive values, and some modules silently
# ignore SENSITIVE/EXTRACTABLE on unwrap), so nothing is left to a module's defaults.
_NO_USAGE: dict[Attribute, object] = {
    Attribute.ENCRYPT: False,
    Attribute.DECRYPT: False,
    Attribute.SIGN: False,
    Attribute.VERIFY: False,
    Attribute.WRAP: False,
    Attribute.UNWRAP: False,
}

# L0: derive only, never extractable. L1 derivation still works: AES_ECB_ENCRYPT_DATA
# gives an extractable key from a non-extractable base (docs/softhsm.md, measured).
MASTER_KEY_TEMPLATE: dict[Attribute, object] = {
    Attribute.TOKEN: True,
    Attribute.PRIVATE: True,
    Attribute.SENSITIVE: True,
    Attribute.EXTRACTABLE: False,
    Attribute.MODIFIABLE: False,
    **_NO_USAGE,
    Attribute.DERIVE: True,
}

# L1: a session object that lives only inside the one session that wraps it for KMS;
# extractable only under a TRUSTED key, which only the SO can make.
CLASS_KEY_TEMPLATE: dict[Attribute, object] = {
    Attribute.TOKEN: False,
    Attribute.PRIVATE: True,
    Attribute.SENSITIVE: True,
    Attribute.EXTRACTABLE: True,
    Attribute.WRAP_WITH_TRUSTED: True,
    Attribute.MODIFIABLE: False,
    **_NO_USAGE,
    Attribute.DERIVE: True,  # its KCV is derived, like L0's
}

# Kept for callers that still name the old policy: it is the master key's now.
SECRET_KEY_POLICY = MASTER_KEY_TEMPLATE

# The ephemeral AES transport key of the composed RSA_AES_KEY_WRAP_SHA_256: a public
# session object made while the SO is logged in (TRUSTED), gone with its session.
TRANSPORT_KEY_TEMPLATE: dict[Attribute, object] = {
    Attribute.TOKEN: False,
    Attribute.PRIVATE: False,
    Attribute.TRUSTED: True,
    Attribute.SENSITIVE: False,
    Attribute.EXTRACTABLE: True,
    **_NO_USAGE,
    Attribute.WRAP: True,
    Attribute.DERIVE: False,
}

# Labels of objects that only ever exist during one step; found on a token, they are
# leftovers of an interrupted step (or of an older Clefs that kept them as token objects).
EPHEMERAL_PREFIXES = ("clefs-kms-wrap/", "clefs-l1/", "clefs-transport/")


def enforce_template(obj: pkcs11.Object, template: dict[Attribute, object], what: str) -> None:
    """Read back every boolean attribute asked for; destroy the object on any difference.

    Some modules silently ignore SENSITIVE or EXTRACTABLE on unwrap (docs/softhsm.md):
    a key that is not exactly what was asked for must not stay on the token.
    """
    for attribute, wanted in template.items():
        if not isinstance(wanted, bool):
            continue
        try:
            actual = obj[attribute]
        except p11.PKCS11Error:
            actual = None
        if actual != wanted:
            try:
                obj.destroy()
            except p11.PKCS11Error:
                pass
            raise errors.HSMError(
                f"{what}: the module set {attribute.name} to {actual}, not {wanted} as asked; "
                "the object was destroyed (this module cannot be trusted with the ceremony)"
            )
