"""BYOK, the stack harness and the compliance report against a real LocalStack."""

from __future__ import annotations

import json
import secrets
import shutil
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pulumi
import pulumi_aws as aws
import pytest
from botocore.exceptions import ClientError

from hsm_lab import ceremony, errors
from hsm_lab.aws.deployment import class_key_arns, localstack_clients
from hsm_lab.byok import Byok, ByokError
from hsm_lab.compliance import assess
from hsm_lab.lab import PRIMARY_TOKEN
from infra.harness import HarnessError, LocalStackMocks, apply
from tests.conftest import Dealt, deal, make_lab

REPO = __import__("pathlib").Path(__file__).resolve().parents[2]


class CountingClients:
    """Real clients, with every AWS call counted (to prove a refusal came before any)."""

    def __init__(self, client_for: Callable[[str, str], Any]) -> None:
        self.client_for = client_for
        self.calls: list[str] = []

    def kms_for(self, region: str) -> Any:
        real = self.client_for("kms", region)
        calls = self.calls

        class Proxy:
            def __getattr__(self, name: str) -> Any:
                calls.append(f"{region}:{name}")
                return getattr(real, name)

        return Proxy()


@pytest.fixture(scope="session")
def deployed(localstack, clients) -> dict[str, Any]:
    """The real program applied to LocalStack: a real `pulumi up` where the CLI exists, else the harness."""
    recording = None
    if shutil.which("pulumi"):
        from infra import deploy

        target = deploy.Target("localstack", config={"clefs:endpoint": localstack.endpoint})
        outputs = deploy.up(target, on_output=None)
    else:
        recording, _mocks = apply(localstack.endpoint, clients, suffix=secrets.token_hex(3))
        outputs = recording.outputs
    states = {
        arn: clients("kms", arn.split(":")[3]).describe_key(KeyId=arn)["KeyMetadata"]["KeyState"]
        for data_class in outputs["classes"]
        for arn in class_key_arns(outputs, data_class)
    }
    return {"outputs": outputs, "recording": recording, "states": states}


@pytest.fixture(scope="session")
def byok_dealt(tmp_path_factory: pytest.TempPathFactory) -> Dealt:
    """A lab of its own: class keys derived here must not show up in the ceremony tests' token."""
    lab = make_lab(tmp_path_factory.mktemp("byok-lab"))
    return deal(lab, names=("alice", "carol", "dave", "erin"), threshold=3)


@pytest.fixture(scope="session")
def clients(localstack, tmp_path_factory: pytest.TempPathFactory) -> Callable[[str, str], Any]:
    """HTTPS clients pinned to LocalStack's certificate, as the rehearsal uses them."""
    factory, _pin = localstack_clients(localstack.endpoint, tmp_path_factory.mktemp("tls"), ca=localstack.ca)
    return factory


@pytest.fixture(scope="session")
def byok(byok_dealt: Dealt, clients, deployed) -> Byok:
    env = byok_dealt.env
    return Byok(
        env.hsm,
        env.lab,
        token=PRIMARY_TOKEN,
        user_pin=env.pin,
        so_pin=env.so_pin,
        kms_for=lambda region: clients("kms", region),
        primary_region=deployed["outputs"]["primary_region"],
        actor="pytest",
    )


@pytest.fixture(scope="session")
def imported(byok: Byok, deployed) -> dict[str, list]:
    """Every class imported into both regions (one with the composed AES wrap, one expiring)."""
    outputs = deployed["outputs"]
    done = {}
    for data_class in sorted(outputs["classes"]):
        arns = class_key_arns(outputs, data_class)
        algorithm = "RSA_AES_KEY_WRAP_SHA_256" if data_class == "health-documents" else "RSAES_OAEP_SHA_1"
        expiry = datetime.now(UTC) + timedelta(days=30) if data_class == "appointments" else None
        done[data_class] = byok.import_class(
            data_class, 1, arns, wrapping_algorithm=algorithm, valid_to=expiry
        )
    return done


