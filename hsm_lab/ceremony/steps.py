"""The quorum ceremony: init, generate, import, rekey, verify shares.

Each function is one step a security engineer runs. Each opens one HSM session
(the lab lock is held for the step), opens the verified record on that token
(`hsm_lab.record`: pinned signer, chain, manifests, the token's own heads,
recovery of interrupted steps) before it touches anything, and is a
transaction: an intent first, then the HSM object and the staged files, then
the committed transcript entry, then CURRENT. Killed at any point, the next
command rolls it forward or back (see `hsm_lab.txn`). Plaintext key and shares
live in bytearrays wiped in `finally`; L0 reaches the HSM non-extractable.
"""

from __future__ import annotations

import secrets
import shutil
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from hsm_lab import errors, txn
from hsm_lab.ceremony import authority, shares
from hsm_lab.ceremony.custodians import Custodian, check_distinct, check_passphrase
from hsm_lab.ceremony.jose import b64, public_key_der
from hsm_lab.ceremony.manifest import MANIFEST_FORMAT, SignedManifest, load_manifest, sign_manifest
from hsm_lab.ceremony.record import (
    Anchor,
    Record,
    anchor_path,
    fingerprint,
    lab_transcript,
    load_anchor,
    save_anchor,
    token_anchor,
    write_token_anchor,
)
from hsm_lab.ceremony.shares import Share
from hsm_lab.faults import fault
from hsm_lab.fs import private_dir, wipe
from hsm_lab.hsm import HSM, KCV_LEN, TokenSession
from hsm_lab.lab import MASTER_LABEL, Lab

SCHEME = "shamir-gf256 (pyshamir 1.1.0, HashiCorp Vault compatible), x = last share byte"
KCV_METHOD = "AES-ECB(K, 0^128)[0:3], computed in the HSM"
ShareSource = Callable[[], Share]
Event = Callable[[str, str], None]
Warn = Callable[[str], None]

__all__ = ["SignedManifest", "load_manifest", "transcript"]


def _quiet(_custodian: str, _message: str) -> None:
    return None


def _ignore(_line: str) -> None:
    return None


def new_ceremony_id() -> str:
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    return f"cer-{stamp}-{secrets.token_hex(4)}"


def python_kcv(key: bytearray) -> str:
    """The same KCV, computed in memory: to refuse a wrong combination early."""
    encryptor = Cipher(algorithms.AES(bytes(key)), modes.ECB()).encryptor()  # noqa: S305 - KCV
    return (encryptor.update(bytes(16)) + encryptor.finalize())[:KCV_LEN].hex()


def quorum_weaknesses(
    threshold: int, share_count: int, allow_weak: bool, allow_no_spare: bool = False
) -> list[str]:
    """Strict default: K >= 3, K a majority of N, and K < N. Anything weaker needs its flag."""
    shares.check_parameters(threshold, share_count)
    weak = []
    if threshold < 3 or 2 * threshold <= share_count:
        if not allow_weak:
            raise errors.InputError(
                f"a {threshold}-of-{share_count} quorum is weaker than the strict default "
                "(K >= 3 and a majority of N); pass --allow-weak-quorum to accept it"
            )
        weak.append(
            f"quorum {threshold}-of-{share_count} is below the strict default (K >= 3 and a majority of N)"
        )
    if threshold == share_count:
        if not allow_no_spare:
            raise errors.InputError(
                f"a {threshold}-of-{share_count} quorum has no spare: one lost share loses the key; "
                "pass --allow-no-spare to accept it"
            )
        weak.append(f"quorum {threshold}-of-{share_count} has no spare share (K = N)")
    return weak


@dataclass
class Quorum:
    """Shares presented one by one against a signed manifest."""

    manifest: SignedManifest
    retired: dict[str, str] = field(default_factory=dict)  # old ceremony id -> retiring id
    accepted: list[Share] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        return len(self.accepted) >= self.manifest.threshold

    def present(self, share: Share, claimed: str | None = None) -> None:
        """Check one share at once; refusals name the custodian and count nothing."""
        check_share(self.manifest, share, self.retired, claimed)
        for other in self.accepted:
            if other.custodian == share.custodian:
                raise errors.ShareRejected(f"{share.custodian}: share already presented")
            if other.x == share.x:
                raise errors.ShareRejected(
                    f"{share.custodian}: share duplicates the share of {other.custodian}"
                )
        self.accepted.append(share)

    def combine(self) -> bytearray:
        """Combine K accepted shares and check the result against the manifest KCV."""
        key = shares.combine(self.accepted, self.manifest.threshold)
        if python_kcv(key) != self.manifest.kcv:
            wipe(key)
            raise errors.QuorumError(
                f"the combined key does not match KCV {self.manifest.kcv}; nothing was imported"
            )
        return key

    def wipe(self) -> None:
        for share in self.accepted:
            share.wipe()


