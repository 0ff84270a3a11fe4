"""The whole ceremony, end to end, in a fresh lab with simulated custodians.

Two tokens stand for two HSMs: `clefs-primary`, where the master key is born,
and `clefs-recovery`, a fresh HSM rebuilt from a quorum of shares. Custodians
are X25519 age identities held in memory only (a passphrase custodian costs
about 1.7 s of scrypt per open here, too slow for a 5-second rehearsal; the
tests cover passphrases). PINs are random and never shown.
"""

from __future__ import annotations

import random
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import TypeVar

import pyrage

from hsm_lab import ceremony, errors
from hsm_lab.ceremony import shares
from hsm_lab.ceremony.custodians import Custodian
from hsm_lab.ceremony.record import Record
from hsm_lab.ceremony.shares import Share
from hsm_lab.hsm import HSM, KeyInfo
from hsm_lab.lab import MASTER_LABEL, PRIMARY_TOKEN, RECOVERY_TOKEN, Lab

FIRST_CUSTODIANS = ("amelie", "bastien", "chloe", "damien", "elodie", "fabrice", "gaelle")
JOINING = ("hugo", "ines")
LEAVING = "gaelle"
T = TypeVar("T")


@dataclass
class SimulatedCustodian:
    name: str
    identity: pyrage.x25519.Identity

    @property
    def custodian(self) -> Custodian:
        return Custodian(self.name, str(self.identity.to_public()))


@dataclass
class Rehearsal:
    """What happened, for the printed account and for the tests."""

    lab: Lab
    custodians: dict[str, SimulatedCustodian] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    events: list[tuple[str, str]] = field(default_factory=list)
    first_ceremony: str = ""
    second_ceremony: str = ""
    threshold: int = 0
    share_count: int = 0
    new_threshold: int = 0
    new_share_count: int = 0
    import_quorum: list[str] = field(default_factory=list)
    rekey_quorum: list[str] = field(default_factory=list)
    kcv_manifest: str = ""
    kcv_primary: str = ""
    kcv_recovery: str = ""
    kcv_after_rekey: str = ""
    retired_share_refusal: str = ""
    recovery_key: KeyInfo | None = None
    transcript_entries: int = 0
    transcript_head: str = ""
    signer_key_id: str = ""
    pinned_signer: str = ""
    recovery_signer: str = ""
    token_heads: int = 0
    authorised_signers: int = 0


def _timed(report: Rehearsal, step: str, action: Callable[[], T]) -> T:
    start = time.perf_counter()
    result = action()
    report.timings[step] = time.perf_counter() - start
    return result


def share_source(lab: Lab, ceremony_id: str, person: SimulatedCustodian) -> Callable[[], Share]:
    def open_share() -> Share:
        blob = lab.share_path(ceremony_id, person.name).read_bytes()
        return shares.unseal(blob, person.name, [person.identity])

    return open_share


def rehearse(
    lab_dir: Path,
    *,
    module: str | None = None,
    threshold: int = 5,
    seed: int | None = None,
    pins: dict[str, str] | None = None,
    so_pin: str | None = None,
    on_step: Callable[[str], None] = lambda _step: None,
) -> Rehearsal:
    """Run the story; raises ClefsError on any refusal (none is expected)."""
    lab_dir = Path(lab_dir)
    if lab_dir.exists() and any(lab_dir.iterdir()):
        raise errors.InputError(
            f"{lab_dir} is not empty: a rehearsal needs a fresh lab directory (remove it or "
            "pass another --lab)"
        )
    chooser = random.Random(seed)  # noqa: S311 - picks which custodians turn up, not a secret
    start = time.perf_counter()
    lab = Lab(lab_dir.resolve())
    report = Rehearsal(lab)
    hsm = HSM(lab.root, module)
    low, high = hsm.pin_range()
    pins = pins or {token: random_pin(low, high) for token in (PRIMARY_TOKEN, RECOVERY_TOKEN)}
    so_pin = so_pin or random_pin(low, high)
    run = _Run(hsm, lab, report, pins, on_step)

    _init_tokens(run, so_pin)
    first, people = _generate(run, threshold)
    _hand_out(run, first, people)
    _import(run, first, people, chooser.sample(list(people), threshold))
    rekey_quorum = chooser.sample([n for n in people if n != LEAVING], threshold)
    _rekey(run, first, people, rekey_quorum, threshold)
    _check_retired(run, first, people)
    _verify_record(run)
    report.timings["total"] = time.perf_counter() - start
    return report