def test_the_harness_gave_localstack_the_programs_own_configuration(deployed, clients) -> None:
    recording = deployed["recording"]
    if recording is None:
        pytest.skip("the stack came from a real `pulumi up`: there is no harness recording to compare")
    keys = recording.of_type("aws:kms/externalKey:ExternalKey")
    replicas = recording.of_type("aws:kms/replicaExternalKey:ReplicaExternalKey")
    assert len(keys) == len(replicas) == len(deployed["outputs"]["classes"])
    policies = set()
    for key in keys + replicas:  # both regions: LocalStack ignores ReplicateKey's Policy and Tags
        arn = key.outputs["arn"]
        region = arn.split(":")[3]
        live = clients("kms", region).get_key_policy(KeyId=arn, PolicyName="default")["Policy"]
        assert json.loads(live) == json.loads(key.inputs["policy"]), f"{arn} holds another policy"
        policies.add(live)
        meta = clients("kms", region).describe_key(KeyId=arn)["KeyMetadata"]
        assert meta["Origin"] == "EXTERNAL" and meta["MultiRegion"] is True
        tags = clients("kms", region).list_resource_tags(KeyId=arn)["Tags"]
        assert {t["TagKey"]: t["TagValue"] for t in tags} == key.inputs["tags"]
    assert len(policies) == len(keys) + len(replicas), "every key copy has its own policy"
    for config in recording.of_type("aws:s3/bucketReplicationConfig:BucketReplicationConfig"):
        region = recording.by_urn[config.urn].region
        live = clients("s3", region).get_bucket_replication(Bucket=config.inputs["bucket"])
        rule = live["ReplicationConfiguration"]["Rules"][0]
        assert rule["Filter"] == {} and rule["Priority"] == 1, "a V2 rule: real S3 needs the filter"
        assert rule["DeleteMarkerReplication"] == {"Status": "Enabled"}
    for policy in recording.of_type("aws:s3/bucketPolicy:BucketPolicy"):
        bucket = policy.inputs["bucket"]
        region = recording.by_urn[policy.urn].region
        live = clients("s3", region).get_bucket_policy(Bucket=bucket)["Policy"]
        assert json.loads(live) == json.loads(policy.inputs["policy"])


def test_the_keys_stay_pending_import_until_the_hsm_imports(deployed) -> None:
    assert len(deployed["states"]) == 2 * len(deployed["outputs"]["classes"])
    assert set(deployed["states"].values()) == {"PendingImport"}


def test_byok_imports_the_same_material_into_both_regions(imported, byok: Byok, deployed) -> None:
    outputs = deployed["outputs"]
    for data_class, records in imported.items():
        assert [r.role for r in records] == ["primary", "replica"]
        assert len({r.kcv for r in records}) == 1
        arns = class_key_arns(outputs, data_class)
        assert byok.prove(data_class, arns[0], arns[1])  # encrypt in Paris, decrypt in Frankfurt
        assert byok.prove(data_class, arns[1], arns[0])
    assert imported["appointments"][0].expires and imported["administrative"][0].expires is None
    assert imported["health-documents"][0].wrapping_algorithm == "RSA_AES_KEY_WRAP_SHA_256"


def test_class_keys_are_deterministic_and_distinct(byok: Byok, imported) -> None:
    kcvs = {cls: records[0].kcv for cls, records in imported.items()}
    assert len(set(kcvs.values())) == len(kcvs), "different classes never collide"
    for data_class, kcv in kcvs.items():
        assert byok.derive(data_class, 1) == kcv, "same class and version, same material"
    assert byok.derive("appointments", 2) != kcvs["appointments"]


def test_class_keys_live_only_in_the_export_session_and_wrap_only_under_trusted_keys(
    byok_dealt: Dealt, imported
) -> None:
    """Item 2 of issue 7: after BYOK the token holds no class key and no TRUSTED key."""
    import pkcs11
    from pkcs11 import Attribute, KeyType, Mechanism, ObjectClass

    env = byok_dealt.env
    with env.hsm.session(PRIMARY_TOKEN, user_pin=env.pin) as session:
        labels = {
            str(o[Attribute.LABEL])
            for o in session.raw.get_objects({Attribute.CLASS: ObjectClass.SECRET_KEY})
        }
        assert labels == {"clefs-master"}, "no L1 class key and no wrapping key on the token"
        assert list(session.raw.get_objects({Attribute.TRUSTED: True})) == []
        key = session.derive_class_key("clefs-master", "appointments", 1)  # a session object
        assert key[Attribute.SENSITIVE] and key[Attribute.WRAP_WITH_TRUSTED] and not key[Attribute.TOKEN]
        with pytest.raises(pkcs11.exceptions.AttributeSensitive):
            key[Attribute.VALUE]
        plain = session.raw.generate_key(KeyType.AES, 256, store=False, template={Attribute.WRAP: True})
        with pytest.raises(pkcs11.exceptions.PKCS11Error):
            plain.wrap_key(key, mechanism=Mechanism.AES_KEY_WRAP_PAD)
        assert session.kcv(key) == imported["appointments"][0].kcv


