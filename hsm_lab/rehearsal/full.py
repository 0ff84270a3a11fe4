"""The full rehearsal: from the 5-of-7 master key down to a stored record, on LocalStack.

1. the quorum ceremony on SoftHSM2 (hsm_lab.rehearsal): the master key is born
   in the primary HSM and rebuilt from five shares in the recovery HSM;
2. LocalStack starts (or one already running is used);
3. the real Pulumi program is applied to it (infra.harness);
4. for each data class, the recovery HSM derives the class key from the
   master key and imports it into KMS in Paris and Frankfurt (BYOK), and
   proves it: encrypt in one region, decrypt in the other;
5. sample records are written and read back per class (health documents end
   to end to a patient and a practitioner);
6. the compliance report is read from live state;
7. a revocation drill on a dedicated key; LocalStack is stopped if we started it.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hsm_lab import errors
from hsm_lab.aws.deployment import (
    OUTPUTS_FILE,
    ClientFactory,
    Outputs,
    lab_account,
    localstack_clients,
    save_outputs,
    stack_outputs,
)
from hsm_lab.byok import Byok, ImportRecord
from hsm_lab.compliance import Report, assess
from hsm_lab.hsm import HSM
from hsm_lab.lab import RECOVERY_TOKEN, Lab
from hsm_lab.rehearsal import Rehearsal, rehearse
from infra.model.outputs import ClassOutputs, StackOutputs

if TYPE_CHECKING:
    import pyrage

    from hsm_lab.datapath import DataPath

DRILL_CLASS = "revocation-drill"
AES_WRAP_CLASS = "health-documents"  # shown with RSA_AES_KEY_WRAP_SHA_256; others with OAEP-SHA1
EXPIRING_CLASS = "appointments"  # shown with an expiring import (365 days)


@dataclass
class PyramidReport:
    ceremony: Rehearsal
    endpoint: str = ""
    localstack_started: bool = False
    resources: int = 0
    outputs: StackOutputs | None = None
    imports: list[ImportRecord] = field(default_factory=list)
    proofs: dict[str, str] = field(default_factory=dict)
    records: list[dict[str, Any]] = field(default_factory=list)
    compliance: Report | None = None
    revocation: str = ""
    archive: str = ""  # where the signed record was archived and read back (Object Lock bucket)
    timings: dict[str, float] = field(default_factory=dict)


class _Phases:
    """The report being filled, and each phase's time in it."""

    def __init__(self, report: PyramidReport) -> None:
        self.report = report

    @contextmanager
    def timed(self, step: str) -> Iterator[None]:
        began = time.perf_counter()
        yield
        self.report.timings[step] = time.perf_counter() - began


def rehearse_pyramid(
    lab_dir: Path,
    *,
    module: str | None = None,
    seed: int | None = None,
    on_step: Callable[[str], None] = lambda _step: None,
) -> PyramidReport:
    """L0 ceremony, then the AWS side on LocalStack; a failure carries the report so far."""
    start = time.perf_counter()
    pins = {token: secrets.token_urlsafe(12) for token in ("clefs-primary", RECOVERY_TOKEN)}
    so_pin = secrets.token_urlsafe(12)
    ceremony = rehearse(lab_dir, module=module, seed=seed, pins=pins, so_pin=so_pin, on_step=on_step)
    report = PyramidReport(ceremony)
    report.timings["ceremony"] = ceremony.timings["total"]
    try:
        _aws_side(_Phases(report), pins[RECOVERY_TOKEN], so_pin, module, on_step)
    except BaseException as exc:  # the CLI still shows what succeeded (the ceremony, the steps done)
        setattr(exc, "partial_report", report)  # noqa: B010 - an attribute BaseException does not declare
        raise
    report.timings["total"] = time.perf_counter() - start
    return report


