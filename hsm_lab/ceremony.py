"""The quorum ceremony: generate, import, rekey, verify a share, verify them all.

Each function is one step a security engineer runs; each opens one HSM session
(so the lab lock is held for the step), does its work in memory, writes its
files atomically, and appends one transcript entry signed by the acting token.
Plaintext key and shares live in bytearrays that are wiped in `finally`.
"""

from __future__ import annotations

import secrets
import shutil
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from hsm_lab import errors, shares
from hsm_lab.custodians import Custodian
from hsm_lab.fs import wipe
from hsm_lab.hsm import HSM, KCV_LEN, TokenSession
from hsm_lab.lab import MASTER_LABEL, Lab
from hsm_lab.manifest import MANIFEST_FORMAT, SignedManifest, load_manifest, sign_manifest
from hsm_lab.shares import Share
from hsm_lab.transcript import Transcript

SCHEME = "shamir-gf256 (pyshamir 1.1.0, HashiCorp Vault compatible), x = last share byte"
KCV_METHOD = "AES-ECB(K, 0^128)[0:3], computed in the HSM"
ShareSource = Callable[[], Share]
Event = Callable[[str, str], None]


def _quiet(_custodian: str, _message: str) -> None:
    return None


def new_ceremony_id() -> str:
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    return f"cer-{stamp}-{secrets.token_hex(4)}"


def python_kcv(key: bytearray) -> str:
    """The same KCV, computed in memory: to refuse a wrong combination early."""
    encryptor = Cipher(algorithms.AES(bytes(key)), modes.ECB()).encryptor()  # noqa: S305 - KCV
    return (encryptor.update(bytes(16)) + encryptor.finalize())[:KCV_LEN].hex()


def quorum_weaknesses(threshold: int, share_count: int, allow_weak: bool) -> list[str]:
    """Strict default: K >= 3 and K a majority of N. Anything weaker needs a flag."""
    shares.check_parameters(threshold, share_count)
    weak = []
    if threshold < 3 or 2 * threshold <= share_count:
        weak.append(
            f"quorum {threshold}-of-{share_count} is below the strict default (K >= 3 and a majority of N)"
        )
    if weak and not allow_weak:
        raise errors.InputError(
            f"a {threshold}-of-{share_count} quorum is weaker than the strict default "
            "(K >= 3 and a majority of N); pass --allow-weak-quorum to accept it"
        )
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
            f"{who}: share does not match its commitment in the manifest (tampered or corrupted)"
        )


# -- lab helpers ---------------------------------------------------------------


def trusted_signer(hsm: HSM, manifest_signer_token: str) -> ec.EllipticCurvePublicKey | None:
    """Pin a manifest to its signing token's key when that token is in this lab."""
    if manifest_signer_token in hsm.token_labels():
        return hsm.signing_public_key(manifest_signer_token)
    return None


def current_manifest(hsm: HSM, lab: Lab) -> SignedManifest:
    path = lab.manifest_path(lab.current_ceremony())
    unpinned = load_manifest(path)
    return load_manifest(path, trusted_signer(hsm, unpinned.body["signer"]["token"]))


def retired_ceremonies(lab: Lab) -> dict[str, str]:
    retired: dict[str, str] = {}
    if lab.ceremonies.is_dir():
        for path in sorted(lab.ceremonies.glob("*/manifest.json")):
            manifest = load_manifest(path)
            for old in manifest.retired_ids:
                retired[old] = manifest.ceremony_id
    return retired


def transcript(lab: Lab) -> Transcript:
    return Transcript(lab.transcript, lab.transcript_head)


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