def test_an_import_token_of_another_key_or_region_is_refused(byok: Byok, deployed, imported, clients) -> None:
    outputs = deployed["outputs"]
    paris_a, frankfurt_a = class_key_arns(outputs, "appointments")
    paris_b, _ = class_key_arns(outputs, "administrative")
    params = byok.get_parameters(paris_a)
    with pytest.raises(ByokError, match=r"import token is for .* not .*tokens are per key and per region"):
        byok.import_material(params, paris_b, "administrative", 1, kcv="x", role="primary")
    with pytest.raises(ByokError, match="import token is for"):
        byok.import_material(params, frankfurt_a, "appointments", 1, kcv="x", role="replica")
    # LocalStack itself refuses a token from the other region (but not from another key: see README)
    with pytest.raises(ClientError, match="NotFoundException"):
        clients("kms", "eu-central-1").import_key_material(
            KeyId=frankfurt_a,
            ImportToken=params.import_token,
            EncryptedKeyMaterial=b"\0" * 256,
            ExpirationModel="KEY_MATERIAL_DOES_NOT_EXPIRE",
        )


def test_replica_material_that_does_not_match_its_primary_is_refused_before_any_aws_call(
    byok_dealt: Dealt, deployed, imported, clients
) -> None:
    counting = CountingClients(clients)
    env = byok_dealt.env
    careless = Byok(
        env.hsm,
        env.lab,
        token=PRIMARY_TOKEN,
        user_pin=env.pin,
        so_pin=env.so_pin,
        kms_for=counting.kms_for,
        primary_region="eu-west-3",
    )
    _paris, frankfurt = class_key_arns(deployed["outputs"], "appointments")
    with pytest.raises(ByokError, match=r"its primary .* holds appointments v1 .* same material"):
        careless.import_class("appointments", 7, [frankfurt])
    with pytest.raises(ByokError, match="holds administrative v1"):
        careless.check_replica_material(
            class_key_arns(deployed["outputs"], "administrative")[1], "administrative", 1, "000000"
        )
    assert counting.calls == []


def test_revocation_drill_refuses_decrypt(byok: Byok, clients) -> None:
    kms = clients("kms", "eu-west-3")
    key = kms.create_key(Origin="EXTERNAL")["KeyMetadata"]
    byok.import_class("revocation-drill", 1, [key["Arn"]])
    assert kms.describe_key(KeyId=key["Arn"])["KeyMetadata"]["KeyState"] == "Enabled"
    assert byok.revoke(key["Arn"], "revocation-drill") == "KMSInvalidStateException"
    assert kms.describe_key(KeyId=key["Arn"])["KeyMetadata"]["KeyState"] == "PendingImport"
    actions = [e["action"] for e in ceremony.transcript(byok.lab).entries()]
    assert {"byok.derive", "byok.get-parameters", "byok.import", "byok.prove", "byok.revoke"} <= set(actions)


def test_compliance_report_reads_live_state_and_names_gaps(deployed, imported, clients) -> None:
    outputs = deployed["outputs"]
    report = assess(outputs, clients)
    assert all(row.cells["key"].ok for row in report.rows), report.gaps
    assert all(row.cells["at_rest"].ok and row.cells["in_transit"].ok for row in report.rows)
    assert all(row.cells["public_access"].ok and row.cells["replication"].ok for row in report.rows)
    # break one thing in live state: the report must name exactly that gap
    bucket = outputs["classes"]["administrative"]["regions"]["eu-west-3"]["bucket"]
    s3 = clients("s3", "eu-west-3")
    before = s3.get_public_access_block(Bucket=bucket)["PublicAccessBlockConfiguration"]
    s3.put_public_access_block(
        Bucket=bucket, PublicAccessBlockConfiguration={**before, "BlockPublicPolicy": False}
    )
    try:
        gaps = assess(outputs, clients).gaps
        assert [g for g in gaps if "public_access" in g] == [
            "administrative eu-west-3 public_access: public access not fully blocked: BlockPublicPolicy off"
        ]
    finally:
        s3.put_public_access_block(Bucket=bucket, PublicAccessBlockConfiguration=before)


