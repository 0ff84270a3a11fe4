"""The quorum ceremony: init, generate, import, rekey, verify shares.

Each function is one step a security engineer runs. Each opens one HSM session
(the lab lock is held for the step), opens the verified record on that token
(`hsm_lab.ceremony.record`: pinned signer, chain, manifests, the token's own heads,
recovery of interrupted steps) before it touches anything, and is a
transaction: an intent first, then the HSM object and the staged files, then
the committed transcript entry, then CURRENT. Killed at any point, the next
command rolls it forward or back (see `hsm_lab.txn`). Plaintext key and shares
live in bytearrays wiped in `finally`; L0 reaches the HSM non-extractable.

The parts the steps share have their own modules: `token_init` (init),
`quorum` (presenting shares, L0 rebuilt and wiped), `dealing` (a share set made),
`entries` (what each step commits to the transcript).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from hsm_lab import errors, txn
from hsm_lab.ceremony import authority, entries
from hsm_lab.ceremony.custodians import Custodian
from hsm_lab.ceremony.dealing import (
    KCV_METHOD,
    SCHEME,
    Deal,
    abandon,
    check_custodians,
    deal_shares,
    new_ceremony_id,
)
from hsm_lab.ceremony.jose import b64, public_key_der
from hsm_lab.ceremony.manifest import SignedManifest, load_manifest
from hsm_lab.ceremony.quorum import (
    Combined,
    Event,
    Quorum,
    ShareSource,
    check_expectations,
    check_share,
    describe_manifest,
    python_kcv,
    quorum_key,
    quorum_weaknesses,
)
from hsm_lab.ceremony.record import Record, Warn, fingerprint, lab_transcript, open_record
from hsm_lab.ceremony.token_init import InitResult, init_token
from hsm_lab.ceremony.transcripts import Transcript
from hsm_lab.faults import fault
from hsm_lab.fs import wipe
from hsm_lab.hsm import HSM, TokenSession
from hsm_lab.lab import MASTER_LABEL, Lab

# Every name below was importable from this module before it was split (token_init.py, quorum.py,
# dealing.py, entries.py); it still is.
__all__ = [
    "KCV_METHOD",
    "SCHEME",
    "Combined",
    "Deal",
    "DrillResult",
    "Event",
    "InitResult",
    "Quorum",
    "ShareSource",
    "SignedManifest",
    "Warn",
    "check_custodians",
    "check_expectations",
    "check_share",
    "current_manifest",
    "describe_manifest",
    "generate",
    "import_master",
    "init_token",
    "load_manifest",
    "new_ceremony_id",
    "python_kcv",
    "quorum_key",
    "quorum_weaknesses",
    "rekey",
    "transcript",
    "verify_shares",
]


def _quiet(_custodian: str, _message: str) -> None:
    return None


def _ignore(_line: str) -> None:
    return None


def transcript(lab: Lab) -> Transcript:
    """The lab's transcript file (reading only; appending goes through `Record`)."""
    return lab_transcript(lab)


# -- the steps -------------------------------------------------------------------


def generate(
    hsm: HSM,
    lab: Lab,
    *,
    token: str,
    user_pin: str,
    custodians: list[Custodian],
    threshold: int = 5,
    passphrases: dict[str, str] | None = None,
    key_label: str = MASTER_LABEL,
    allow_weak: bool = False,
    allow_no_spare: bool = False,
    actor: str = "operator",
    on_warning: Warn = _ignore,
) -> SignedManifest:
    """A fresh 256-bit master key from the HSM's RNG, kept in the HSM, dealt as K-of-N."""
    weakened = quorum_weaknesses(threshold, len(custodians), allow_weak, allow_no_spare)
    phrases = passphrases or {}
    check_custodians(custodians, phrases)
    with hsm.session(token, user_pin=user_pin) as session:
        record = open_record(lab, session, actor, on_warning)
        record.require_signer()
        if session.find_secret_key(key_label) is not None:
            raise errors.KeyLabelExists(
                f"token {token!r} already holds a key labelled {key_label!r}; refusing to "
                "overwrite it (use another --label or a fresh token)"
            )
        ceremony_id = new_ceremony_id()
        intent = txn.begin(lab.root, "generate", token, [key_label], ceremony_id)
        fault("generate:intent")
        key = session.random_bytes(32)
        stored = None
        try:
            stored = session.import_secret(key_label, key)
            kcv = session.kcv(stored)
            if kcv != python_kcv(key):
                raise errors.HSMError("the HSM's KCV disagrees with the key it was given")
            fault("generate:key")
            deal = Deal(ceremony_id, kcv, key_label, custodians, threshold, phrases, weakened, [])
            manifest = deal_shares(lab, session, key, deal)
            fault("generate:dealt")
        except BaseException:
            abandon(lab, intent, stored)
            raise
        finally:
            wipe(key)
        record.append(actor, "generate", entries.generate_entry(manifest, token, deal, intent))
        fault("generate:committed")
        lab.set_current_ceremony(manifest.ceremony_id)
        intent.finish()
        return manifest


