"""One logged-in session on one token, in domain terms (`TokenSession`).

Random bytes, the master key and its KCV, L1 class keys, the append-only records,
the ceremony signing key and the inventory; `HSM.session` opens it.

`TokenSession` stays one class (about 260 lines) on purpose: every method works on
the one PKCS#11 session handle it wraps (`raw`, and session objects made through it
vanish with it), and the ceremony, BYOK and the CLI use it as one object. What does
not need that handle's state lives beside it: the templates (`templates.py`), the L1
derivation inputs (`kdf.py`), the records (`records.py`) and the signing key's
creation (`signing_key.py`).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import pkcs11
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from pkcs11 import Attribute, KeyType, Mechanism, ObjectClass
from pkcs11 import exceptions as p11
from pkcs11.util.rsa import encode_rsa_public_key

from hsm_lab import errors
from hsm_lab.hsm.kdf import class_key_derivation_data, class_key_label
from hsm_lab.hsm.p11 import deriving, secret_key, signing, unwrapping
from hsm_lab.hsm.records import _data_attributes, record_values, write_record
from hsm_lab.hsm.signing_key import SIGNING_LABEL, generate_signing_pair, signing_public
from hsm_lab.hsm.templates import (
    CLASS_KEY_TEMPLATE,
    EPHEMERAL_PREFIXES,
    MASTER_KEY_TEMPLATE,
    enforce_template,
)

KCV_LEN = 3  # bytes: the customary AES key check value length


@dataclass(frozen=True)
class KeyInfo:
    """What the token says about one key object (never its value)."""

    label: str
    object_class: str
    key_type: str
    kcv: str | None
    attributes: dict[str, bool]


class TokenSession:
    """Domain operations inside one logged-in session on one token."""

    def __init__(self, raw: pkcs11.Session, token_label: str) -> None:
        self.raw = raw
        self.token_label = token_label

    # -- randomness and keys ----------------------------------------------

    def random_bytes(self, count: int) -> bytearray:
        """Bytes from the HSM's RNG (C_GenerateRandom), in a wipeable buffer."""
        return bytearray(self.raw.generate_random(count * 8))

    def find_secret_key(self, label: str) -> pkcs11.SecretKey | None:
        found = list(self.raw.get_objects({Attribute.CLASS: ObjectClass.SECRET_KEY, Attribute.LABEL: label}))
        if len(found) > 1:
            raise errors.HSMError(f"token {self.token_label!r} holds {len(found)} keys labelled {label!r}")
        return secret_key(found[0]) if found else None

    def require_secret_key(self, label: str) -> pkcs11.SecretKey:
        key = self.find_secret_key(label)
        if key is None:
            raise errors.KeyNotFound(f"token {self.token_label!r} has no key labelled {label!r}")
        return key

    def import_secret(
        self,
        label: str,
        secret: bytearray,
        *,
        store: bool = True,
        policy: dict[Attribute, object] | None = None,
    ) -> pkcs11.SecretKey:
        """Put an AES key into the HSM by unwrapping it under an ephemeral RSA key.

        The transport key pair lives only in this session; Python sees its
        public half, encrypts the secret to it (OAEP-SHA1: SoftHSM2's only
        OAEP), and the HSM unwraps it straight into a key object.
        """
        if store and self.find_secret_key(label) is not None:
            raise errors.KeyLabelExists(
                f"token {self.token_label!r} already holds a key labelled {label!r}; "
                "refusing to overwrite it (pick another --label or use a fresh token)"
            )
        if len(secret) not in (16, 24, 32):
            raise errors.InputError(f"an AES key is 16, 24 or 32 bytes, not {len(secret)}")
        public, private = _transport_pair(self.raw)
        try:
            wrapped = _oaep_sha1_encrypt(public, secret)
            template = dict(policy or MASTER_KEY_TEMPLATE)
            template[Attribute.TOKEN] = store
            key = unwrapping(private).unwrap_key(
                ObjectClass.SECRET_KEY,
                KeyType.AES,
                wrapped,
                label=label,
                store=store,
                mechanism=Mechanism.RSA_PKCS_OAEP,
                # OAEP takes a (hash, MGF, label) tuple; python-pkcs11 hints bytes (docs/softhsm.md)
                mechanism_param=(Mechanism.SHA_1, pkcs11.MGF.SHA1, None),  # type: ignore[arg-type]
                template=template,
            )
            enforce_template(key, template, f"key {label!r}")
            return secret_key(key)
        finally:
            private.destroy()
            public.destroy()

    def kcv(self, key: pkcs11.SecretKey) -> str:
        """AES key check value: AES-ECB(key, 0^128), first 3 bytes, hex.

        Computed inside the HSM through AES_ECB_ENCRYPT_DATA derivation into a
        short-lived session object, so the key itself needs no ENCRYPT right.
        """
        probe = deriving(key).derive_key(
            KeyType.GENERIC_SECRET,
            128,
            store=False,
            mechanism=Mechanism.AES_ECB_ENCRYPT_DATA,
            mechanism_param=bytes(16),
            template={
                Attribute.TOKEN: False,
                Attribute.SENSITIVE: False,
                Attribute.EXTRACTABLE: True,
                Attribute.DERIVE: False,
                Attribute.ENCRYPT: False,
                Attribute.DECRYPT: False,
                Attribute.SIGN: False,
                Attribute.VERIFY: False,
                Attribute.WRAP: False,
                Attribute.UNWRAP: False,
            },
        )
        try:
            return bytes(probe[Attribute.VALUE][:KCV_LEN]).hex()
        finally:
            probe.destroy()

    # -- L1 class keys (BYOK material) ---------------------------------------------

    def derive_class_key(self, master_label: str, data_class: str, version: int) -> pkcs11.SecretKey:
        """The class key for (data_class, version), derived from L0 as a session object.

        Deterministic (see `class_key_derivation_data`), so it never needs to be
        stored: it lives only in the session that wraps it for KMS and is gone when
        that session closes, kill -9 included. Wrappable only under a TRUSTED key.
        """
        master = self.require_secret_key(master_label)
        template = dict(CLASS_KEY_TEMPLATE)
        key = deriving(master).derive_key(
            KeyType.AES,
            256,
            label=class_key_label(data_class, version),
            store=False,
            mechanism=Mechanism.AES_ECB_ENCRYPT_DATA,
            mechanism_param=class_key_derivation_data(data_class, version),
            template=template,
        )
        enforce_template(key, template, f"class key {data_class} v{version}")
        return key

    def destroy_objects(self, label: str) -> int:
        found = list(self.raw.get_objects({Attribute.LABEL: label}))
        for obj in found:
            obj.destroy()
        return len(found)

    def destroy_secret_keys(self, label: str) -> int:
        """Destroy token *secret keys* with this label (never a signing key, record or anchor)."""
        found = list(
            self.raw.get_objects(
                {Attribute.CLASS: ObjectClass.SECRET_KEY, Attribute.LABEL: label, Attribute.TOKEN: True}
            )
        )
        for obj in found:
            obj.destroy()
        return len(found)

    def destroy_key(self, label: str) -> None:
        self.require_secret_key(label).destroy()

    def sweep_ephemeral(self) -> list[str]:
        """Destroy token objects that may only ever live inside one step; return what went.

        Ephemeral labels (`EPHEMERAL_PREFIXES`) and any TRUSTED object: Clefs keeps
        wrapping keys as session objects, so one on the token is a leftover of an
        interrupted step or was planted, and a TRUSTED key can wrap class keys.
        """
        removed: list[str] = []
        keys = [
            (object_class, obj)
            for object_class in (ObjectClass.SECRET_KEY, ObjectClass.PUBLIC_KEY, ObjectClass.PRIVATE_KEY)
            for obj in self.raw.get_objects({Attribute.CLASS: object_class, Attribute.TOKEN: True})
        ]
        for object_class, obj in keys:
            try:
                label = str(obj[Attribute.LABEL])
            except p11.PKCS11Error:
                continue
            trusted = False
            try:
                trusted = bool(obj[Attribute.TRUSTED])
            except p11.PKCS11Error:
                trusted = False
            if trusted or label.startswith(EPHEMERAL_PREFIXES):
                obj.destroy()
                removed.append(f"{object_class.name.lower()} {label!r}" + (" (TRUSTED)" if trusted else ""))
        return removed

    # -- append-only records (data objects nobody can change or destroy) ------------

    def write_record(self, label: str, value: bytes) -> None:
        """A private data object that even the user PIN cannot modify or destroy (`records.write_record`)."""
        write_record(self.raw, self.token_label, label, value)

    def record_values(self) -> list[bytes]:
        """The values of this application's data objects (`records.record_values`)."""
        return record_values(self.raw)

    # -- ceremony signing key --------------------------------------------------

    def signing_key_exists(self) -> bool:
        return self._signing_public() is not None and bool(
            list(
                self.raw.get_objects(
                    {Attribute.CLASS: ObjectClass.PRIVATE_KEY, Attribute.LABEL: SIGNING_LABEL}
                )
            )
        )

    def ensure_signing_key(self) -> ec.EllipticCurvePublicKey:
        """The token's EC P-256 signing key (created once, never extractable).

        A half-made pair (an init killed mid-way) is removed and made again.
        """
        existing = self._signing_public()
        if existing is not None and self.signing_key_exists():
            return existing
        self.destroy_objects(SIGNING_LABEL)
        generate_signing_pair(self.raw)
        created = self._signing_public()
        if created is None:
            raise errors.HSMError(f"token {self.token_label!r}: the signing key pair was not stored")
        return created

    def _signing_public(self) -> ec.EllipticCurvePublicKey | None:
        return signing_public(self.raw)

    def signing_public_key(self) -> ec.EllipticCurvePublicKey:
        key = self._signing_public()
        if key is None:
            raise errors.KeyNotFound(
                f"token {self.token_label!r} has no signing key; run `hsm-lab init` again"
            )
        return key

    def sign(self, message: bytes) -> bytes:
        """ECDSA P-256 over SHA-256(message), raw r||s (the JWS ES256 form)."""
        private = self.raw.get_key(object_class=ObjectClass.PRIVATE_KEY, label=SIGNING_LABEL)
        return signing(private).sign(hashlib.sha256(message).digest(), mechanism=Mechanism.ECDSA)

    # -- inventory --------------------------------------------------------------

    def inventory(self) -> list[KeyInfo]:
        """Every key object the session can see, with its security attributes."""
        result: list[KeyInfo] = []
        for obj in self.raw.get_objects():
            object_class = obj[Attribute.CLASS]
            if object_class == ObjectClass.DATA:
                result.append(KeyInfo(str(obj[Attribute.LABEL]), "data", "-", None, _data_attributes(obj)))
                continue
            if object_class not in (
                ObjectClass.SECRET_KEY,
                ObjectClass.PRIVATE_KEY,
                ObjectClass.PUBLIC_KEY,
            ):
                continue
            attributes = {}
            for attr in _REPORTED_ATTRIBUTES:
                try:
                    attributes[attr.name.lower()] = bool(obj[attr])
                except p11.PKCS11Error:
                    continue
            kcv = None
            if object_class == ObjectClass.SECRET_KEY and attributes.get("derive"):
                kcv = self.kcv(secret_key(obj))
            result.append(
                KeyInfo(
                    label=obj[Attribute.LABEL],
                    object_class=object_class.name.lower(),
                    key_type=obj[Attribute.KEY_TYPE].name,
                    kcv=kcv,
                    attributes=attributes,
                )
            )
        return sorted(result, key=lambda k: (k.label, k.object_class))


