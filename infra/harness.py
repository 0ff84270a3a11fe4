"""Apply the real Clefs program to LocalStack without the Pulumi CLI.

The Pulumi CLI and its provider plugins cannot be installed here, so this
harness runs the actual program (`infra.program.stack.build`) under a Pulumi Mocks
implementation whose `new_resource` creates each resource in LocalStack with
boto3 and answers with the real ids and ARNs. LocalStack therefore receives
the program's own key policies, bucket policies, encryption, replication and
Object Lock settings. It supports exactly the resource types the program
uses and fails loudly on any other; it refuses any endpoint that is not
loopback. Where the Pulumi CLI exists, `infra.deploy` runs a real `pulumi up`.

As strict as `pulumi up` (docs/infra.md, "The LocalStack harness"):

* LocalStack ignores the Policy and Tags given to ReplicateKey (the replica keeps the
  primary's policy, docs/localstack.md): after ReplicateKey the harness applies the
  replica's own policy and tags with PutKeyPolicy and TagResource;
* the replication rule keeps its empty ``filter {}`` (a V2 rule; real S3 rejects the rule
  without it);
* with a state file (``state_path``), a second apply of the same stack reconciles what exists
  (re-applies every input) and creates nothing twice; resources of the state that vanished (a
  restarted LocalStack keeps no state) are recreated and reported as such;
* an alias, bucket or role that already exists and is not in this stack's state fails the
  apply, as `pulumi up` would.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, ClassVar

import yaml
from botocore.exceptions import ClientError, ParamValidationError

from infra.mocks import (
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
            # an empty `filter {}` is meaningful: it makes a replication rule a V2 rule
            if v is not None and v != [] and (v != {} or k == "filter")
        }
    if isinstance(value, list):
        return [to_s3_shape(v) for v in value]
    if isinstance(value, float) and value.is_integer():
        return int(value)  # Pulumi numbers arrive as floats; S3 wants integers
    return value


def _policy(value: Any) -> str:
    value = reveal(value)
    return value if isinstance(value, str) else json.dumps(value)


STATE_FORMAT = "clefs.harness-state/v1"


def load_state(path: Path | None) -> dict[str, Any]:
    """The harness state of a stack (empty when there is none yet)."""
    if path is None or not path.exists():
        return {"format": STATE_FORMAT, "resources": {}}
    try:
        state = json.loads(path.read_text())
    except (OSError, ValueError):
        raise HarnessError(f"{path} is not a harness state file; move it aside and apply again") from None
    if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
        raise HarnessError(f"{path} is not a {STATE_FORMAT} file; move it aside and apply again")
    state.setdefault("resources", {})
    return state


def save_state(path: Path, state: Mapping[str, Any]) -> None:
    """Write the state atomically (temp file + rename): never half-written."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(state, handle, indent=2, sort_keys=True, default=str)
            handle.write("\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


_GONE = frozenset(
    {
        "NotFoundException",
        "NoSuchEntity",
        "NoSuchBucket",
        "404",
        "NotFound",
        "NoSuchEntityException",
        "ResourceNotFoundException",  # EventBridge rules and targets
    }
)


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
            "aws:sns/topic:Topic",
            "aws:sns/topicPolicy:TopicPolicy",
            "aws:cloudwatch/eventRule:EventRule",
            "aws:cloudwatch/eventTarget:EventTarget",
        }
    )

    def __init__(
        self, endpoint: str, client_for: ClientFor, suffix: str, state: Mapping[str, Any] | None = None
    ) -> None:
        if not is_loopback_url(endpoint):
            raise HarnessError(f"refusing endpoint {endpoint}: the LocalStack harness only talks to loopback")
        self.endpoint = endpoint
        self.client_for = client_for
        self.suffix = suffix
        identity = client_for("sts", "us-east-1").get_caller_identity()
        super().__init__(identity["Account"])
        known = dict((state or {}).get("resources") or {})
        self.known: dict[str, dict[str, Any]] = known if (state or {}).get("account_id") in (
            None,
            self.account_id,
        ) else {}
        self.created: list[tuple[str, str]] = []
        self.reconciled: list[tuple[str, str]] = []
        self.recreated: list[tuple[str, str]] = []  # in the state, but gone from LocalStack
        self.resources: dict[str, dict[str, Any]] = {}  # urn -> what the next state records
        self._created_lock = threading.Lock()
        self._warm_lock = threading.Lock()
        self._warmed: set[tuple[str, str]] = set()
        self._fresh: set[str] = set()  # buckets and roles created by this run (not found existing)

    _WARM_UP: ClassVar[dict[str, str]] = {
        "iam": "list_roles",
        "kms": "list_keys",
        "s3": "list_buckets",
        "sns": "list_topics",
        "events": "list_rules",
    }
    _SERVICES = ("iam", "kms", "s3", "sns", "events")

    def warm(self, service: str, region: str) -> Any:
        """The client, after one harmless call made alone: LocalStack builds an account's service
        backend on first use, and two first calls at once can fail (iam CreateRole => 501)."""
        client = self.client_for(service, region)
        with self._warm_lock:
            if (service, region) not in self._warmed:
                getattr(client, self._WARM_UP[service])()
                self._warmed.add((service, region))
        return client

    def call(self, args: Any) -> tuple[dict[str, Any], list[tuple[str, str]] | None]:
        if args.token != CALLER_IDENTITY_INVOKE:
            raise UnmockedInvokeError(f"the LocalStack harness does not support invoke {args.token}")
        answer = self.client_for("sts", "us-east-1").get_caller_identity()
        with self._lock:
            self.calls.append((args.token, args.provider or ""))
        identity = {
            "accountId": answer["Account"],
            "arn": answer["Arn"],
            "userId": answer["UserId"],
            "id": answer["Account"],
        }
        return identity, []

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
        record = self.known.get(urn)
        try:
            if record is not None and record.get("type") == typ and self._exists(typ, record, region):
                rid, extra = str(record["id"]), dict(record.get("outputs") or {})
                extra.update(self._reconcile(typ, rid, region, inputs, extra))
                outcome = self.reconciled
            else:
                rid, extra = self._create(typ, name, region, inputs)
                outcome = self.recreated if record is not None else self.created
        except ClientError as exc:
            error = exc.response.get("Error", {})
            raise HarnessError(
                f"LocalStack refused {typ} {name}: {error.get('Code')}: {error.get('Message')}"
            ) from None
        except ParamValidationError as exc:
            raise HarnessError(f"{typ} {name}: inputs do not map to the AWS API: {exc}") from None
        with self._created_lock:
            outcome.append((typ, rid))
            self.resources[urn] = {"type": typ, "id": rid, "region": region, "outputs": extra}
        state = dict(inputs)
        state.update(extra)
        return rid, state

    # -- a second apply: what exists is reconciled, never created twice ------------------------

    def _exists(self, typ: str, record: Mapping[str, Any], region: str) -> bool:
        rid = str(record["id"])
        for service in self._SERVICES:
            self.warm(service, region)
        try:
            if typ in ("aws:kms/externalKey:ExternalKey", "aws:kms/replicaExternalKey:ReplicaExternalKey"):
                arn = str((record.get("outputs") or {}).get("arn") or rid)
                meta = self.client_for("kms", region).describe_key(KeyId=arn)["KeyMetadata"]
                return meta.get("KeyState") not in ("PendingDeletion", "PendingReplicaDeletion")
            if typ == "aws:kms/alias:Alias":
                pages = self.client_for("kms", region).get_paginator("list_aliases").paginate()
                return any(a["AliasName"] == rid for page in pages for a in page.get("Aliases", []))
            if typ == "aws:iam/role:Role":
                self.client_for("iam", region).get_role(RoleName=rid)
                return True
            if typ == "aws:iam/rolePolicy:RolePolicy":
                role, policy = rid.split(":", 1)
                if role in self._fresh:
                    return False  # its role was just recreated: so is it
                self.client_for("iam", region).get_role_policy(RoleName=role, PolicyName=policy)
                return True
            if typ == "aws:sns/topic:Topic":
                self.client_for("sns", region).get_topic_attributes(TopicArn=rid)
                return True
            if typ == "aws:sns/topicPolicy:TopicPolicy":
                self.client_for("sns", region).get_topic_attributes(TopicArn=rid)
                return rid not in self._fresh
            if typ == "aws:cloudwatch/eventRule:EventRule":
                self.client_for("events", region).describe_rule(Name=rid)
                return True
            if typ == "aws:cloudwatch/eventTarget:EventTarget":
                rule = str((record.get("outputs") or {}).get("rule") or rid.rsplit("-", 1)[0])
                targets = self.client_for("events", region).list_targets_by_rule(Rule=rule)["Targets"]
                return rule not in self._fresh and bool(targets)
            if typ != "aws:s3/bucket:Bucket" and rid in self._fresh:
                return False  # a per-bucket resource of a bucket this run recreated
            # the bucket and every per-bucket resource (whose id is the bucket name)
            self.client_for("s3", region).head_bucket(Bucket=rid)
            return True
        except ClientError as exc:
            if _code(exc) in _GONE:
                return False
            raise

    def _reconcile(
        self, typ: str, rid: str, region: str, inputs: dict[str, Any], recorded: dict[str, Any]
    ) -> dict[str, Any]:
        """Re-apply every input of an existing resource (what `pulumi up` does with a diff)."""
        if typ in ("aws:kms/externalKey:ExternalKey", "aws:kms/replicaExternalKey:ReplicaExternalKey"):
            arn = str(recorded.get("arn") or rid)
            kms = self.client_for("kms", region)
            self._key_policy_and_tags(kms, arn, inputs)
            kms.update_key_description(KeyId=arn, Description=str(inputs.get("description", "")))
            return {"keyState": kms.describe_key(KeyId=arn)["KeyMetadata"]["KeyState"]}
        if typ == "aws:kms/alias:Alias":
            self.client_for("kms", region).update_alias(AliasName=rid, TargetKeyId=str(inputs["targetKeyId"]))
            return {"targetKeyArn": inputs["targetKeyId"]}
        if typ == "aws:iam/role:Role":
            iam = self.client_for("iam", region)
            iam.update_assume_role_policy(RoleName=rid, PolicyDocument=_policy(inputs["assumeRolePolicy"]))
            if inputs.get("tags"):
                iam.tag_role(RoleName=rid, Tags=_tags(inputs["tags"], kms=False))
            return {}
        if typ == "aws:s3/bucket:Bucket":
            if inputs.get("tags"):
                self.client_for("s3", region).put_bucket_tagging(
                    Bucket=rid, Tagging={"TagSet": _tags(inputs["tags"], kms=False)}
                )
            return {}
        if typ == "aws:iam/rolePolicy:RolePolicy":
            role, policy = rid.split(":", 1)
            self.client_for("iam", region).put_role_policy(
                RoleName=role, PolicyName=policy, PolicyDocument=_policy(inputs["policy"])
            )
            return {}
        if typ == "aws:sns/topic:Topic":
            return {"arn": rid}
        if typ in ("aws:sns/topicPolicy:TopicPolicy", "aws:cloudwatch/eventTarget:EventTarget"):
            return self._create_alarm(typ, rid, region, inputs)[1]
        if typ == "aws:cloudwatch/eventRule:EventRule":  # an existing rule: re-put, not a new one
            arn = self.client_for("events", region).put_rule(
                Name=rid,
                EventPattern=str(inputs["eventPattern"]),
                Description=str(inputs.get("description", "")),
                State="ENABLED",
            )["RuleArn"]
            return {"name": rid, "arn": arn}
        # per-bucket configurations: the create call is an idempotent put on the bucket
        return self._create(typ, rid, region, inputs)[1]

    @staticmethod
    def _key_policy_and_tags(kms: Any, arn: str, inputs: Mapping[str, Any]) -> None:
        kms.put_key_policy(
            KeyId=arn,
            PolicyName="default",
            Policy=_policy(inputs["policy"]),
            BypassPolicyLockoutSafetyCheck=bool(inputs.get("bypassPolicyLockoutSafetyCheck", False)),
        )
        if inputs.get("tags"):
            kms.tag_resource(KeyId=arn, Tags=_tags(inputs.get("tags"), kms=True))

    def _exists_error(self, what: str, name: str, region: str) -> HarnessError:
        return HarnessError(
            f"{what} {name} already exists in {region} and does not belong to this stack: `pulumi up` "
            "would fail the same way; delete it, or use the lab (state) that created it"
        )

    def _create(self, typ: str, name: str, region: str, inputs: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        for service in self._SERVICES:
            self.warm(service, region)

        def kms() -> Any:
            return self.client_for("kms", region)

        def s3() -> Any:
            return self.client_for("s3", region)

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
            # LocalStack ignores Policy and Tags here (docs/localstack.md): apply the replica's own
            self._key_policy_and_tags(kms(), meta["Arn"], inputs)
            return meta["KeyId"], {"arn": meta["Arn"], "keyState": meta["KeyState"], "keyId": meta["KeyId"]}
        if typ == "aws:kms/alias:Alias":
            alias = str(inputs["name"])
            try:
                kms().create_alias(AliasName=alias, TargetKeyId=str(inputs["targetKeyId"]))
            except ClientError as exc:
                if _code(exc) == "AlreadyExistsException":
                    raise self._exists_error("alias", alias, region) from None
                raise
            account = self.account_id
            return alias, {
                "arn": f"arn:aws:kms:{region}:{account}:{alias}",
                "targetKeyArn": inputs["targetKeyId"],
            }
        if typ == "aws:iam/role:Role":
            role_name = str(inputs.get("name") or f"{name}-{self.suffix}")[:64]
            try:
                role = self.client_for("iam", region).create_role(
                    RoleName=role_name,
                    AssumeRolePolicyDocument=_policy(inputs["assumeRolePolicy"]),
                    Description=str(inputs.get("description", "")),
                    Tags=_tags(inputs.get("tags"), kms=False),
                )["Role"]
            except ClientError as exc:
                if _code(exc) == "EntityAlreadyExists":
                    raise self._exists_error("IAM role", role_name, region) from None
                raise
            with self._created_lock:
                self._fresh.add(role_name)
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
            try:
                s3().create_bucket(**request)
            except ClientError as exc:
                if _code(exc) in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                    raise self._exists_error("bucket", bucket, region) from None
                raise
            with self._created_lock:
                self._fresh.add(bucket)
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
        return self._create_alarm(typ, name, region, inputs)

    def _create_alarm(
        self, typ: str, name: str, region: str, inputs: dict[str, Any]
    ) -> tuple[str, dict[str, Any]]:
        """SNS topics and EventBridge rules (infra/alarms.py); each put is idempotent."""
        if typ == "aws:sns/topic:Topic":
            topic = str(inputs.get("name") or f"{name}-{self.suffix}")[:256]
            arn = self.client_for("sns", region).create_topic(
                Name=topic, Tags=_tags(inputs.get("tags"), kms=False)
            )["TopicArn"]
            with self._created_lock:
                self._fresh.add(arn)
            return arn, {"name": topic, "arn": arn}
        if typ == "aws:sns/topicPolicy:TopicPolicy":
            arn = str(inputs["arn"])
            self.client_for("sns", region).set_topic_attributes(
                TopicArn=arn, AttributeName="Policy", AttributeValue=_policy(inputs["policy"])
            )
            return arn, {}
        if typ == "aws:cloudwatch/eventRule:EventRule":
            rule = str(inputs.get("name") or f"{name}-{self.suffix}")[:64]
            arn = self.client_for("events", region).put_rule(
                Name=rule,
                EventPattern=str(inputs["eventPattern"]),
                Description=str(inputs.get("description", "")),
                State="ENABLED",
            )["RuleArn"]
            with self._created_lock:
                self._fresh.add(rule)
            return rule, {"name": rule, "arn": arn}
        if typ == "aws:cloudwatch/eventTarget:EventTarget":
            rule, target = str(inputs["rule"]), str(inputs.get("targetId") or name)
            answer = self.client_for("events", region).put_targets(
                Rule=rule, Targets=[{"Id": target, "Arn": str(inputs["arn"])}]
            )
            if answer.get("FailedEntryCount"):
                raise HarnessError(
                    f"EventBridge refused target {target} of rule {rule}: {answer['FailedEntries']}"
                )
            return f"{rule}-{target}", {"rule": rule, "targetId": target}
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
    suffix: str | None = None,
    config: Mapping[str, Any] | None = None,
    program: Callable[[], Mapping[str, Any]] | None = None,
    state_path: Path | None = None,
    stack: str = "localstack",
) -> tuple[Recording, LocalStackMocks]:
    """Run the program against LocalStack; returns the recording (real ids) and the mocks.

    With `state_path`, what this stack created before is reconciled rather than created again,
    and the state is rewritten (atomically) after a successful run. Bucket names keep the
    state's suffix, so a stack recreated after a LocalStack restart gets the same names.
    """
    import secrets

    state = load_state(state_path)
    suffix = suffix or str(state.get("suffix") or "") or secrets.token_hex(3)
    mocks = LocalStackMocks(endpoint, client_for, suffix, state)
    settings = dict(config) if config is not None else stack_config(endpoint)
    recording = run_program(settings, program=program, stack=stack, pause_gc=False, mocks=mocks)
    if state_path is not None:
        save_state(
            state_path,
            {
                "format": STATE_FORMAT,
                "endpoint": endpoint,
                "account_id": mocks.account_id,
                "suffix": suffix,
                "resources": mocks.resources,
            },
        )
    return recording, mocks


def summary(mocks: LocalStackMocks) -> str:
    """One line: what this apply did (created, reconciled, recreated after a restart)."""
    created, reconciled, recreated = len(mocks.created), len(mocks.reconciled), len(mocks.recreated)
    if recreated and not reconciled:
        return (
            f"LocalStack no longer holds this stack (it keeps no state: was it restarted?): recreated all "
            f"{recreated + created} resources; the class keys are new and PendingImport"
        )
    parts = [f"{created} created", f"{reconciled} unchanged (reconciled)"]
    if recreated:
        parts.append(f"{recreated} recreated (they had vanished from LocalStack)")
    return ", ".join(parts)
