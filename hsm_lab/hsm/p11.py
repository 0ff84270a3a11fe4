"""Typed views of python-pkcs11's objects (its run-time classes carry more than its type hints).

python-pkcs11 0.10.1 ships type hints, but builds each key's class at run time from the key's
usage attributes (docs/softhsm.md): a key with CKA_DERIVE=True gets `derive_key`, WRAP gets
`wrap_key`, UNWRAP `unwrap_key`, SIGN `sign`. Its static types (`Object`, `Key`, `SecretKey`)
therefore lack the methods a key really has, and `get_objects` returns plain `Object`s whatever the
class searched for. The views below name what a call relies on. They are `typing.cast`s: they
check nothing at run time, so a key without the capability still fails inside python-pkcs11
exactly as before.

The loaded module's type is `pkcs11._pkcs11.lib` (`pkcs11.lib` is a function returning one); it
is imported only for type checking, as python-pkcs11 itself does, so importing this package does
not load the extension module earlier than before.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, cast

from pkcs11.types import DeriveMixin, Object, PublicKey, SecretKey, SignMixin, UnwrapMixin, WrapMixin

if TYPE_CHECKING:
    from typing import TypeAlias

    from pkcs11._pkcs11 import lib as _lib

    Library: TypeAlias = _lib


def deriving(key: Object) -> DeriveMixin:
    """A key made with CKA_DERIVE=True."""
    return cast(DeriveMixin, key)


def wrapping(key: Object) -> WrapMixin:
    """A key made with CKA_WRAP=True."""
    return cast(WrapMixin, key)


def unwrapping(key: Object) -> UnwrapMixin:
    """A key made with CKA_UNWRAP=True."""
    return cast(UnwrapMixin, key)


def signing(key: Object) -> SignMixin:
    """A key made with CKA_SIGN=True."""
    return cast(SignMixin, key)


def secret_key(obj: Object) -> SecretKey:
    """An object found by CKA_CLASS=SECRET_KEY."""
    return cast(SecretKey, obj)


def public_key(obj: Object) -> PublicKey:
    """An object found by CKA_CLASS=PUBLIC_KEY."""
    return cast(PublicKey, obj)