def check_share(
    manifest: SignedManifest, share: Share, retired: dict[str, str], claimed: str | None = None
) -> None:
    who = share.custodian
    if claimed and claimed != who:
        raise errors.ShareRejected(f"{claimed}: the share inside belongs to custodian {who}")
    if share.ceremony_id != manifest.ceremony_id:
        if share.ceremony_id in retired:
            raise errors.ShareRejected(
                f"{who}: share of ceremony {share.ceremony_id}, retired by "
                f"{retired[share.ceremony_id]}; use the current share"
            )
        raise errors.ShareRejected(
            f"{who}: share of another ceremony ({share.ceremony_id}), not {manifest.ceremony_id}"
        )
    entry = manifest.custodians.get(who)
    if entry is None:
        raise errors.ShareRejected(f"{who} is not a custodian of ceremony {manifest.ceremony_id}")
    if not shares.matches_commitment(share, entry["commitment"]):
        raise errors.ShareRejected(
            f"{who}: share does not match its commitment in the manifest (forged, tampered or corrupted)"
        )


def transcript(lab: Lab) -> Any:
    """The lab's transcript file (reading only; appending goes through `Record`)."""
    return lab_transcript(lab)


def _open(lab: Lab, session: TokenSession, actor: str, warn: Warn, expect: str | None = None) -> Record:
    record = Record.open(lab, session, expect=expect, actor=actor)
    for line in record.warnings:
        warn(line)
    return record


# -- init ---------------------------------------------------------------------------


@dataclass(frozen=True)
class InitResult:
    created: bool  # False: the token was already complete, nothing changed
    token: str
    fingerprint: str  # this token's ceremony signing key
    anchor: Anchor  # the lab's pinned signer
    authorised: bool  # this token may sign the record now


def init_token(
    hsm: HSM,
    lab: Lab,
    *,
    token: str,
    so_pin: str,
    user_pin: str,
    expect_signer: str | None = None,
    actor: str = "operator",
    on_warning: Warn = _ignore,
) -> InitResult:
    """Initialise a token (resumable), pin the lab's signer in it, record the first init.

    The first token of a lab pins its own signing key; a later token pins the
    lab's existing pin (compare its fingerprint with the witnessed one) and may
    sign only once a quorum authorises it (`import --authorise-signer`).
    """
    private_dir(lab.root)
    made = hsm.init_token(token, so_pin, user_pin)
    with hsm.session(token, user_pin=user_pin) as session:
        own_key = session.signing_public_key()
        own = fingerprint(own_key)
        anchor = load_anchor(anchor_path(lab))
        pinned = token_anchor(session)
        wrote = False
        if anchor is None and pinned == own and lab.transcript.exists():
            anchor = Anchor.of(own_key, token)  # anchor.json lost: the token's own pin restores it
            save_anchor(lab, anchor)
            on_warning(f"restored {anchor_path(lab).name} from token {token!r}, which pins its own key")
        if anchor is None:
            if lab.transcript.exists() and lab.transcript.stat().st_size:
                raise errors.TranscriptError(
                    f"lab {lab.root} has a transcript but no {anchor_path(lab).name}: restore it from "
                    "a backup"
                )
            if pinned is not None and pinned != own:
                raise errors.TranscriptError(f"token {token!r} pins another signer ({pinned[:16]}…)")
            anchor = Anchor.of(own_key, token)
            if expect_signer and not anchor.fingerprint.startswith(expect_signer):
                raise errors.TranscriptError(
                    f"token {token!r} signs with {own[:16]}…, not the expected {expect_signer[:16]}…"
                )
            if pinned is None:
                write_token_anchor(session, anchor)
            save_anchor(lab, anchor)
            wrote = True
        else:
            if expect_signer and not anchor.fingerprint.startswith(expect_signer):
                raise errors.TranscriptError(
                    f"the lab pins signer {anchor.fingerprint[:16]}…, not the expected "
                    f"{expect_signer[:16]}…: "
                    "this is not the lab you witnessed"
                )
            if pinned is None:
                write_token_anchor(session, anchor)
                wrote = True
            elif pinned != anchor.fingerprint:
                raise errors.TranscriptError(
                    f"token {token!r} pins {pinned[:16]}…, the lab pins {anchor.fingerprint[:16]}…"
                )
        record = _open(lab, session, actor, on_warning)
        if record.authorised and not any(
            e["action"] == "init" and e["params"].get("token") == token for e in record.state.entries
        ):
            record.append(
                actor,
                "init",
                {
                    "token": token,
                    "module": str(hsm.module),
                    "signing_key": own,
                    "pinned_signer": anchor.fingerprint,
                },
            )
            wrote = True
        return InitResult(made or wrote, token, own, anchor, record.authorised)


