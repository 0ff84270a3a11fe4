"""Ceremony-day commands of `hsm-lab`: ceremony open|cancel|status, present, script, report,
custodians new, doctor (mounted by hsm_lab.cli.commands; the domain code is hsm_lab.ceremony_day).

Errors are one line and a non-zero exit; PINs and passphrases come from the environment or a
prompt, never a flag.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated

import typer

from hsm_lab import errors
from hsm_lab.ceremony.custodians import Custodian, load_custodians, passphrase_env, passphrase_from_env
from hsm_lab.ceremony.record import expected_signer
from hsm_lab.lab import PRIMARY_TOKEN, Lab, actor, read_pin, user_pin

app = typer.Typer(
    help="Clefs ceremony day: sessions, presenting shares, the printed script, the auditor's report.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
ceremony_app = typer.Typer(
    help="A ceremony session: custodians present their shares from their own terminals.",
    no_args_is_help=True,
)
app.add_typer(ceremony_app, name="ceremony")

LabOpt = Annotated[Path | None, typer.Option("--lab", help="Lab directory [env CLEFS_LAB; default ./lab].")]
ModuleOpt = Annotated[
    str | None,
    typer.Option("--module", help="PKCS#11 module .so [env CLEFS_PKCS11_MODULE; default SoftHSM2]."),
]
TokenOpt = Annotated[str, typer.Option("--token", help="Token label.")]
NonceOpt = Annotated[str, typer.Option("--nonce", help="The nonce the ceremony session printed.")]


def say(line: str) -> None:
    """Session output: plain lines, flushed at once (witnesses and pipes see each as it happens)."""
    print(line, flush=True)


def _lab(lab: Path | None) -> Lab:
    from hsm_lab.ceremony_day.session import require_lab

    where = Lab.at(lab)
    require_lab(where)
    return where


@ceremony_app.command("open")
def ceremony_open(
    step: Annotated[str, typer.Option("--step", help="import or rekey.")],
    custodians: Annotated[
        Path | None, typer.Option("--custodians", help="rekey: TOML file of the NEW custodians.")
    ] = None,
    threshold: Annotated[int, typer.Option("--threshold", "-k", help="rekey: new K.")] = 5,
    allow_weak_quorum: Annotated[
        bool, typer.Option("--allow-weak-quorum", help="rekey: accept K < 3 or K not a majority.")
    ] = False,
    allow_no_spare: Annotated[bool, typer.Option("--allow-no-spare", help="rekey: accept K = N.")] = False,
    authorise_signer: Annotated[
        bool, typer.Option("--authorise-signer", help="import: the quorum authorises the target token.")
    ] = False,
    expect_kcv: Annotated[str | None, typer.Option("--expect-kcv", help="import: witnessed KCV.")] = None,
    expect_signer: Annotated[
        str | None, typer.Option("--expect-signer", help="Witnessed signer fingerprint (hex).")
    ] = None,
    expect_ceremony: Annotated[
        str | None, typer.Option("--expect-ceremony", help="import: witnessed ceremony id.")
    ] = None,
    timeout: Annotated[
        int, typer.Option("--timeout", help="Seconds before the session wipes the shares and ends.")
    ] = 15 * 60,
    lab: LabOpt = None,
    module: ModuleOpt = None,
    token: TokenOpt = PRIMARY_TOKEN,
) -> None:
    """Open a session for import or rekey; print the nonce; at K valid shares perform the step."""
    from hsm_lab.ceremony_day.session import CeremonySession, StepPlan
    from hsm_lab.hsm import HSM

    if step not in ("import", "rekey"):
        raise errors.InputError(f"--step {step!r}: a session performs import or rekey")
    if not 10 <= timeout <= 4 * 3600:
        raise errors.InputError("--timeout is in seconds, from 10 to 14400")
    where = _lab(lab)
    people, phrases = _new_custodians(custodians)
    plan = StepPlan(
        step=step,
        token=token,
        user_pin=user_pin(),
        actor=actor(),
        authorise_signer=authorise_signer,
        expect_kcv=expect_kcv,
        expect_signer=expected_signer(expect_signer),
        expect_ceremony=expect_ceremony,
        custodians=people,
        threshold=threshold,
        passphrases=phrases,
        allow_weak=allow_weak_quorum,
        allow_no_spare=allow_no_spare,
    )
    session = CeremonySession(where, HSM(where.root, module), plan, timeout=timeout, say=say)
    outcome = session.serve()
    if outcome.status != "done":
        raise errors.ClefsError(f"no {step} was performed: {outcome.detail}")


def _new_custodians(custodians: Path | None) -> tuple[list[Custodian], dict[str, str]]:
    """rekey: the new custodians, and a passphrase for each one without an age recipient."""
    people: list[Custodian] = []
    phrases: dict[str, str] = {}
    if custodians is not None:
        people = load_custodians(custodians)
        for c in people:
            if c.recipient is None:
                phrases[c.name] = passphrase_from_env(c.name) or read_pin(
                    f"new passphrase for custodian {c.name}", passphrase_env(c.name), confirm=True
                )
    return people, phrases


@ceremony_app.command("cancel")
def ceremony_cancel(nonce: NonceOpt, lab: LabOpt = None) -> None:
    """Cancel the open session: it wipes the presented shares and ends."""
    from hsm_lab.ceremony_day.session import cancel

    reply = cancel(_lab(lab), nonce)
    state = reply["state"]
    say(f"session cancelled: {state['accepted']} presented share(s) wiped; no {state['step']} was performed")


@ceremony_app.command("status")
def ceremony_status(lab: LabOpt = None) -> None:
    """Progress of the open session (k/K, who presented), without presenting anything."""
    from hsm_lab.ceremony_day.session import status

    state = status(_lab(lab))
    say(
        f"{state['step']} of {state['ceremony_id']}: {state['accepted']}/{state['threshold']} "
        f"[{', '.join(state['presented'])}]; {state['refused']} refused; ends in {state['expires_in']} s"
    )


def present_command(
    nonce: NonceOpt,
    share: Annotated[Path, typer.Option("--share", help="Your age-encrypted share file.")],
    identity: Annotated[
        list[Path] | None, typer.Option("--identity", "-i", help="age identity file (repeat).")
    ] = None,
    custodian: Annotated[
        str | None, typer.Option("--custodian", help="Your name; the share inside must be yours.")
    ] = None,
    lab: LabOpt = None,
) -> None:
    """Present your share to the open session from your own terminal (passphrase typed here)."""
    from hsm_lab.ceremony_day.session import hello, needs_passphrase, present

    where = _lab(lab)
    hello(where, nonce)  # the right session before anyone types a passphrase
    passphrase = None
    if needs_passphrase(share):
        env = passphrase_env(custodian) if custodian else "CLEFS_PASSPHRASE"
        passphrase = (passphrase_from_env(custodian) if custodian else None) or read_pin(
            f"passphrase for {share.name}", env
        )
    reply = present(where, nonce, share, identity or [], passphrase, custodian=custodian)
    state = reply["state"]
    say(
        f"accepted: {state['accepted']}/{state['threshold']} presented "
        f"[{', '.join(state['presented'])}] for {state['step']} of {state['ceremony_id']}"
    )
    if "result" in reply:
        result = reply["result"]
        say(f"{result['step']} performed: KCV {result['kcv']}, quorum {', '.join(result['custodians'])}")


app.command("present")(present_command)


def script_command(
    step: Annotated[str, typer.Option("--step", help="generate, import, rekey or byok.")],
    custodians: Annotated[Path, typer.Option("--custodians", help="TOML custodian file.")],
    out: Annotated[Path, typer.Option("--out", help="Writes OUT.md and OUT.html.")],
    threshold: Annotated[
        int | None, typer.Option("--threshold", "-k", help="K [default: current set, or 5].")
    ] = None,
    token: Annotated[str | None, typer.Option("--token", help="Token the step acts on.")] = None,
    lab: LabOpt = None,
) -> None:
    """Write the printed ceremony script (Markdown and print-ready HTML) for one step."""
    from hsm_lab.ceremony_day.script import load_script
    from hsm_lab.ceremony_day.script_render import write_script

    where = Lab.at(lab)  # a lab with a record fills in the witnessed values; none: blanks
    written = write_script(load_script(step, where, custodians, token=token, threshold=threshold), out)
    say(f"ceremony script for {step}: {', '.join(str(p) for p in written)}")


def report_command(
    html: Annotated[Path, typer.Option("--html", help="The self-contained HTML file to write.")],
    compliance: Annotated[
        Path | None, typer.Option("--compliance", help="`hsm-lab verify --json` output to include.")
    ] = None,
    expect_signer: Annotated[
        str | None, typer.Option("--expect-signer", help="Witnessed signer fingerprint (hex).")
    ] = None,
    lab: LabOpt = None,
) -> None:
    """Write the auditor's report: key pyramid, verified transcript timeline, compliance table."""
    from hsm_lab.ceremony_day.audit_report import load_compliance, write_report

    where = _lab(lab)
    path = write_report(
        where, html, compliance=load_compliance(compliance), expect=expected_signer(expect_signer)
    )
    say(f"auditor's report: {path} ({path.stat().st_size} bytes)")


