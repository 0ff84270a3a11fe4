"""The step a ceremony session performs once K shares are in: what it needs and how it ends.

The session (session.py) holds the shares; this module hands copies of them to
`ceremony.import_master` / `ceremony.rekey`, which check everything again under the HSM lock,
record refusals in the transcript and wipe what they were given.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from hsm_lab import ceremony, errors
from hsm_lab.ceremony.custodians import Custodian
from hsm_lab.ceremony.shares import Share
from hsm_lab.hsm import HSM
from hsm_lab.lab import Lab

STEPS = ("import", "rekey")
Say = Callable[[str], None]
Sources = list[tuple[str, ceremony.ShareSource]]


@dataclass
class StepPlan:
    """Everything `import_master` / `rekey` need except the shares (no secret but the PIN)."""

    step: str
    token: str
    user_pin: str = field(repr=False)
    actor: str = "operator"
    authorise_signer: bool = False
    expect_kcv: str | None = None
    expect_signer: str | None = None
    expect_ceremony: str | None = None
    custodians: list[Custodian] = field(default_factory=list)
    threshold: int = 5
    passphrases: dict[str, str] = field(default_factory=dict, repr=False)
    allow_weak: bool = False
    allow_no_spare: bool = False

    def __post_init__(self) -> None:
        if self.step not in STEPS:
            raise errors.InputError(f"--step {self.step!r}: a session performs import or rekey")
        if self.step == "rekey" and not self.custodians:
            raise errors.InputError("--step rekey needs --custodians (the NEW custodian file)")
        if self.step == "import" and self.custodians:
            raise errors.InputError("--custodians is for --step rekey; an import keeps the share set")


@dataclass
class Outcome:
    """How a session ended: done (with the step's result), cancelled, timeout, stopped or failed."""

    status: str
    detail: str
    presented: list[str]
    result: dict[str, Any] | None = None


def perform(
    hsm: HSM, lab: Lab, plan: StepPlan, refused: Sequence[dict[str, str]], accepted: Sequence[Share], say: Say
) -> dict[str, Any]:
    """Run the step with copies of the accepted shares; the refused ones go in as refusals."""
    sources: Sources = [(r["custodian"], _refusal(r["reason"])) for r in refused]
    sources += [(s.custodian, _copy(s)) for s in accepted]

    def event(who: str, what: str) -> None:
        if who != "manifest" and not what.startswith("refused"):
            say(f"    {who}: {what}")

    def warning(line: str) -> None:
        say(f"warning: {line}")

    if plan.step == "import":
        return _perform_import(hsm, lab, plan, sources, event, warning)
    return _perform_rekey(hsm, lab, plan, sources, event, warning)


def _perform_import(
    hsm: HSM, lab: Lab, plan: StepPlan, sources: Sources, event: Callable[[str, str], None], warning: Say
) -> dict[str, Any]:
    manifest, used, kcv = ceremony.import_master(
        hsm,
        lab,
        token=plan.token,
        user_pin=plan.user_pin,
        sources=sources,
        actor=plan.actor,
        on_event=event,
        on_warning=warning,
        authorise_signer=plan.authorise_signer,
        expect_kcv=plan.expect_kcv,
        expect_signer=plan.expect_signer,
        expect_ceremony=plan.expect_ceremony,
    )
    return {
        "step": "import",
        "token": plan.token,
        "ceremony_id": manifest.ceremony_id,
        "key_label": manifest.key_label,
        "kcv": kcv,
        "manifest_kcv": manifest.kcv,
        "custodians": used,
    }


def _perform_rekey(
    hsm: HSM, lab: Lab, plan: StepPlan, sources: Sources, event: Callable[[str, str], None], warning: Say
) -> dict[str, Any]:
    old, new, used = ceremony.rekey(
        hsm,
        lab,
        token=plan.token,
        user_pin=plan.user_pin,
        sources=sources,
        custodians=plan.custodians,
        threshold=plan.threshold,
        passphrases=plan.passphrases,
        allow_weak=plan.allow_weak,
        allow_no_spare=plan.allow_no_spare,
        actor=plan.actor,
        on_event=event,
        on_warning=warning,
    )
    return {
        "step": "rekey",
        "token": plan.token,
        "old_ceremony_id": old.ceremony_id,
        "ceremony_id": new.ceremony_id,
        "kcv": new.kcv,
        "threshold": new.threshold,
        "shares": new.share_count,
        "custodians": used,
    }


def describe(result: dict[str, Any]) -> str:
    if result["step"] == "import":
        return (
            f"master key {result['key_label']} imported into {result['token']} from "
            f"{', '.join(result['custodians'])}; HSM KCV {result['kcv']} = manifest KCV "
            f"{result['manifest_kcv']}"
        )
    return (
        f"new share set {result['ceremony_id']} ({result['threshold']}-of-{result['shares']}, KCV "
        f"{result['kcv']}) dealt with the quorum {', '.join(result['custodians'])}; "
        f"{result['old_ceremony_id']} retired"
    )


def _copy(share: Share) -> ceremony.ShareSource:
    return lambda: Share(share.ceremony_id, share.custodian, bytearray(share.value))


def _refusal(reason: str) -> ceremony.ShareSource:
    def refuse() -> Share:
        raise errors.ShareRejected(reason)

    return refuse
