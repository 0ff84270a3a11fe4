"""The ceremony signing key: an EC P-256 pair made once in each token, never extractable.

`TokenSession.ensure_signing_key` decides when to make it (a half-made pair is
removed first); these functions make the pair and read its public half.
"""

from __future__ import annotations

import pkcs11
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from pkcs11 import Attribute, KeyType, ObjectClass
from pkcs11.util.ec import encode_ec_public_key, encode_named_curve_parameters

from hsm_lab.hsm.p11 import public_key
from hsm_lab.hsm.templates import enforce_template

SIGNING_LABEL = "clefs-signing"


def generate_signing_pair(raw: pkcs11.Session) -> None:
    """Generate the pair on the token and read the private half's attributes back."""
    params = raw.create_domain_parameters(
        KeyType.EC,
        {Attribute.EC_PARAMS: encode_named_curve_parameters("secp256r1")},
        local=True,
    )
    params.generate_keypair(
        label=SIGNING_LABEL,
        store=True,
        public_template={
            Attribute.TOKEN: True,
            Attribute.PRIVATE: False,
            Attribute.VERIFY: True,
            Attribute.ENCRYPT: False,
            Attribute.WRAP: False,
            Attribute.DERIVE: False,
            Attribute.MODIFIABLE: False,
        },
        private_template={
            Attribute.MODIFIABLE: False,
            Attribute.TOKEN: True,
            Attribute.PRIVATE: True,
            Attribute.SENSITIVE: True,
            Attribute.EXTRACTABLE: False,
            Attribute.SIGN: True,
            Attribute.DECRYPT: False,
            Attribute.UNWRAP: False,
            Attribute.DERIVE: False,
        },
    )
    private = raw.get_key(object_class=ObjectClass.PRIVATE_KEY, label=SIGNING_LABEL)
    enforce_template(
        private,
        {Attribute.SENSITIVE: True, Attribute.EXTRACTABLE: False, Attribute.SIGN: True},
        "the ceremony signing key",
    )


def signing_public(raw: pkcs11.Session) -> ec.EllipticCurvePublicKey | None:
    """The pair's public half, or None if the token has none."""
    found = list(raw.get_objects({Attribute.CLASS: ObjectClass.PUBLIC_KEY, Attribute.LABEL: SIGNING_LABEL}))
    if not found:
        return None
    key = serialization.load_der_public_key(encode_ec_public_key(public_key(found[0])))
    assert isinstance(key, ec.EllipticCurvePublicKey)
    return key
