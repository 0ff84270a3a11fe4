"""DataPath against a real LocalStack (S3 + KMS over pinned HTTPS): nothing AWS is mocked.

Each module run creates its own multi-region class keys (eu-west-3, replicated to eu-central-1)
and buckets with unique names. Cache-limit tests also run the cache alone with an injected
clock. No timing is asserted here (see bench/datapath.py).
"""

from __future__ import annotations

import json
import threading
from typing import Any

import boto3
import pyrage
import pytest
from botocore.exceptions import ClientError, SSLError

from hsm_lab.aws.localstack import LocalStack
from hsm_lab.datapath import DataPath, DataPathError, RecordNotFound
from hsm_lab.datapath import envelope as env
from hsm_lab.datapath import store as dp
from hsm_lab.datapath.envelope import (
    RecordAuthenticationError,
)
from hsm_lab.errors import InputError
from tests.datapath.support import (
    CLASSES,
    HOME,
    REPLICA,
    Deployment,
    flip,
    recipients,
    reencode,
    rid,
    tamper_points,
)

# --------------------------------------------------------------------- round trips, storage


@pytest.mark.parametrize("data_class", list(CLASSES))
def test_round_trip_per_class(
    deployment: Deployment, people: dict[str, pyrage.x25519.Identity], data_class: str
) -> None:
    datapath = deployment.datapath()
    record, content = rid(), f"{data_class} content é\0".encode() * 50
    if CLASSES[data_class]:
        key = datapath.put(data_class, record, content, recipients=recipients(people))
        assert datapath.get(data_class, record, identity=people["patient"]) == content
    else:
        key = datapath.put(data_class, record, content)
        assert datapath.get(data_class, record) == content
    assert key == f"{data_class}/{record}"
    assert content not in deployment.raw(data_class, record)


def test_empty_and_one_mib_records(deployment: Deployment) -> None:
    datapath = deployment.datapath()
    for content in (b"", bytes(range(256)) * 4096):
        record = rid()
        datapath.put("appointments", record, content)
        assert datapath.get("appointments", record) == content


def test_object_is_sse_kms_with_class_key_and_clefs_metadata(
    deployment: Deployment, people: dict[str, pyrage.x25519.Identity]
) -> None:
    datapath = deployment.datapath()
    for data_class, e2e in CLASSES.items():
        record = rid()
        datapath.put(data_class, record, b"x", recipients=recipients(people) if e2e else None)
        where = deployment.target(data_class)
        head = deployment.s3().head_object(Bucket=where["bucket"], Key=f"{data_class}/{record}")
        assert head["ServerSideEncryption"] == "aws:kms"
        assert head["SSEKMSKeyId"] == where["key_arn"]
        assert head.get("BucketKeyEnabled") is True
        assert head["Metadata"] == {
            "clefs-format": "clefs.envelope/v2",
            "clefs-e2e": "age-x25519" if e2e else "none",
        }
        blob = deployment.raw(data_class, record)
        header = env.parse(blob).header
        assert (header.data_class, header.record_id, header.kms_key_arn) == (
            data_class,
            record,
            where["key_arn"],
        )
        assert header.e2e == ("age-x25519" if e2e else None)


def test_missing_record(deployment: Deployment) -> None:
    with pytest.raises(RecordNotFound, match="no record appointments/nope-1"):
        deployment.datapath().get("appointments", "nope-1")


def test_encrypt_in_paris_decrypt_in_frankfurt_with_the_replica(deployment: Deployment) -> None:
    writer = deployment.datapath()
    record = rid()
    writer.put("appointments", record, b"rendez-vous 14h", region=HOME)
    blob = deployment.raw("appointments", record, HOME)
    assert env.parse(blob).header.kms_key_arn == deployment.target("appointments", HOME)["key_arn"]
    deployment.store_raw("appointments", record, blob, REPLICA)  # LocalStack does not replicate S3
    reader = deployment.datapath()
    assert reader.get("appointments", record, region=REPLICA) == b"rendez-vous 14h"
    assert reader.kms_calls == {("decrypt", REPLICA): 1}
    # and the other way round, written in Frankfurt
    writer.put("appointments", record + "-fra", b"x", region=REPLICA)
    assert reader.get("appointments", record + "-fra", region=REPLICA) == b"x"


