"""The BYOK export session: a TRUSTED wrapping key made by the SO, used by the user, all in RAM.

Opened by `HSM.export_session`; nothing it makes is stored on the token
(docs/softhsm.md, "Session objects").
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Protocol

import pkcs11
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from pkcs11 import Attribute, KeyType, Mechanism, ObjectClass

from hsm_lab import errors
from hsm_lab.hsm.p11 import wrapping
from hsm_lab.hsm.session import TokenSession
from hsm_lab.hsm.templates import TRANSPORT_KEY_TEMPLATE, enforce_template

if TYPE_CHECKING:
    from pkcs11.types import WrapMixin

    from hsm_lab.hsm.p11 import Library


class LoginHolder(Protocol):
    """What an export needs of the HSM (hsm_lab.hsm.tokens.HSM): logging in to its token."""

    def _login(
        self,
        lib: Library,
        token: pkcs11.Token,
        label: str,
        *,
        user_pin: str | None = None,
        so_pin: str | None = None,
    ) -> pkcs11.Session: ...


class ExportSession:
    """One BYOK export: a TRUSTED wrapping key made by the SO, used by the user, all in RAM."""

    def __init__(
        self,
        hsm: LoginHolder,
        lib: Library,
        token: pkcs11.Token,
        label: str,
        holder: pkcs11.Session,
        *,
        user_pin: str,
        so_pin: str,
    ) -> None:
        self._hsm, self._lib, self._token, self.label = hsm, lib, token, label
        self._holder = holder
        self._user_pin, self._so_pin = user_pin, so_pin
        self._wrapper: WrapMixin | None = None

    def install_wrapping_key(self, algorithm: str, kms_public_der: bytes) -> bytearray | None:
        """As the SO: the KMS public key (OAEP-SHA1) or a fresh AES transport key (composed), TRUSTED.

        Returns the transport key's value for the composed algorithm (it is then
        OAEP-SHA-256 wrapped to KMS in Python), None for OAEP-SHA1.
        """
        so = self._hsm._login(self._lib, self._token, self.label, so_pin=self._so_pin)
        try:
            if algorithm == "RSAES_OAEP_SHA_1":
                self._wrapper = _create_trusted_rsa(self._holder, kms_public_der)
                return None
            key = self._holder.generate_key(
                KeyType.AES,
                256,
                label="clefs-transport/session",
                store=False,
                template=TRANSPORT_KEY_TEMPLATE,
            )
            enforce_template(key, TRANSPORT_KEY_TEMPLATE, "the transport key")
            self._wrapper = wrapping(key)
            return bytearray(key[Attribute.VALUE])
        finally:
            so.close()

    @contextmanager
    def user(self) -> Iterator[TokenSession]:
        """The user's session on the same token (the SO has logged out)."""
        raw = self._hsm._login(self._lib, self._token, self.label, user_pin=self._user_pin)
        with raw:
            yield TokenSession(raw, self.label)

    def wrap(self, session: TokenSession, class_key: pkcs11.SecretKey, algorithm: str) -> bytes:
        if self._wrapper is None:
            raise errors.HSMError("no wrapping key was installed for this export")
        if algorithm == "RSAES_OAEP_SHA_1":
            return self._wrapper.wrap_key(
                class_key,
                mechanism=Mechanism.RSA_PKCS_OAEP,
                # OAEP takes a (hash, MGF, label) tuple; python-pkcs11 hints bytes (docs/softhsm.md)
                mechanism_param=(Mechanism.SHA_1, pkcs11.MGF.SHA1, None),  # type: ignore[arg-type]
            )
        return self._wrapper.wrap_key(class_key, mechanism=Mechanism.AES_KEY_WRAP_PAD)


def _create_trusted_rsa(session: pkcs11.Session, public_der: bytes) -> WrapMixin:
    """A KMS wrapping public key as a TRUSTED, wrap-only, public session object."""
    key = serialization.load_der_public_key(public_der)
    if not isinstance(key, rsa.RSAPublicKey):
        raise errors.InputError("the KMS wrapping key is not an RSA public key")
    numbers = key.public_numbers()
    template: dict[Attribute, object] = {
        Attribute.CLASS: ObjectClass.PUBLIC_KEY,
        Attribute.KEY_TYPE: KeyType.RSA,
        Attribute.LABEL: "clefs-kms-wrap/session",
        Attribute.TOKEN: False,
        Attribute.PRIVATE: False,
        Attribute.TRUSTED: True,
        Attribute.WRAP: True,
        Attribute.ENCRYPT: False,
        Attribute.VERIFY: False,
        Attribute.DERIVE: False,
        Attribute.MODIFIABLE: False,
        Attribute.MODULUS: numbers.n.to_bytes((numbers.n.bit_length() + 7) // 8, "big"),
        Attribute.PUBLIC_EXPONENT: numbers.e.to_bytes((numbers.e.bit_length() + 7) // 8, "big"),
    }
    created = session.create_object(template)
    enforce_template(created, {Attribute.TOKEN: False, Attribute.TRUSTED: True}, "the KMS wrapping key")
    return wrapping(created)
