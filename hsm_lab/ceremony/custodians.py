"""Custodians: who holds a share, and how their share is sealed to them.

A custodian file is TOML, one table per custodian:

    [[custodian]]
    name = "alice"
    recipient = "age1..."      # an X25519 age recipient (their public key)

    [[custodian]]
    name = "bob"
    passphrase = true          # bob types a passphrase at the ceremony

Shares are sealed with age (https://age-encryption.org/v1), so a custodian can
open theirs with the standard `age` tool as well as with this lab.
"""

from __future__ import annotations

import os
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path

import pyrage

from hsm_lab import errors

NAME_PATTERN = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,31}$")
MIN_PASSPHRASE = 12  # characters; scrypt slows guessing, it does not make "a" a secret


@dataclass(frozen=True)
class Custodian:
    name: str
    recipient: str | None  # age X25519 recipient; None means passphrase

    @property
    def kind(self) -> str:
        return "x25519" if self.recipient else "passphrase"


def check_name(name: object) -> str:
    if not isinstance(name, str) or not NAME_PATTERN.match(name):
        raise errors.InputError(
            f"custodian name {name!r} is invalid: use 1-32 of a-z 0-9 _ . - starting with a letter or digit"
        )
    return name


def check_recipient(name: str, recipient: object) -> str:
    if not isinstance(recipient, str):
        raise errors.InputError(f"custodian {name}: recipient must be an age1... string")
    try:
        pyrage.x25519.Recipient.from_str(recipient)
    except Exception:
        raise errors.InputError(
            f"custodian {name}: {recipient[:12]!r}... is not an age X25519 recipient (age1...)"
        ) from None
    return recipient


def check_distinct(custodians: list[Custodian]) -> None:
    """One recipient per custodian: two slots on one key would let one person hold two shares."""
    names: set[str] = set()
    holders: dict[str, str] = {}
    for custodian in custodians:
        if custodian.name in names:
            raise errors.InputError(f"custodian {custodian.name} is listed twice")
        names.add(custodian.name)
        if custodian.recipient is None:
            continue
        other = holders.get(custodian.recipient)
        if other is not None:
            raise errors.InputError(
                f"custodians {other} and {custodian.name} have the same recipient "
                f"{custodian.recipient[:16]}…: one person would hold two shares; give each custodian "
                "their own key"
            )
        holders[custodian.recipient] = custodian.name


def check_passphrase(name: str, passphrase: str) -> None:
    if len(passphrase) < MIN_PASSPHRASE:
        raise errors.InputError(
            f"the passphrase of custodian {name} is shorter than {MIN_PASSPHRASE} characters; choose "
            "a longer one"
        )


def parse_custodians(text: str, source: str = "custodian file") -> list[Custodian]:
    """Parse and check a custodian file; every problem is one precise line."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise errors.InputError(f"{source}: not valid TOML ({exc})") from None
    entries = data.get("custodian")
    if not isinstance(entries, list) or not entries:
        raise errors.InputError(f"{source}: no [[custodian]] entries")
    custodians: list[Custodian] = []
    seen: set[str] = set()
    for position, entry in enumerate(entries, start=1):
        if not isinstance(entry, dict):
            raise errors.InputError(f"{source}: custodian #{position} is not a table")
        unknown = set(entry) - {"name", "recipient", "passphrase"}
        if unknown:
            raise errors.InputError(f"{source}: custodian #{position} has unknown keys {sorted(unknown)}")
        name = check_name(entry.get("name"))
        if name in seen:
            raise errors.InputError(f"{source}: custodian {name} is listed twice")
        seen.add(name)
        has_recipient = "recipient" in entry
        wants_passphrase = entry.get("passphrase") is True
        if has_recipient == wants_passphrase:
            raise errors.InputError(
                f'{source}: custodian {name} needs exactly one of recipient = "age1..." or passphrase = true'
            )
        recipient = check_recipient(name, entry["recipient"]) if has_recipient else None
        custodians.append(Custodian(name, recipient))
    try:
        check_distinct(custodians)
    except errors.InputError as exc:
        raise errors.InputError(f"{source}: {exc}") from None
    return custodians


def load_custodians(path: Path) -> list[Custodian]:
    try:
        text = path.read_text()
    except OSError as exc:
        raise errors.InputError(f"cannot read custodian file {path}: {exc.strerror}") from None
    return parse_custodians(text, str(path))


def load_identities(paths: list[Path]) -> list[pyrage.x25519.Identity]:
    """age identity files (AGE-SECRET-KEY-1... lines, # comments)."""
    identities: list[pyrage.x25519.Identity] = []
    for path in paths:
        try:
            lines = path.read_text().splitlines()
        except OSError as exc:
            raise errors.InputError(f"cannot read identity file {path}: {exc.strerror}") from None
        found = 0
        for line in lines:
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            try:
                identities.append(pyrage.x25519.Identity.from_str(line))
            except Exception:
                raise errors.InputError(
                    f"identity file {path}: a line is not an age X25519 identity"
                ) from None
            found += 1
        if not found:
            raise errors.InputError(f"identity file {path} holds no AGE-SECRET-KEY-1 line")
    return identities


def passphrase_env(custodian: str) -> str:
    """Env var carrying a custodian's passphrase in automation (never logged)."""
    return "CLEFS_PASSPHRASE_" + re.sub(r"[^A-Z0-9]", "_", custodian.upper())


def passphrase_from_env(custodian: str) -> str | None:
    return os.environ.get(passphrase_env(custodian)) or None