def _deal(
    lab: Lab,
    session: TokenSession,
    key: bytearray,
    kcv: str,
    key_label: str,
    custodians: list[Custodian],
    threshold: int,
    passphrases: dict[str, str],
    weakened: list[str],
    retires: list[dict[str, str]],
) -> SignedManifest:
    """Split `key`, seal each share, sign the manifest, write the set atomically."""
    missing = [c.name for c in custodians if c.recipient is None and not passphrases.get(c.name)]
    if missing:
        raise errors.InputError(f"no passphrase for custodian(s) {', '.join(missing)}")
    ceremony_id = new_ceremony_id()
    parts = shares.split(key, threshold, len(custodians))
    dealt = [Share(ceremony_id, c.name, p) for c, p in zip(custodians, parts, strict=True)]
    staging = lab.ceremonies / f".{ceremony_id}.tmp"
    try:
        sealed = {
            s.custodian: shares.seal(s, c, passphrases.get(c.name))
            for s, c in zip(dealt, custodians, strict=True)
        }
        body = {
            "format": MANIFEST_FORMAT,
            "ceremony_id": ceremony_id,
            "created": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "key_label": key_label,
            "kcv": kcv,
            "kcv_method": KCV_METHOD,
            "threshold": threshold,
            "shares": len(custodians),
            "scheme": SCHEME,
            "share_format": shares.SHARE_FORMAT,
            "share_encryption": "age-encryption.org/v1 (X25519 recipient or scrypt passphrase)",
            "custodians": _custodian_entries(custodians, dealt),
            "signer": None,
            "retires": retires,
            "weakened": weakened,
        }
        manifest = sign_manifest(body, session)
        (staging / "shares").mkdir(parents=True)
        for name, blob in sealed.items():
            (staging / "shares" / f"{name}.age").write_bytes(blob)
        manifest.write(staging / "manifest.json")
        staging.rename(lab.ceremony_dir(ceremony_id))
        lab.set_current_ceremony(ceremony_id)
        return manifest
    finally:
        for share in dealt:
            share.wipe()
        wipe(*parts)
        shutil.rmtree(staging, ignore_errors=True)


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
    actor: str = "operator",
) -> SignedManifest:
    """A fresh 256-bit master key from the HSM's RNG, kept in the HSM, dealt as K-of-N."""
    weakened = quorum_weaknesses(threshold, len(custodians), allow_weak)
    with hsm.session(token, user_pin=user_pin) as session:
        if session.find_secret_key(key_label) is not None:
            raise errors.KeyLabelExists(
                f"token {token!r} already holds a key labelled {key_label!r}; refusing to "
                "overwrite it (use another --label or a fresh token)"
            )
        key = session.random_bytes(32)
        stored = None
        try:
            stored = session.import_secret(key_label, key)
            kcv = session.kcv(stored)
            if kcv != python_kcv(key):
                raise errors.HSMError("the HSM's KCV disagrees with the key it was given")
            manifest = _deal(
                lab,
                session,
                key,
                kcv,
                key_label,
                custodians,
                threshold,
                passphrases or {},
                weakened,
                retires=[],
            )
        except BaseException:
            if stored is not None:
                stored.destroy()
            raise
        finally:
            wipe(key)
        transcript(lab).append(
            session,
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
            },
        )
        return manifest


