"""The HSM, spoken to through PKCS#11 and nothing else.

One object (`HSM`) owns the loaded PKCS#11 module for a lab directory: it
finds the module, keeps SoftHSM2's config and token directory private to the
lab, initialises tokens, and opens sessions under an exclusive file lock
(SoftHSM2's file backend rewrites the token on every login, so two processes
at once corrupt it). Inside a session, `TokenSession` speaks in domain terms:
random bytes, the master key, its KCV, the ceremony signing key.

Every PKCS#11 failure leaves this module as a one-line `HSMError`; the raw
python-pkcs11 exceptions have empty messages and never reach a person.
"""

from __future__ import annotations

import ctypes
import fcntl
import hashlib
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pkcs11
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from pkcs11 import Attribute, KeyType, Mechanism, ObjectClass
from pkcs11 import exceptions as p11
from pkcs11.util.ec import encode_ec_public_key, encode_named_curve_parameters
from pkcs11.util.rsa import encode_rsa_public_key

from hsm_lab import errors
from hsm_lab.fs import atomic_write_text, private_dir, wipe
from hsm_lab.hsm.p11 import deriving, public_key, secret_key, signing, unwrapping, wrapping
from hsm_lab.lab import configured

if TYPE_CHECKING:
    from pkcs11.types import WrapMixin

    from hsm_lab.hsm.p11 import Library

SOFTHSM_CANDIDATES = (
    "/usr/lib/softhsm/libsofthsm2.so",
    "/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so",
    "/usr/lib/aarch64-linux-gnu/softhsm/libsofthsm2.so",
    "/usr/local/lib/softhsm/libsofthsm2.so",
)
MODULE_ENV = "CLEFS_PKCS11_MODULE"
SIGNING_LABEL = "clefs-signing"
KCV_LEN = 3  # bytes: the customary AES key check value length
RECORD_APPLICATION = "clefs"  # CKA_APPLICATION of the token's append-only records

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


L1_KDF_DOMAIN = b"clefs.l1-kdf/v1\x00"


def class_key_label(data_class: str, version: int) -> str:
    return f"clefs-l1/{data_class}/v{version}"


def class_key_derivation_data(data_class: str, version: int) -> bytes:
    """The 32 bytes AES_ECB_ENCRYPT_DATA encrypts under the master key.

    L1 = AES-ECB(L0, X1) || AES-ECB(L0, X2), with
    Xi = SHA-256("clefs.l1-kdf/v1" 0x00 || i || data_class || 0x00 || version as u32)[0:16].
    AES under L0 is a PRF (a permutation), so distinct (class, version) inputs give
    distinct, independent-looking keys; the same inputs always give the same key.
    SP 800-108 and HKDF are not in SoftHSM2, ECB_ENCRYPT_DATA is.
    """
    if not data_class or len(data_class.encode()) > 64:
        raise errors.InputError(f"data class {data_class!r} must be 1 to 64 bytes")
    if not 1 <= version < 2**32:
        raise errors.InputError(f"key version {version} must be 1 to 2^32-1")
    blocks = []
    for counter in (1, 2):
        digest = hashlib.sha256(
            L1_KDF_DOMAIN + bytes([counter]) + data_class.encode() + b"\x00" + version.to_bytes(4, "big")
        ).digest()
        blocks.append(digest[:16])
    return b"".join(blocks)


@dataclass(frozen=True)
class KeyInfo:
    """What the token says about one key object (never its value)."""

    label: str
    object_class: str
    key_type: str
    kcv: str | None
    attributes: dict[str, bool]


def find_module(explicit: str | os.PathLike[str] | None = None) -> Path:
    """The PKCS#11 module: --module, then $CLEFS_PKCS11_MODULE, then SoftHSM2."""
    chosen = explicit or os.environ.get(MODULE_ENV) or configured("module")
    if chosen:
        path = Path(chosen)
        if not path.is_file():
            raise errors.ModuleNotFound(
                f"no PKCS#11 module at {path}: pass --module or set {MODULE_ENV} to the module's .so file"
            )
        return path
    for candidate in SOFTHSM_CANDIDATES:
        if Path(candidate).is_file():
            return Path(candidate)
    raise errors.ModuleNotFound(
        "no PKCS#11 module found: install SoftHSM2 (apt-get install softhsm2) "
        f"or pass --module / set {MODULE_ENV}"
    )


