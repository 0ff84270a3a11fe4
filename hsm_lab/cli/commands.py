"""`hsm-lab`: each ceremony step as a subcommand (Typer + Rich).

Errors are one line on stderr and a non-zero exit; PINs come from
CLEFS_USER_PIN / CLEFS_SO_PIN or a prompt, passphrases from a prompt or
CLEFS_PASSPHRASE_<CUSTODIAN>; nothing secret is ever printed.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from hsm_lab import ceremony, errors, record, shares
from hsm_lab.cli import console
from hsm_lab.custodians import (
    Custodian,
    check_passphrase,
    load_custodians,
    load_identities,
    passphrase_env,
    passphrase_from_env,
)
from hsm_lab.hsm import HSM, TokenSession
from hsm_lab.lab import MASTER_LABEL, PRIMARY_TOKEN, Lab, actor, read_pin, so_pin, user_pin
from hsm_lab.shares import Share
from infra.model.outputs import StackOutputs

if TYPE_CHECKING:
    from hsm_lab.byok import Byok

app = console.new_app(
    "Clefs HSM lab: a 5-of-7 quorum key ceremony on any PKCS#11 HSM (SoftHSM2 by default).", completion=True
)
transcript_app = console.new_app(
    "Show or verify the hash-chained, HSM-signed transcript.", no_args_is_help=False
)
console.add_version_option(app)
app.add_typer(transcript_app, name="transcript")


def _mount_subapps() -> None:
    from hsm_lab.cli.data import app as data_app
    from hsm_lab.cli.localstack import app as localstack_app
    from hsm_lab.cli.stack import app as stack_app

    app.add_typer(localstack_app, name="localstack")
    app.add_typer(stack_app, name="stack")
    app.add_typer(data_app, name="data")
    from hsm_lab.cli import day

    app.add_typer(day.ceremony_app, name="ceremony")
    app.add_typer(day.custodians_app, name="custodians")
    app.command("present")(day.present_command)
    app.command("script")(day.script_command)
    app.command("report")(day.report_command)
    app.command("doctor")(day.doctor_command)
    stack_app.command("apply-localstack")(stack_apply_localstack)


def stack_apply_localstack(
    endpoint: Annotated[
        str | None, typer.Option("--endpoint", help="LocalStack endpoint [default: conventions].")
    ] = None,
    lab: Annotated[Path | None, typer.Option("--lab", help="Lab directory (outputs go there).")] = None,
) -> None:
    """Apply the real program to LocalStack without the Pulumi CLI (mocks that create via boto3).

    The stack's state is <lab>/stack-state.json: applying again reconciles what exists and
    creates nothing twice; what LocalStack lost (a restart) is recreated, and said so.
    """
    from hsm_lab.aws.deployment import outputs_path, save_outputs
    from infra.harness import HarnessError, apply, summary

    where = Lab.at(lab)
    url, target, client_for = _aws(endpoint, False, where.root)
    try:
        recording, mocks = apply(url, client_for, state_path=where.root / STACK_STATE)
    except HarnessError as exc:
        raise errors.ClefsError(str(exc)) from None
    path = outputs_path(where.root)
    save_outputs(path, recording.outputs)
    out.print(f"{summary(mocks)}. LocalStack: {target}; outputs -> {path}")
    if mocks.recreated:
        out.print(
            "[yellow]the class keys are new: import them again from the HSM, `hsm-lab byok import "
            "--class C` for each class[/]"
        )
    out.print("[yellow]no Pulumi state was written: this is the CLI-less harness, not `pulumi up`[/]")


STACK_STATE = "stack-state.json"


byok_app = console.new_app(
    "BYOK: derive class keys in the HSM and import them into KMS (both regions).", no_args_is_help=False
)
app.add_typer(byok_app, name="byok")
# Piped or in CI, Rich would wrap the tables at 80 columns; a terminal or $COLUMNS decides otherwise.
out = Console(highlight=False, width=None if sys.stdout.isatty() or "COLUMNS" in os.environ else 132)
err = Console(stderr=True, highlight=False)

LabOpt = console.LabOpt
ModuleOpt = Annotated[
    str | None,
    typer.Option(
        "--module",
        envvar="CLEFS_PKCS11_MODULE",
        show_envvar=True,
        help="PKCS#11 module .so [env CLEFS_PKCS11_MODULE; default SoftHSM2].",
    ),
]
TokenOpt = Annotated[str, typer.Option("--token", help="Token label.")]
ShareOpt = Annotated[list[Path], typer.Option("--share", help="An age-encrypted share file (repeat).")]
IdentityOpt = Annotated[
    list[Path] | None, typer.Option("--identity", "-i", help="age identity file (repeat).")
]
WeakOpt = Annotated[
    bool,
    typer.Option("--allow-weak-quorum", help="Accept K < 3 or K not a majority of N (shown in output)."),
]
NoSpareOpt = Annotated[
    bool,
    typer.Option("--allow-no-spare", help="Accept K = N: one lost share loses the key (shown in output)."),
]
ExpectSignerOpt = Annotated[
    str | None,
    typer.Option(
        "--expect-signer",
        envvar="CLEFS_EXPECT_SIGNER",
        show_envvar=True,
        help="Fingerprint (hex) of the signer you witnessed; refuse anything else [env CLEFS_EXPECT_SIGNER].",
    ),
]


def _warn(line: str) -> None:
    err.print(f"[bold yellow]warning:[/] {escape(line)}", soft_wrap=True)


def _record(where: Lab, session: TokenSession, expect: str | None = None) -> record.Record:
    """The lab's record opened on a logged-in token, its warnings printed (one line each)."""
    opened = record.Record.open(where, session, expect=expect, actor=actor())
    for line in opened.warnings:
        _warn(line)
    return opened