def import_master(
    hsm: HSM,
    lab: Lab,
    *,
    token: str,
    user_pin: str,
    sources: Iterable[tuple[str, ShareSource]],
    actor: str = "operator",
    on_event: Event = _quiet,
    on_warning: Warn = _ignore,
    authorise_signer: bool = False,
    expect_kcv: str | None = None,
    expect_signer: str | None = None,
    expect_ceremony: str | None = None,
) -> tuple[SignedManifest, list[str], str]:
    """Rebuild the master key from K shares straight into `token` (non-extractable).

    Into a token whose signing key is not yet authorised, only with
    `authorise_signer`: the quorum then authorises it (recorded, verifiable offline).
    Returns the manifest, the custodians whose shares were used, and the HSM's KCV.
    """
    with hsm.session(token, user_pin=user_pin) as session:
        record = open_record(lab, session, actor, on_warning)
        manifest = record.state.manifest()
        on_event("manifest", describe_manifest(manifest))
        check_expectations(manifest, expect_kcv, expect_signer, expect_ceremony)
        _check_import_target(session, record, manifest, token, authorise_signer)
        with quorum_key(record, manifest, sources, on_event, "import", actor) as combined:
            quorum, refused, key = combined.quorum, combined.refused, combined.key
            signer = None if record.authorised else _authorisation(session, key, manifest, token)
            intent = txn.begin(lab.root, "import", token, [manifest.key_label])
            fault("import:intent")
            stored = None
            try:
                stored = session.import_secret(manifest.key_label, key)
                kcv = session.kcv(stored)
                if kcv != manifest.kcv:
                    raise errors.QuorumError(f"HSM KCV {kcv} does not match the manifest's {manifest.kcv}")
                fault("import:unwrapped")
                used = [s.custodian for s in quorum.accepted]
                record.append(
                    actor, "import", entries.import_entry(manifest, token, kcv, used, refused, signer, intent)
                )
            except BaseException:
                abandon(lab, intent, stored)
                raise
            fault("import:committed")
            intent.finish()
        return manifest, used, kcv


def _check_import_target(
    session: TokenSession, record: Record, manifest: SignedManifest, token: str, authorise_signer: bool
) -> None:
    """Before any share is opened: the label is free on `token`, and its signer may sign or be authorised."""
    if session.find_secret_key(manifest.key_label) is not None:
        raise errors.KeyLabelExists(
            f"token {token!r} already holds a key labelled {manifest.key_label!r}; refusing "
            "to overwrite it (use a fresh token)"
        )
    if not record.authorised and not authorise_signer:
        from hsm_lab.ceremony.record import fingerprint_words

        raise errors.TranscriptError(
            f"token {token!r} signs with {record.own[:16]}… ({fingerprint_words(record.own)}), "
            "which is not "
            "an authorised signer of this lab: pass --authorise-signer to let this quorum authorise it"
        )


def _authorisation(
    session: TokenSession, key: bytearray, manifest: SignedManifest, token: str
) -> dict[str, Any]:
    """The quorum authority (from L0) authorises this token's signing key."""
    quorum_authority = authority.derive(key)
    try:
        if authority.describe(quorum_authority) != manifest.body["quorum_authority"]:
            raise errors.QuorumError("the combined key's quorum authority is not the manifest's")
        public = session.signing_public_key()
        value = fingerprint(public)
        return {
            "fingerprint": value,
            "public_key": b64(public_key_der(public)),
            "token": token,
            "authorisation": authority.authorise(quorum_authority, value, token, manifest.ceremony_id),
        }
    finally:
        del quorum_authority