def is_softhsm(module: Path) -> bool:
    return "softhsm" in module.name.lower()


def softhsm_config(lab_dir: Path) -> Path:
    """Write (once) the lab's private SoftHSM2 config and token directory."""
    token_dir = lab_dir / "tokens"
    private_dir(token_dir)
    conf = lab_dir / "softhsm2.conf"
    text = (
        "# SoftHSM2 config private to this Clefs lab (never the system one)\n"
        f"directories.tokendir = {token_dir.resolve()}\n"
        "objectstore.backend = file\n"
        "log.level = ERROR\n"
        "slots.removable = false\n"
        "slots.mechanisms = ALL\n"
    )
    if not conf.exists() or conf.read_text() != text:
        atomic_write_text(conf, text)
    return conf


# One loaded library per module path per process; SoftHSM2 re-reads
# SOFTHSM2_CONF on C_Initialize, so switching labs means re-initialising.
_LIBS: dict[Path, tuple[Library, str | None]] = {}
_LIBS_LOCK = threading.Lock()


def _load(module: Path, softhsm_conf: Path | None) -> Library:
    conf = str(softhsm_conf) if softhsm_conf else None
    with _LIBS_LOCK:
        if conf:
            os.environ["SOFTHSM2_CONF"] = conf
        cached = _LIBS.get(module)
        if cached is None:
            try:
                lib = pkcs11.lib(str(module))
            except (p11.PKCS11Error, OSError) as exc:
                raise errors.ModuleNotFound(_load_failure(module, conf, exc)) from None
            _LIBS[module] = (lib, conf)
            return lib
        lib, loaded_conf = cached
        if loaded_conf != conf:
            lib.reinitialize()
            _LIBS[module] = (lib, conf)
        return lib


def _load_failure(module: Path, conf: str | None, exc: BaseException) -> str:
    """Why a module did not load, in one line (python-pkcs11's own message is often empty)."""
    reason = " ".join(str(exc).split())
    if not reason:
        reason = f"C_Initialize failed ({type(exc).__name__})"
        if conf:
            reason += f"; check the SoftHSM2 config {conf} and its token directory"
    return f"cannot load PKCS#11 module {module}: {reason}; pass --module or set {MODULE_ENV}"


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


