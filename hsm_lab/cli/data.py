"""`hsm-lab data put|get|replicate`: the data path from the command line (see docs/datapath.md)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from hsm_lab.aws import deployment
from hsm_lab.aws.deployment import localstack_clients
from hsm_lab.ceremony.custodians import load_identities
from hsm_lab.cli import console
from hsm_lab.datapath.envelope import FORMAT, check_record_id
from hsm_lab.datapath.store import OUTPUTS_NAME, DataPath
from hsm_lab.errors import ClefsError, InputError
from hsm_lab.fs import atomic_write_bytes

app = console.new_app("Data path: put/get records per data class (envelope-encrypted, SSE-KMS, HTTPS).")
_out = console.out
_err = console.err

ClassOpt = Annotated[str, typer.Option("--class", "-c", help="Data class, e.g. health-documents.")]
IdOpt = Annotated[str, typer.Option("--id", help="Record id (A-Z a-z 0-9 . _ -, max 128).")]
RegionOpt = Annotated[str | None, typer.Option("--region", help="Region [default: the stack's primary].")]
LabOpt = console.LabOpt
OutputsOpt = Annotated[
    Path | None, typer.Option("--outputs", help=f"Stack outputs JSON [default: <lab>/{OUTPUTS_NAME}].")
]
AwsOpt = Annotated[
    bool,
    typer.Option(
        "--aws",
        help="Real AWS instead of LocalStack: the app role (CLEFS_APP_PROFILE) writes and reads, the auditor "
        "(CLEFS_AUDITOR_PROFILE) describes keys; endpoint overrides refused (docs/aws.md).",
    ),
]


def _datapath(lab: Path | None, outputs: Path | None, aws: bool) -> tuple[DataPath, str]:
    from hsm_lab.aws import localstack as ls

    lab_dir = lab.resolve() if lab else ls.default_lab()
    stack = deployment.load_stack(outputs or lab_dir / OUTPUTS_NAME)
    classes = stack.classes  # the typed contract, as hsm_lab.datapath takes it
    primary = stack.primary_region
    if aws:  # the app role writes and reads; the auditor describes (CLEFS_APP_PROFILE, CLEFS_AUDITOR_PROFILE)
        from hsm_lab.aws.access import real_aws

        access = real_aws()
        auditor = access.clients("auditor")
        deployment.require_stack(stack, auditor, localstack=False)
        path_ = DataPath(access.clients("app"), classes, primary_region=primary, reader=auditor)
        return path_, access.describe()
    instance = ls.connect(lab_dir=lab_dir)
    factory, pin = localstack_clients(
        instance.endpoint,
        lab_dir,
        ca=instance.ca,
        account_id=stack.account_id,  # the stack's account
    )
    deployment.require_stack(stack, factory, localstack=True)
    return DataPath(factory, classes, primary_region=primary), pin.describe()


@app.command("put")
def put_command(
    data_class: ClassOpt,
    record_id: IdOpt,
    file: Annotated[Path, typer.Option("--file", "-f", help="The record's content.")],
    recipient: Annotated[
        list[str] | None, typer.Option("--recipient", "-r", help="age1... recipient (repeat; e2e classes).")
    ] = None,
    region: RegionOpt = None,
    outputs: OutputsOpt = None,
    lab: LabOpt = None,
    aws: AwsOpt = False,
) -> None:
    """Encrypt a file as one record of a class and store it in the class bucket."""
    try:
        check_record_id(record_id)
        try:
            data = file.read_bytes()
        except OSError as exc:
            raise InputError(f"cannot read {file}: {exc.strerror or exc}") from None
        datapath, transport = _datapath(lab, outputs, aws)
        spec, region_name, where = datapath.target(data_class, region)
        key = datapath.put(data_class, record_id, data, region_name, recipient or None)
    except ClefsError as error:
        raise console.fail(error) from None
    e2e = f", end to end (age) to {len(recipient or [])} recipient(s)" if spec.end_to_end else ""
    _out.print(f"stored {escape(data_class)}/{escape(record_id)} ({len(data)} bytes{e2e})")
    _out.print(
        f"  s3://{escape(where.bucket)}/{escape(key)} in {region_name}: SSE-KMS {escape(where.key_arn)}"
    )
    _out.print(f"  format {FORMAT}; {escape(transport)}")


@app.command("get")
def get_command(
    data_class: ClassOpt,
    record_id: IdOpt,
    identity: Annotated[
        list[Path] | None, typer.Option("--identity", "-i", help="age identity file (e2e classes; repeat).")
    ] = None,
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="Write here (atomically) instead of stdout.")
    ] = None,
    sealed: Annotated[
        bool, typer.Option("--sealed", help="E2E classes: output the age ciphertext (opens with `age -d`).")
    ] = False,
    region: RegionOpt = None,
    outputs: OutputsOpt = None,
    lab: LabOpt = None,
    aws: AwsOpt = False,
) -> None:
    """Fetch, authenticate and decrypt one record to --out or stdout."""
    try:
        check_record_id(record_id)
        if sealed and identity:
            raise InputError("--sealed and --identity exclude each other")
        identities = load_identities(identity) if identity else None
        datapath, transport = _datapath(lab, outputs, aws)
        record = datapath.read(data_class, record_id, region, identities, sealed=sealed)
        data = record.plaintext
        if out is not None:
            atomic_write_bytes(out, data, 0o600)
    except ClefsError as error:
        raise console.fail(error) from None
    if out is None:
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
    what = "sealed (age ciphertext)" if sealed else "plaintext"
    where = f"-> {out}" if out is not None else "-> stdout"
    _err.print(f"read {escape(data_class)}/{escape(record_id)}: {len(data)} bytes {what} {escape(where)}")
    _err.print(
        f"  written {record.written} (authenticated), S3 version {escape(str(record.version_id))}, "
        "the newest authentic version in the bucket's history"
    )
    _err.print(f"  {escape(transport)}")


@app.command("replicate")
def replicate_command(
    data_class: Annotated[
        str | None, typer.Option("--class", "-c", help="Only this class [default: every class].")
    ] = None,
    outputs: OutputsOpt = None,
    lab: LabOpt = None,
    aws: AwsOpt = False,
) -> None:
    """Copy what S3 replication would to the replica buckets (LocalStack stores the rule, copies nothing)."""
    try:
        if aws:
            raise InputError("on AWS, S3 replication copies records itself: `replicate` is for LocalStack")
        datapath, transport = _datapath(lab, outputs, aws)
        copied = datapath.replicate(data_class)
    except ClefsError as error:
        raise console.fail(error) from None
    for name, count in copied.items():
        _out.print(f"{escape(name)}: {count} record version(s) copied byte for byte to the replica bucket")
    _out.print(f"  {escape(transport)}")