# --------------------------------------------------------------------- KMS calls and the cache


def test_200_records_cost_at_most_one_kms_call_each_way(deployment: Deployment) -> None:
    writer, reader = deployment.datapath(), deployment.datapath()
    records = [rid() for _ in range(200)]
    for i, record in enumerate(records):
        writer.put("administrative", record, b"%d" % i * 100)
    assert sum(writer.kms_calls.values()) <= 1
    assert writer.kms_calls == {("generate_data_key", HOME): 1}
    for i, record in enumerate(records):
        assert reader.get("administrative", record) == b"%d" % i * 100
    assert sum(reader.kms_calls.values()) <= 1


def test_concurrent_puts_share_one_data_key(deployment: Deployment) -> None:
    datapath = deployment.datapath()
    records = [rid() for _ in range(160)]
    failures: list[BaseException] = []

    def work(chunk: list[str]) -> None:
        try:
            for record in chunk:
                datapath.put("appointments", record, record.encode())
                assert datapath.get("appointments", record) == record.encode()
        except BaseException as exc:  # reported below
            failures.append(exc)

    threads = [threading.Thread(target=work, args=(records[i::8],)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not failures
    assert datapath.kms_calls == {("generate_data_key", HOME): 1, ("decrypt", HOME): 1}


# --------------------------------------------------------------------- refusals


def test_wrong_class_is_refused(deployment: Deployment) -> None:
    writer = deployment.datapath()
    record = rid()
    writer.put("appointments", record, b"appointment")
    blob = deployment.raw("appointments", record)
    reader = deployment.datapath()
    admin_arn = deployment.target("administrative")["key_arn"]
    # 1. read as another class: refused from the header, before KMS is asked
    with pytest.raises(RecordAuthenticationError, match=r"administrative/.*wrong class or record id"):
        reader.crypter.decrypt(
            blob, data_class="administrative", record_id=record, key_arn=admin_arn, region=HOME
        )
    assert reader.kms_calls == {}
    # 2. the same object planted in the other class's bucket: refused through the API too
    deployment.store_raw("administrative", record, blob)
    with pytest.raises(RecordAuthenticationError, match="wrong class or record id"):
        reader.get("administrative", record)
    # 3. a header rewritten to claim the other class: KMS refuses the wrong-class context
    forged = reencode(blob, data_class="administrative")
    with pytest.raises(RecordAuthenticationError, match=f"administrative/{record}: not authentic"):
        reader.crypter.decrypt(
            forged, data_class="administrative", record_id=record, key_arn=admin_arn, region=HOME
        )
    with pytest.raises(RecordAuthenticationError, match="not authentic"):  # even with the right key
        reader.crypter.decrypt(
            forged,
            data_class="administrative",
            record_id=record,
            key_arn=deployment.target("appointments")["key_arn"],
            region=HOME,
        )
    assert reader.kms_calls == {("decrypt", HOME): 2}
    # 4. KMS itself: the data key opens only under its own class context
    kms = deployment.factory("kms", HOME)
    edk = env.parse(blob).header.edk
    with pytest.raises(ClientError) as refused:
        kms.decrypt(CiphertextBlob=edk, EncryptionContext={"data_class": "administrative"})
    assert refused.value.response["Error"]["Code"] == "InvalidCiphertextException"
    assert (
        len(kms.decrypt(CiphertextBlob=edk, EncryptionContext={"data_class": "appointments"})["Plaintext"])
        == 32
    )


def test_wrong_record_id_is_refused(deployment: Deployment) -> None:
    datapath = deployment.datapath()
    record, other = rid(), rid()
    datapath.put("appointments", record, b"mine")
    blob = deployment.raw("appointments", record)
    deployment.store_raw("appointments", other, blob)  # copied/renamed in the bucket
    with pytest.raises(RecordAuthenticationError, match=f"appointments/{other}: wrong class or record id"):
        datapath.get("appointments", other)
    deployment.store_raw("appointments", other, reencode(blob, record_id=other))  # header edited too
    with pytest.raises(RecordAuthenticationError, match=f"appointments/{other}: not authentic"):
        datapath.get("appointments", other)


def test_tampered_ciphertext_is_refused(deployment: Deployment) -> None:
    writer = deployment.datapath()
    record = rid()
    writer.put("appointments", record, b"appointment at 14:00 with Dr X" * 10)
    blob = deployment.raw("appointments", record)
    for where, index in tamper_points(blob).items():
        deployment.store_raw("appointments", record, flip(blob, index))
        for reader in (writer, deployment.datapath()):  # with and without the data key cached
            with pytest.raises(RecordAuthenticationError) as refused:
                reader.get("appointments", record)
            assert "\n" not in str(refused.value), where
            assert record in str(refused.value), where
    for cut in (0, 5, 9, len(blob) - 1):  # truncated
        deployment.store_raw("appointments", record, blob[:cut])
        with pytest.raises(RecordAuthenticationError):
            writer.get("appointments", record)
    deployment.store_raw("appointments", record, blob + b"\0")  # extended
    with pytest.raises(RecordAuthenticationError):
        writer.get("appointments", record)


def test_record_ids_are_validated_before_any_traffic(deployment: Deployment) -> None:
    def no_clients(service: str, region: str) -> Any:
        raise AssertionError("no client may be created for an invalid record id")

    datapath = DataPath(no_clients, deployment.classes)
    for bad in ("", ".hidden", "-x", "a/b", "a b", "é", "x" * 129, "ok\n", "../etc"):
        with pytest.raises(InputError, match="record id"):
            datapath.put("appointments", bad, b"x")
        with pytest.raises(InputError, match="record id"):
            datapath.get("appointments", bad)
    with pytest.raises(InputError, match="unknown data class 'nope'"):
        datapath.put("nope", "r1", b"x")
    with pytest.raises(InputError, match="not deployed in 'us-east-1'"):
        datapath.put("appointments", "r1", b"x", region="us-east-1")


def test_deployment_description_is_checked() -> None:
    for bad in ({}, {"c-1": {"regions": {}}}, {"c-1": {"end_to_end": "yes", "regions": {"r": {}}}}, []):
        with pytest.raises(InputError):
            dp.parse_classes(bad)


# --------------------------------------------------------------------- transport


def test_https_with_the_pinned_certificate_only(deployment: Deployment) -> None:
    assert deployment.pin.url.startswith("https://127.0.0.1:")
    assert deployment.pin.pem == deployment.localstack.ca  # the lab's CA, never fetched
    assert deployment.pin.pem.read_text().startswith("-----BEGIN CERTIFICATE-----")
    s3 = deployment.s3()
    assert s3.meta.endpoint_url == deployment.pin.url
    s3.list_buckets()  # verified against the pinned certificate
    default_trust = boto3.client(
        "s3",
        region_name=HOME,
        endpoint_url=deployment.pin.url,
        aws_access_key_id="test",
        aws_secret_access_key="test",
    )
    with pytest.raises(SSLError):  # verification is on: the system trust store refuses it
        default_trust.list_buckets()
    plain_http = DataPath(deployment.localstack.client, deployment.classes)
    if not deployment.localstack.endpoint.startswith("https:"):
        with pytest.raises(DataPathError, match="HTTPS only"):
            plain_http.put("appointments", rid(), b"x")


def test_context_key_matches_the_key_policies() -> None:
    data_classes = pytest.importorskip("infra.model.data_classes")
    assert env.CONTEXT_KEY == data_classes.ENCRYPTION_CONTEXT_KEY


# --------------------------------------------------------------------- key guard, write time, rollback


def test_put_is_refused_before_the_class_key_has_material(
    localstack: LocalStack, deployment: Deployment
) -> None:
    """On AWS a PendingImport key refuses GenerateDataKey; LocalStack may not, so `put` asks first."""
    kms = localstack.client("kms", HOME)
    key = kms.create_key(Origin="EXTERNAL", MultiRegion=True, Description="never imported")["KeyMetadata"]
    replica = kms.replicate_key(KeyId=key["KeyId"], ReplicaRegion=REPLICA)["ReplicaKeyMetadata"]
    classes = json.loads(json.dumps(deployment.classes))
    for region, arn in ((HOME, key["Arn"]), (REPLICA, replica["Arn"])):
        classes["appointments"]["regions"][region]["key_arn"] = arn
    datapath = DataPath(deployment.factory, classes)
    with pytest.raises(dp.KeyNotReady, match=r"eu-west-3 is not usable \(no key material imported\); run "
                       r"`hsm-lab byok import --class appointments` first"):
        datapath.put("appointments", rid(), b"too early")
    with pytest.raises(dp.KeyNotReady):
        datapath.put("appointments", rid(), b"too early", region=REPLICA)
    assert sum(datapath.kms_calls.values()) == 0, "no data key was asked for"


def test_put_is_refused_when_the_replica_key_is_disabled(deployment: Deployment) -> None:
    kms = deployment.factory("kms", HOME)
    key = kms.create_key(MultiRegion=True, Description="replica to be disabled")["KeyMetadata"]
    replica = kms.replicate_key(KeyId=key["KeyId"], ReplicaRegion=REPLICA)["ReplicaKeyMetadata"]
    classes = json.loads(json.dumps(deployment.classes))
    for region, arn in ((HOME, key["Arn"]), (REPLICA, replica["Arn"])):
        classes["administrative"]["regions"][region]["key_arn"] = arn
    datapath = DataPath(deployment.factory, classes)
    datapath.put("administrative", rid(), b"fine while both keys are enabled")
    deployment.factory("kms", REPLICA).disable_key(KeyId=replica["Arn"])
    datapath.key_state_ttl = 0  # the cache would otherwise keep "Enabled" for 30 s
    with pytest.raises(dp.KeyNotReady, match="eu-central-1 is not usable \\(key state Disabled\\)"):
        datapath.put("administrative", rid(), b"refused: replication would need the replica key")


def test_each_record_carries_an_authenticated_write_time(deployment: Deployment) -> None:
    datapath = deployment.datapath()
    record_id = rid()
    before = env.written_now()
    datapath.put("appointments", record_id, b"timed")
    record = datapath.read("appointments", record_id)
    assert before <= record.written <= env.written_now()
    assert record.version_id and record.plaintext == b"timed"
    blob = deployment.raw("appointments", record_id)
    at = blob.index(record.written.encode())
    forged = blob[:at] + b"2099" + blob[at + 4 :]  # claim a later write
    deployment.store_raw("appointments", record_id, forged)
    with pytest.raises(RecordAuthenticationError, match="not authentic"):
        deployment.datapath().get("appointments", record_id)


def test_a_record_rolled_back_to_an_older_version_is_noticed(deployment: Deployment) -> None:
    """PutObject is enough to make an old version current again: `read` notices, `get` alone cannot."""
    datapath = deployment.datapath()
    record_id = rid()
    bucket = deployment.target("appointments")["bucket"]
    key = f"appointments/{record_id}"
    datapath.put("appointments", record_id, b"old address")
    old_version = deployment.s3().head_object(Bucket=bucket, Key=key)["VersionId"]
    datapath.put("appointments", record_id, b"new address")
    assert datapath.read("appointments", record_id).plaintext == b"new address"
    deployment.s3().copy_object(
        Bucket=bucket,
        Key=key,
        CopySource={"Bucket": bucket, "Key": key, "VersionId": old_version},
        ServerSideEncryption="aws:kms",
        SSEKMSKeyId=deployment.target("appointments")["key_arn"],
    )
    assert datapath.get("appointments", record_id) == b"old address"  # authentic, but stale
    with pytest.raises(dp.RolledBack, match=f"record appointments/{record_id} was rolled back"):
        datapath.read("appointments", record_id)


def test_replicate_copies_what_s3_replication_would(deployment: Deployment) -> None:
    datapath = deployment.datapath()
    record_id = rid()
    datapath.put("administrative", record_id, b"first")
    datapath.put("administrative", record_id, b"second")
    first = datapath.replicate("administrative")
    assert first["administrative"] >= 2
    assert datapath.replicate("administrative") == {"administrative": 0}, "nothing twice"
    assert deployment.raw("administrative", record_id, REPLICA) == deployment.raw("administrative", record_id)
    head = deployment.s3(REPLICA).head_object(
        Bucket=deployment.target("administrative", REPLICA)["bucket"], Key=f"administrative/{record_id}"
    )
    assert head["SSEKMSKeyId"] == deployment.target("administrative", REPLICA)["key_arn"]
    assert datapath.read("administrative", record_id, region=REPLICA).plaintext == b"second"