class ExportSession:
    """One BYOK export: a TRUSTED wrapping key made by the SO, used by the user, all in RAM."""

    def __init__(
        self,
        hsm: HSM,
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


# What `init` asks of a module before any ceremony runs on it.
REQUIRED_MECHANISMS = (
    Mechanism.EC_KEY_PAIR_GEN,
    Mechanism.ECDSA,
    Mechanism.AES_KEY_GEN,
    Mechanism.AES_ECB_ENCRYPT_DATA,
    Mechanism.AES_KEY_WRAP_PAD,
    Mechanism.RSA_PKCS_KEY_PAIR_GEN,
    Mechanism.RSA_PKCS_OAEP,
)


def probe_module(so: TokenSession) -> list[str]:
    """Mechanisms and attributes the ceremony relies on that this module lacks (as the SO)."""
    missing: list[str] = []
    try:
        available = set(so.raw.token.slot.get_mechanisms())
    except p11.PKCS11Error:
        available = set()
    missing += [m.name for m in REQUIRED_MECHANISMS if m not in available]
    probe_template = {
        Attribute.TOKEN: False,
        Attribute.PRIVATE: False,
        Attribute.TRUSTED: True,
        Attribute.WRAP_WITH_TRUSTED: True,
        Attribute.SENSITIVE: True,
        Attribute.EXTRACTABLE: True,
        **_NO_USAGE,
        Attribute.DERIVE: False,
    }
    key = None
    try:
        key = so.raw.generate_key(KeyType.AES, 256, store=False, template=probe_template)
        for attribute in (Attribute.TRUSTED, Attribute.WRAP_WITH_TRUSTED, Attribute.SENSITIVE):
            if key[attribute] is not True:
                missing.append(attribute.name)
    except p11.PKCS11Error:
        missing.append("TRUSTED/WRAP_WITH_TRUSTED session keys")
    finally:
        if key is not None:
            key.destroy()
    data = None
    try:
        data = so.raw.create_object(
            {
                Attribute.CLASS: ObjectClass.DATA,
                Attribute.TOKEN: False,
                Attribute.PRIVATE: False,
                Attribute.LABEL: "clefs-probe",
                Attribute.VALUE: b"probe",
                Attribute.DESTROYABLE: False,
                Attribute.MODIFIABLE: False,
            }
        )
        if data[Attribute.DESTROYABLE] is not False:
            missing.append("DESTROYABLE")
    except p11.PKCS11Error:
        missing.append("DESTROYABLE")
    return missing


def _token_initialized(token: pkcs11.Token) -> bool:
    return bool(token.flags & pkcs11.TokenFlag.TOKEN_INITIALIZED)


def _check_pin(pin: str, what: str, low: int = 4, high: int = 255) -> None:
    if not low <= len(pin.encode()) <= high:
        raise errors.InputError(f"the {what} must be {low} to {high} bytes long (the module's range)")


_CKR_NAMES = {
    0xA0: "PinIncorrect",
    0xA1: "PinInvalid",
    0xA2: "PinLenRange",
    0x3: "SlotIDInvalid",
    0xB6: "SessionExists",
    0xE0: "TokenNotPresent",
    0x101: "UserNotLoggedIn",
}


def _ctypes_init_token(module: Path, slot_id: int, label: str, so_pin: str, user_pin: str) -> None:
    """C_InitToken + C_InitPIN through ctypes (the module is already initialised)."""
    dll = ctypes.CDLL(str(module))
    ulong = ctypes.c_ulong
    so = so_pin.encode()
    user = user_pin.encode()
    label32 = label.encode().ljust(32, b" ")
    session = ulong(0)

    def check(rv: int, step: str) -> None:
        if rv != 0:
            name = _CKR_NAMES.get(rv, f"CKR 0x{rv:x}")
            raise errors.HSMError(f"initialising token {label!r}: {step} failed ({name})")

    check(dll.C_InitToken(ulong(slot_id), ctypes.c_char_p(so), ulong(len(so)), label32), "C_InitToken")
    # New token: SoftHSM2 moves it to a new slot id; find it by label.
    count = ulong(0)
    check(dll.C_GetSlotList(ctypes.c_ubyte(1), None, ctypes.byref(count)), "C_GetSlotList")
    slots = (ulong * count.value)()
    check(dll.C_GetSlotList(ctypes.c_ubyte(1), slots, ctypes.byref(count)), "C_GetSlotList")
    target = _slot_with_label(dll, list(slots), label32) or slot_id
    rw_serial = ulong(0x4 | 0x2)
    check(
        dll.C_OpenSession(ulong(target), rw_serial, None, None, ctypes.byref(session)),
        "C_OpenSession",
    )
    try:
        check(dll.C_Login(session, ulong(0), ctypes.c_char_p(so), ulong(len(so))), "SO login")
        try:
            check(dll.C_InitPIN(session, ctypes.c_char_p(user), ulong(len(user))), "C_InitPIN")
        finally:
            dll.C_Logout(session)
    finally:
        dll.C_CloseSession(session)


class _TokenInfo(ctypes.Structure):
    """CK_TOKEN_INFO up to the PIN length range (the rest is padding)."""

    _fields_ = [
        ("label", ctypes.c_char * 32),
        ("manufacturerID", ctypes.c_char * 32),
        ("model", ctypes.c_char * 16),
        ("serialNumber", ctypes.c_char * 16),
        ("flags", ctypes.c_ulong),
        ("ulMaxSessionCount", ctypes.c_ulong),
        ("ulSessionCount", ctypes.c_ulong),
        ("ulMaxRwSessionCount", ctypes.c_ulong),
        ("ulRwSessionCount", ctypes.c_ulong),
        ("ulMaxPinLen", ctypes.c_ulong),
        ("ulMinPinLen", ctypes.c_ulong),
        ("rest", ctypes.c_byte * 256),
    ]


def _slot_ids(dll: ctypes.CDLL) -> list[int]:
    count = ctypes.c_ulong(0)
    if dll.C_GetSlotList(ctypes.c_ubyte(1), None, ctypes.byref(count)) != 0:
        return []
    slots = (ctypes.c_ulong * count.value)()
    if dll.C_GetSlotList(ctypes.c_ubyte(1), slots, ctypes.byref(count)) != 0:
        return []
    return list(slots)


def _slot_with_label(dll: ctypes.CDLL, slots: list[int], label32: bytes) -> int | None:
    for slot in slots:
        info = _TokenInfo()
        if dll.C_GetTokenInfo(ctypes.c_ulong(slot), ctypes.byref(info)) == 0:
            if bytes(info.label) == label32:
                return slot
    return None


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
        public, private = self.raw.generate_keypair(
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
        try:
            transport = serialization.load_der_public_key(encode_rsa_public_key(public))
            assert isinstance(transport, rsa.RSAPublicKey)
            wrapped = transport.encrypt(
                bytes(secret),
                padding.OAEP(mgf=padding.MGF1(hashes.SHA1()), algorithm=hashes.SHA1(), label=None),  # noqa: S303
            )
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
        created = self.raw.create_object(template)
        for attribute in (Attribute.MODIFIABLE, Attribute.DESTROYABLE):
            if created[attribute] is not False:
                raise errors.HSMError(
                    f"token {self.token_label!r}: the module did not keep record {label!r} "
                    f"{attribute.name}=False; it cannot hold an append-only record"
                )

    def record_values(self) -> list[bytes]:
        """The values of this application's data objects, in one scan (labels are not read:
        each read of a private attribute is a decryption in SoftHSM2, see bench/ceremony.py)."""
        values = []
        template = {Attribute.CLASS: ObjectClass.DATA, Attribute.APPLICATION: RECORD_APPLICATION}
        for obj in self.raw.get_objects(template):
            try:
                values.append(bytes(obj[Attribute.VALUE]))
            except p11.PKCS11Error:
                continue
        return values

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
        params = self.raw.create_domain_parameters(
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
        private = self.raw.get_key(object_class=ObjectClass.PRIVATE_KEY, label=SIGNING_LABEL)
        enforce_template(
            private,
            {Attribute.SENSITIVE: True, Attribute.EXTRACTABLE: False, Attribute.SIGN: True},
            "the ceremony signing key",
        )
        created = self._signing_public()
        if created is None:
            raise errors.HSMError(f"token {self.token_label!r}: the signing key pair was not stored")
        return created

    def _signing_public(self) -> ec.EllipticCurvePublicKey | None:
        found = list(
            self.raw.get_objects({Attribute.CLASS: ObjectClass.PUBLIC_KEY, Attribute.LABEL: SIGNING_LABEL})
        )
        if not found:
            return None
        key = serialization.load_der_public_key(encode_ec_public_key(public_key(found[0])))
        assert isinstance(key, ec.EllipticCurvePublicKey)
        return key

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


def _data_attributes(obj: pkcs11.Object) -> dict[str, bool]:
    flags = {}
    for attribute in (Attribute.TOKEN, Attribute.PRIVATE, Attribute.MODIFIABLE, Attribute.DESTROYABLE):
        try:
            flags[attribute.name.lower()] = bool(obj[attribute])
        except p11.PKCS11Error:
            continue
    return flags


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

__all__ = ["HSM", "ExportSession", "KeyInfo", "TokenSession", "enforce_template", "find_module", "wipe"]
