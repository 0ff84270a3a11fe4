"""JSON documents for `rehearse --json` and `byok import --json` (the lead adds the flags).

Each has a `schema` field and a JSON Schema under docs/schemas/; nothing secret goes in (PINs
and shares are never in a Rehearsal or an ImportRecord to begin with).
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from hsm_lab.byok import ImportRecord
from hsm_lab.rehearsal import Rehearsal
from hsm_lab.rehearsal.full import PyramidReport

REHEARSE_SCHEMA = "clefs.rehearse/v1"
BYOK_SCHEMA = "clefs.byok-import/v1"


def _ceremony(report: Rehearsal) -> dict[str, Any]:
    return {
        "lab": str(report.lab.root),
        "first_ceremony": report.first_ceremony,
        "second_ceremony": report.second_ceremony,
        "quorum": {"threshold": report.threshold, "shares": report.share_count},
        "new_quorum": {"threshold": report.new_threshold, "shares": report.new_share_count},
        "import_quorum": list(report.import_quorum),
        "rekey_quorum": list(report.rekey_quorum),
        "kcv": {
            "manifest": report.kcv_manifest,
            "primary": report.kcv_primary,
            "recovery": report.kcv_recovery,
            "after_rekey": report.kcv_after_rekey,
        },
        "retired_share_refusal": report.retired_share_refusal,
        "pinned_signer": report.pinned_signer,
        "recovery_signer": report.recovery_signer,
        "transcript": {
            "entries": report.transcript_entries,
            "head": report.transcript_head,
            "signer_key_id": report.signer_key_id,
            "token_heads": report.token_heads,
            "authorised_signers": report.authorised_signers,
        },
        "timings": {k: round(v, 4) for k, v in report.timings.items()},
    }


def rehearse_doc(report: Rehearsal | PyramidReport) -> dict[str, Any]:
    """The rehearsal's account; the AWS side is null for --ceremony-only."""
    if isinstance(report, Rehearsal):
        return {"schema": REHEARSE_SCHEMA, "ok": True, "ceremony": _ceremony(report), "aws": None}
    compliance = report.compliance
    gaps = compliance.gaps if compliance is not None else []
    return {
        "schema": REHEARSE_SCHEMA,
        "ok": not gaps,
        "ceremony": _ceremony(report.ceremony),
        "aws": {
            "endpoint": report.endpoint,
            "localstack_started": report.localstack_started,
            "resources": report.resources,
            "imports": [asdict(r) for r in report.imports],
            "proofs": dict(report.proofs),
            "gaps": gaps,
            "revocation": report.revocation,
            "timings": {k: round(v, 4) for k, v in report.timings.items()},
        },
    }


def byok_doc(records: list[ImportRecord], proved: bool, target: str) -> dict[str, Any]:
    return {
        "schema": BYOK_SCHEMA,
        "ok": proved,
        "target": target,
        "imports": [asdict(r) for r in records],
        "proved": proved,
    }
