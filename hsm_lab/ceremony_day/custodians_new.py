"""First contact: age identities and the custodians TOML for a rehearsal.

`custodians new NAME... --out DIR` makes one X25519 identity per name (DIR/NAME.txt, 0600, in a
0700 directory) and DIR/custodians.toml listing their recipients, so the default 5-of-7 works
out of the box. For a real ceremony each custodian makes their own identity (`age-keygen`, or a
YubiKey with `age-plugin-yubikey`) and hands over only the recipient; `check_any_recipient`
accepts both kinds when a custodians file is written by hand.
"""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path

import pyrage

from hsm_lab import errors
from hsm_lab.ceremony.custodians import (
    Custodian,
    check_distinct,
    check_name,
    check_recipient,
    parse_custodians,
)
from hsm_lab.fs import atomic_write_text

YUBIKEY_RECIPIENT = re.compile(r"^age1yubikey1[02-9ac-hj-np-z]{50,70}$")  # bech32 data part


def check_any_recipient(name: str, recipient: object) -> str:
    """An X25519 recipient (age1...) or an age-plugin-yubikey one (age1yubikey1...).

    Clefs itself seals only to X25519 today: a YubiKey recipient is recognised so a custodians
    file can be checked before the day, and named as such when sealing would need the plugin.
    """
    if isinstance(recipient, str) and recipient.startswith("age1yubikey1"):
        if not YUBIKEY_RECIPIENT.match(recipient):
            raise errors.InputError(
                f"custodian {name}: {recipient[:20]!r}... is not an age1yubikey1 recipient"
            )
        return recipient
    return check_recipient(name, recipient)


def custodians_toml(entries: list[tuple[str, str]]) -> str:
    """The TOML text `hsm_lab.ceremony.custodians.parse_custodians` reads, one table per custodian."""
    lines = ["# Clefs custodians (one [[custodian]] each); made by `custodians new`", ""]
    for name, recipient in entries:
        lines += ["[[custodian]]", f'name = "{name}"', f'recipient = "{recipient}"', ""]
    return "\n".join(lines)


def _private_out(out: Path) -> Path:
    out.mkdir(mode=0o700, parents=True, exist_ok=True)
    info = os.lstat(out)
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid():
        raise errors.InputError(f"{out} is not a directory of yours")
    if info.st_mode & 0o077:
        os.chmod(out, 0o700)
    return out


def make_custodians(names: list[str], out: Path, *, threshold: int = 5) -> tuple[Path, list[Path]]:
    """Identities and custodians.toml in `out`; refuses to overwrite anything."""
    if len(names) < 2:
        raise errors.InputError("name at least two custodians (the default quorum is 5-of-7)")
    if threshold > len(names):
        raise errors.InputError(
            f"{len(names)} custodians cannot meet the default K = {threshold}: name at least {threshold}, "
            "or generate with a smaller -k (and --allow-weak-quorum if below the strict default)"
        )
    for name in names:
        check_name(name)
    if len(set(names)) != len(names):
        raise errors.InputError("a custodian is named twice")
    _private_out(out)
    toml = out / "custodians.toml"
    targets = [toml, *[out / f"{n}.txt" for n in names]]
    existing = [str(p) for p in targets if p.exists()]
    if existing:
        raise errors.InputError(f"{existing[0]} exists: choose another --out (nothing was written)")
    entries = []
    written: list[Path] = []
    try:
        for name in names:
            identity = pyrage.x25519.Identity.generate()
            recipient = str(identity.to_public())
            path = out / f"{name}.txt"
            atomic_write_text(path, f"# custodian {name}\n# public key: {recipient}\n{identity}\n", 0o600)
            written.append(path)
            entries.append((name, recipient))
        text = custodians_toml(entries)
        custodians = parse_custodians(text, str(toml))  # what generate will read, checked now
        check_distinct(custodians)
        atomic_write_text(toml, text, 0o600)
    except BaseException:
        for path in written:
            path.unlink(missing_ok=True)
        raise
    return toml, written


def load_any_custodians(text: str, source: str) -> list[tuple[str, str | None]]:
    """Names and recipients of a hand-written file, YubiKey recipients included (checking only)."""
    import tomllib

    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise errors.InputError(f"{source}: not valid TOML ({exc})") from None
    found: list[tuple[str, str | None]] = []
    for position, entry in enumerate(data.get("custodian") or [], start=1):
        if not isinstance(entry, dict):
            raise errors.InputError(f"{source}: custodian #{position} is not a table")
        name = check_name(entry.get("name"))
        recipient = entry.get("recipient")
        found.append((name, check_any_recipient(name, recipient) if recipient is not None else None))
    if not found:
        raise errors.InputError(f"{source}: no [[custodian]] entries")
    return found


__all__ = ["Custodian", "check_any_recipient", "custodians_toml", "load_any_custodians", "make_custodians"]
