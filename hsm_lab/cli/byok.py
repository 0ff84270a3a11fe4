"""`hsm-lab byok import|revoke`: class keys derived in the HSM, imported into KMS (both regions)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.markup import escape

from hsm_lab import errors
from hsm_lab.cli.app import (
    AppProfileOpt,
    AuditorProfileOpt,
    CeremonyProfileOpt,
    Clients,
    EndpointOpt,
    LabOpt,
    ModuleOpt,
    OutputsOpt,
    RealAwsOpt,
    TokenOpt,
    TrustCaOpt,
    _open,
    _warn,
    byok_app,
    err,
    out,
)
from hsm_lab.cli.clients import _archive, _outputs, _role_clients
from hsm_lab.hsm import HSM
from hsm_lab.lab import PRIMARY_TOKEN, Lab, actor, so_pin, user_pin
from infra.model.outputs import StackOutputs

if TYPE_CHECKING:
    from hsm_lab.byok import Byok, ImportRecord


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
    _show_imports(say, byok, imports, target)
    proved = byok.prove(data_class, arns[0], arns[-1])
    say.print(f"[green]proved[/]: encrypted under {arns[0]}, decrypted under {arns[-1]}")
    _archive(where, stack, "aws" if real_aws else "localstack", roles["ceremony"], say)
    if as_json:
        from hsm_lab.ceremony_day.outputs import byok_doc

        out.print_json(json.dumps(byok_doc(imports, proved, target)))


def _show_imports(say: Console, byok: Byok, imports: list[ImportRecord], target: str) -> None:
    """The warnings, each wrapping key's fingerprint, and each import: one line each."""
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
