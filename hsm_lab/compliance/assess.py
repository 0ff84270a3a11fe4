"""`assess`: every class and region of the stack outputs, every cell, read from live state."""

from __future__ import annotations

from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from hsm_lab import errors
from hsm_lab.aws.deployment import Outputs, stack_outputs
from hsm_lab.compliance.at_rest import check_at_rest, check_end_to_end, check_public_access, check_versioning
from hsm_lab.compliance.in_transit import _bucket_policy, _principals, check_in_transit, check_uploads
from hsm_lab.compliance.keys import check_key, check_key_policy
from hsm_lab.compliance.replication import check_replica_content, check_replication_rule
from hsm_lab.compliance.report import (
    CONFIGURED,
    DEFAULT_MAX_OBJECTS,
    OBSERVED,
    WORKERS,
    Cell,
    ClientFactory,
    Report,
    Row,
)
from hsm_lab.compliance.scan import Scan, list_versions, read_stored
from infra.model.outputs import ClassOutputs, RegionOutputs, StackOutputs

Place = tuple[str, str, RegionOutputs]  # (class, region, its key and bucket)


def assess(
    outputs: Outputs,
    client_for: ClientFactory,
    *,
    max_objects: int = DEFAULT_MAX_OBJECTS,
    emulator: bool = True,
    workers: int = WORKERS,
) -> Report:
    """Prove every claim for every class and region listed in the stack outputs.

    `outputs` is the typed contract (hsm_lab.aws.deployment.load_stack) or a document, checked
    here. `emulator` (LocalStack) marks what it does not enforce as ``configured``.
    """
    stack = stack_outputs(outputs)
    if not stack.classes:
        raise errors.InputError("the stack outputs list no data class: deploy the stack first")
    if max_objects < 1:
        raise errors.InputError("--max-objects must be at least 1")
    primary_region = stack.primary_region
    places = [
        (data_class, region, where)
        for data_class, spec in sorted(stack.classes.items())
        for region, where in sorted(spec.regions.items(), key=lambda item: item[0] != primary_region)
    ]
    scans = scan_buckets(places, client_for, max_objects, workers)
    enforced = CONFIGURED if emulator else OBSERVED
    rows = [_row(stack, place, scans, client_for, enforced, max_objects) for place in places]
    return Report(rows, "localstack" if emulator else "aws", max_objects)


def scan_buckets(
    places: list[Place], client_for: ClientFactory, max_objects: int, workers: int
) -> dict[tuple[str, str], Scan]:
    """List every bucket's object versions, then read each version's first bytes (threads)."""
    with ThreadPoolExecutor(max_workers=workers) as pool:
        listings = dict(
            zip(
                [(c, r) for c, r, _ in places],
                pool.map(lambda p: list_versions(client_for("s3", p[1]), p[2].bucket, max_objects), places),
                strict=True,
            )
        )
        jobs = [((c, r), v) for c, r, w in places for v in listings[(c, r)][0]]
        buckets = {(c, r): w.bucket for c, r, w in places}
        stored = list(
            pool.map(lambda job: read_stored(client_for("s3", job[0][1]), buckets[job[0]], job[1]), jobs)
        )
    scans: dict[tuple[str, str], Scan] = {
        place: Scan([], listing[1], listing[2]) for place, listing in listings.items()
    }
    for (place, _version), item in zip(jobs, stored, strict=True):
        scans[place].objects.append(item)
    return scans


def _row(
    stack: StackOutputs,
    place: Place,
    scans: Mapping[tuple[str, str], Scan],
    client_for: ClientFactory,
    enforced: str,
    max_objects: int,
) -> Row:
    """Every cell of one class in one region."""
    data_class, region, where = place
    spec = stack.classes[data_class]
    role = "primary" if region == stack.primary_region else "replica"
    bucket, key_arn = where.bucket, where.key_arn
    scan = scans[(data_class, region)]
    row = Row(data_class, region, role, bucket, key_arn, spec.end_to_end, len(scan.objects), scan.truncated)
    s3, kms = client_for("s3", region), client_for("kms", region)
    principals = _principals(stack.roles, where.account)
    policy = _bucket_policy(s3, bucket)
    row.cells["at_rest"] = check_at_rest(s3, bucket, key_arn, scan)
    row.cells["uploads"] = check_uploads(policy, bucket, principals, key_arn, enforced)
    row.cells["key"] = check_key(kms, key_arn)
    row.cells["key_policy"] = check_key_policy(kms, key_arn, spec, region, role, stack.roles, enforced)
    row.cells["in_transit"] = check_in_transit(policy, bucket, principals, key_arn, enforced)
    row.cells["end_to_end"] = _end_to_end(spec, scan, max_objects)
    row.cells["replication"] = _replication(stack, spec, place, scans, s3, enforced)
    row.cells["public_access"] = check_public_access(s3, bucket, enforced)
    row.cells["versioning"] = check_versioning(s3, bucket)
    return row


def _end_to_end(spec: ClassOutputs, scan: Scan, max_objects: int) -> Cell:
    class_keys = {w.key_arn for w in spec.regions.values()}
    cell = check_end_to_end(spec.name, spec.end_to_end, class_keys, scan)
    if scan.truncated:
        return Cell(
            False,
            f"scanned only the first {max_objects} object versions (--max-objects): "
            "the rest is not shown; raise the bound",
        )
    return cell


def _replication(
    stack: StackOutputs,
    spec: ClassOutputs,
    place: Place,
    scans: Mapping[tuple[str, str], Scan],
    s3: Any,
    enforced: str,
) -> Cell:
    """Primary row: the rule to each replica (the last one stands). Replica row: what was copied."""
    data_class, region, where = place
    primary = stack.primary_region
    if region != primary:
        return check_replica_content(
            scans[(data_class, primary)], scans[place[:2]], spec.regions[primary].bucket
        )
    cell = Cell(False, "the class has no replica region")
    for replica, target in spec.regions.items():
        if replica != primary:
            cell = check_replication_rule(s3, where.bucket, target.bucket, target.key_arn, enforced)
    return cell
