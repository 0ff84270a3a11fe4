"""`up` against LocalStack through the Automation API, then check the outputs and the resources.

Runs where a Pulumi CLI is installed and a LocalStack answers (CLEFS_LOCALSTACK_ENDPOINT,
else LOCALSTACK_ENDPOINT, else http://127.0.0.1:4566); otherwise it is skipped with the reason.
It works in a temporary project directory and state backend, so the repo is never modified.
"""

from __future__ import annotations

import json
import os
import shutil
import urllib.request
from pathlib import Path

import pytest

from infra import deploy
from infra.model.data_classes import DEFAULT_DATA_CLASSES

REPO = Path(__file__).resolve().parents[2]
DEFAULT_ENDPOINT = "http://127.0.0.1:4566"


def localstack_endpoint() -> str:
    for var in ("CLEFS_LOCALSTACK_ENDPOINT", "LOCALSTACK_ENDPOINT"):
        if os.environ.get(var, "").strip():
            return os.environ[var].strip().rstrip("/")
    return DEFAULT_ENDPOINT


def localstack_ready(endpoint: str) -> bool:
    try:
        with urllib.request.urlopen(f"{endpoint}/_localstack/health", timeout=2) as response:  # noqa: S310
            services = json.loads(response.read()).get("services", {})
    except (OSError, ValueError):
        return False
    return all(services.get(s) in ("available", "running") for s in ("s3", "kms", "iam", "sts"))


def project_copy(work: Path) -> Path:
    """Pulumi.yaml pointing back at the repo's program and venv, plus the localstack stack file."""
    work.mkdir(parents=True)
    main = os.path.relpath(REPO, work)
    venv = os.path.relpath(REPO / ".venv", work)
    (work / "Pulumi.yaml").write_text(
        f"name: clefs\nruntime:\n  name: python\n  options:\n    toolchain: pip\n"
        f"    virtualenv: {venv}\nmain: {main}\n"
    )
    shutil.copy(REPO / "Pulumi.localstack.yaml", work / "Pulumi.localstack.yaml")
    return work


def test_up_on_localstack_outputs_every_class_and_region(tmp_path: Path) -> None:
    if deploy.find_pulumi_cli() is None:
        pytest.skip(f"no Pulumi CLI on this machine: {deploy.INSTALL_HINT}")
    endpoint = localstack_endpoint()
    if not localstack_ready(endpoint):
        pytest.skip(
            f"no LocalStack with s3, kms, iam, sts answering at {endpoint} "
            "(set CLEFS_LOCALSTACK_ENDPOINT or LOCALSTACK_ENDPOINT)"
        )
    import boto3

    target = deploy.Target(
        "localstack",
        work_dir=project_copy(tmp_path / "project"),
        backend_dir=tmp_path / "state",
        config={"clefs:endpoint": endpoint},
    )

    def client(service: str, region: str) -> object:
        return boto3.client(
            service,
            region_name=region,
            endpoint_url=endpoint,
            aws_access_key_id="test",
            aws_secret_access_key="test",  # LocalStack's dummies
        )

    try:
        out = deploy.up(target, on_output=None)
        assert (out["primary_region"], out["replica_region"]) == ("eu-west-3", "eu-central-1")
        assert list(out["classes"]) == [dc.name for dc in DEFAULT_DATA_CLASSES]
        for dc in DEFAULT_DATA_CLASSES:
            entry = out["classes"][dc.name]
            assert entry["client_side_encryption"] is dc.end_to_end
            for region in ("eu-west-3", "eu-central-1"):
                values = entry["regions"][region]
                assert values["key_arn"].startswith(f"arn:aws:kms:{region}:")
                assert values["alias"] == f"alias/clefs/{dc.name}"
                assert out[f"{dc.name}/{region}/bucket"] == values["bucket"]
                kms, s3 = client("kms", region), client("s3", region)
                meta = kms.describe_key(KeyId=values["key_arn"])["KeyMetadata"]  # type: ignore[attr-defined]
                assert meta["Origin"] == "EXTERNAL" and meta["MultiRegion"] is True
                if region == "eu-west-3":  # LocalStack copies material into replicas (AWS does not)
                    assert meta["KeyState"] == "PendingImport"
                rule = s3.get_bucket_encryption(Bucket=values["bucket"])[  # type: ignore[attr-defined]
                    "ServerSideEncryptionConfiguration"
                ]["Rules"][0]
                assert rule["ApplyServerSideEncryptionByDefault"]["KMSMasterKeyID"] == values["key_arn"]
                assert rule["BucketKeyEnabled"] is True
                assert s3.get_bucket_versioning(Bucket=values["bucket"])["Status"] == "Enabled"  # type: ignore[attr-defined]
                block = s3.get_public_access_block(Bucket=values["bucket"])["PublicAccessBlockConfiguration"]  # type: ignore[attr-defined]
                assert all(block.values())
        lock = client("s3", "eu-west-3").get_object_lock_configuration(Bucket=out["transcript_bucket"])  # type: ignore[attr-defined]
        assert lock["ObjectLockConfiguration"]["Rule"]["DefaultRetention"]["Mode"] == "COMPLIANCE"
        assert deploy.outputs(target) == out
    finally:
        deploy.destroy(target, on_output=None)