def test_verify_cli_reports_and_exits_non_zero_on_gaps(
    deployed, imported, localstack, run_cli, tmp_path
) -> None:
    from hsm_lab.aws.deployment import save_outputs

    save_outputs(tmp_path / "outputs.json", deployed["outputs"])
    result = run_cli(
        "verify",
        "--json",
        "--outputs",
        str(tmp_path / "outputs.json"),
        "--endpoint",
        localstack.endpoint,
        lab=tmp_path,
        extra_env=localstack.client_env(),
    )
    report = json.loads(result.stdout)
    assert {row["data_class"] for row in report["rows"]} == set(deployed["outputs"]["classes"])
    if report["gaps"]:
        assert result.returncode == 1 and report["gaps"][0] in result.stderr
    else:
        assert result.returncode == 0


def test_unreachable_localstack_is_one_clear_line(run_cli, tmp_path) -> None:
    (tmp_path / "stack-outputs.json").write_text(json.dumps({"classes": {}, "primary_region": "eu-west-3"}))
    result = run_cli(
        "verify",
        "--endpoint",
        "http://127.0.0.1:9",
        lab=tmp_path,
        extra_env={"CLEFS_LOCALSTACK_ENDPOINT": "http://127.0.0.1:9"},
    )
    assert result.returncode == 1 and "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "127.0.0.1:9" in lines[0]


def test_harness_refuses_non_loopback_endpoints(clients) -> None:
    with pytest.raises(HarnessError, match="only talks to loopback"):
        LocalStackMocks("http://10.1.2.3:4566", clients, "x")
    with pytest.raises(
        HarnessError, match=r"refusing provider endpoint https://kms\.eu-west-3\.amazonaws\.com"
    ):
        LocalStackMocks.__new__(LocalStackMocks)._check_provider(
            {"endpoints": [{"kms": "https://kms.eu-west-3.amazonaws.com"}]}
        )
    with pytest.raises(HarnessError, match="no endpoints"):
        LocalStackMocks.__new__(LocalStackMocks)._check_provider({"region": "eu-west-3"})


def test_harness_fails_loudly_on_a_resource_type_it_does_not_support(localstack, clients) -> None:
    def program() -> dict[str, Any]:
        provider = aws.Provider(
            "p",
            region="eu-west-3",
            endpoints=[aws.ProviderEndpointArgs(sqs=localstack.endpoint)],
            skip_credentials_validation=True,
            skip_requesting_account_id=True,
        )
        queue = aws.sqs.Queue("q", opts=pulumi.ResourceOptions(provider=provider))
        return {"queue": queue.id}

    with pytest.raises(Exception, match="does not support resource type aws:sqs/queue:Queue"):
        apply(localstack.endpoint, clients, suffix="x", config={}, program=program)


def test_errors_have_the_project_base() -> None:
    assert issubclass(ByokError, errors.ClefsError)


def test_the_aws_side_by_hand_through_the_cli(localstack, run_cli, tmp_path) -> None:
    """init, generate, stack apply-localstack, byok import, verify, byok revoke: as the README shows."""
    import pyrage

    lab = tmp_path / "by-hand"
    pins = {"pin": secrets.token_urlsafe(10), "so_pin": secrets.token_urlsafe(10)}
    env = localstack.client_env()
    people = tmp_path / "custodians.toml"
    people.write_text(
        "".join(
            f'[[custodian]]\nname = "c{i}"\nrecipient = "{pyrage.x25519.Identity.generate().to_public()}"\n'
            for i in range(4)
        )
    )
    for args in (
        ["init"],
        ["generate", "--custodians", str(people), "-k", "3"],
        ["stack", "apply-localstack"],
    ):
        result = run_cli(*args, lab=lab, extra_env=env, **pins)
        assert result.returncode == 0, (args, result.stderr)
    note = tmp_path / "note.txt"
    note.write_text("rendez-vous")
    early = run_cli("data", "put", "--class", "appointments", "--id", "a-1", "--file", str(note), lab=lab,
                    extra_env=env)
    assert early.returncode == 1 and early.stderr.count("\n") == 1, early.stderr
    assert "no key material imported" in early.stderr and "byok import --class appointments" in early.stderr
    imported = run_cli(
        "byok", "import", "--class", "appointments", "--expires-in-days", "30", lab=lab, extra_env=env, **pins
    )
    assert imported.returncode == 0, imported.stderr
    assert "[primary]" in imported.stdout and "[replica]" in imported.stdout and "proved" in imported.stdout
    report = run_cli("verify", "--json", lab=lab, extra_env=env)
    gaps = json.loads(report.stdout)["gaps"]
    assert report.returncode == 1 and "gap(s) in live state" in report.stderr
    assert not [g for g in gaps if g.startswith("appointments") and " key:" in g], "appointments is imported"
    assert "administrative eu-west-3 key: no key material imported (PendingImport)" in gaps
    revoked = run_cli(
        "byok",
        "revoke",
        "--class",
        "appointments",
        "--region",
        "eu-central-1",
        lab=lab,
        extra_env=env,
        **pins,
    )
    assert revoked.returncode == 0, revoked.stderr
    assert "decrypt now refused (KMSInvalidStateException)" in revoked.stdout
    after = json.loads(run_cli("verify", "--json", lab=lab, extra_env=env).stdout)["gaps"]
    assert "appointments eu-central-1 key: no key material imported (PendingImport)" in after