_REPORTED_ATTRIBUTES = (
    Attribute.TOKEN,
    Attribute.PRIVATE,
    Attribute.SENSITIVE,
    Attribute.ALWAYS_SENSITIVE,
    Attribute.EXTRACTABLE,
    Attribute.NEVER_EXTRACTABLE,
    Attribute.WRAP_WITH_TRUSTED,
    Attribute.TRUSTED,
    Attribute.MODIFIABLE,
    Attribute.LOCAL,
    Attribute.ENCRYPT,
    Attribute.DECRYPT,
    Attribute.SIGN,
    Attribute.VERIFY,
    Attribute.WRAP,
    Attribute.UNWRAP,
    Attribute.DERIVE,
)


def _transport_pair(raw: pkcs11.Session) -> tuple[pkcs11.PublicKey, pkcs11.PrivateKey]:
    """`import_secret`'s ephemeral RSA transport pair: session objects, unwrap-only private half."""
    return raw.generate_keypair(
        KeyType.RSA,
        2048,
        store=False,
        public_template={
            Attribute.ENCRYPT: False,
            Attribute.WRAP: True,
            Attribute.VERIFY: False,
        },
        private_template={
            Attribute.SENSITIVE: True,
            Attribute.EXTRACTABLE: False,
            Attribute.DECRYPT: False,
            Attribute.UNWRAP: True,
            Attribute.SIGN: False,
        },
    )


def _oaep_sha1_encrypt(public: pkcs11.PublicKey, secret: bytearray) -> bytes:
    """`secret` encrypted in Python to the transport key (OAEP-SHA1: SoftHSM2's only OAEP)."""
    transport = serialization.load_der_public_key(encode_rsa_public_key(public))
    assert isinstance(transport, rsa.RSAPublicKey)
    return transport.encrypt(
        bytes(secret),
        padding.OAEP(mgf=padding.MGF1(hashes.SHA1()), algorithm=hashes.SHA1(), label=None),  # noqa: S303
    )