def _show_fingerprint(title: str, value: str) -> None:
    out.print(f"{escape(title)}: [bold]{record.grouped(value)}[/]")
    out.print(f"  read aloud: [bold]{record.fingerprint_words(value)}[/]")


def _open(lab: Path | None, module: str | None, *, create: bool = False) -> tuple[Lab, HSM]:
    """The lab and its HSM; only `init` (create=True) may make a lab that does not exist yet."""
    where = Lab.at(lab)
    if not create and not where.root.is_dir():
        raise errors.InputError(
            f"no lab at {where.root}: run `hsm-lab init` to create one there, or pass --lab / set CLEFS_LAB"
        )
    return where, HSM(where.root, module)


def _check_pin(hsm: HSM, token: str) -> str:
    """The user PIN, checked against the token before any custodian is asked for anything."""
    pin = user_pin()
    with hsm.session(token, user_pin=pin):
        pass
    return pin


def _sources(paths: list[Path], identities: list[Path] | None) -> list[tuple[str, Callable[[], Share]]]:
    """One opener per share file, run only when that custodian presents it."""
    loaded = load_identities(identities or [])

    def opener(path: Path) -> Callable[[], Share]:
        def open_share() -> Share:
            claimed = path.stem
            try:
                blob = path.read_bytes()
            except OSError as exc:
                raise errors.ShareRejected(f"{claimed}: cannot read {path}: {exc.strerror}") from None
            passphrase = None
            if shares.is_passphrase_sealed(blob):
                passphrase = passphrase_from_env(claimed) or read_pin(
                    f"passphrase of custodian {claimed}", passphrase_env(claimed)
                )
            return shares.unseal(blob, claimed, loaded, passphrase)

        return open_share

    return [(path.stem, opener(path)) for path in paths]


def _passphrases(custodian_file: Path) -> tuple[list[Custodian], dict[str, str]]:
    custodians = load_custodians(custodian_file)
    phrases: dict[str, str] = {}
    for c in custodians:
        if c.recipient is None:
            phrases[c.name] = passphrase_from_env(c.name) or read_pin(
                f"new passphrase for custodian {c.name}", passphrase_env(c.name), confirm=True
            )
            check_passphrase(c.name, phrases[c.name])
    return custodians, phrases


def _event(who: str, what: str) -> None:
    if who == "manifest":
        out.print(f"current share set: {escape(what)}")
        return
    style = "red" if what.startswith("refused") else "green"
    out.print(f"  [{style}]{escape(who)}[/]: {escape(what)}")


def _show_manifest(title: str, manifest: ceremony.SignedManifest, lab: Lab) -> None:
    table = Table(title=title, show_lines=False)
    table.add_column("custodian")
    table.add_column("sealed to")
    table.add_column("share file")
    for c in manifest.body["custodians"]:
        sealed = c["recipient"][:16] + "…" if c["recipient"] else "passphrase (scrypt)"
        table.add_row(c["name"], sealed, str(lab.share_path(manifest.ceremony_id, c["name"])))
    out.print(table)
    out.print(
        f"ceremony [bold]{manifest.ceremony_id}[/]  quorum [bold]{manifest.threshold}-of-"
        f"{manifest.share_count}[/]  KCV [bold]{manifest.kcv}[/]  signed by token "
        f"{escape(str(manifest.body['signer']['token']))}"
    )
    _show_fingerprint("signer", manifest.signer_fingerprint)
    for weak in manifest.body["weakened"]:
        out.print(f"[bold yellow]WEAKENED:[/] {escape(weak)}")


@app.command()
def init(
    lab: LabOpt = None,
    module: ModuleOpt = None,
    token: TokenOpt = PRIMARY_TOKEN,
    expect_signer: ExpectSignerOpt = None,
) -> None:
    """Initialise a token (SO PIN, user PIN), its signing key, and pin the lab's signer; resumable."""
    where, hsm = _open(lab, module, create=True)
    pin = user_pin(confirm=True)
    result = ceremony.init_token(
        hsm,
        where,
        token=token,
        so_pin=so_pin(confirm=True),
        user_pin=pin,
        expect_signer=record.expected_signer(expect_signer),
        actor=actor(),
        on_warning=_warn,
    )
    state = "initialised" if result.created else "already initialised (unchanged)"
    out.print(
        f"token [bold]{escape(token)}[/] {state} in {escape(str(where.root))} via {escape(str(hsm.module))}"
    )
    _show_fingerprint("pinned ceremony signer", result.anchor.fingerprint)
    if not result.authorised:
        _show_fingerprint(f"this token's signing key (not yet authorised) {token}", result.fingerprint)
        out.print(
            "[yellow]this token may sign the record once a quorum imports the master key into it "
            "(`hsm-lab import --authorise-signer`)[/]"
        )


