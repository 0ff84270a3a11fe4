"""End to end (health documents): age X25519 to the patient and the practitioner.

The platform's roles (KMS + S3) only ever obtain the age ciphertext; :func:`open_document` is
what the patient's or practitioner's device runs (docs/datapath.md, "End to end").
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeAlias

import pyrage

from hsm_lab.errors import ClefsError, InputError


class EndToEndError(ClefsError):
    """An end-to-end record needs the patient's or practitioner's identity, or this identity is not one."""


# pyrage ships no type information (its names are Any to mypy): the alias is explicit.
Identities: TypeAlias = pyrage.x25519.Identity | Sequence[pyrage.x25519.Identity]


def parse_recipients(recipients: Sequence[str | pyrage.x25519.Recipient]) -> list[pyrage.x25519.Recipient]:
    parsed: list[pyrage.x25519.Recipient] = []
    for recipient in recipients:
        if isinstance(recipient, pyrage.x25519.Recipient):
            parsed.append(recipient)
            continue
        try:
            parsed.append(pyrage.x25519.Recipient.from_str(str(recipient).strip()))
        except Exception:
            raise InputError(f"{str(recipient)[:12]!r}... is not an age X25519 recipient (age1...)") from None
    return parsed


def seal_document(plaintext: bytes, recipients: Sequence[str | pyrage.x25519.Recipient]) -> bytes:
    """age-encrypt a document to every recipient (each can open it alone)."""
    parsed = parse_recipients(recipients)
    if not parsed:
        raise InputError("an end-to-end document needs at least one recipient (patient, practitioner)")
    sealed: bytes = pyrage.encrypt(bytes(plaintext), parsed)
    return sealed


def open_document(sealed: bytes, identity: Identities, name: str = "document") -> bytes:
    """What the patient's or practitioner's device runs: age-decrypt with their identity."""
    identities = [identity] if isinstance(identity, pyrage.x25519.Identity) else list(identity)
    if not identities:
        raise EndToEndError(f"{name}: no identity given")
    try:
        plaintext: bytes = pyrage.decrypt(sealed, identities)
    except Exception:
        raise EndToEndError(f"{name}: this identity cannot open it (not a recipient)") from None
    return plaintext