@dataclass(frozen=True)
class _Run:
    """What every phase of one rehearsal works with."""

    hsm: HSM
    lab: Lab
    report: Rehearsal
    pins: dict[str, str]
    on_step: Callable[[str], None]


def _init_tokens(run: _Run, so_pin: str) -> None:
    hsm, lab, report = run.hsm, run.lab, run.report
    run.on_step("initialising two tokens (primary HSM, recovery HSM); the primary's key is pinned")
    for token, pin in run.pins.items():
        result = _timed(
            report,
            f"init {token}",
            partial(
                ceremony.init_token, hsm, lab, token=token, so_pin=so_pin, user_pin=pin, actor="rehearsal"
            ),
        )
        assert isinstance(result, ceremony.InitResult)
        report.pinned_signer = result.anchor.fingerprint
        if token == RECOVERY_TOKEN:
            report.recovery_signer = result.fingerprint


def _generate(run: _Run, threshold: int) -> tuple[ceremony.SignedManifest, dict[str, SimulatedCustodian]]:
    hsm, lab, report, pins = run.hsm, run.lab, run.report, run.pins
    people = {name: SimulatedCustodian(name, pyrage.x25519.Identity.generate()) for name in FIRST_CUSTODIANS}
    report.custodians.update(people)
    run.on_step(f"generating the master key, dealing {threshold}-of-{len(people)} shares")
    first = _timed(
        report,
        "generate",
        lambda: ceremony.generate(
            hsm,
            lab,
            token=PRIMARY_TOKEN,
            user_pin=pins[PRIMARY_TOKEN],
            custodians=[p.custodian for p in people.values()],
            threshold=threshold,
            actor="rehearsal",
        ),
    )
    assert isinstance(first, ceremony.SignedManifest)
    report.first_ceremony = first.ceremony_id
    report.threshold, report.share_count = first.threshold, first.share_count
    report.kcv_manifest = first.kcv
    return first, people


def _hand_out(run: _Run, first: ceremony.SignedManifest, people: dict[str, SimulatedCustodian]) -> None:
    hsm, lab, report, pins = run.hsm, run.lab, run.report, run.pins
    run.on_step("handing out shares: every custodian checks theirs alone")
    drill = _timed(
        report,
        "verify-all",
        lambda: ceremony.verify_shares(
            hsm,
            lab,
            token=PRIMARY_TOKEN,
            user_pin=pins[PRIMARY_TOKEN],
            actor="rehearsal",
            sources=[(p.name, share_source(lab, first.ceremony_id, p)) for p in people.values()],
        ),
    )
    assert isinstance(drill, list)
    failed = [r for r in drill if not r.ok]
    if failed:
        raise errors.ShareRejected(failed[0].detail)


def _import(
    run: _Run, first: ceremony.SignedManifest, people: dict[str, SimulatedCustodian], quorum: list[str]
) -> None:
    hsm, lab, report, pins = run.hsm, run.lab, run.report, run.pins
    run.on_step(f"importing into the recovery HSM with {', '.join(quorum)}")

    def import_step() -> tuple[ceremony.SignedManifest, list[str], str]:
        return ceremony.import_master(
            hsm,
            lab,
            token=RECOVERY_TOKEN,
            user_pin=pins[RECOVERY_TOKEN],
            actor="rehearsal",
            sources=[(n, share_source(lab, first.ceremony_id, people[n])) for n in quorum],
            on_event=lambda who, what: report.events.append((who, what)),
            authorise_signer=True,
            expect_kcv=first.kcv,
            expect_signer=report.pinned_signer,
            expect_ceremony=first.ceremony_id,
        )

    _manifest, used, kcv_recovery = _timed(report, "import", import_step)
    report.import_quorum = list(used)
    report.kcv_recovery = kcv_recovery
    report.kcv_primary = _master_info(hsm, PRIMARY_TOKEN, pins[PRIMARY_TOKEN]).kcv or ""
    report.recovery_key = _master_info(hsm, RECOVERY_TOKEN, pins[RECOVERY_TOKEN])
    if not report.kcv_manifest == report.kcv_primary == report.kcv_recovery:
        raise errors.QuorumError("KCVs differ between manifest, primary and recovery HSM")


