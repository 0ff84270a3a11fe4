"""The HSM of one lab: its PKCS#11 module, its tokens, and the sessions opened on them.

One object (`HSM`) owns the loaded PKCS#11 module for a lab directory: it
finds the module, keeps SoftHSM2's config and token directory private to the
lab, initialises tokens, and opens sessions under an exclusive file lock
(SoftHSM2's file backend rewrites the token on every login, so two processes
at once corrupt it). Inside a session, `TokenSession` speaks in domain terms.

Every PKCS#11 failure leaves this package as a one-line `HSMError`; the raw
python-pkcs11 exceptions have empty messages and never reach a person.
"""

from __future__ import annotations

import ctypes
import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import pkcs11
from cryptography.hazmat.primitives.asymmetric import ec
from pkcs11 import exceptions as p11

from hsm_lab import errors
from hsm_lab.fs import private_dir
from hsm_lab.hsm.export import ExportSession
from hsm_lab.hsm.module import _load, find_module, is_softhsm, probe_module, softhsm_config
from hsm_lab.hsm.session import TokenSession
from hsm_lab.hsm.token_init import _ctypes_init_token, _slot_ids, _TokenInfo

if TYPE_CHECKING:
    from hsm_lab.hsm.p11 import Library

_MESSAGES: dict[type[p11.PKCS11Error], str] = {
    p11.PinIncorrect: "the PIN was refused by the token; check the PIN and try again",
    p11.PinLenRange: "the PIN has a length the token does not accept (SoftHSM2: 4 to 255)",
    p11.PinLocked: "the PIN is locked; the security officer must reset it",
    p11.UserPinNotInitialized: "the token has no user PIN yet; run `hsm-lab init`",
    p11.AttributeSensitive: "the token refused to reveal a sensitive attribute",
    p11.KeyUnextractable: "the key is not extractable",
    p11.FunctionRejected: "the token rejected the operation",
    p11.KeyNotWrappable: "the key may not be wrapped by that wrapping key (not TRUSTED?)",
    p11.MechanismInvalid: "the token does not support the mechanism this step needs",
    p11.TokenNotRecognised: "the token is not recognised; check the module and lab",
    p11.TemplateInconsistent: "the token refused the key template",
    p11.WrappedKeyInvalid: "the wrapped key was refused by the token",
    p11.EncryptedDataInvalid: "the token could not decrypt the data",
}


def _explain(exc: p11.PKCS11Error, doing: str) -> errors.HSMError:
    """Turn a message-less python-pkcs11 exception into a one-line error."""
    if isinstance(exc, p11.PinIncorrect):
        return errors.PinIncorrect(f"{doing}: the PIN was refused by the token")
    for kind, text in _MESSAGES.items():
        if isinstance(exc, kind):
            return errors.HSMError(f"{doing}: {text}")
    return errors.HSMError(f"{doing}: PKCS#11 error {type(exc).__name__}")