def fresh_account(localstack, tmp_path) -> tuple[Callable[[str, str], Any], str]:
    """Clients for an account of LocalStack nobody else uses (a lab of its own)."""
    account = str(100_000_000_000 + secrets.randbelow(900_000_000_000))
    factory, _pin = localstack_clients(localstack.endpoint, tmp_path, ca=localstack.ca, account_id=account)
    return factory, account


def test_a_second_apply_of_the_same_stack_creates_nothing(localstack, tmp_path) -> None:
    from infra.harness import summary

    client_for, _account = fresh_account(localstack, tmp_path)
    state = tmp_path / "stack-state.json"
    first, mocks = apply(localstack.endpoint, client_for, state_path=state)
    assert mocks.created and not mocks.reconciled and not mocks.recreated
    count = len(mocks.created)
    keys = len(client_for("kms", "eu-west-3").list_keys()["Keys"])
    buckets = len(client_for("s3", "eu-west-3").list_buckets()["Buckets"])
    second, again = apply(localstack.endpoint, client_for, state_path=state)
    assert again.created == [] and again.recreated == [] and len(again.reconciled) == count
    assert summary(again) == f"0 created, {count} unchanged (reconciled)"
    assert second.outputs == first.outputs, "outputs are not re-pointed"
    assert len(client_for("kms", "eu-west-3").list_keys()["Keys"]) == keys
    assert len(client_for("s3", "eu-west-3").list_buckets()["Buckets"]) == buckets
    # a reconcile re-applies inputs: a policy changed behind the stack's back is put back
    arn = first.outputs["classes"]["appointments"]["regions"]["eu-central-1"]["key_arn"]
    kms = client_for("kms", "eu-central-1")
    wanted = kms.get_key_policy(KeyId=arn, PolicyName="default")["Policy"]
    kms.put_key_policy(
        KeyId=arn,
        PolicyName="default",
        Policy=json.dumps(
            {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Principal": {"AWS": "*"},
                                                      "Action": "kms:*", "Resource": "*"}]}
        ),
    )
    apply(localstack.endpoint, client_for, state_path=state)
    assert json.loads(kms.get_key_policy(KeyId=arn, PolicyName="default")["Policy"]) == json.loads(wanted)


def test_an_alias_or_bucket_of_someone_else_fails_the_apply(localstack, tmp_path) -> None:
    client_for, _account = fresh_account(localstack, tmp_path)
    kms = client_for("kms", "eu-west-3")
    foreign = kms.create_key(Description="not this stack's")["KeyMetadata"]["Arn"]
    kms.create_alias(AliasName="alias/clefs/localstack/appointments", TargetKeyId=foreign)
    with pytest.raises(
        HarnessError,
        match=r"alias alias/clefs/localstack/appointments already exists in eu-west-3 and "
        r"does not belong to this stack: `pulumi up` would fail",
    ):
        apply(localstack.endpoint, client_for, state_path=tmp_path / "a.json")
    aliases = kms.list_aliases()["Aliases"]
    assert [a["TargetKeyId"] for a in aliases if a["AliasName"] == "alias/clefs/localstack/appointments"] == [
        foreign.rsplit("/", 1)[-1]
    ], "the alias is not re-pointed"
    assert not (tmp_path / "a.json").exists(), "no state for a failed apply"

    other, _ = fresh_account(localstack, tmp_path / "b")
    suffix = secrets.token_hex(3)
    taken = f"clefs-localstack-administrative-eu-central-1-{suffix}"
    other("s3", "eu-central-1").create_bucket(
        Bucket=taken, CreateBucketConfiguration={"LocationConstraint": "eu-central-1"}
    )
    with pytest.raises(HarnessError, match=f"bucket {taken} already exists in eu-central-1"):
        apply(localstack.endpoint, other, suffix=suffix, state_path=tmp_path / "b.json")


