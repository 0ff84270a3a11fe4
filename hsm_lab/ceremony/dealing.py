"""Dealing a share set: split L0, seal each share to its custodian, sign the manifest.

Used by `generate` (a new key) and `rekey` (the same key, a new set). The set is
written to a staging folder and renamed into place; it is not CURRENT until the
step's transcript entry is committed. The shares and the quorum authority key
live only inside `deal_shares`, and are wiped there whatever happens.
"""

from __future__ import annotations

import secrets
import shutil
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from hsm_lab import errors, txn
from hsm_lab.ceremony import authority, shares
from hsm_lab.ceremony.custodians import Custodian, check_distinct, check_passphrase
from hsm_lab.ceremony.manifest import MANIFEST_FORMAT, SignedManifest, sign_manifest
from hsm_lab.ceremony.shares import Share
from hsm_lab.fs import private_dir, wipe
from hsm_lab.hsm import TokenSession
from hsm_lab.lab import Lab

SCHEME = "shamir-gf256 (pyshamir 1.1.0, HashiCorp Vault compatible), x = last share byte"


KCV_METHOD = "AES-ECB(K, 0^128)[0:3], computed in the HSM"


def new_ceremony_id() -> str:
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    return f"cer-{stamp}-{secrets.token_hex(4)}"


def _custodian_entries(custodians: list[Custodian], sealed_shares: list[Share]) -> list[dict[str, Any]]:
    return [
        {
            "name": c.name,
            "kind": c.kind,
            "recipient": c.recipient,
            "commitment": shares.commitment(s.ceremony_id, s.custodian, s.value),
        }
        for c, s in zip(custodians, sealed_shares, strict=True)
    ]


@dataclass(frozen=True)
class Deal:
    """What a new share set is made of (everything but the key)."""

    ceremony_id: str
    kcv: str
    key_label: str
    custodians: list[Custodian]
    threshold: int
    passphrases: dict[str, str]
    weakened: list[str]
    retires: list[dict[str, str]]


def check_custodians(custodians: list[Custodian], passphrases: dict[str, str]) -> None:
    """Before any HSM work: distinct recipients, a passphrase for each who needs one."""
    check_distinct(custodians)
    missing = [c.name for c in custodians if c.recipient is None and not passphrases.get(c.name)]
    if missing:
        raise errors.InputError(f"no passphrase for custodian(s) {', '.join(missing)}")
    for c in custodians:
        if c.recipient is None:
            check_passphrase(c.name, passphrases[c.name])


def deal_shares(lab: Lab, session: TokenSession, key: bytearray, deal: Deal) -> SignedManifest:
    """Split `key`, seal each share, sign the manifest, put the set in place (not yet CURRENT)."""
    ceremony_id = deal.ceremony_id
    parts = shares.split(key, deal.threshold, len(deal.custodians))
    dealt = [Share(ceremony_id, c.name, p) for c, p in zip(deal.custodians, parts, strict=True)]
    staging = lab.ceremonies / f".{ceremony_id}.tmp"
    quorum_authority = authority.derive(key)
    try:
        sealed = {
            s.custodian: shares.seal(s, c, deal.passphrases.get(c.name))
            for s, c in zip(dealt, deal.custodians, strict=True)
        }
        body = {
            "format": MANIFEST_FORMAT,
            "ceremony_id": ceremony_id,
            "created": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "key_label": deal.key_label,
            "kcv": deal.kcv,
            "kcv_method": KCV_METHOD,
            "threshold": deal.threshold,
            "shares": len(deal.custodians),
            "scheme": SCHEME,
            "share_format": shares.SHARE_FORMAT,
            "share_encryption": "age-encryption.org/v1 (X25519 recipient or scrypt passphrase)",
            "custodians": _custodian_entries(deal.custodians, dealt),
            "signer": None,
            "retires": deal.retires,
            "weakened": deal.weakened,
            "quorum_authority": authority.describe(quorum_authority),
        }
        manifest = sign_manifest(body, session)
        private_dir(lab.ceremonies)
        private_dir(staging)
        private_dir(staging / "shares")
        for name, blob in sealed.items():
            shares.write_sealed(staging / "shares" / f"{name}.age", blob)
        manifest.write(staging / "manifest.json")
        staging.rename(lab.ceremony_dir(ceremony_id))
        return manifest
    finally:
        for share in dealt:
            share.wipe()
        wipe(*parts)
        del quorum_authority
        shutil.rmtree(staging, ignore_errors=True)


def abandon(lab: Lab, intent: txn.Intent, stored: Any = None) -> None:
    """Undo an uncommitted step that failed with an error (not a kill)."""
    if stored is not None:
        stored.destroy()
    if intent.ceremony_id:
        shutil.rmtree(lab.ceremony_dir(intent.ceremony_id), ignore_errors=True)
    intent.finish()
