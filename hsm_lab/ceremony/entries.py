"""What each step commits to the transcript: the params of its entry (never a secret).

`hsm_lab.ceremony.verification` reads them back: `ceremony_id` and
`manifest_sha256` bind a share set to the chain, `old_ceremony_id` retires one,
`signer_authorised` adds a signer, `txn` ties the entry to its step's intent.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from hsm_lab import txn
from hsm_lab.ceremony.dealing import Deal
from hsm_lab.ceremony.manifest import SignedManifest


def generate_entry(manifest: SignedManifest, token: str, deal: Deal, intent: txn.Intent) -> dict[str, Any]:
    """The committed `generate` entry (what was dealt: `deal`; never a secret)."""
    return {
        "ceremony_id": manifest.ceremony_id,
        "token": token,
        "key_label": deal.key_label,
        "kcv": deal.kcv,
        "threshold": deal.threshold,
        "shares": len(deal.custodians),
        "custodians": [f"{c.name} ({c.kind})" for c in deal.custodians],
        "manifest_sha256": manifest.digest(),
        "signer_key_id": manifest.body["signer"]["key_id"],
        "weakened": deal.weakened,
        "txn": intent.txn,
    }


def import_entry(
    manifest: SignedManifest,
    token: str,
    kcv: str,
    used: list[str],
    refused: list[dict[str, str]],
    signer: dict[str, Any] | None,
    intent: txn.Intent,
) -> dict[str, Any]:
    """The committed `import` entry (`signer`: the quorum's authorisation of this token, or None)."""
    return {
        "ceremony_id": manifest.ceremony_id,
        "token": token,
        "key_label": manifest.key_label,
        "kcv": kcv,
        "custodians": used,
        "refused": refused,
        "signer_authorised": signer,
        "txn": intent.txn,
    }


def retirement(old: SignedManifest) -> dict[str, str]:
    """How a new manifest names the share set it retires."""
    return {
        "ceremony_id": old.ceremony_id,
        "manifest_sha256": old.digest(),
        "retired": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }


def rekey_entry(
    old: SignedManifest,
    new: SignedManifest,
    deal: Deal,
    used: list[str],
    refused: list[dict[str, str]],
    intent: txn.Intent,
) -> dict[str, Any]:
    """The committed `rekey` entry (the new set: `deal`; never a secret)."""
    return {
        "old_ceremony_id": old.ceremony_id,
        "ceremony_id": new.ceremony_id,
        "kcv": new.kcv,
        "threshold": deal.threshold,
        "shares": len(deal.custodians),
        "custodians": [f"{c.name} ({c.kind})" for c in deal.custodians],
        "quorum_used": used,
        "refused": refused,
        "manifest_sha256": new.digest(),
        "weakened": deal.weakened,
        "txn": intent.txn,
    }
