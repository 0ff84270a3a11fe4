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
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from hsm_lab import errors
from hsm_lab.aws.deployment import class_key_arns, lab_account, localstack_clients, save_outputs
from hsm_lab.byok import Byok, ImportRecord
from hsm_lab.compliance import Report, assess
from hsm_lab.hsm import HSM
from hsm_lab.lab import RECOVERY_TOKEN, Lab
from hsm_lab.rehearsal import Rehearsal, rehearse
from infra.model.settings import DEFAULT_PRIMARY_REGION

DRILL_CLASS = "revocation-drill"
AES_WRAP_CLASS = "health-documents"  # shown with RSA_AES_KEY_WRAP_SHA_256; others with OAEP-SHA1
EXPIRING_CLASS = "appointments"  # shown with an expiring import (365 days)


@dataclass
class PyramidReport:
    ceremony: Rehearsal
    endpoint: str = ""
    localstack_started: bool = False
    resources: int = 0
    outputs: dict[str, Any] = field(default_factory=dict)
    imports: list[ImportRecord] = field(default_factory=list)
    proofs: dict[str, str] = field(default_factory=dict)
    records: list[dict[str, Any]] = field(default_factory=list)
    compliance: Report | None = None
    revocation: str = ""
    archive: str = ""  # where the signed record was archived and read back (Object Lock bucket)
    timings: dict[str, float] = field(default_factory=dict)


def rehearse_pyramid(
    lab_dir: Path,
    *,
    module: str | None = None,
    seed: int | None = None,
    on_step: Callable[[str], None] = lambda _step: None,
) -> PyramidReport:
    from hsm_lab.aws import localstack
    from infra.harness import apply

    start = time.perf_counter()
    pins = {token: secrets.token_urlsafe(12) for token in ("clefs-primary", RECOVERY_TOKEN)}
    so_pin = secrets.token_urlsafe(12)
    ceremony = rehearse(lab_dir, module=module, seed=seed, pins=pins, so_pin=so_pin, on_step=on_step)
    report = PyramidReport(ceremony)
    report.timings["ceremony"] = ceremony.timings["total"]
    lab = ceremony.lab

    def timed(step: str, began: float) -> None:
        report.timings[step] = time.perf_counter() - began

    try:
        began = time.perf_counter()
        on_step("starting LocalStack (S3, KMS, IAM, STS, SNS, EventBridge) on loopback")
        with localstack.running(lab.root, echo=on_step) as stack:
            timed("localstack start", began)
            report.endpoint = stack.endpoint
            report.localstack_started = stack.owned
            client_for, pin = localstack_clients(
                stack.endpoint, lab.root, ca=stack.ca, account_id=lab_account(lab.root)
            )
            on_step(f"every AWS call over HTTPS: {pin.describe()}")

            began = time.perf_counter()
            on_step("applying the Pulumi program to LocalStack (real resources, via the mocks harness)")
            recording, mocks = apply(pin.url, client_for, state_path=lab.root / "stack-state.json")
            report.resources = len(mocks.created)
            report.outputs = recording.outputs
            save_outputs(lab.root / "stack-outputs.json", recording.outputs)
            timed("stack apply", began)

            began = time.perf_counter()
            hsm = HSM(lab.root, module)
            byok = Byok(
                hsm,
                lab,
                token=RECOVERY_TOKEN,
                user_pin=pins[RECOVERY_TOKEN],
                so_pin=so_pin,
                kms_for=lambda region: client_for("kms", region),
                primary_region=str(recording.outputs.get("primary_region", DEFAULT_PRIMARY_REGION)),
                actor="rehearsal",
            )
            for data_class in sorted(recording.outputs["classes"]):
                arns = class_key_arns(recording.outputs, data_class)
                algorithm = "RSA_AES_KEY_WRAP_SHA_256" if data_class == AES_WRAP_CLASS else "RSAES_OAEP_SHA_1"
                expiry = datetime.now(UTC) + timedelta(days=365) if data_class == EXPIRING_CLASS else None
                regions = len(arns)
                on_step(
                    f"BYOK {data_class}: derive, wrap ({algorithm}) in the HSM, "
                    f"import in {regions} regions"
                )
                report.imports += byok.import_class(
                    data_class, 1, arns, wrapping_algorithm=algorithm, valid_to=expiry
                )
                byok.prove(data_class, arns[0], arns[-1])
                report.proofs[data_class] = (
                    f"encrypted in {arns[0].split(':')[3]}, decrypted in {arns[-1].split(':')[3]}"
                )
            timed("byok", began)

            began = time.perf_counter()
            report.records = write_samples(lab.root, recording.outputs, client_for, on_step)
            timed("data path", began)

            began = time.perf_counter()
            on_step("reading live state for the compliance report")
            report.compliance = assess(recording.outputs, client_for, emulator=True)
            timed("verify", began)

            began = time.perf_counter()
            on_step("revocation drill on a dedicated key: DeleteImportedKeyMaterial, then decrypt")
            report.revocation = revocation_drill(
                byok, client_for, str(recording.outputs.get("primary_region"))
            )
            timed("revocation drill", began)
            on_step("archiving the signed record in the Object Lock bucket, then reading it back")
            report.archive = archive_record(lab, recording.outputs, client_for)
            on_step(
                "stopping LocalStack" if stack.owned else "leaving the LocalStack we did not start running"
            )
    except BaseException as exc:  # the CLI still shows what succeeded (the ceremony, the steps done)
        setattr(exc, "partial_report", report)  # noqa: B010 - an attribute BaseException does not declare
        raise
    report.timings["total"] = time.perf_counter() - start
    return report