# --------------------------------------------------------------------- verify against an attacker


@pytest.fixture
def stocked(deployed, imported, clients) -> dict[str, Any]:
    """The session stack with one record per class in Paris, replicated to Frankfurt."""
    import pyrage

    from hsm_lab.datapath import DataPath

    outputs = deployed["outputs"]
    path = DataPath(clients, outputs["classes"], primary_region=outputs["primary_region"])
    reader = pyrage.x25519.Identity.generate()
    for data_class, spec in outputs["classes"].items():
        recipients = [str(reader.to_public())] if spec["end_to_end"] else None
        path.put(data_class, "verify-probe", b"probe", recipients=recipients)
    path.replicate()
    return outputs


def gaps_of(outputs: dict[str, Any], clients) -> list[str]:
    return assess(outputs, clients).gaps


def test_verify_is_green_on_the_stack_as_deployed(stocked, clients) -> None:
    report = assess(stocked, clients)
    assert report.gaps == []
    for row in report.rows:
        assert row.cells["key_policy"].source == "configured" and row.cells["key_policy"].ok
        assert row.cells["in_transit"].source == "configured", "LocalStack enforces no bucket policy"
        assert row.cells["end_to_end"].source == "observed" and row.objects_scanned >= 1
    document = json.loads(report.to_json())
    assert document["schema"] == "clefs.verify/v2" and document["target"] == "localstack"
    assert "key policies (separation of duties)" in document["not_enforced"]
    schema = json.loads((REPO / "docs" / "verify.schema.json").read_text())
    assert conforms(document, schema) == [], "docs/verify.schema.json describes the real output"


def conforms(value: Any, schema: dict[str, Any], where: str = "$") -> list[str]:
    """The JSON Schema keywords docs/verify.schema.json uses, checked (no extra dependency)."""
    problems: list[str] = []
    kinds = {"object": dict, "array": list, "string": str, "boolean": bool, "integer": int}
    if "type" in schema and not isinstance(value, kinds[schema["type"]]):
        return [f"{where}: not {schema['type']}"]
    if "const" in schema and value != schema["const"]:
        problems.append(f"{where}: not {schema['const']!r}")
    if "enum" in schema and value not in schema["enum"]:
        problems.append(f"{where}: {value!r} not in {schema['enum']}")
    if "minimum" in schema and value < schema["minimum"]:
        problems.append(f"{where}: below {schema['minimum']}")
    if isinstance(value, dict):
        problems += [f"{where}: no {key}" for key in schema.get("required", []) if key not in value]
        properties = schema.get("properties", {})
        for key, item in value.items():
            if "propertyNames" in schema:
                problems += conforms(key, schema["propertyNames"], f"{where}.{key} (name)")
            if key in properties:
                problems += conforms(item, properties[key], f"{where}.{key}")
            elif schema.get("additionalProperties") is False:
                problems.append(f"{where}: unexpected {key}")
            elif isinstance(schema.get("additionalProperties"), dict):
                problems += conforms(item, schema["additionalProperties"], f"{where}.{key}")
    if isinstance(value, list) and "items" in schema:
        for index, item in enumerate(value):
            problems += conforms(item, schema["items"], f"{where}[{index}]")
    return problems


def test_a_plaintext_object_is_a_named_gap_wherever_it_sorts(stocked, clients) -> None:
    bucket = stocked["classes"]["health-documents"]["regions"]["eu-west-3"]["bucket"]
    s3 = clients("s3", "eu-west-3")
    key = "zz-last/scan.pdf"  # sorts after every record: a sample of the first keys misses it
    # SSE-S3: the bucket policy forbids it, LocalStack accepts it anyway (it enforces no policy)
    s3.put_object(
        Bucket=bucket, Key=key, Body=b"%PDF plaintext health document", ServerSideEncryption="AES256"
    )
    try:
        gaps = gaps_of(stocked, clients)
        assert any(
            g.startswith("health-documents eu-west-3 end_to_end: 1 of ")
            and "carry no client-side envelope" in g and key in g
            for g in gaps
        ), gaps
        assert any(
            g.startswith("health-documents eu-west-3 at_rest: 1 of ") and f"{key} (AES256)" in g for g in gaps
        ), gaps
    finally:
        for version in s3.list_object_versions(Bucket=bucket, Prefix=key).get("Versions", []):
            s3.delete_object(Bucket=bucket, Key=key, VersionId=version["VersionId"])


