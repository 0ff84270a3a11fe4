"""The compliance cells that evaluate documents, run on the real program's output (no LocalStack):
the bucket policy (in transit, uploads) as the program writes it, and the stack outputs assess reads."""

from __future__ import annotations

import json
from typing import Any

import pytest

from hsm_lab import errors
from hsm_lab.compliance import assess, check_in_transit, check_uploads
from hsm_lab.compliance.in_transit import _principals, transit_requests
from infra.mocks import Recording, run_program
from infra.model.outputs import parse_outputs


@pytest.fixture(scope="module")
def program() -> Recording:
    return run_program(stack="prod")


def class_bucket_policy(program: Recording, data_class: str) -> tuple[dict[str, Any], str, str]:
    stack = parse_outputs(program.outputs)
    where = stack.classes[data_class].regions[stack.primary_region]
    (policy,) = [
        p for p in program.of_type("aws:s3/bucketPolicy:BucketPolicy") if p.inputs["bucket"] == where.bucket
    ]
    return json.loads(str(policy.inputs["policy"])), where.bucket, where.key_arn


def test_the_programs_bucket_policy_passes_in_transit_and_uploads(program: Recording) -> None:
    stack = parse_outputs(program.outputs)
    policy, bucket, key_arn = class_bucket_policy(program, "appointments")
    principals = _principals(stack.roles, key_arn.split(":")[4])
    transit = check_in_transit((policy, None), bucket, principals, key_arn, "configured")
    uploads = check_uploads((policy, None), bucket, principals, key_arn, "configured")
    assert transit.ok and transit.short == "TLS≥1.2" and transit.source == "configured", transit.detail
    assert uploads.ok and uploads.short == "SSE-KMS only", uploads.detail
    assert "(27 requests)" in transit.detail  # 3 actions x 3 ways x 3 principals, all denied


def test_a_policy_without_the_tls_statements_is_a_gap(program: Recording) -> None:
    stack = parse_outputs(program.outputs)
    policy, bucket, key_arn = class_bucket_policy(program, "appointments")
    weakened = {
        **policy,
        "Statement": [s for s in policy["Statement"] if "aws:SecureTransport" not in json.dumps(s)],
    }
    principals = _principals(stack.roles, key_arn.split(":")[4])
    cell = check_in_transit((weakened, None), bucket, principals, key_arn, "observed")
    assert not cell.ok and cell.short == "GAP" and "does not deny" in cell.detail
    assert not check_in_transit(
        (None, "no bucket policy (NoSuchBucketPolicy)"), bucket, principals, key_arn, "x"
    ).ok


def test_transit_requests_deny_every_insecure_way_and_allow_the_app_role() -> None:
    principals = {"the app role": "app", "a key administrator": "admin", "another account": "other"}
    requests = transit_requests("b", principals, "arn:aws:kms:eu-west-3:123456789012:key/k")
    assert len(requests) == 3 * 3 * 3 + 2
    assert [r[5] for r in requests].count(False) == 2 and all(r[1] == "app" for r in requests if not r[5])


def test_assess_reads_the_outputs_through_the_contract() -> None:
    def no_clients(service: str, region: str) -> Any:
        raise AssertionError("a refused document must not reach AWS")

    with pytest.raises(errors.InputError, match=r"classes\.abc\.regions is empty; apply the stack again"):
        assess(
            {"primary_region": "eu-west-3", "classes": {"abc": {"end_to_end": 1, "regions": {}}}}, no_clients
        )
    with pytest.raises(errors.InputError, match="list no data class"):
        assess({"primary_region": "eu-west-3", "classes": {}}, no_clients)
