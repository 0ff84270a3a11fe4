"""`hsm-lab transcript verify|upload|export|show`: the hash-chained, HSM-signed record."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from hsm_lab import ceremony, errors
from hsm_lab.ceremony import record
from hsm_lab.cli.app import (
    CeremonyProfileOpt,
    EndpointOpt,
    ExpectSignerOpt,
    LabOpt,
    ModuleOpt,
    OutputsOpt,
    RealAwsOpt,
    TokenOpt,
    TrustCaOpt,
    _open,
    _record,
    _show_fingerprint,
    out,
    transcript_app,
)
from hsm_lab.cli.clients import _archive, _outputs, _role_clients
from hsm_lab.lab import PRIMARY_TOKEN, Lab, user_pin


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
