"""`hsm-lab init|generate|import|rekey|verify-share|verify-all|status`: the quorum ceremony's steps."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from hsm_lab import ceremony, errors
from hsm_lab.ceremony import record, shares
from hsm_lab.ceremony.custodians import (
    Custodian,
    check_passphrase,
    load_custodians,
    load_identities,
    passphrase_env,
    passphrase_from_env,
)
from hsm_lab.ceremony.shares import Share
from hsm_lab.cli.app import (
    ExpectSignerOpt,
    IdentityOpt,
    LabOpt,
    ModuleOpt,
    NoSpareOpt,
    ShareOpt,
    TokenOpt,
    WeakOpt,
    _check_pin,
    _open,
    _record,
    _show_fingerprint,
    _warn,
    app,
    out,
)
from hsm_lab.lab import MASTER_LABEL, PRIMARY_TOKEN, Lab, actor, read_pin, so_pin, user_pin


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