def _swap_bucket_policy(s3, bucket: str, edit: Callable[[dict], dict]):
    before = s3.get_bucket_policy(Bucket=bucket)["Policy"]
    s3.put_bucket_policy(Bucket=bucket, Policy=json.dumps(edit(json.loads(before))))
    return before


@pytest.mark.parametrize(
    ("attack", "expected"),
    [
        (  # the TLS deny applies only to a foreign account
            lambda doc: {**doc, "Statement": [
                {**st, "Principal": {"AWS": "arn:aws:iam::999999999999:root"}}
                if st.get("Sid") == "DenyInsecureTransport" else st
                for st in doc["Statement"]
            ]},
            "in_transit: bucket policy does not deny GetObject over plain HTTP by the app role",
        ),
        (  # a TLS condition that denies nothing real
            lambda doc: {**doc, "Statement": [
                {**st, "Condition": {"NumericLessThan": {"s3:TlsVersion": "1.0"}}}
                if st.get("Sid") == "DenyTlsBelow12" else st
                for st in doc["Statement"]
            ]},
            "in_transit: bucket policy does not deny GetObject over TLS 1.1 by the app role",
        ),
        (  # the SSE denies now only bind another account: the app role may upload SSE-S3
            lambda doc: {**doc, "Statement": [
                {**st, "Principal": {"AWS": "arn:aws:iam::999999999999:root"}}
                if st.get("Sid") in ("DenyPutWithoutSseKms", "DenyPutUnderAnotherKey") else st
                for st in doc["Statement"]
            ]},
            "uploads: bucket policy does not deny PutObject without SSE by the app role",
        ),
    ],
    ids=["foreign-account-only-deny", "do-nothing-tls-condition", "sse-s3-allowed"],
)
def test_a_bucket_policy_that_only_looks_right_is_a_named_gap(stocked, clients, attack, expected) -> None:
    bucket = stocked["classes"]["administrative"]["regions"]["eu-central-1"]["bucket"]
    s3 = clients("s3", "eu-central-1")
    before = _swap_bucket_policy(s3, bucket, attack)
    try:
        gaps = [g for g in gaps_of(stocked, clients) if g.startswith("administrative eu-central-1")]
        assert any(expected in g for g in gaps), gaps
    finally:
        s3.put_bucket_policy(Bucket=bucket, Policy=before)


def test_an_allow_everyone_key_policy_is_a_named_gap(stocked, clients) -> None:
    arn = stocked["classes"]["appointments"]["regions"]["eu-central-1"]["key_arn"]
    kms = clients("kms", "eu-central-1")
    before = kms.get_key_policy(KeyId=arn, PolicyName="default")["Policy"]
    everyone = {"Version": "2012-10-17", "Statement": [
        {"Sid": "Everyone", "Effect": "Allow", "Principal": {"AWS": "*"}, "Action": "kms:*", "Resource": "*"}
    ]}
    kms.put_key_policy(KeyId=arn, PolicyName="default", Policy=json.dumps(everyone))
    try:
        gaps = [g for g in gaps_of(stocked, clients) if "key_policy" in g]
        assert len(gaps) == 1 and gaps[0].startswith("appointments eu-central-1 key_policy: key policy: ")
        assert "statement Everyone allows a wildcard principal" in gaps[0] or "can kms:" in gaps[0]
        # also when the wildcard statement hides among the right ones (denies keep use closed)
        mixed = json.loads(before)
        mixed["Statement"].append(everyone["Statement"][0])
        kms.put_key_policy(KeyId=arn, PolicyName="default", Policy=json.dumps(mixed))
        gaps = [g for g in gaps_of(stocked, clients) if "key_policy" in g]
        assert gaps and "statement Everyone allows a wildcard principal" in gaps[0], gaps
    finally:
        kms.put_key_policy(KeyId=arn, PolicyName="default", Policy=before)