def _aws_side(
    phases: _Phases, user_pin: str, so_pin: str, module: str | None, on_step: Callable[[str], None]
) -> None:
    """LocalStack up, the stack applied, BYOK per class, records, the report, the drill, the archive."""
    from hsm_lab.aws import localstack

    report, lab = phases.report, phases.report.ceremony.lab
    began = time.perf_counter()
    on_step("starting LocalStack (S3, KMS, IAM, STS, SNS, EventBridge) on loopback")
    with localstack.running(lab.root, echo=on_step) as stack:
        report.timings["localstack start"] = time.perf_counter() - began
        report.endpoint = stack.endpoint
        report.localstack_started = stack.owned
        client_for, pin = localstack_clients(
            stack.endpoint, lab.root, ca=stack.ca, account_id=lab_account(lab.root)
        )
        on_step(f"every AWS call over HTTPS: {pin.describe()}")
        with phases.timed("stack apply"):
            outputs = apply_stack(report, lab, pin.url, client_for, on_step)
        with phases.timed("byok"):
            byok = Byok(
                HSM(lab.root, module),
                lab,
                token=RECOVERY_TOKEN,
                user_pin=user_pin,
                so_pin=so_pin,
                kms_for=lambda region: client_for("kms", region),
                primary_region=outputs.primary_region,
                actor="rehearsal",
            )
            import_classes(report, byok, outputs, on_step)
        with phases.timed("data path"):
            report.records = write_samples(lab.root, outputs, client_for, on_step)
        with phases.timed("verify"):
            on_step("reading live state for the compliance report")
            report.compliance = assess(outputs, client_for, emulator=True)
        with phases.timed("revocation drill"):
            on_step("revocation drill on a dedicated key: DeleteImportedKeyMaterial, then decrypt")
            report.revocation = revocation_drill(byok, client_for, outputs.primary_region)
        on_step("archiving the signed record in the Object Lock bucket, then reading it back")
        report.archive = archive_record(lab, outputs, client_for)
        on_step("stopping LocalStack" if stack.owned else "leaving the LocalStack we did not start running")


def apply_stack(
    report: PyramidReport, lab: Lab, url: str, client_for: ClientFactory, on_step: Callable[[str], None]
) -> StackOutputs:
    """The real program applied to LocalStack; its outputs checked and kept in the lab."""
    from infra.harness import apply

    on_step("applying the Pulumi program to LocalStack (real resources, via the mocks harness)")
    recording, mocks = apply(url, client_for, state_path=lab.root / "stack-state.json")
    report.resources = len(mocks.created)
    report.outputs = stack_outputs(recording.outputs)
    save_outputs(lab.root / OUTPUTS_FILE, report.outputs)
    return report.outputs


def import_classes(
    report: PyramidReport, byok: Byok, outputs: StackOutputs, on_step: Callable[[str], None]
) -> None:
    """BYOK for every class: derive in the HSM, import in each region, prove across regions."""
    for data_class in sorted(outputs.classes):
        arns = outputs.key_arns(data_class)
        algorithm = "RSA_AES_KEY_WRAP_SHA_256" if data_class == AES_WRAP_CLASS else "RSAES_OAEP_SHA_1"
        expiry = datetime.now(UTC) + timedelta(days=365) if data_class == EXPIRING_CLASS else None
        regions = len(arns)
        on_step(f"BYOK {data_class}: derive, wrap ({algorithm}) in the HSM, import in {regions} regions")
        report.imports += byok.import_class(
            data_class, 1, arns, wrapping_algorithm=algorithm, valid_to=expiry
        )
        byok.prove(data_class, arns[0], arns[-1])
        report.proofs[data_class] = (
            f"encrypted in {arns[0].split(':')[3]}, decrypted in {arns[-1].split(':')[3]}"
        )


def archive_record(lab: Lab, outputs: Outputs, client_for: ClientFactory) -> str:
    """Upload the record (the ceremony role's job; one identity on LocalStack), read it back, compare."""
    from hsm_lab.ceremony import archive
    from hsm_lab.ceremony.record import verify_lab

    stack = stack_outputs(outputs)
    if stack.transcript_bucket is None:
        raise errors.InputError("the stack outputs name no transcript bucket: apply the stack again")
    state = verify_lab(lab)
    s3 = client_for("s3", stack.primary_region)
    bucket = stack.transcript_bucket
    archive.upload(state, lab.transcript.read_bytes(), lab.transcript_head.read_bytes(), s3, bucket)
    found = archive.latest(state, s3, bucket)
    return f"s3://{bucket}/{found.folder} (entry {found.seq} of {found.lab_entries}, read back and verified)"


def revocation_drill(byok: Byok, client_for: ClientFactory, region: str) -> str:
    """A throw-away EXTERNAL key gets drill material, then loses it: decrypt must fail."""
    kms = client_for("kms", region)
    key = kms.create_key(
        Origin="EXTERNAL",
        Description="clefs revocation drill (scheduled for deletion after the drill)",
        Tags=[{"TagKey": "clefs:purpose", "TagValue": "revocation-drill"}],
    )["KeyMetadata"]
    try:
        byok.import_class(DRILL_CLASS, 1, [key["Arn"]])
        return byok.revoke(key["Arn"], DRILL_CLASS)
    finally:
        kms.schedule_key_deletion(KeyId=key["KeyId"], PendingWindowInDays=7)


