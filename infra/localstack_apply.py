"""Apply the real Clefs program to LocalStack without the Pulumi CLI.

The Pulumi CLI and its provider plugins cannot be installed here, so this
harness runs the actual program (`infra.stack.build`) under a Pulumi Mocks
implementation whose `new_resource` creates each resource in LocalStack with
boto3 and answers with the real ids and ARNs. LocalStack therefore receives
the program's own key policies, bucket policies, encryption, replication and
Object Lock settings. It supports exactly the resource types the program
uses and fails loudly on any other; it refuses any endpoint that is not
loopback. Where the Pulumi CLI exists, `infra.deploy` runs a real `pulumi up`.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import yaml
from botocore.exceptions import ClientError, ParamValidationError

from infra.testing import (
    CALLER_IDENTITY_INVOKE,
    PROVIDER_TYPE,
    Recording,
    RecordingMocks,
    UnmockedInvokeError,
    reveal,
    run_program,
)

REPO_ROOT = Path(__file__).resolve().parent.parent
ClientFor = Callable[[str, str], Any]


class HarnessError(RuntimeError):
    """The harness met something it must not or cannot do (one line)."""


def is_loopback_url(url: str) -> bool:
    match = re.match(r"^https?://(\[[^\]]+\]|[^/:]+)(:\d+)?(/.*)?$", url)
    if not match:
        return False
    host = match.group(1).strip("[]").lower()
    return host in {"localhost", "::1"} or re.fullmatch(r"127(\.\d{1,3}){3}", host) is not None


def _tags(tags: Mapping[str, Any] | None, kms: bool) -> list[dict[str, str]]:
    items = sorted((tags or {}).items())
    if kms:
        return [{"TagKey": k, "TagValue": str(v)} for k, v in items]
    return [{"Key": k, "Value": str(v)} for k, v in items]


_SPECIAL = {
    "id": "ID",
    "kmsMasterKeyId": "KMSMasterKeyID",
    "sseAlgorithm": "SSEAlgorithm",
    "replicaKmsKeyId": "ReplicaKmsKeyID",
    "sseKmsEncryptedObjects": "SseKmsEncryptedObjects",
}


def to_s3_shape(value: Any) -> Any:
    """pulumi-aws (camelCase) nested args -> S3 API (PascalCase) shapes."""
    if isinstance(value, Mapping):
        return {
            _SPECIAL.get(k, k[:1].upper() + k[1:]): to_s3_shape(v)
            for k, v in value.items()
            if v is not None and v != [] and v != {}
        }
    if isinstance(value, list):
        return [to_s3_shape(v) for v in value]
    if isinstance(value, float) and value.is_integer():
        return int(value)  # Pulumi numbers arrive as floats; S3 wants integers
    return value


def _policy(value: Any) -> str:
    value = reveal(value)
    return value if isinstance(value, str) else json.dumps(value)


class LocalStackMocks(RecordingMocks):
    """Mocks whose resources really exist in LocalStack."""

    SUPPORTED = frozenset(
        {
            "aws:kms/externalKey:ExternalKey",
            "aws:kms/replicaExternalKey:ReplicaExternalKey",
            "aws:kms/alias:Alias",
            "aws:iam/role:Role",
            "aws:iam/rolePolicy:RolePolicy",
            "aws:s3/bucket:Bucket",
            "aws:s3/bucketServerSideEncryptionConfiguration:BucketServerSideEncryptionConfiguration",
            "aws:s3/bucketVersioning:BucketVersioning",
            "aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock",
            "aws:s3/bucketOwnershipControls:BucketOwnershipControls",
            "aws:s3/bucketPolicy:BucketPolicy",
            "aws:s3/bucketReplicationConfig:BucketReplicationConfig",
            "aws:s3/bucketObjectLockConfiguration:BucketObjectLockConfiguration",
        }
    )

    def __init__(self, endpoint: str, client_for: ClientFor, suffix: str) -> None:
        if not is_loopback_url(endpoint):
            raise HarnessError(f"refusing endpoint {endpoint}: the LocalStack harness only talks to loopback")
        self.endpoint = endpoint
        self.client_for = client_for
        self.suffix = suffix
        identity = client_for("sts", "us-east-1").get_caller_identity()
        super().__init__(identity["Account"])
        self.created: list[tuple[str, str]] = []
        self._created_lock = threading.Lock()

    def call(self, args: Any) -> dict[str, Any]:
        if args.token != CALLER_IDENTITY_INVOKE:
            raise UnmockedInvokeError(f"the LocalStack harness does not support invoke {args.token}")
        answer = self.client_for("sts", "us-east-1").get_caller_identity()
        with self._lock:
            self.calls.append((args.token, args.provider or ""))
        return {
            "accountId": answer["Account"],
            "arn": answer["Arn"],
            "userId": answer["UserId"],
            "id": answer["Account"],
        }

    def new_resource(self, args: Any) -> tuple[str | None, dict[str, Any]]:
        if args.custom and args.typ == PROVIDER_TYPE:
            self._check_provider(dict(args.inputs))
        elif args.custom and args.typ not in self.SUPPORTED:
            raise HarnessError(f"the LocalStack harness does not support resource type {args.typ}")
        return super().new_resource(args)

    def _check_provider(self, inputs: dict[str, Any]) -> None:
        endpoints = inputs.get("endpoints") or []
        if isinstance(endpoints, str):
            endpoints = json.loads(endpoints)
        urls = [str(u) for block in endpoints for u in dict(block).values() if u]
        if not urls:
            raise HarnessError("a provider has no endpoints: it would talk to real AWS; refusing")
        for url in urls:
            if not is_loopback_url(url):
                raise HarnessError(f"refusing provider endpoint {url}: not loopback")

    def _answer(
        self, typ: str, name: str, urn: str, region: str | None, inputs: dict[str, Any]
    ) -> tuple[str, dict[str, Any]]:
        if region is None:
            raise HarnessError(f"{typ} {name} has no explicit provider region; refusing the default provider")
        try:
            rid, extra = self._create(typ, name, region, inputs)
        except ClientError as exc:
            error = exc.response.get("Error", {})
            raise HarnessError(
                f"LocalStack refused {typ} {name}: {error.get('Code')}: {error.get('Message')}"
            ) from None
        except ParamValidationError as exc:
            raise HarnessError(f"{typ} {name}: inputs do not map to the AWS API: {exc}") from None
        with self._created_lock:
            self.created.append((typ, rid))
        state = dict(inputs)
        state.update(extra)
        return rid, state

    def _create(self, typ: str, name: str, region: str, inputs: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        kms = lambda: self.client_for("kms", region)  # noqa: E731
        s3 = lambda: self.client_for("s3", region)  # noqa: E731
        bucket = str(inputs.get("bucket", ""))
        if typ == "aws:kms/externalKey:ExternalKey":
            if inputs.get("keyMaterialBase64"):
                raise HarnessError(f"{name}: key material in a Pulumi input; refusing")
            meta = kms().create_key(
                Origin="EXTERNAL",
                MultiRegion=bool(inputs.get("multiRegion")),
                Description=str(inputs.get("description", "")),
                Policy=_policy(inputs["policy"]),
                Tags=_tags(inputs.get("tags"), kms=True),
                BypassPolicyLockoutSafetyCheck=bool(inputs.get("bypassPolicyLockoutSafetyCheck", False)),
            )["KeyMetadata"]
            return meta["KeyId"], {"arn": meta["Arn"], "keyState": meta["KeyState"], "keyId": meta["KeyId"]}
        if typ == "aws:kms/replicaExternalKey:ReplicaExternalKey":
            primary_arn = str(inputs["primaryKeyArn"])
            primary_region = primary_arn.split(":")[3]
            meta = self.client_for("kms", primary_region).replicate_key(
                KeyId=primary_arn,
                ReplicaRegion=region,
                Description=str(inputs.get("description", "")),
                Policy=_policy(inputs["policy"]),
                Tags=_tags(inputs.get("tags"), kms=True),
                BypassPolicyLockoutSafetyCheck=bool(inputs.get("bypassPolicyLockoutSafetyCheck", False)),
            )["ReplicaKeyMetadata"]
            return meta["KeyId"], {"arn": meta["Arn"], "keyState": meta["KeyState"], "keyId": meta["KeyId"]}
        if typ == "aws:kms/alias:Alias":
            alias = str(inputs["name"])
            try:
                kms().create_alias(AliasName=alias, TargetKeyId=str(inputs["targetKeyId"]))
            except ClientError as exc:
                if exc.response.get("Error", {}).get("Code") != "AlreadyExistsException":
                    raise
                # an earlier apply on this LocalStack: re-point it, as `pulumi up` would
                kms().update_alias(AliasName=alias, TargetKeyId=str(inputs["targetKeyId"]))
            account = self.account_id
            return alias, {
                "arn": f"arn:aws:kms:{region}:{account}:{alias}",
                "targetKeyArn": inputs["targetKeyId"],
            }
        if typ == "aws:iam/role:Role":
            role_name = str(inputs.get("name") or f"{name}-{self.suffix}")[:64]
            role = self.client_for("iam", region).create_role(
                RoleName=role_name,
                AssumeRolePolicyDocument=_policy(inputs["assumeRolePolicy"]),
                Description=str(inputs.get("description", "")),
                Tags=_tags(inputs.get("tags"), kms=False),
            )["Role"]
            return role_name, {"name": role_name, "arn": role["Arn"], "uniqueId": role["RoleId"]}
        if typ == "aws:iam/rolePolicy:RolePolicy":
            policy_name = str(inputs.get("name") or f"{name}-{self.suffix}")
            role_name = str(inputs["role"]).rsplit("/", 1)[-1]
            self.client_for("iam", region).put_role_policy(
                RoleName=role_name, PolicyName=policy_name, PolicyDocument=_policy(inputs["policy"])
            )
            return f"{role_name}:{policy_name}", {"name": policy_name}
        if typ == "aws:s3/bucket:Bucket":
            bucket = str(inputs.get("bucket") or f"{name}-{self.suffix}").lower()[:63]
            request: dict[str, Any] = {"Bucket": bucket}
            if region != "us-east-1":
                request["CreateBucketConfiguration"] = {"LocationConstraint": region}
            if inputs.get("objectLockEnabled"):
                request["ObjectLockEnabledForBucket"] = True
            s3().create_bucket(**request)
            if inputs.get("tags"):
                s3().put_bucket_tagging(Bucket=bucket, Tagging={"TagSet": _tags(inputs["tags"], kms=False)})
            return bucket, {
                "bucket": bucket,
                "arn": f"arn:aws:s3:::{bucket}",
                "bucketRegionalDomainName": f"{bucket}.s3.{region}.amazonaws.com",
                "region": region,
            }
        if typ.endswith("BucketServerSideEncryptionConfiguration"):
            s3().put_bucket_encryption(
                Bucket=bucket, ServerSideEncryptionConfiguration={"Rules": to_s3_shape(inputs["rules"])}
            )
            return bucket, {}
        if typ.endswith("BucketVersioning"):
            s3().put_bucket_versioning(
                Bucket=bucket, VersioningConfiguration=to_s3_shape(inputs["versioningConfiguration"])
            )
            return bucket, {}
        if typ.endswith("BucketPublicAccessBlock"):
            keys = ("blockPublicAcls", "blockPublicPolicy", "ignorePublicAcls", "restrictPublicBuckets")
            s3().put_public_access_block(
                Bucket=bucket,
                PublicAccessBlockConfiguration={k[:1].upper() + k[1:]: bool(inputs.get(k)) for k in keys},
            )
            return bucket, {}
        if typ.endswith("BucketOwnershipControls"):
            s3().put_bucket_ownership_controls(
                Bucket=bucket,
                OwnershipControls=to_s3_shape(inputs["rule"]) and {"Rules": [to_s3_shape(inputs["rule"])]},
            )
            return bucket, {}
        if typ.endswith("BucketPolicy"):
            s3().put_bucket_policy(Bucket=bucket, Policy=_policy(inputs["policy"]))
            return bucket, {}
        if typ.endswith("BucketReplicationConfig"):
            s3().put_bucket_replication(
                Bucket=bucket,
                ReplicationConfiguration={"Role": str(inputs["role"]), "Rules": to_s3_shape(inputs["rules"])},
            )
            return bucket, {}
        if typ.endswith("BucketObjectLockConfiguration"):
            config: dict[str, Any] = {"ObjectLockEnabled": str(inputs.get("objectLockEnabled", "Enabled"))}
            if inputs.get("rule"):
                config["Rule"] = to_s3_shape(inputs["rule"])
            s3().put_object_lock_configuration(Bucket=bucket, ObjectLockConfiguration=config)
            return bucket, {}
        raise HarnessError(f"the LocalStack harness does not support resource type {typ}")


def stack_config(endpoint: str, stack_file: Path | None = None) -> dict[str, Any]:
    """The `localstack` stack's config with its endpoint set to the running LocalStack."""
    path = stack_file or REPO_ROOT / "Pulumi.localstack.yaml"
    config = dict((yaml.safe_load(path.read_text()) or {}).get("config") or {})
    config["clefs:endpoint"] = endpoint
    return config


def apply(
    endpoint: str,
    client_for: ClientFor,
    *,
    suffix: str,
    config: Mapping[str, Any] | None = None,
    program: Callable[[], Mapping[str, Any]] | None = None,
) -> tuple[Recording, LocalStackMocks]:
    """Run the program against LocalStack; returns the recording (real ids) and the mocks."""
    mocks = LocalStackMocks(endpoint, client_for, suffix)
    settings = dict(config) if config is not None else stack_config(endpoint)
    recording = run_program(settings, program=program, stack="localstack", pause_gc=False, mocks=mocks)
    return recording, mocks