def _collect(
    lab: Lab,
    session: TokenSession,
    quorum: Quorum,
    sources: Iterable[tuple[str, ShareSource]],
    action: str,
    actor: str,
    on_event: Event,
) -> None:
    """Present shares until K are accepted; a refusal is logged and aborts the step."""
    log = transcript(lab)
    for claimed, source in sources:
        if quorum.complete:
            break
        try:
            share = source()
            quorum.present(share, claimed)
        except errors.ShareRejected as exc:
            log.append(
                session,
                actor,
                f"{action}.share-refused",
                {
                    "ceremony_id": quorum.manifest.ceremony_id,
                    "custodian": claimed,
                    "reason": str(exc),
                },
            )
            on_event(claimed, f"refused: {exc}")
            raise
        on_event(share.custodian, f"accepted ({len(quorum.accepted)}/{quorum.manifest.threshold})")
    if not quorum.complete:
        log.append(
            session,
            actor,
            f"{action}.aborted",
            {
                "ceremony_id": quorum.manifest.ceremony_id,
                "presented": [s.custodian for s in quorum.accepted],
                "reason": "too few shares",
            },
        )
        raise errors.QuorumError(
            f"{len(quorum.accepted)} valid shares presented, {quorum.manifest.threshold} needed: "
            f"ask {quorum.manifest.threshold - len(quorum.accepted)} more custodian(s); "
            "nothing was imported"
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
) -> tuple[SignedManifest, list[str], str]:
    """Rebuild the master key from K shares straight into `token`.

    Returns the manifest, the custodians whose shares were used, and the KCV
    the HSM computed on the imported key.
    """
    manifest = current_manifest(hsm, lab)
    quorum = Quorum(manifest, retired_ceremonies(lab))
    with hsm.session(token, user_pin=user_pin) as session:
        if session.find_secret_key(manifest.key_label) is not None:
            raise errors.KeyLabelExists(
                f"token {token!r} already holds a key labelled {manifest.key_label!r}; refusing "
                "to overwrite it (use a fresh token)"
            )
        key = None
        try:
            _collect(lab, session, quorum, sources, "import", actor, on_event)
            key = quorum.combine()
            stored = session.import_secret(manifest.key_label, key)
            kcv = session.kcv(stored)
            if kcv != manifest.kcv:
                stored.destroy()
                raise errors.QuorumError(f"HSM KCV {kcv} does not match the manifest's {manifest.kcv}")
        finally:
            wipe(key)
            used = [s.custodian for s in quorum.accepted]
            quorum.wipe()
        transcript(lab).append(
            session,
            actor,
            "import",
            {
                "ceremony_id": manifest.ceremony_id,
                "token": token,
                "key_label": manifest.key_label,
                "kcv": kcv,
                "custodians": used,
            },
        )
        return manifest, used, kcv


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
    actor: str = "operator",
    on_event: Event = _quiet,
) -> tuple[SignedManifest, SignedManifest, list[str]]:
    """A new share set (custodians and/or K of N) for the same key; the old set retires."""
    weakened = quorum_weaknesses(threshold, len(custodians), allow_weak)
    old = current_manifest(hsm, lab)
    quorum = Quorum(old, retired_ceremonies(lab))
    with hsm.session(token, user_pin=user_pin) as session:
        key = None
        try:
            _collect(lab, session, quorum, sources, "rekey", actor, on_event)
            key = quorum.combine()
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
            new = _deal(
                lab,
                session,
                key,
                old.kcv,
                old.key_label,
                custodians,
                threshold,
                passphrases or {},
                weakened,
                retires,
            )
        finally:
            wipe(key)
            used = [s.custodian for s in quorum.accepted]
            quorum.wipe()
        transcript(lab).append(
            session,
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
                "manifest_sha256": new.digest(),
                "weakened": weakened,
            },
        )
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
    sources: Iterable[tuple[str, ShareSource]],
    actor: str = "operator",
) -> list[DrillResult]:
    """Each custodian checks their share against the manifest, alone (no other share)."""
    manifest = current_manifest(hsm, lab)
    retired = retired_ceremonies(lab)
    results: list[DrillResult] = []
    for claimed, source in sources:
        share = None
        try:
            share = source()
            check_share(manifest, share, retired, claimed)
            results.append(DrillResult(share.custodian, True, "matches its commitment"))
        except errors.ShareRejected as exc:
            results.append(DrillResult(claimed, False, str(exc)))
        finally:
            if share is not None:
                share.wipe()
    with hsm.session(token, user_pin=user_pin) as session:
        transcript(lab).append(
            session,
            actor,
            "verify-share",
            {
                "ceremony_id": manifest.ceremony_id,
                "results": {r.custodian: "ok" if r.ok else r.detail for r in results},
            },
        )
    return results