def _rekey(
    run: _Run,
    first: ceremony.SignedManifest,
    people: dict[str, SimulatedCustodian],
    rekey_quorum: list[str],
    threshold: int,
) -> None:
    hsm, lab, report, pins = run.hsm, run.lab, run.report, run.pins
    newcomers = {name: SimulatedCustodian(name, pyrage.x25519.Identity.generate()) for name in JOINING}
    report.custodians.update(newcomers)
    new_people = [p for n, p in people.items() if n != LEAVING] + list(newcomers.values())
    new_threshold = threshold
    run.on_step(
        f"rekeying: {LEAVING} leaves, {', '.join(JOINING)} join; {new_threshold}-of-{len(new_people)}"
    )

    def rekey_step() -> tuple[ceremony.SignedManifest, ceremony.SignedManifest, list[str]]:
        return ceremony.rekey(
            hsm,
            lab,
            token=RECOVERY_TOKEN,
            user_pin=pins[RECOVERY_TOKEN],
            actor="rehearsal",
            sources=[(n, share_source(lab, first.ceremony_id, people[n])) for n in rekey_quorum],
            custodians=[p.custodian for p in new_people],
            threshold=new_threshold,
            on_event=lambda who, what: report.events.append((who, what)),
        )

    _old, new, used_rekey = _timed(report, "rekey", rekey_step)
    report.second_ceremony = new.ceremony_id
    report.new_threshold, report.new_share_count = new.threshold, new.share_count
    report.rekey_quorum = list(used_rekey)
    report.kcv_after_rekey = new.kcv


def _check_retired(run: _Run, first: ceremony.SignedManifest, people: dict[str, SimulatedCustodian]) -> None:
    hsm, lab, report, pins = run.hsm, run.lab, run.report, run.pins
    run.on_step("checking that a retired share is refused")
    retired = ceremony.verify_shares(
        hsm,
        lab,
        token=RECOVERY_TOKEN,
        user_pin=pins[RECOVERY_TOKEN],
        actor="rehearsal",
        sources=[(LEAVING, share_source(lab, first.ceremony_id, people[LEAVING]))],
    )
    if retired[0].ok:
        raise errors.QuorumError("a retired share was accepted after the rekey")
    report.retired_share_refusal = retired[0].detail


def _verify_record(run: _Run) -> None:
    hsm, lab, report, pins = run.hsm, run.lab, run.report, run.pins
    run.on_step("verifying the record: chain, manifests, signers, head, the recovery token's committed heads")
    with hsm.session(RECOVERY_TOKEN, user_pin=pins[RECOVERY_TOKEN]) as session:
        state = Record.open(lab, session, expect=report.pinned_signer, actor="rehearsal").state
    assert state.head is not None
    report.transcript_entries = len(state.entries)
    report.transcript_head = state.head.head
    report.signer_key_id = state.head.signer_key_id
    report.token_heads = state.token_heads or 0
    report.authorised_signers = len(state.signers)


def random_pin(low: int, high: int) -> str:
    """A random PIN the module accepts (its length range), never shown."""
    length = min(max(16, low), high)
    return secrets.token_urlsafe(length)[:length]


def _master_info(hsm: HSM, token: str, pin: str) -> KeyInfo:
    with hsm.session(token, user_pin=pin) as session:
        for info in session.inventory():
            if info.label == MASTER_LABEL and info.object_class == "secret_key":
                return info
    raise errors.KeyNotFound(f"token {token!r} has no {MASTER_LABEL!r}")
