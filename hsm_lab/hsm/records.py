"""The token's append-only records: data objects nobody can change or destroy.

`TokenSession.write_record` and `record_values` call these on its session handle;
`_data_attributes` is what its inventory reports for a data object.
"""

from __future__ import annotations

import pkcs11
from pkcs11 import Attribute, ObjectClass
from pkcs11 import exceptions as p11

from hsm_lab import errors

RECORD_APPLICATION = "clefs"  # CKA_APPLICATION of the token's append-only records


def write_record(raw: pkcs11.Session, token_label: str, label: str, value: bytes) -> None:
    """A private data object that even the user PIN cannot modify or destroy.

    SoftHSM2 2.6.1 refuses both for MODIFIABLE=False, DESTROYABLE=False objects
    (docs/softhsm.md, measured): the token holds an append-only record.
    """
    template: dict[Attribute, object] = {
        Attribute.CLASS: ObjectClass.DATA,
        Attribute.TOKEN: True,
        Attribute.PRIVATE: True,
        Attribute.APPLICATION: RECORD_APPLICATION,
        Attribute.LABEL: label,
        Attribute.VALUE: value,
        Attribute.MODIFIABLE: False,
        Attribute.DESTROYABLE: False,
    }
    created = raw.create_object(template)
    for attribute in (Attribute.MODIFIABLE, Attribute.DESTROYABLE):
        if created[attribute] is not False:
            raise errors.HSMError(
                f"token {token_label!r}: the module did not keep record {label!r} "
                f"{attribute.name}=False; it cannot hold an append-only record"
            )


def record_values(raw: pkcs11.Session) -> list[bytes]:
    """The values of this application's data objects, in one scan (labels are not read:
    each read of a private attribute is a decryption in SoftHSM2, see bench/ceremony.py)."""
    values = []
    template = {Attribute.CLASS: ObjectClass.DATA, Attribute.APPLICATION: RECORD_APPLICATION}
    for obj in raw.get_objects(template):
        try:
            values.append(bytes(obj[Attribute.VALUE]))
        except p11.PKCS11Error:
            continue
    return values


def _data_attributes(obj: pkcs11.Object) -> dict[str, bool]:
    flags = {}
    for attribute in (Attribute.TOKEN, Attribute.PRIVATE, Attribute.MODIFIABLE, Attribute.DESTROYABLE):
        try:
            flags[attribute.name.lower()] = bool(obj[attribute])
        except p11.PKCS11Error:
            continue
    return flags