custodians_app = typer.Typer(help="Custodian files and identities.", no_args_is_help=True)


@custodians_app.command("new")
def custodians_new(
    names: Annotated[list[str], typer.Argument(help="Custodian names (a-z 0-9 _ . -).")],
    out: Annotated[Path, typer.Option("--out", help="New directory for identities and custodians.toml.")],
) -> None:
    """Make age identities (0600) and custodians.toml for a rehearsal (real days: each makes their own)."""
    from hsm_lab.ceremony_day.custodians_new import make_custodians

    toml, identities = make_custodians(names, out)
    say(f"{toml} lists {len(identities)} custodians; identities (secret, 0600): {out}/NAME.txt")
    say("hand each identity file to its custodian only; for a real ceremony each custodian runs age-keygen")


def doctor_command(
    lab: LabOpt = None,
    module: ModuleOpt = None,
    endpoint: Annotated[str | None, typer.Option("--endpoint", help="LocalStack endpoint to check.")] = None,
    token: TokenOpt = PRIMARY_TOKEN,
) -> None:
    """Check tools, venvs, module, lab, tokens and PIN, LocalStack, stack outputs; say what to run next."""
    from hsm_lab.ceremony_day.doctor import run_checks

    checks = run_checks(Lab.at(lab), module=module, endpoint=endpoint, token=token)
    for check in checks:
        say(check.line())
    failed = [c for c in checks if c.status == "fail"]
    if failed:
        raise errors.ClefsError(f"{len(failed)} check(s) failed; first next step: {failed[0].next}")


app.command("script")(script_command)
app.command("report")(report_command)
app.add_typer(custodians_app, name="custodians")
app.command("doctor")(doctor_command)


def main() -> None:
    """Entry point: umask 077, one-line errors, non-zero exits, no tracebacks."""
    os.umask(0o077)
    try:
        app()
    except errors.ClefsError as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        sys.exit(exc.exit_code)