def test_a_missing_replica_object_is_a_named_gap(stocked, clients) -> None:
    import pyrage

    from hsm_lab.datapath import DataPath

    path = DataPath(clients, stocked["classes"], primary_region=stocked["primary_region"])
    record = f"late-{secrets.token_hex(4)}"
    path.put("appointments", record, b"written in Paris, never replicated")
    try:
        gaps = gaps_of(stocked, clients)
        assert any(
            g.startswith("appointments eu-central-1 replication: 1 of ") and f"appointments/{record}" in g
            for g in gaps
        ), gaps
        assert not [g for g in gaps if g.startswith("appointments eu-west-3 replication")], "the rule is fine"
    finally:
        path.replicate("appointments")
    assert pyrage  # imported for symmetry with the stocked fixture


def test_two_stacks_apply_side_by_side_in_one_account_and_region(localstack, tmp_path) -> None:
    """Issue 9: names carry the stack; a second stack in one account and region collides with nothing."""
    client_for, _account = fresh_account(localstack, tmp_path)
    alpha, made_alpha = apply(localstack.endpoint, client_for, state_path=tmp_path / "a.json", stack="alpha")
    beta, made_beta = apply(localstack.endpoint, client_for, state_path=tmp_path / "b.json", stack="beta")
    assert len(made_alpha.created) == len(made_beta.created) > 0
    kms = client_for("kms", "eu-west-3")
    aliases = {a["AliasName"] for a in kms.list_aliases()["Aliases"]}
    for data_class in alpha.outputs["classes"]:
        assert {f"alias/clefs/alpha/{data_class}", f"alias/clefs/beta/{data_class}"} <= aliases
    assert alpha.outputs["namespace"] == "clefs-alpha" and beta.outputs["namespace"] == "clefs-beta"
    # the key alarms exist for real in both regions, for each stack
    for region in ("eu-west-3", "eu-central-1"):
        topics = {t["TopicArn"] for t in client_for("sns", region).list_topics()["Topics"]}
        for stack in (alpha, beta):
            assert stack.outputs["alarm_topics"][region] in topics
        rules = client_for("events", region).list_rules()["Rules"]
        assert sum("kms-api" in r["Name"] for r in rules) == 2
        assert sum("material-expiry" in r["Name"] for r in rules) == 2
        own = ([alpha.outputs["alarm_topics"][region]], [beta.outputs["alarm_topics"][region]])
        for rule in rules:
            targets = client_for("events", region).list_targets_by_rule(Rule=rule["Name"])["Targets"]
            assert [t["Arn"] for t in targets] in own


def test_the_record_is_archived_by_the_ceremony_role_and_read_back_against_the_lab(
    byok_dealt: Dealt, deployed, imported, clients
) -> None:
    """Issue 9 item 6: the archive in the Object Lock bucket must be the lab's own record, signed."""
    from hsm_lab.ceremony import archive
    from hsm_lab.ceremony.record import verify_lab

    lab = byok_dealt.env.lab
    outputs = deployed["outputs"]
    bucket, s3 = outputs["transcript_bucket"], clients("s3", outputs["primary_region"])
    lock = s3.get_object_lock_configuration(Bucket=bucket)["ObjectLockConfiguration"]
    assert lock["Rule"]["DefaultRetention"]["Mode"] == "COMPLIANCE"  # configured (LocalStack: not enforced)
    state = verify_lab(lab)
    folder = archive.upload(state, lab.transcript.read_bytes(), lab.transcript_head.read_bytes(), s3, bucket)
    found = archive.latest(state, s3, bucket)
    assert found.folder == folder and found.seq == len(state.entries)
    # someone with PutObject adds a newer archive with an edited record: refused
    entries = lab.transcript.read_text().splitlines()
    edited = entries[-1].replace('"actor":"pytest"', '"actor":"mallory"')
    forged = folder.rsplit("/", 2)[0] + "/99999999-forged/"
    body = ("\n".join([*entries[:-1], edited]) + "\n").encode()
    s3.put_object(Bucket=bucket, Key=forged + "transcript.jsonl", Body=body)
    s3.put_object(Bucket=bucket, Key=forged + "transcript.head.json", Body=lab.transcript_head.read_bytes())
    with pytest.raises(errors.ClefsError):
        archive.latest(state, s3, bucket)
    # an archive of entries the lab does not hold (the lab rolled back, or the archive rewritten)
    s3.put_object(Bucket=bucket, Key=forged + "transcript.jsonl", Body=lab.transcript.read_bytes())
    shorter = verify_lab(lab)
    shorter.entries = shorter.entries[:-1]
    with pytest.raises(archive.ArchiveError, match="not in the lab's record"):
        archive.latest(shorter, s3, bucket)
