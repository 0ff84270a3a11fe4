"""Presenting shares: the quorum, each share's check, and L0 rebuilt from K of them.

pyshamir has no integrity of its own (`hsm_lab.ceremony.shares`): each share is
checked against its commitment in the signed manifest when it is presented, a
bad one is named and skipped, and the combined key must match the manifest's
KCV. `quorum_key` is the one place a quorum's shares are collected and combined
(import and rekey); it wipes L0 and the shares however the step ends.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from hsm_lab import errors
from hsm_lab.ceremony import shares
from hsm_lab.ceremony.manifest import SignedManifest
from hsm_lab.ceremony.record import Record
from hsm_lab.ceremony.shares import Share
from hsm_lab.fs import wipe
from hsm_lab.hsm import KCV_LEN

ShareSource = Callable[[], Share]
Event = Callable[[str, str], None]


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
