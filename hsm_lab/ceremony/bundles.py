"""The auditor's bundle: the record, exported, checkable without any HSM.

`transcript export DIR` writes the transcript, its signed head, the pinned
signer (anchor.json and PEM), every authorised signer's PEM, the manifests, and
the token's committed heads at export time. `transcript verify --bundle DIR
--expect-signer FPR` checks the same chain, manifests, authorisations and head
signature as a command on the lab does; docs/threat-model.md gives the
openssl-only recipe for the head signature and the chain.

A bundle carries its own pin, so verifying one needs the pinned fingerprint
from somewhere else (the witnessed script): without --expect-signer it is refused.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from hsm_lab import errors
from hsm_lab.ceremony.record import (
    Anchor,
    RecordState,
    check_heads,
    fingerprint_words,
    load_anchor,
    verify_record,
)
from hsm_lab.ceremony.transcripts import Transcript
from hsm_lab.fs import atomic_write_text, private_dir
from hsm_lab.lab import Lab

BUNDLE_FORMAT = "clefs.audit-bundle/v1"
VERIFY_SCHEMA = "clefs.transcript-verify/v1"


def export_bundle(lab: Lab, state: RecordState, directory: Path) -> list[str]:
    """Write the bundle into a new directory (staged, then renamed into place)."""
    if directory.exists() and (not directory.is_dir() or any(directory.iterdir())):
        raise errors.InputError(f"{directory} exists and is not empty: choose a new directory for the bundle")
    staging = directory.with_name(f".{directory.name}.tmp")
    shutil.rmtree(staging, ignore_errors=True)
    try:
        private_dir(staging / "manifests")
        private_dir(staging / "signers")
        shutil.copyfile(lab.transcript, staging / "transcript.jsonl")
        shutil.copyfile(lab.transcript_head, staging / "transcript.head.json")
        atomic_write_text(staging / "anchor.json", json.dumps(state.anchor.to_doc(), indent=2) + "\n")
        atomic_write_text(staging / "signer.pem", state.anchor.pem())
        for signer in state.signers.values():
            pem = Anchor(signer.fingerprint, signer.public_key, signer.token).pem()
            atomic_write_text(staging / "signers" / f"{signer.fingerprint[:16]}.pem", pem)
        for ceremony_id, manifest in state.manifests.items():
            atomic_write_text(staging / "manifests" / f"{ceremony_id}.json", manifest.to_json())
        doc = {"format": BUNDLE_FORMAT, "entries": len(state.entries), "heads_checked": state.token_heads}
        atomic_write_text(staging / "bundle.json", json.dumps(doc, indent=2) + "\n")
        atomic_write_text(staging / "token-heads.json", json.dumps(state.heads, indent=2) + "\n")
        if directory.exists():
            directory.rmdir()
        staging.rename(directory)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return sorted(p.name for p in directory.iterdir())


def verify_bundle(directory: Path, *, expect: str | None) -> RecordState:
    """The same checks as on the lab, from the bundle's files alone."""
    if expect is None:
        raise errors.InputError(
            "a bundle carries its own pin: pass --expect-signer with the fingerprint you were given "
            "out of band"
        )
    anchor = load_anchor(directory / "anchor.json")
    if anchor is None:
        raise errors.InputError(f"{directory} is not a Clefs audit bundle (no anchor.json)")
    transcript = Transcript(directory / "transcript.jsonl", directory / "transcript.head.json")
    state = verify_record(
        transcript, lambda ceremony_id: directory / "manifests" / f"{ceremony_id}.json", anchor, expect=expect
    )
    heads = directory / "token-heads.json"
    if heads.exists():  # the token's committed heads at export time: the chain must still hold them
        try:
            recorded = json.loads(heads.read_text())
            assert isinstance(recorded, list) and all(isinstance(h["seq"], int) for h in recorded)
        except (json.JSONDecodeError, AssertionError, KeyError, TypeError):
            raise errors.TranscriptError(f"{heads} is malformed (edited?)") from None
        check_heads(state.entries, recorded)
    return state


def summary(state: RecordState, checked_against: str) -> dict[str, Any]:
    head = state.head
    return {
        "schema": VERIFY_SCHEMA,
        "ok": True,
        "entries": len(state.entries),
        "head": head.head if head else None,
        "head_signer_key_id": head.signer_key_id if head else None,
        "pinned_signer": state.anchor.fingerprint,
        "pinned_signer_words": fingerprint_words(state.anchor.fingerprint),
        "authorised_signers": [
            {"fingerprint": s.fingerprint, "token": s.token, "how": s.how} for s in state.signers.values()
        ],
        "current_ceremony": state.current,
        "retired": state.retired,
        "token_heads_checked": state.token_heads,
        "checked_against": checked_against,
    }