# -- dealing ---------------------------------------------------------------------------


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


def _deal(lab: Lab, session: TokenSession, key: bytearray, deal: Deal) -> SignedManifest:
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


def _abandon(lab: Lab, intent: txn.Intent, stored: Any = None) -> None:
    """Undo an uncommitted step that failed with an error (not a kill)."""
    if stored is not None:
        stored.destroy()
    if intent.ceremony_id:
        shutil.rmtree(lab.ceremony_dir(intent.ceremony_id), ignore_errors=True)
    intent.finish()


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
        record = _open(lab, session, actor, on_warning)
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
            manifest = _deal(lab, session, key, deal)
            fault("generate:dealt")
        except BaseException:
            _abandon(lab, intent, stored)
            raise
        finally:
            wipe(key)
        record.append(
            actor,
            "generate",
            {
                "ceremony_id": manifest.ceremony_id,
                "token": token,
                "key_label": key_label,
                "kcv": kcv,
                "threshold": threshold,
                "shares": len(custodians),
                "custodians": [f"{c.name} ({c.kind})" for c in custodians],
                "manifest_sha256": manifest.digest(),
                "signer_key_id": manifest.body["signer"]["key_id"],
                "weakened": weakened,
                "txn": intent.txn,
            },
        )
        fault("generate:committed")
        lab.set_current_ceremony(manifest.ceremony_id)
        intent.finish()
        return manifest


def _collect(
    quorum: Quorum, sources: Iterable[tuple[str, ShareSource]], on_event: Event
) -> list[dict[str, str]]:
    """Present shares until K are accepted; a bad share is named, skipped, and counts nothing."""
    refused: list[dict[str, str]] = []
    for claimed, source in sources:
        if quorum.complete:
            break
        try:
            share = source()
            quorum.present(share, claimed)
        except errors.ShareRejected as exc:
            refused.append({"custodian": claimed, "reason": str(exc)})
            on_event(claimed, f"refused: {exc}")
            continue
        on_event(share.custodian, f"accepted ({len(quorum.accepted)}/{quorum.manifest.threshold})")
    return refused


def _short_quorum(
    record: Record, quorum: Quorum, refused: list[dict[str, str]], action: str, actor: str
) -> None:
    """Too few valid shares: record it (when this token may sign) and refuse."""
    manifest = quorum.manifest
    if record.authorised:
        record.append(
            actor,
            f"{action}.aborted",
            {
                "ceremony_id": manifest.ceremony_id,
                "presented": [s.custodian for s in quorum.accepted],
                "refused": refused,
                "reason": "too few valid shares",
            },
        )
    why = f" ({len(refused)} refused: {refused[0]['reason']})" if refused else ""
    raise errors.QuorumError(
        f"{len(quorum.accepted)} valid shares presented, {manifest.threshold} needed{why}: ask "
        f"{manifest.threshold - len(quorum.accepted)} more custodian(s); nothing was imported"
    )


@dataclass(frozen=True)
class Combined:
    """L0 rebuilt by a quorum: the accepted shares, the refusals, and the key (wiped on exit)."""

    quorum: Quorum
    refused: list[dict[str, str]]
    key: bytearray