@app.command()
def generate(
    custodians: Annotated[Path, typer.Option("--custodians", help="TOML custodian file.")],
    threshold: Annotated[int, typer.Option("--threshold", "-k", help="Shares needed (K).")] = 5,
    share_count: Annotated[
        int | None,
        typer.Option("--shares", "-n", help="Shares dealt (N); must match the custodian file."),
    ] = None,
    label: Annotated[str, typer.Option("--label", help="Master key label.")] = MASTER_LABEL,
    allow_weak_quorum: WeakOpt = False,
    allow_no_spare: NoSpareOpt = False,
    lab: LabOpt = None,
    module: ModuleOpt = None,
    token: TokenOpt = PRIMARY_TOKEN,
) -> None:
    """Generate the master key in the HSM and deal K-of-N sealed shares."""
    where, hsm = _open(lab, module)
    pin = _check_pin(hsm, token)  # a wrong PIN must not make the custodians type twice
    people, phrases = _passphrases(custodians)
    if share_count is not None and share_count != len(people):
        raise errors.InputError(
            f"--shares {share_count} but {custodians} lists {len(people)} custodians; make them agree"
        )
    manifest = ceremony.generate(
        hsm,
        where,
        token=token,
        user_pin=pin,
        custodians=people,
        threshold=threshold,
        passphrases=phrases,
        key_label=label,
        allow_weak=allow_weak_quorum,
        allow_no_spare=allow_no_spare,
        actor=actor(),
        on_warning=_warn,
    )
    _show_manifest("shares dealt", manifest, where)


@app.command(name="import")
def import_(
    share: ShareOpt,
    identity: IdentityOpt = None,
    authorise_signer: Annotated[
        bool,
        typer.Option(
            "--authorise-signer",
            help="Let this quorum authorise the target token's signing key (a new HSM joins the record).",
        ),
    ] = False,
    expect_kcv: Annotated[
        str | None, typer.Option("--expect-kcv", help="KCV from the witnessed script; refuse any other.")
    ] = None,
    expect_signer: ExpectSignerOpt = None,
    expect_ceremony: Annotated[
        str | None,
        typer.Option("--expect-ceremony", help="Ceremony id from the witnessed script; refuse any other."),
    ] = None,
    lab: LabOpt = None,
    module: ModuleOpt = None,
    token: TokenOpt = PRIMARY_TOKEN,
) -> None:
    """Custodians present shares one by one; at K valid shares the key enters the HSM."""
    where, hsm = _open(lab, module)
    manifest, used, kcv = ceremony.import_master(
        hsm,
        where,
        token=token,
        user_pin=user_pin(),
        sources=_sources(share, identity),
        actor=actor(),
        on_event=_event,
        on_warning=_warn,
        authorise_signer=authorise_signer,
        expect_kcv=expect_kcv,
        expect_signer=record.expected_signer(expect_signer),
        expect_ceremony=expect_ceremony,
    )
    out.print(
        f"master key [bold]{escape(manifest.key_label)}[/] imported into [bold]{escape(token)}[/] "
        f"(never extractable) from {', '.join(used)}; HSM KCV {kcv} = manifest KCV {manifest.kcv}"
    )
    _show_fingerprint("manifest signer", manifest.signer_fingerprint)


@app.command()
def rekey(
    share: ShareOpt,
    custodians: Annotated[Path, typer.Option("--custodians", help="TOML file of the NEW custodians.")],
    threshold: Annotated[int, typer.Option("--threshold", "-k", help="New K.")] = 5,
    identity: IdentityOpt = None,
    allow_weak_quorum: WeakOpt = False,
    allow_no_spare: NoSpareOpt = False,
    lab: LabOpt = None,
    module: ModuleOpt = None,
    token: TokenOpt = PRIMARY_TOKEN,
) -> None:
    """Deal a new share set for the same key (same KCV); the old set is retired."""
    where, hsm = _open(lab, module)
    pin = _check_pin(hsm, token)
    people, phrases = _passphrases(custodians)
    old, new, used = ceremony.rekey(
        hsm,
        where,
        token=token,
        user_pin=pin,
        sources=_sources(share, identity),
        custodians=people,
        threshold=threshold,
        passphrases=phrases,
        allow_weak=allow_weak_quorum,
        allow_no_spare=allow_no_spare,
        actor=actor(),
        on_event=_event,
        on_warning=_warn,
    )
    out.print(f"quorum of the retired set {old.ceremony_id}: {', '.join(used)}")
    out.print(
        "[yellow]note: the retired shares still combine to the same key outside this tool; "
        "only a new master key (rotation) removes that risk[/]"
    )
    _show_manifest("new share set", new, where)


def _drill(results: list[ceremony.DrillResult]) -> None:
    table = Table(title="share drill")
    table.add_column("custodian")
    table.add_column("result")
    for r in results:
        detail = escape(r.detail)
        table.add_row(escape(r.custodian), f"[green]ok[/] {detail}" if r.ok else f"[red]FAILED[/] {detail}")
    out.print(table)
    failed = [r for r in results if not r.ok]
    if failed:
        raise errors.ShareRejected(f"{len(failed)} share(s) failed the drill: {failed[0].detail}")


