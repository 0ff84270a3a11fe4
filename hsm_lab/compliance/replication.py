"""Replication: the primary bucket's rule, and what is really in the replica bucket."""

from __future__ import annotations

from typing import Any

from hsm_lab.compliance.report import Cell, _call, _examples, _same_key
from hsm_lab.compliance.scan import Scan


def check_replication_rule(
    s3: Any, bucket: str, replica_bucket: str, replica_key_arn: str, source: str
) -> Cell:
    answer, error = _call(lambda: s3.get_bucket_replication(Bucket=bucket))
    if error:
        return Cell(False, f"no replication configured ({error})", source=source)
    for rule in answer["ReplicationConfiguration"].get("Rules", []):
        destination = rule.get("Destination", {})
        target = str(destination.get("Bucket", "")).removeprefix("arn:aws:s3:::")
        if rule.get("Status") != "Enabled" or target != replica_bucket:
            continue
        replica_key = destination.get("EncryptionConfiguration", {}).get("ReplicaKmsKeyID")
        sse = rule.get("SourceSelectionCriteria", {}).get("SseKmsEncryptedObjects", {}).get("Status")
        whole = "Filter" in rule and not (
            rule["Filter"].get("Prefix") or rule["Filter"].get("Tag") or rule["Filter"].get("And")
        )
        if not _same_key(replica_key, replica_key_arn):
            return Cell(False, f"replicates to {target} but not under the replica key", source=source)
        if sse != "Enabled":
            return Cell(False, "SSE-KMS encrypted objects are not selected for replication", source=source)
        if not whole:
            return Cell(
                False, "the replication rule is not a whole-bucket V2 rule (Filter {})", source=source
            )
        return Cell(True, f"rule: every object to {target} under the replica key", "rule → replica", source)
    return Cell(False, f"no enabled rule replicating to {replica_bucket}", source=source)


def check_replica_content(primary: Scan, replica: Scan, source_bucket: str) -> Cell:
    """Every version of the primary is in the replica (identical envelope header)."""
    if primary.error or replica.error:
        return Cell(False, f"cannot list objects ({primary.error or replica.error})")
    present = {o.aad for o in replica.objects if o.aad is not None}
    wanted = [o for o in primary.objects if o.aad is not None]
    missing = [f"{o.key} ({o.version_id[:8]})" for o in wanted if o.aad not in present]
    if missing:
        return Cell(
            False,
            f"{len(missing)} of {len(wanted)} versions of {source_bucket} are not in this replica: "
            + _examples(missing),
        )
    return Cell(
        True,
        f"holds {len(wanted)}/{len(wanted)} versions of {source_bucket}",
        f"{len(wanted)}/{len(wanted)} copied",
    )
