"""Fixtures of the data-path tests: one deployment (keys, buckets) per test package run."""

from __future__ import annotations

import uuid
from typing import Any

import pyrage
import pytest

from hsm_lab.aws.deployment import localstack_clients
from hsm_lab.aws.localstack import LocalStack
from hsm_lab.datapath.envelope import (
    EnvelopeCrypter,
)
from tests.datapath.support import CLASSES, HOME, REPLICA, Deployment


@pytest.fixture(scope="package")
def deployment(localstack: LocalStack, tmp_path_factory: pytest.TempPathFactory) -> Deployment:
    lab = tmp_path_factory.mktemp("datapath-lab")
    run = uuid.uuid4().hex[:10]
    classes: dict[str, Any] = {}
    for name, e2e in CLASSES.items():
        kms = localstack.client("kms", HOME)
        key = kms.create_key(MultiRegion=True, Description=f"clefs test {name} {run}")["KeyMetadata"]
        replica = kms.replicate_key(KeyId=key["KeyId"], ReplicaRegion=REPLICA)["ReplicaKeyMetadata"]
        regions = {}
        for region, arn in ((HOME, key["Arn"]), (REPLICA, replica["Arn"])):
            bucket = f"clefs-dp-{name[:12]}-{region}-{run}"
            localstack.client("s3", region).create_bucket(
                Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": region}
            )
            localstack.client("s3", region).put_bucket_versioning(  # as the stack's buckets
                Bucket=bucket, VersioningConfiguration={"Status": "Enabled"}
            )
            # Extra keys as in the real stack output: must be ignored.
            regions[region] = {"key_arn": arn, "bucket": bucket, "key_id": key["KeyId"], "alias": "alias/x"}
        classes[name] = {"end_to_end": e2e, "protection": ["at-rest"], "regions": regions}
    factory, pin = localstack_clients(localstack.endpoint, lab, ca=localstack.ca)
    return Deployment(localstack, lab, classes, factory, pin)


@pytest.fixture(scope="package")
def people() -> dict[str, pyrage.x25519.Identity]:
    return {name: pyrage.x25519.Identity.generate() for name in ("patient", "practitioner", "stranger")}


@pytest.fixture(scope="package")
def sealed_record(deployment: Deployment) -> tuple[EnvelopeCrypter, bytes, str]:
    crypter = EnvelopeCrypter.with_limits(lambda region: deployment.factory("kms", region))
    arn = deployment.target("appointments")["key_arn"]
    blob = bytes(
        crypter.encrypt("appointments", "prop-1", b"property test body" * 4, key_arn=arn, region=HOME)
    )
    return crypter, blob, arn