@app.command(name="verify-share")
def verify_share(
    share: Annotated[Path, typer.Option("--share", help="Your age-encrypted share file.")],
    identity: IdentityOpt = None,
    lab: LabOpt = None,
    module: ModuleOpt = None,
    token: TokenOpt = PRIMARY_TOKEN,
) -> None:
    """A custodian checks their share against the signed manifest, with no other share."""
    where, hsm = _open(lab, module)
    _drill(
        ceremony.verify_shares(
            hsm,
            where,
            token=token,
            user_pin=user_pin(),
            sources=_sources([share], identity),
            actor=actor(),
            on_warning=_warn,
        )
    )


@app.command(name="verify-all")
def verify_all(
    identity: IdentityOpt = None,
    lab: LabOpt = None,
    module: ModuleOpt = None,
    token: TokenOpt = PRIMARY_TOKEN,
) -> None:
    """Drill every custodian of the current share set (their identities or passphrases)."""
    where, hsm = _open(lab, module)

    def every_share(manifest: ceremony.SignedManifest) -> list[tuple[str, Callable[[], Share]]]:
        return _sources([where.share_path(manifest.ceremony_id, n) for n in manifest.custodians], identity)

    _drill(
        ceremony.verify_shares(
            hsm,
            where,
            token=token,
            user_pin=user_pin(),
            sources=every_share,
            actor=actor(),
            on_warning=_warn,
        )
    )