def archive_record(lab: Lab, outputs: dict[str, Any], client_for: Callable[[str, str], Any]) -> str:
    """Upload the record (the ceremony role's job; one identity on LocalStack), read it back, compare."""
    from hsm_lab.ceremony import archive
    from hsm_lab.record import verify_lab

    state = verify_lab(lab)
    s3 = client_for("s3", str(outputs.get("primary_region")))
    bucket = str(outputs["transcript_bucket"])
    archive.upload(state, lab.transcript.read_bytes(), lab.transcript_head.read_bytes(), s3, bucket)
    found = archive.latest(state, s3, bucket)
    return f"s3://{bucket}/{found.folder} (entry {found.seq} of {found.lab_entries}, read back and verified)"


def revocation_drill(byok: Byok, client_for: Callable[[str, str], Any], region: str) -> str:
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
    outputs: dict[str, Any],
    client_for: Callable[[str, str], Any],
    on_step: Callable[[str], None],
) -> list[dict[str, Any]]:
    """Write and read back sample records per class through the data path.

    Health documents are sealed to a patient and a practitioner (identities held
    in memory only); the platform's own read must be refused.
    """
    import json

    import pyrage

    from hsm_lab.datapath import DataPath, EndToEndError

    patient = pyrage.x25519.Identity.generate()
    practitioner = pyrage.x25519.Identity.generate()
    path = DataPath(client_for, outputs["classes"], primary_region=str(outputs.get("primary_region")))
    results: list[dict[str, Any]] = []
    primary = str(outputs.get("primary_region"))
    for data_class in sorted(outputs["classes"]):
        replica_regions = [r for r in outputs["classes"][data_class]["regions"] if r != primary]
        end_to_end = bool(outputs["classes"][data_class].get("end_to_end"))
        samples = SAMPLES.get(data_class) or [{"sample": data_class}]
        on_step(f"data path {data_class}: {len(samples)} records" + (" (end to end)" if end_to_end else ""))
        for number, sample in enumerate(samples, start=1):
            record_id = f"sample-{number:03d}"
            plaintext = json.dumps(sample, ensure_ascii=False).encode()
            recipients = [patient.to_public(), practitioner.to_public()] if end_to_end else None
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
                by_patient = path.get(data_class, record_id, identity=patient)
                by_practitioner = path.get(data_class, record_id, identity=practitioner)
                in_replica = [
                    path.get(data_class, record_id, region=r, identity=patient) for r in replica_regions
                ]
                entry["read_back"] = by_patient == plaintext == by_practitioner and all(
                    copy == plaintext for copy in in_replica
                )
                try:
                    path.get(data_class, record_id)
                    entry["platform"] = "READ (gap)"
                except EndToEndError:
                    entry["platform"] = "refused: holds age ciphertext only"
            else:
                entry["read_back"] = all(
                    path.get(data_class, record_id, region=r) == plaintext
                    for r in [primary, *replica_regions]
                )
                entry["platform"] = "reads it (at rest + in transit class)"
            if not entry["read_back"] or entry["platform"].startswith("READ"):
                raise errors.ClefsError(f"data path check failed for {data_class}/{record_id}: {entry}")
            results.append(entry)
    calls = sum(path.kms_calls.values())
    results.append({"kms_calls": calls})
    return results