SAMPLES = {
    "appointments": [
        {
            "date": "2026-12-03T09:30",
            "practitioner": "Dr Martin, généraliste, Lyon",
            "reason": "renouvellement",
        },
        {"date": "2026-12-04T14:00", "practitioner": "Dr Nguyen, dermatologue", "reason": "grain de beauté"},
    ],
    "administrative": [
        {"name": "Camille Durand", "address": "12 rue des Lilas, 69003 Lyon"},
        {"name": "Louis Bernard", "address": "4 place du Marché, 13001 Marseille"},
    ],
    "health-documents": [
        {"type": "prescription", "text": "amoxicilline 1 g, 3 fois par jour, 7 jours"},
        {"type": "lab-result", "text": "HbA1c 6,1 %"},
    ],
}


def write_samples(
    lab_root: Path,
    outputs: Outputs,
    client_for: ClientFactory,
    on_step: Callable[[str], None],
) -> list[dict[str, Any]]:
    """Write and read back sample records per class through the data path.

    Health documents are sealed to a patient and a practitioner (identities held
    in memory only); the platform's own read must be refused.
    """
    import pyrage

    from hsm_lab.datapath import DataPath

    stack = stack_outputs(outputs)
    people = (pyrage.x25519.Identity.generate(), pyrage.x25519.Identity.generate())  # patient, practitioner
    classes = stack.classes  # the typed contract, as hsm_lab.datapath takes it
    path = DataPath(client_for, classes, primary_region=stack.primary_region)
    results: list[dict[str, Any]] = []
    for data_class, spec in sorted(stack.classes.items()):
        samples = SAMPLES.get(data_class) or [{"sample": data_class}]
        on_step(
            f"data path {data_class}: {len(samples)} records" + (" (end to end)" if spec.end_to_end else "")
        )
        for number, sample in enumerate(samples, start=1):
            results.append(_sample(path, stack, spec, f"sample-{number:03d}", sample, people))
    calls = sum(path.kms_calls.values())
    results.append({"kms_calls": calls})
    return results


def _sample(
    path: DataPath,
    stack: StackOutputs,
    spec: ClassOutputs,
    record_id: str,
    sample: Mapping[str, str],
    people: tuple[pyrage.x25519.Identity, pyrage.x25519.Identity],
) -> dict[str, Any]:
    """One record written, replicated and read back from every region; who may read it, checked."""
    import json

    data_class, primary, end_to_end = spec.name, stack.primary_region, spec.end_to_end
    replica_regions = [r for r in spec.regions if r != primary]
    plaintext = json.dumps(sample, ensure_ascii=False).encode()
    recipients = [person.to_public() for person in people] if end_to_end else None
    path.put(data_class, record_id, plaintext, recipients=recipients)
    # LocalStack stores the replication rule but copies nothing: copy what S3 would,
    # byte for byte, stored under the replica key (what `hsm-lab data replicate` does)
    path.replicate(data_class)
    entry: dict[str, Any] = {
        "data_class": data_class,
        "record_id": record_id,
        "bytes": len(plaintext),
        "end_to_end": end_to_end,
    }
    entry["regions"] = [primary, *replica_regions]
    if end_to_end:
        entry["read_back"], entry["platform"] = _read_end_to_end(
            path, data_class, record_id, plaintext, people, replica_regions
        )
    else:
        entry["read_back"] = all(
            path.get(data_class, record_id, region=r) == plaintext for r in [primary, *replica_regions]
        )
        entry["platform"] = "reads it (at rest + in transit class)"
    if not entry["read_back"] or entry["platform"].startswith("READ"):
        raise errors.ClefsError(f"data path check failed for {data_class}/{record_id}: {entry}")
    return entry


def _read_end_to_end(
    path: DataPath,
    data_class: str,
    record_id: str,
    plaintext: bytes,
    people: tuple[pyrage.x25519.Identity, pyrage.x25519.Identity],
    replica_regions: list[str],
) -> tuple[bool, str]:
    """Patient and practitioner read it (replicas too); the platform alone must be refused."""
    from hsm_lab.datapath import EndToEndError

    patient, practitioner = people
    by_patient = path.get(data_class, record_id, identity=patient)
    by_practitioner = path.get(data_class, record_id, identity=practitioner)
    in_replica = [path.get(data_class, record_id, region=r, identity=patient) for r in replica_regions]
    read_back = by_patient == plaintext == by_practitioner and all(copy == plaintext for copy in in_replica)
    try:
        path.get(data_class, record_id)
        return read_back, "READ (gap)"
    except EndToEndError:
        return read_back, "refused: holds age ciphertext only"
