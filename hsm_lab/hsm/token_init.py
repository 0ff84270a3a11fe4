"""C_InitToken, C_InitPIN and C_GetTokenInfo through ctypes (docs/softhsm.md).

python-pkcs11 has no C_InitToken/C_InitPIN and does not report a token's PIN length
range, so these calls go to the same, already initialised, module through ctypes.
"""

from __future__ import annotations

import ctypes
from pathlib import Path

from hsm_lab import errors

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