@contextmanager
def quorum_key(
    record: Record,
    manifest: SignedManifest,
    sources: Iterable[tuple[str, ShareSource]],
    on_event: Event,
    action: str,
    actor: str,
) -> Iterator[Combined]:
    """Collect shares until K are accepted, then combine them into L0 (checked against the KCV).

    A bad share is named, skipped and counts nothing (progress k/K goes to `on_event`); too
    few valid shares is recorded as `<action>.aborted` and refused. The combined key and
    every accepted share are wiped when the block exits, however it exits.
    """
    quorum = Quorum(manifest, record.state.retired)
    key: bytearray | None = None
    try:
        refused = _collect(quorum, sources, on_event)
        if not quorum.complete:
            _short_quorum(record, quorum, refused, action, actor)
        key = quorum.combine()
        yield Combined(quorum, refused, key)
    finally:
        wipe(key)
        quorum.wipe()


def check_expectations(
    manifest: SignedManifest, expect_kcv: str | None, expect_signer: str | None, expect_ceremony: str | None
) -> None:
    """The operator's witnessed values, checked before any share is opened."""
    if expect_kcv is not None and expect_kcv.strip().lower() != manifest.kcv:
        raise errors.QuorumError(
            f"the manifest's KCV is {manifest.kcv}, not the witnessed {expect_kcv.strip()}: stop, this is "
            "not the key of the ceremony you witnessed"
        )
    if expect_signer is not None and not manifest.signer_fingerprint.startswith(expect_signer):
        raise errors.QuorumError(
            f"the manifest is signed by {manifest.signer_fingerprint[:16]}…, not the witnessed "
            f"{expect_signer[:16]}…: stop, do not import"
        )
    if expect_ceremony is not None and expect_ceremony != manifest.ceremony_id:
        raise errors.QuorumError(
            f"the current share set is {manifest.ceremony_id}, not the witnessed {expect_ceremony}: the lab "
            "may have been rolled back; stop"
        )


def describe_manifest(manifest: SignedManifest) -> str:
    """What the operator reads aloud before anyone presents a share."""
    from hsm_lab.ceremony.record import fingerprint_words

    return (
        f"ceremony {manifest.ceremony_id}, {manifest.threshold}-of-{manifest.share_count}, KCV "
        f"{manifest.kcv}, "
        f"signer {manifest.signer_fingerprint[:16]}… ({fingerprint_words(manifest.signer_fingerprint)})"
    )


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
        record = _open(lab, session, actor, on_warning)
        manifest = record.state.manifest()
        on_event("manifest", describe_manifest(manifest))
        check_expectations(manifest, expect_kcv, expect_signer, expect_ceremony)
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
                    actor,
                    "import",
                    {
                        "ceremony_id": manifest.ceremony_id,
                        "token": token,
                        "key_label": manifest.key_label,
                        "kcv": kcv,
                        "custodians": used,
                        "refused": refused,
                        "signer_authorised": signer,
                        "txn": intent.txn,
                    },
                )
            except BaseException:
                _abandon(lab, intent, stored)
                raise
            fault("import:committed")
            intent.finish()
        return manifest, used, kcv


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
        record = _open(lab, session, actor, on_warning)
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
            retires = [
                {
                    "ceremony_id": old.ceremony_id,
                    "manifest_sha256": old.digest(),
                    "retired": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
                }
            ]
            ceremony_id = new_ceremony_id()
            intent = txn.begin(lab.root, "rekey", token, [], ceremony_id)
            fault("rekey:intent")
            try:
                deal = Deal(
                    ceremony_id, old.kcv, old.key_label, custodians, threshold, phrases, weakened, retires
                )
                new = _deal(lab, session, key, deal)
                fault("rekey:dealt")
            except BaseException:
                _abandon(lab, intent)
                raise
            used = [s.custodian for s in quorum.accepted]
        record.append(
            actor,
            "rekey",
            {
                "old_ceremony_id": old.ceremony_id,
                "ceremony_id": new.ceremony_id,
                "kcv": new.kcv,
                "threshold": threshold,
                "shares": len(custodians),
                "custodians": [f"{c.name} ({c.kind})" for c in custodians],
                "quorum_used": used,
                "refused": refused,
                "manifest_sha256": new.digest(),
                "weakened": weakened,
                "txn": intent.txn,
            },
        )
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
        record = _open(lab, session, actor, on_warning)
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
