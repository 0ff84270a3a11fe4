"""The PKCS#11 module: finding it, loading it once per process, and probing what it can do.

SoftHSM2 gets a config and token directory private to each lab (`softhsm_config`,
docs/softhsm.md); it re-reads SOFTHSM2_CONF on C_Initialize, so switching labs
re-initialises the loaded library. `probe_module` lists what the ceremony needs that a
module lacks, before any ceremony runs on it.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import TYPE_CHECKING

import pkcs11
from pkcs11 import Attribute, KeyType, Mechanism, ObjectClass
from pkcs11 import exceptions as p11

from hsm_lab import errors
from hsm_lab.fs import atomic_write_text, private_dir
from hsm_lab.hsm.templates import _NO_USAGE
from hsm_lab.lab import configured

if TYPE_CHECKING:
    from hsm_lab.hsm.p11 import Library
    from hsm_lab.hsm.session import TokenSession

SOFTHSM_CANDIDATES = (
    "/usr/lib/softhsm/libsofthsm2.so",
    "/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so",
    "/usr/lib/aarch64-linux-gnu/softhsm/libsofthsm2.so",
    "/usr/local/lib/softhsm/libsofthsm2.so",
)
MODULE_ENV = "CLEFS_PKCS11_MODULE"


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
