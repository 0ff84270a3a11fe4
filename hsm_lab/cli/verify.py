"""`hsm-lab verify`: compliance proved from live state (docs/verify.md), and the archived record."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape

from hsm_lab import errors
from hsm_lab.ceremony import record
from hsm_lab.cli.app import (
    AuditorProfileOpt,
    Clients,
    EndpointOpt,
    LabOpt,
    OutputsOpt,
    RealAwsOpt,
    TrustCaOpt,
    app,
    err,
    out,
)
from hsm_lab.cli.clients import _aws, _outputs
from hsm_lab.lab import Lab
from infra.model.outputs import StackOutputs


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