@app.command()
def status(
    lab: LabOpt = None,
    module: ModuleOpt = None,
    token: TokenOpt = PRIMARY_TOKEN,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """What the token holds (via PKCS#11), checked against the verified record."""
    where, hsm = _open(lab, module)
    with hsm.session(token, user_pin=user_pin()) as session:
        opened = _record(where, session)
        keys = session.inventory()
        unexplained, missing = record.reconcile(opened.state, token, keys)
        if opened.authorised:
            opened.append(
                actor(), "status", {"token": token, "objects": len(keys), "unexplained": unexplained}
            )
    state = opened.state
    if as_json:
        doc = {
            "schema": "clefs.status/v1",
            "token": token,
            "objects": [k.__dict__ for k in keys],
            "unexplained": unexplained,
            "missing": missing,
            "pinned_signer": state.anchor.fingerprint,
            "authorised_signers": sorted(state.signers),
            "current_ceremony": state.current,
            "token_heads": state.token_heads,
            "entries": len(state.entries),
        }
        out.print_json(json.dumps(doc))
    else:
        table = Table(title=f"token {escape(token)} ({escape(hsm.module.name)})")
        for column in ("label", "class", "type", "KCV", "attributes set"):
            table.add_column(column)
        for k in keys:
            flags = " ".join(name for name, on in k.attributes.items() if on)
            table.add_row(escape(k.label), k.object_class, k.key_type, k.kcv or "-", flags)
        out.print(table)
        out.print(
            f"record: {len(state.entries)} entries verified (chain, head signature, "
            f"{state.token_heads} committed heads held by this token); current share set "
            f"{state.current or 'none'}"
        )
        _show_fingerprint("pinned signer", state.anchor.fingerprint)
        if not opened.authorised:
            out.print(f"[yellow]token {escape(token)} is not an authorised signer yet[/]")
    if unexplained or missing:
        what = [f"not explained by the record: {', '.join(unexplained)}"] if unexplained else []
        what += [f"committed but gone: {', '.join(missing)}"] if missing else []
        raise errors.HSMError(f"token {token!r}: " + "; ".join(what))


@transcript_app.command("verify")
def transcript_verify(
    lab: LabOpt = None,
    module: ModuleOpt = None,
    token: TokenOpt = PRIMARY_TOKEN,
    expect_signer: ExpectSignerOpt = None,
    bundle: Annotated[
        Path | None,
        typer.Option("--bundle", help="Verify an exported auditor's bundle (no HSM needed)."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Check the chain, the manifests, the head signature by the pinned signer, and the token's heads."""
    from hsm_lab.ceremony import bundles

    expected = record.expected_signer(expect_signer)
    if bundle is not None:
        state = bundles.verify_bundle(bundle, expect=expected)
        where_from = f"bundle {bundle} (offline: the token's heads were checked when it was exported)"
    else:
        where, hsm = _open(lab, module)
        pin = os.environ.get("CLEFS_USER_PIN") or (user_pin() if sys.stdin.isatty() else None)
        if pin is None:
            if expected is None:
                raise errors.InputError(
                    "nothing to anchor the check to: set CLEFS_USER_PIN (the token holds the pin and the "
                    "committed heads) or pass --expect-signer with the witnessed fingerprint"
                )
            state = record.verify_lab(where, expect=expected)
            where_from = (
                "lab files against the fingerprint you gave; the token's committed heads were not read "
                "(set CLEFS_USER_PIN)"
            )
        else:
            with hsm.session(token, user_pin=pin) as session:
                opened = _record(where, session, expected)
                state = opened.state
            where_from = f"lab files and the {state.token_heads} committed heads held by token {token}"
    if as_json:
        out.print_json(json.dumps(bundles.summary(state, where_from)))
        return
    head = state.head
    out.print(
        f"[green]transcript OK[/]: {len(state.entries)} entries, head "
        f"{head.head[:16] if head else '-'}…, signed by token {escape(head.signer_token if head else '-')} "
        f"key {head.signer_key_id if head else '-'}; checked against {escape(where_from)}"
    )
    _show_fingerprint("pinned signer", state.anchor.fingerprint)
    for signer in state.signers.values():
        if signer.fingerprint != state.anchor.fingerprint:
            out.print(
                f"authorised signer {signer.fingerprint[:16]}… (token {escape(signer.token)}): {signer.how}"
            )
    if expected is None:
        out.print("[dim]compare the pinned signer with the witnessed record, or pass --expect-signer[/]")


@transcript_app.command("upload")
def transcript_upload(
    outputs: OutputsOpt = None,
    endpoint: EndpointOpt = None,
    real_aws: RealAwsOpt = False,
    ceremony_profile: CeremonyProfileOpt = None,
    trust_ca_bundle: TrustCaOpt = False,
    lab: LabOpt = None,
) -> None:
    """Archive the signed record in the stack's Object Lock bucket (after each ceremony step)."""
    where = Lab.at(lab)
    stack = _outputs(where, outputs)
    profiles: dict[str, str | None] = {"ceremony": ceremony_profile}
    _url, _target, roles = _role_clients(
        endpoint, real_aws, where.root, stack, profiles=profiles, trust_ca_bundle=trust_ca_bundle
    )
    _archive(where, stack, "aws" if real_aws else "localstack", roles["ceremony"])


@transcript_app.command("export")
def transcript_export(
    directory: Annotated[Path, typer.Argument(help="New directory for the auditor's bundle.")],
    lab: LabOpt = None,
    module: ModuleOpt = None,
    token: TokenOpt = PRIMARY_TOKEN,
) -> None:
    """Write the transcript, head, manifests and the signers' public keys for an auditor."""
    from hsm_lab.ceremony import bundles

    where, hsm = _open(lab, module)
    with hsm.session(token, user_pin=user_pin()) as session:
        opened = _record(where, session)
        written = bundles.export_bundle(where, opened.state, directory)
    out.print(f"bundle written to {escape(str(directory))}: {', '.join(written)}")
    _show_fingerprint("pinned signer (give this to the auditor out of band)", opened.state.anchor.fingerprint)


@transcript_app.command("show")
def transcript_show(lab: LabOpt = None) -> None:
    """Print the transcript entries (after checking the files: chain, manifests, signers, head)."""
    where = Lab.at(lab)
    record.verify_lab(where)
    table = Table(title=escape(str(where.transcript)))
    for column in ("seq", "time", "actor", "action", "params"):
        table.add_column(column)
    for entry in ceremony.transcript(where).entries():
        table.add_row(
            escape(str(entry.get("seq"))),
            escape(str(entry.get("time"))),
            escape(str(entry.get("actor"))),
            escape(str(entry.get("action"))),
            escape(json.dumps(entry.get("params"), separators=(",", ":"))[:120]),
        )
    out.print(table)


OutputsOpt = Annotated[
    Path | None, typer.Option("--outputs", help="Stack outputs JSON [default <lab>/stack-outputs.json].")
]
EndpointOpt = Annotated[
    str | None,
    typer.Option("--endpoint", help="LocalStack endpoint [default: localstack-client conventions]."),
]
RealAwsOpt = Annotated[
    bool,
    typer.Option(
        "--aws",
        help="Real AWS instead of LocalStack: one profile per role, botocore's endpoints, TLS verified; "
        "any endpoint override is refused (docs/aws.md).",
    ),
]


def _profile_option(role: str, does: str) -> Any:
    from hsm_lab.aws.access import profile_env

    return typer.Option(
        f"--{role}-profile",
        envvar=profile_env(role),
        help=f"AWS profile of the {role} role ({does}); with --aws.",
    )


TrustCaOpt = Annotated[
    bool,
    typer.Option(
        "--trust-ca-bundle",
        envvar="CLEFS_TRUST_CA_BUNDLE",
        help="With --aws, trust AWS_CA_BUNDLE (a proxy of yours); refused otherwise, and shown when used.",
    ),
]
CeremonyProfileOpt = Annotated[str | None, _profile_option("ceremony", "imports key material")]
AppProfileOpt = Annotated[str | None, _profile_option("app", "uses the keys and buckets")]
AuditorProfileOpt = Annotated[str | None, _profile_option("auditor", "reads keys and configuration")]


Clients = Callable[[str, str], object]


def _aws(
    endpoint: str | None,
    real_aws: bool,
    lab_root: Path,
    stack: StackOutputs | None = None,
    profiles: dict[str, str | None] | None = None,
    trust_ca_bundle: bool = False,
) -> tuple[str, str, Clients]:
    """(url, description, the auditor's clients): for commands that only read."""
    url, description, roles = _role_clients(endpoint, real_aws, lab_root, stack, profiles, trust_ca_bundle)
    return url, description, roles["auditor"]


def _role_clients(
    endpoint: str | None,
    real_aws: bool,
    lab_root: Path,
    stack: StackOutputs | None = None,
    profiles: dict[str, str | None] | None = None,
    trust_ca_bundle: bool = False,
) -> tuple[str, str, dict[str, Clients]]:
    """(url, description, clients per role): real AWS, or HTTPS to LocalStack pinned to the lab's CA.

    Real AWS: one session per role (hsm_lab.aws.access), every endpoint override refused. On
    LocalStack one identity plays every role; the account is the stack's (its outputs), else
    this lab's own (docs/localstack.md: each lab is its own account). With `stack` (a command
    that reads it), every key and bucket it names must still exist.
    """
    from hsm_lab.aws import localstack
    from hsm_lab.aws.deployment import lab_account, localstack_clients, require_stack

    if real_aws:
        from hsm_lab.aws.access import ROLES
        from hsm_lab.aws.access import real_aws as real

        if endpoint:
            raise errors.InputError("--endpoint is for LocalStack; with --aws the endpoint is botocore's own")
        access = real(profiles, trust_ca_bundle=trust_ca_bundle)
        roles = {role: access.clients(role) for role in ROLES}
        if stack is not None:
            require_stack(stack, roles["auditor"], localstack=False)
        return "aws", access.describe(), roles
    ca = None
    if endpoint:
        url = localstack.check_endpoint(endpoint)
        if not localstack.is_healthy(localstack.health(url)):
            raise localstack.LocalStackError(
                f"LocalStack not reachable or not healthy at {url}: start it (`hsm-lab localstack start`) "
                "or pass the right --endpoint"
            )
    else:
        found = localstack.connect(lab_dir=lab_root)
        url, ca = found.endpoint, found.ca
    # the stack's account (outputs without one: LocalStack's default), else this lab's own
    account_id = stack.account_id if stack is not None else lab_account(lab_root)
    clients, pin = localstack_clients(url, lab_root, ca=ca, account_id=account_id)
    if stack is not None:  # a command that reads the stack: say so when LocalStack lost it
        require_stack(stack, clients, localstack=True)
    one = {"ceremony": clients, "app": clients, "auditor": clients}  # LocalStack: one identity
    return pin.url, f"{pin.url}, {pin.describe()}", one


def _archive(
    where: Lab, stack: StackOutputs, target: str, ceremony: Clients, say: Console | None = None
) -> None:
    """Archive the signed record in the stack's Object Lock bucket, as the ceremony role."""
    from hsm_lab.ceremony import archive

    bucket, region = stack.transcript_bucket, stack.primary_region
    if bucket is None:
        raise errors.InputError("the stack outputs name no transcript bucket: apply the stack again")
    state = record.verify_lab(where)
    folder = archive.upload(
        state,
        where.transcript.read_bytes(),
        where.transcript_head.read_bytes(),
        ceremony("s3", region),
        bucket,
    )
    enforced = "AWS enforces it" if target == "aws" else "LocalStack stores it, enforces nothing"
    (say or out).print(
        f"record archived: s3://{escape(bucket)}/{escape(folder)} by the ceremony role "
        f"(Object Lock COMPLIANCE configured; {enforced})"
    )


def _expiry(days: int | None, no_expiry: bool) -> int | None:
    """--expires-in-days 1-365 (AWS's limit for imported material) or --no-expiry, nothing else."""
    if days is not None and no_expiry:
        raise errors.InputError("--expires-in-days and --no-expiry contradict each other: choose one")
    if days is not None and not 1 <= days <= 365:
        raise errors.InputError(
            f"--expires-in-days {days} is outside 1-365 (AWS's limit for imported material); "
            "use --no-expiry for material that never expires"
        )
    return days


def _outputs(where: Lab, outputs: Path | None) -> StackOutputs:
    """The stack outputs (--outputs, else the lab's), checked: clefs.stack-outputs/v1."""
    from hsm_lab.aws.deployment import load_stack, outputs_path

    return load_stack(outputs_path(where.root, outputs))


def _byok(
    where: Lab,
    hsm: HSM,
    outputs: Path | None,
    endpoint: str | None,
    real_aws: bool,
    token: str,
    *,
    so: bool,
    profiles: dict[str, str | None] | None = None,
    trust_ca_bundle: bool = False,
) -> tuple[Byok, StackOutputs, str, dict[str, Clients]]:
    """The Byok driver for this lab's token: the ceremony imports, the app proves, the auditor reads.

    Also returns the clients per role: the ceremony's archive the record afterwards.
    """
    from hsm_lab.byok import Byok

    stack = _outputs(where, outputs)
    _url, target, roles = _role_clients(
        endpoint, real_aws, where.root, stack, profiles=profiles, trust_ca_bundle=trust_ca_bundle
    )
    byok = Byok(
        hsm,
        where,
        token=token,
        user_pin=user_pin(),
        so_pin=so_pin() if so else "",
        kms_for=lambda region: roles["ceremony"]("kms", region),
        app_kms_for=lambda region: roles["app"]("kms", region),
        auditor_kms_for=lambda region: roles["auditor"]("kms", region),
        primary_region=stack.primary_region,
        actor=actor(),
    )
    return byok, stack, target, roles


@byok_app.command("import")
def byok_import(
    data_class: Annotated[str, typer.Option("--class", help="Data class (from the stack outputs).")],
    version: Annotated[int, typer.Option("--version", help="Class key version.")] = 1,
    wrapping: Annotated[
        str, typer.Option("--wrapping", help="RSAES_OAEP_SHA_1 or RSA_AES_KEY_WRAP_SHA_256 (composed).")
    ] = "RSAES_OAEP_SHA_1",
    expires_in_days: Annotated[
        int | None,
        typer.Option("--expires-in-days", help="Material expires after N days (1-365, AWS's limit)."),
    ] = None,
    no_expiry: Annotated[
        bool, typer.Option("--no-expiry", help="Imported material never expires (say it explicitly).")
    ] = False,
    outputs: OutputsOpt = None,
    endpoint: EndpointOpt = None,
    real_aws: RealAwsOpt = False,
    ceremony_profile: CeremonyProfileOpt = None,
    app_profile: AppProfileOpt = None,
    auditor_profile: AuditorProfileOpt = None,
    trust_ca_bundle: TrustCaOpt = False,
    lab: LabOpt = None,
    module: ModuleOpt = None,
    token: TokenOpt = PRIMARY_TOKEN,
    as_json: Annotated[
        bool, typer.Option("--json", help="Machine-readable (schema clefs.byok-import/v1); lines on stderr.")
    ] = False,
) -> None:
    """Derive the class key in the HSM and import the same material into primary and replica."""
    from datetime import UTC, datetime, timedelta

    from hsm_lab.aws.deployment import class_key_arns

    days = _expiry(expires_in_days, no_expiry)  # checked before any AWS call or PIN prompt
    where, hsm = _open(lab, module)
    profiles = {"ceremony": ceremony_profile, "app": app_profile, "auditor": auditor_profile}
    byok, stack, target, roles = _byok(
        where,
        hsm,
        outputs,
        endpoint,
        real_aws,
        token,
        so=True,
        profiles=profiles,
        trust_ca_bundle=trust_ca_bundle,
    )
    arns = class_key_arns(stack, data_class)
    expiry = datetime.now(UTC) + timedelta(days=days) if days else None
    say = err if as_json else out  # with --json, stdout is the document alone
    imports = byok.import_class(data_class, version, arns, wrapping_algorithm=wrapping, valid_to=expiry)
    for line in byok.warnings:
        _warn(line)
    for key_arn, fingerprint in byok.wrapping_keys:
        say.print(f"wrapping key from {key_arn}: SHA-256 {fingerprint} (recorded before the HSM wrapped)")
    for imported in imports:
        say.print(
            f"{escape(imported.data_class)} v{imported.version} (KCV {imported.kcv}) -> {imported.key_arn} "
            f"\\[{imported.role}] via {imported.wrapping_algorithm}; expires {imported.expires or 'never'} "
            f"({escape(target)})"
        )
    proved = byok.prove(data_class, arns[0], arns[-1])
    say.print(f"[green]proved[/]: encrypted under {arns[0]}, decrypted under {arns[-1]}")
    _archive(where, stack, "aws" if real_aws else "localstack", roles["ceremony"], say)
    if as_json:
        from hsm_lab.ceremony_day.outputs import byok_doc

        out.print_json(json.dumps(byok_doc(imports, proved, target)))


@byok_app.command("revoke")
def byok_revoke(
    data_class: Annotated[str, typer.Option("--class", help="Data class.")],
    region: Annotated[str, typer.Option("--region", help="Which region's key loses its material.")],
    outputs: OutputsOpt = None,
    endpoint: EndpointOpt = None,
    real_aws: RealAwsOpt = False,
    ceremony_profile: CeremonyProfileOpt = None,
    app_profile: AppProfileOpt = None,
    auditor_profile: AuditorProfileOpt = None,
    trust_ca_bundle: TrustCaOpt = False,
    lab: LabOpt = None,
    module: ModuleOpt = None,
    token: TokenOpt = PRIMARY_TOKEN,
) -> None:
    """Delete a class key's imported material in one region and show decrypt is refused."""
    from hsm_lab.aws.deployment import class_key_arns

    where, hsm = _open(lab, module)
    profiles = {"ceremony": ceremony_profile, "app": app_profile, "auditor": auditor_profile}
    byok, stack, _target, roles = _byok(
        where,
        hsm,
        outputs,
        endpoint,
        real_aws,
        token,
        so=False,
        profiles=profiles,
        trust_ca_bundle=trust_ca_bundle,
    )
    arns = [a for a in class_key_arns(stack, data_class) if a.split(":")[3] == region]
    if not arns:
        raise errors.InputError(f"class {data_class} has no key in region {region}")
    refusal = byok.revoke(arns[0], data_class)
    out.print(f"{arns[0]}: material deleted; decrypt now refused ({refusal}). Re-import with `byok import`.")
    _archive(where, stack, "aws" if real_aws else "localstack", roles["ceremony"])


def _archived(
    where: Lab, stack: StackOutputs, client_for: Clients, real_aws: bool, say: Console
) -> str | None:
    """Read the archived record back (auditor) and check it against the lab's: None, or the gap."""
    from hsm_lab.ceremony import archive

    bucket, region = stack.transcript_bucket, stack.primary_region
    if bucket is None or not where.transcript.exists():
        say.print("[yellow]transcript archive: not checked (no transcript bucket or no lab record here)[/]")
        return None
    try:
        state = record.verify_lab(where)
        found = archive.latest(state, client_for("s3", region), bucket)
    except errors.ClefsError as exc:
        return f"transcript archive: {exc}"
    lag = "" if found.seq == found.lab_entries else f" (the lab has {found.lab_entries}: upload again)"
    source = "observed; AWS enforces Object Lock" if real_aws else "observed; Object Lock configured only"
    say.print(
        f"transcript archive: s3://{escape(bucket)}/{escape(found.folder)} holds entry {found.seq} of the "
        f"lab's record, signed by an authorised signer{lag} ({source})"
    )
    return None


@app.command()
def verify(
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable (docs/verify.md).")] = False,
    max_objects: Annotated[
        int, typer.Option("--max-objects", help="Object versions read per bucket, at most.")
    ] = 10_000,
    outputs: OutputsOpt = None,
    endpoint: EndpointOpt = None,
    real_aws: RealAwsOpt = False,
    auditor_profile: AuditorProfileOpt = None,
    trust_ca_bundle: TrustCaOpt = False,
    lab: LabOpt = None,
) -> None:
    """Compliance proved from live state, per data class and region; non-zero exit on any gap."""
    from hsm_lab.cli.render import print_compliance
    from hsm_lab.compliance import assess

    where = Lab.at(lab)
    stack = _outputs(where, outputs)
    # the auditor's clients (read-only); checks the stack still exists
    _url, target, client_for = _aws(
        endpoint,
        real_aws,
        where.root,
        stack,
        profiles={"auditor": auditor_profile},
        trust_ca_bundle=trust_ca_bundle,
    )
    report = assess(stack, client_for, max_objects=max_objects, emulator=not real_aws)
    archived = _archived(where, stack, client_for, real_aws, err if as_json else out)  # stdout stays JSON
    if archived:
        report.gaps.append(archived)
    if as_json:
        out.print_json(report.to_json())
    else:
        print_compliance(out, report, target)
    if report.gaps:
        raise errors.ClefsError(f"{len(report.gaps)} gap(s) in live state; the first: {report.gaps[0]}")


@app.command()
def rehearse(
    lab: Annotated[
        Path | None, typer.Option("--lab", help="A fresh (empty or absent) lab directory.")
    ] = None,
    module: ModuleOpt = None,
    seed: Annotated[int | None, typer.Option("--seed", help="Which custodians turn up.")] = None,
    ceremony_only: Annotated[
        bool, typer.Option("--ceremony-only", help="Only the HSM ceremony (no LocalStack, no AWS side).")
    ] = False,
    as_json: Annotated[
        bool, typer.Option("--json", help="Machine-readable (schema clefs.rehearse/v1); steps on stderr.")
    ] = False,
) -> None:
    """The whole story in a fresh lab: ceremony, stack, BYOK, data path, compliance report."""
    from hsm_lab.ceremony_day.outputs import rehearse_doc
    from hsm_lab.cli.render import print_pyramid, print_rehearsal
    from hsm_lab.rehearsal import Rehearsal
    from hsm_lab.rehearsal.full import PyramidReport

    if lab is None:
        from datetime import UTC, datetime

        lab = Path("lab") / datetime.now(UTC).strftime("rehearsal-%Y%m%dT%H%M%SZ")
    say = err if as_json else out
    account: Rehearsal | PyramidReport

    with say.status("rehearsing", spinner="dots") as spinner:  # animates on a terminal between steps

        def step(text: str) -> None:
            say.print(f"[dim]→ {escape(text)}[/]")
            spinner.update(text)

        if ceremony_only:
            from hsm_lab.rehearsal import rehearse as run_ceremony

            account = run_ceremony(lab, module=module, seed=seed, on_step=step)
        else:
            from hsm_lab.pyramid import rehearse_pyramid

            try:
                account = rehearse_pyramid(lab, module=module, seed=seed, on_step=step)
            except errors.ClefsError as exc:
                partial = getattr(exc, "partial_report", None)
                if partial is not None:  # the ceremony succeeded: show it before the error
                    spinner.stop()
                    print_rehearsal(say, partial.ceremony)
                    done = ", ".join(f"{k} {v:.1f} s" for k, v in partial.timings.items())
                    say.print(f"[yellow]the AWS side stopped after: {escape(done)}[/]")
                raise
    if as_json:
        out.print_json(json.dumps(rehearse_doc(account)))
    elif isinstance(account, PyramidReport):
        print_pyramid(out, account)
    else:
        print_rehearsal(out, account)
    compliance = account.compliance if isinstance(account, PyramidReport) else None
    if compliance is not None and compliance.gaps:
        raise errors.ClefsError(f"{len(compliance.gaps)} gap(s): {compliance.gaps[0]}")
    if not ceremony_only and not as_json:
        out.print("[bold green]rehearsal OK[/]: L0 quorum → L1 BYOK in both regions → L2/L3 records, no gap")


_mount_subapps()


def main() -> None:
    """Console entry point: one-line errors, non-zero exits, no tracebacks.

    umask 077 first: whatever the lab or the PKCS#11 module writes is owner-only.
    """
    os.umask(0o077)
    try:
        code = console.run(app)  # usage errors: one line, exit 2; Ctrl-C: exit 1
    except errors.ClefsError as exc:
        console.print_error(exc)
        sys.exit(exc.exit_code)
    except Exception as exc:  # a bug: still one line, never a traceback (CLEFS_DEBUG=1 shows it)
        sys.exit(console.unexpected(exc))
    sys.exit(code)


if __name__ == "__main__":
    main()