def rekey(
    hsm: HSM,
    lab: Lab,
    *,
    token: str,
    user_pin: str,
    sources: Iterable[tuple[str, ShareSource]],
    custodians: list[Custodian],
    threshold: int = 5,
    passphrases: dict[str, str] | None = None,
    allow_weak: bool = False,
    allow_no_spare: bool = False,
    actor: str = "operator",
    on_event: Event = _quiet,
    on_warning: Warn = _ignore,
) -> tuple[SignedManifest, SignedManifest, list[str]]:
    """A new share set (custodians and/or K of N) for the same key; the old set retires.

    Like Vault's rekey, the key itself does not change: the retired shares still
    combine to L0 outside this tool; only a new L0 (rotation) removes that risk.
    """
    weakened = quorum_weaknesses(threshold, len(custodians), allow_weak, allow_no_spare)
    phrases = passphrases or {}
    check_custodians(custodians, phrases)
    with hsm.session(token, user_pin=user_pin) as session:
        record = open_record(lab, session, actor, on_warning)
        record.require_signer()
        old = record.state.manifest()
        on_event("manifest", describe_manifest(old))
        with quorum_key(record, old, sources, on_event, "rekey", actor) as combined:
            quorum, refused, key = combined.quorum, combined.refused, combined.key
            held = session.find_secret_key(old.key_label)
            if held is not None and session.kcv(held) != old.kcv:
                raise errors.QuorumError(
                    f"token {token!r} holds a different {old.key_label!r} than the manifest's"
                )
            retires = [entries.retirement(old)]
            ceremony_id = new_ceremony_id()
            intent = txn.begin(lab.root, "rekey", token, [], ceremony_id)
            fault("rekey:intent")
            try:
                deal = Deal(
                    ceremony_id, old.kcv, old.key_label, custodians, threshold, phrases, weakened, retires
                )
                new = deal_shares(lab, session, key, deal)
                fault("rekey:dealt")
            except BaseException:
                abandon(lab, intent)
                raise
            used = [s.custodian for s in quorum.accepted]
        record.append(actor, "rekey", entries.rekey_entry(old, new, deal, used, refused, intent))
        fault("rekey:committed")
        lab.set_current_ceremony(new.ceremony_id)
        intent.finish()
        return old, new, used


@dataclass(frozen=True)
class DrillResult:
    custodian: str
    ok: bool
    detail: str


def verify_shares(
    hsm: HSM,
    lab: Lab,
    *,
    token: str,
    user_pin: str,
    sources: Iterable[tuple[str, ShareSource]]
    | Callable[[SignedManifest], Iterable[tuple[str, ShareSource]]],
    actor: str = "operator",
    on_warning: Warn = _ignore,
) -> list[DrillResult]:
    """Each custodian checks their share against the current manifest, alone (no other share)."""
    with hsm.session(token, user_pin=user_pin) as session:
        record = open_record(lab, session, actor, on_warning)
        record.require_signer()
        manifest = record.state.manifest()
        presented = sources(manifest) if callable(sources) else sources
        results: list[DrillResult] = []
        for claimed, source in presented:
            share = None
            try:
                share = source()
                check_share(manifest, share, record.state.retired, claimed)
                results.append(DrillResult(share.custodian, True, "matches its commitment"))
            except errors.ShareRejected as exc:
                results.append(DrillResult(claimed, False, str(exc)))
            finally:
                if share is not None:
                    share.wipe()
        record.append(
            actor,
            "verify-share",
            {
                "ceremony_id": manifest.ceremony_id,
                "results": {r.custodian: "ok" if r.ok else r.detail for r in results},
            },
        )
    return results


def current_manifest(hsm: HSM, lab: Lab, *, token: str, user_pin: str) -> SignedManifest:
    """The current share set, as the verified record on `token` says."""
    with hsm.session(token, user_pin=user_pin) as session:
        return Record.open(lab, session).state.manifest()