class HSM:
    """The PKCS#11 module as seen from one lab directory."""

    def __init__(self, lab_dir: str | os.PathLike[str], module: str | os.PathLike[str] | None = None) -> None:
        self.lab_dir = Path(lab_dir)
        self.module = find_module(module)
        private_dir(self.lab_dir)
        self.softhsm_conf = softhsm_config(self.lab_dir) if is_softhsm(self.module) else None
        self._lock_path = self.lab_dir / "hsm.lock"

    @property
    def lib(self) -> Library:
        return _load(self.module, self.softhsm_conf)

    @contextmanager
    def locked(self) -> Iterator[None]:
        """Exclusive across processes: SoftHSM2's file store is not."""
        fd = os.open(self._lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        with os.fdopen(fd, "a+b") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    # -- tokens ---------------------------------------------------------

    def token_labels(self) -> list[str]:
        with self.locked():
            lib = self.lib
            try:
                return [t.label for t in lib.get_tokens() if _token_initialized(t)]
            except p11.PKCS11Error as exc:
                raise _explain(exc, "listing tokens") from None

    def has_token(self, label: str) -> bool:
        return label in self.token_labels()

    def pin_range(self, label: str | None = None) -> tuple[int, int]:
        """(min, max) PIN length the module accepts, from C_GetTokenInfo (a free slot if no label)."""
        with self.locked():
            self.lib  # noqa: B018 - loads and initialises the module
            dll = ctypes.CDLL(str(self.module))
            for slot in _slot_ids(dll):
                info = _TokenInfo()
                if dll.C_GetTokenInfo(ctypes.c_ulong(slot), ctypes.byref(info)) != 0:
                    continue
                initialised = bool(info.flags & 0x400)
                if (label is None and not initialised) or (
                    label is not None and bytes(info.label).rstrip(b" ").decode(errors="replace") == label
                ):
                    low, high = int(info.ulMinPinLen), int(info.ulMaxPinLen)
                    return max(low, 1), max(high, low, 1)
        return 4, 255

    def _check_unique(self, lib: Library, label: str) -> None:
        count = sum(1 for t in lib.get_tokens() if _token_initialized(t) and t.label == label)
        if count > 1:
            raise errors.HSMError(
                f"{count} tokens in lab {self.lab_dir} are labelled {label!r}: one was added behind the "
                "lab's back; refusing to guess which is yours (remove the stray token directory)"
            )

    def init_token(self, label: str, so_pin: str, user_pin: str) -> bool:
        """Initialise a token with SO and user PINs and its signing key; False if already complete.

        Resumable: a token whose init stopped half-way (no signing key yet) is
        completed, never reported as initialised. python-pkcs11 has no
        C_InitToken/C_InitPIN, so they are called through ctypes on the same module.
        """
        low, high = self.pin_range()
        _check_pin(so_pin, "SO PIN", low, high)
        _check_pin(user_pin, "user PIN", low, high)
        if not label or len(label.encode()) > 32:
            raise errors.InputError(f"token label {label!r} must be 1 to 32 bytes; shorten it")
        with self.locked():
            lib = self.lib
            try:
                self._check_unique(lib, label)
                exists = any(_token_initialized(t) and t.label == label for t in lib.get_tokens())
                free = [
                    slot
                    for slot in lib.get_slots(token_present=True)
                    if not _token_initialized(slot.get_token())
                ]
            except p11.PKCS11Error as exc:
                raise _explain(exc, "looking for a free slot") from None
            if not exists:
                if not free:
                    raise errors.HSMError(
                        f"no free slot to initialise token {label!r} on module {self.module}"
                    )
                _ctypes_init_token(self.module, free[0].slot_id, label, so_pin, user_pin)
                lib.reinitialize()
        with self.session(label, so_pin=so_pin) as so:
            missing = probe_module(so)
        if missing:
            raise errors.HSMError(
                f"module {self.module} lacks what the ceremony needs: {', '.join(missing)}; "
                "use a module that supports them"
            )
        with self.session(label, user_pin=user_pin) as session:
            complete = session.signing_key_exists()
            session.ensure_signing_key()
        return not (exists and complete)

    def signing_public_key(self, label: str) -> ec.EllipticCurvePublicKey:
        """The token's ceremony signing key, read without logging in (it is public)."""
        with self.locked():
            lib = self.lib
            token = self._token(lib, label)
            try:
                with token.open(rw=False) as raw:
                    return TokenSession(raw, label).signing_public_key()
            except p11.PKCS11Error as exc:
                raise _explain(exc, f"reading the signing key of token {label!r}") from None

    def _token(self, lib: Library, label: str) -> pkcs11.Token:
        try:
            self._check_unique(lib, label)
            return lib.get_token(token_label=label)
        except p11.NoSuchToken:
            raise errors.TokenNotInitialized(
                f"no token {label!r} in lab {self.lab_dir}: run `hsm-lab init --token {label}`"
            ) from None
        except p11.PKCS11Error as exc:
            raise _explain(exc, f"finding token {label!r}") from None

    def _login(
        self,
        lib: Library,
        token: pkcs11.Token,
        label: str,
        *,
        user_pin: str | None = None,
        so_pin: str | None = None,
    ) -> pkcs11.Session:
        try:
            return token.open(rw=True, user_pin=user_pin, so_pin=so_pin)
        except p11.PKCS11Error as exc:
            # A failed login leaks the session (docs/softhsm.md); start clean.
            lib.reinitialize()
            who = "SO" if so_pin is not None else "user"
            if isinstance(exc, p11.PinIncorrect):
                raise errors.PinIncorrect(
                    f"token {label!r}: the {who} PIN was refused; check it and try again"
                ) from None
            raise _explain(exc, f"opening token {label!r}") from None

    @contextmanager
    def session(
        self, label: str, *, user_pin: str | None = None, so_pin: str | None = None
    ) -> Iterator[TokenSession]:
        """A logged-in read/write session on token `label`, under the lab lock."""
        with self.locked():
            lib = self.lib
            token = self._token(lib, label)
            raw = self._login(lib, token, label, user_pin=user_pin, so_pin=so_pin)
            try:
                with raw:
                    yield TokenSession(raw, label)
            except p11.PKCS11Error as exc:
                raise _explain(exc, f"token {label!r}") from None

    @contextmanager
    def export_session(self, label: str, *, user_pin: str, so_pin: str) -> Iterator[ExportSession]:
        """SO then user on one token, for BYOK, with nothing left on the token afterwards.

        A public session is opened first; while the SO is logged in (a second
        session) the TRUSTED wrapping key is made there as a *session object*; the
        SO logs out, the user logs in, derives the class key as a session object
        and wraps it. Closing the sessions (or kill -9) destroys both objects
        (docs/softhsm.md: session objects are visible to every session of the process).
        """
        with self.locked():
            lib = self.lib
            token = self._token(lib, label)
            try:
                holder = token.open(rw=True)
            except p11.PKCS11Error as exc:
                raise _explain(exc, f"opening token {label!r}") from None
            try:
                yield ExportSession(self, lib, token, label, holder, user_pin=user_pin, so_pin=so_pin)
            except p11.PKCS11Error as exc:
                raise _explain(exc, f"token {label!r}") from None
            finally:
                try:
                    holder.close()
                except p11.PKCS11Error:
                    lib.reinitialize()


def _token_initialized(token: pkcs11.Token) -> bool:
    return bool(token.flags & pkcs11.TokenFlag.TOKEN_INITIALIZED)


def _check_pin(pin: str, what: str, low: int = 4, high: int = 255) -> None:
    if not low <= len(pin.encode()) <= high:
        raise errors.InputError(f"the {what} must be {low} to {high} bytes long (the module's range)")
