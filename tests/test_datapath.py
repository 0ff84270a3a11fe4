"""The data path against a real LocalStack (S3 + KMS over pinned HTTPS): nothing AWS is mocked.

Each module run creates its own multi-region class keys (eu-west-3, replicated to eu-central-1)
and buckets with unique names. Cache-limit tests also run the cache alone with an injected
clock. No timing is asserted here (see bench/datapath.py).
"""

from __future__ import annotations

import base64
import json
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import boto3
import pyrage
import pytest
from botocore.exceptions import ClientError, SSLError
from cryptography.exceptions import InvalidTag
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from hsm_lab.aws.deployment import TlsPin, localstack_clients
from hsm_lab.aws.localstack import LocalStack
from hsm_lab.ceremony.jose import canonical_json
from hsm_lab.cli import data as data_cli
from hsm_lab.datapath import DataPath, DataPathError, EndToEndError, RecordNotFound
from hsm_lab.datapath import crypter as crypter_module
from hsm_lab.datapath import envelope as env
from hsm_lab.datapath import store as dp
from hsm_lab.datapath.envelope import (
    CacheLimits,
    DataKey,
    DataKeyCache,
    EnvelopeCrypter,
    RecordAuthenticationError,
)
from hsm_lab.errors import ClefsError, InputError

HOME, REPLICA = "eu-west-3", "eu-central-1"
CLASSES = {"health-documents": True, "appointments": False, "administrative": False}


@dataclass
class Deployment:
    localstack: LocalStack
    lab: Path
    classes: dict[str, Any]  # shaped like the Pulumi stack output `classes`
    factory: dp.ClientFactory
    pin: TlsPin

    def datapath(self, **kwargs: Any) -> DataPath:
        return DataPath(self.factory, self.classes, **kwargs)

    def target(self, data_class: str, region: str = HOME) -> dict[str, str]:
        return self.classes[data_class]["regions"][region]

    def s3(self, region: str = HOME) -> Any:
        return self.factory("s3", region)

    def raw(self, data_class: str, record_id: str, region: str = HOME) -> bytes:
        bucket = self.target(data_class, region)["bucket"]
        return self.s3(region).get_object(Bucket=bucket, Key=f"{data_class}/{record_id}")["Body"].read()

    def store_raw(self, data_class: str, record_id: str, blob: bytes, region: str = HOME) -> None:
        where = self.target(data_class, region)
        self.s3(region).put_object(
            Bucket=where["bucket"],
            Key=f"{data_class}/{record_id}",
            Body=blob,
            ServerSideEncryption="aws:kms",
            SSEKMSKeyId=where["key_arn"],
        )


@pytest.fixture(scope="module")
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


@pytest.fixture(scope="module")
def people() -> dict[str, pyrage.x25519.Identity]:
    return {name: pyrage.x25519.Identity.generate() for name in ("patient", "practitioner", "stranger")}


def rid() -> str:
    return f"rec-{uuid.uuid4().hex[:12]}"


def recipients(people: dict[str, pyrage.x25519.Identity]) -> list[str]:
    return [str(people["patient"].to_public()), str(people["practitioner"].to_public())]


def flip(blob: bytes, index: int) -> bytes:
    tampered = bytearray(blob)
    tampered[index] ^= 0x01
    return bytes(tampered)


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


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def stub_loader(made: list[DataKey]) -> Callable[[], DataKey]:
    def load() -> DataKey:
        key = DataKey(bytearray(b"k" * 32), b"edk-%d" % len(made), "arn:test")
        made.append(key)
        return key

    return load


def test_cache_expires_by_messages() -> None:
    made: list[DataKey] = []
    cache = DataKeyCache(CacheLimits(max_messages=3), clock=FakeClock())
    used = []
    for _ in range(7):
        with cache.lease("k", 10, stub_loader(made), metered=True) as key:
            used.append(key.edk)
    assert len(made) == 3
    assert used == [b"edk-0"] * 3 + [b"edk-1"] * 3 + [b"edk-2"]
    assert made[0].key == bytearray(32) and made[1].key == bytearray(32)  # evicted: wiped
    assert made[2].key == bytearray(b"k" * 32)


def test_cache_expires_by_age_and_bytes() -> None:
    made: list[DataKey] = []
    clock = FakeClock()
    cache = DataKeyCache(CacheLimits(max_age_seconds=300, max_bytes=100), clock=clock)
    load = stub_loader(made)
    for _ in range(2):
        with cache.lease("k", 40, load, metered=True):
            pass
    assert len(made) == 1
    with cache.lease("k", 40, load, metered=True):  # 120 bytes > 100
        pass
    assert len(made) == 2
    clock.now += 299.9
    with cache.lease("k", 1, load, metered=True):
        pass
    assert len(made) == 2
    clock.now += 0.1  # 300 s old
    with cache.lease("k", 1, load, metered=True):
        pass
    assert len(made) == 3
    # unmetered (decrypt) leases ignore message/byte limits but not age
    for _ in range(10):
        with cache.lease("d", 10**9, load, metered=False):
            pass
    assert len(made) == 4
    clock.now += 301
    with cache.lease("d", 0, load, metered=False):
        pass
    assert len(made) == 5


def test_cache_never_wipes_a_key_in_use() -> None:
    made: list[DataKey] = []
    cache = DataKeyCache(CacheLimits(max_messages=1), clock=FakeClock())
    load = stub_loader(made)
    with cache.lease("k", 1, load, metered=True) as first:
        with cache.lease("k", 1, load, metered=True):  # retires `first` while it is leased
            pass
        assert first.key == bytearray(b"k" * 32) and first.aead is not None
    assert first.key == bytearray(32) and first.aead is None
    cache.clear()
    assert len(cache) == 0 and all(k.key == bytearray(32) for k in made)


def test_hot_path_limits_are_exact_under_threads() -> None:
    """hit() takes no lock: messages are atomic tickets and lock-free bytes stay inside the
    reserve the locked path keeps free, so no key ever goes past a limit, whatever the threads."""
    made: list[DataKey] = []
    limits = CacheLimits(max_messages=64, max_bytes=64 * 16 * 100)  # small_record = 100 bytes
    cache = DataKeyCache(limits, clock=FakeClock())
    assert (cache.small_record, cache.reserve) == (100, 6400)
    load = stub_loader(made)
    used: dict[bytes, list[int]] = {}
    lock = threading.Lock()

    def work(seed: int) -> None:
        for i in range(400):
            size = 5000 if (seed + i) % 7 == 0 else 100
            key = cache.hit("k", size)
            if key is None:
                with cache.lease("k", size, load, metered=True) as leased:
                    key = leased
            with lock:
                used.setdefault(key.edk, []).append(size)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sum(len(sizes) for sizes in used.values()) == 8 * 400
    assert all(len(sizes) <= 64 for sizes in used.values())
    assert all(sum(sizes) <= limits.max_bytes for sizes in used.values())
    assert len(made) >= 8 * 400 // 64


def test_hot_path_refuses_what_the_locked_path_would() -> None:
    made: list[DataKey] = []
    clock = FakeClock()
    cache = DataKeyCache(CacheLimits(max_messages=3), clock=clock)
    assert cache.hit("k", 10) is None  # nothing cached yet
    with cache.lease("k", 10, stub_loader(made), metered=True):
        pass
    assert cache.hit("k", 10) is made[0] and cache.hit("k", 10) is made[0]
    assert cache.hit("k", 10) is None, "a fourth message under a 3-message key"
    assert cache.hit("k", cache.small_record + 1) is None, "large records go through the lock"
    with cache.lease("k", 10, stub_loader(made), metered=True):  # retires the spent key
        pass
    assert len(made) == 2 and made[0].key == bytearray(32)
    clock.now += 300
    assert cache.hit("k", 10) is None and cache.peek("k") is None, "too old"


def test_counter_nonces_are_unique_per_data_key() -> None:
    """SP 800-38D 8.2.1: a random 32-bit fixed field per data key, then a 64-bit counter."""
    key = DataKey(bytearray(b"k" * 32), b"edk", "arn:test")
    nonces: list[bytes] = []
    lock = threading.Lock()

    def work() -> None:
        for _ in range(500):
            blob = crypter_module._seal(key, key.aead, "c-1", "r1", b"x", 1, None, env.written_now())
            with lock:
                nonces.append(env.parse(blob).header.nonce)

    threads = [threading.Thread(target=work) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(set(nonces)) == len(nonces) == 4000
    assert {n[:4] for n in nonces} == {key.nonce_fixed} and len(key.nonce_fixed) == 4
    assert sorted(int.from_bytes(n[4:], "big") for n in nonces) == list(range(4000))


class WipedInUse:
    """An AESGCM stand-in whose key is retired and wiped while in use: what another thread
    clearing the cache would do between DataKeyCache.hit/peek and the end of the operation."""

    def __init__(self, cache: DataKeyCache) -> None:
        (self.data_key,) = cache._entries.values()
        self.cache, self.real = cache, self.data_key.aead
        self.data_key.aead = self  # type: ignore[assignment]

    def encrypt(self, *args: Any) -> bytes:
        out = self.real.encrypt(*args)
        self.cache.clear()
        assert self.data_key.aead is None and self.data_key.key == bytearray(32)
        return out

    def decrypt(self, *args: Any) -> bytes:
        self.cache.clear()
        raise InvalidTag  # as a build that reads the (now zeroed) key buffer would


def test_a_key_wiped_while_in_use_on_the_hot_path_is_not_used(deployment: Deployment) -> None:
    arn = deployment.target("appointments")["key_arn"]
    crypter = EnvelopeCrypter.with_limits(lambda region: deployment.factory("kms", region))
    first = crypter.encrypt("appointments", "w-1", b"one", key_arn=arn, region=HOME)
    WipedInUse(crypter.encrypt_cache)
    second = crypter.encrypt("appointments", "w-2", b"two", key_arn=arn, region=HOME)
    assert crypter.kms_calls == {("generate_data_key", HOME): 2}, "sealed again under a new key"
    assert env.parse(second).header.edk != env.parse(first).header.edk
    reader = EnvelopeCrypter.with_limits(lambda region: deployment.factory("kms", region))
    assert reader.decrypt(second, data_class="appointments", record_id="w-2", key_arn=arn, region=HOME)
    WipedInUse(reader.decrypt_cache)
    opened = reader.decrypt(second, data_class="appointments", record_id="w-2", key_arn=arn, region=HOME)
    assert opened.plaintext == b"two"
    assert reader.kms_calls == {("decrypt", HOME): 2}, "unwrapped again, not refused"


def test_cache_limits_are_validated() -> None:
    for bad in ({"max_messages": 0}, {"max_messages": 2**32 + 1}, {"max_age_seconds": 0}, {"max_bytes": 0}):
        with pytest.raises(InputError):
            CacheLimits(**bad)


def test_crypter_cache_limits_against_kms(deployment: Deployment) -> None:
    clock = FakeClock()
    crypter = EnvelopeCrypter.with_limits(
        lambda region: deployment.factory("kms", region), CacheLimits(max_messages=5), clock=clock
    )
    arn = deployment.target("appointments")["key_arn"]
    blobs = [crypter.encrypt("appointments", f"r{i}", b"x", key_arn=arn, region=HOME) for i in range(12)]
    assert crypter.kms_calls == {("generate_data_key", HOME): 3}
    assert len({env.parse(b).header.edk for b in blobs}) == 3
    for i, blob in enumerate(blobs):
        crypter.decrypt(blob, data_class="appointments", record_id=f"r{i}", key_arn=arn, region=HOME)
    assert crypter.kms_calls[("decrypt", HOME)] == 3
    clock.now += 301  # every cached key is now too old
    crypter.encrypt("appointments", "r-late", b"x", key_arn=arn, region=HOME)
    crypter.decrypt(blobs[0], data_class="appointments", record_id="r0", key_arn=arn, region=HOME)
    assert crypter.kms_calls == {("generate_data_key", HOME): 4, ("decrypt", HOME): 4}


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


def reencode(blob: bytes, **changes: Any) -> bytes:
    """The same envelope with header fields changed (a forgery: the AAD changes too)."""
    parsed = env.parse(blob)
    return parsed.header._replace(**changes).prefix() + bytes(parsed.body)


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


def tamper_points(blob: bytes) -> dict[str, int]:
    parsed = env.parse(blob)
    header_start, body_start = env.PREFIX.size, len(parsed.aad)
    text = blob[header_start:body_start]
    return {
        "magic": 0,
        "version": 4,
        "length": 8,
        "header-json": header_start,
        "header-nonce": header_start + text.index(b'"nonce":"') + 10,
        "header-edk": header_start + text.index(b'"edk":"') + 20,
        "header-key-arn": header_start + text.index(b'"kms_key_arn":"') + 40,
        "body": body_start,
        "body-middle": body_start + (len(blob) - body_start) // 2,
        "tag": len(blob) - 1,
    }


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


# --------------------------------------------------------------------- end to end


def test_health_document_is_unreadable_by_the_platform(
    deployment: Deployment, people: dict[str, pyrage.x25519.Identity]
) -> None:
    datapath = deployment.datapath()
    record, document = rid(), b"%PDF-1.7 compte rendu: diagnostic confidentiel" * 20
    datapath.put("health-documents", record, document, recipients=recipients(people))

    # The platform role: S3 + KMS. get() without an identity refuses ...
    with pytest.raises(EndToEndError, match="end-to-end encrypted: only the patient's or practitioner's"):
        datapath.get("health-documents", record)
    # ... and everything S3 + KMS can produce is age ciphertext, not the document.
    sealed = datapath.get_sealed("health-documents", record)
    raw = deployment.raw("health-documents", record)
    opened = deployment.datapath().crypter.decrypt(
        raw,
        data_class="health-documents",
        record_id=record,
        key_arn=deployment.target("health-documents")["key_arn"],
        region=HOME,
    )
    assert opened.plaintext == sealed and sealed.startswith(b"age-encryption.org/v1\n-> X25519 ")
    for blob in (sealed, raw):
        assert document not in blob and document[:16] not in blob
    with pytest.raises(pyrage.DecryptError):
        pyrage.decrypt(sealed, [pyrage.x25519.Identity.generate()])  # e.g. a platform-held age key

    # The patient and the practitioner each open it; a third person cannot.
    assert datapath.get("health-documents", record, identity=people["patient"]) == document
    assert datapath.get("health-documents", record, identity=[people["practitioner"]]) == document
    assert dp.open_document(sealed, people["patient"]) == document
    with pytest.raises(EndToEndError, match="this identity cannot open it"):
        datapath.get("health-documents", record, identity=people["stranger"])


def test_e2e_rules(deployment: Deployment, people: dict[str, pyrage.x25519.Identity]) -> None:
    datapath = deployment.datapath()
    with pytest.raises(InputError, match="needs at least one recipient"):
        datapath.put("health-documents", rid(), b"doc")
    with pytest.raises(InputError, match="not an age X25519 recipient"):
        datapath.put("health-documents", rid(), b"doc", recipients=["age1notakey"])
    with pytest.raises(InputError, match="not end-to-end"):
        datapath.put("appointments", rid(), b"x", recipients=recipients(people))
    # A platform writing a health document without e2e (a downgrade) is refused on read.
    record = rid()
    where = deployment.target("health-documents")
    blob = datapath.crypter.encrypt(
        "health-documents", record, b"plain", key_arn=where["key_arn"], region=HOME
    )
    deployment.store_raw("health-documents", record, bytes(blob))
    with pytest.raises(RecordAuthenticationError, match="end-to-end mode none does not match"):
        datapath.get("health-documents", record, identity=people["patient"])


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


# --------------------------------------------------------------------- parser properties


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=600))
def test_parser_arbitrary_bytes(blob: bytes) -> None:
    try:
        env.parse(blob)
    except RecordAuthenticationError:
        pass


HEADER_VALUES = st.one_of(
    st.none(), st.booleans(), st.integers(), st.text(max_size=20), st.binary(max_size=16)
)


@settings(max_examples=300, deadline=None)
@given(
    st.dictionaries(st.sampled_from([*sorted(env.HEADER_FIELDS), "x"]), HEADER_VALUES, max_size=8),
    st.binary(max_size=40),
    st.integers(min_value=0, max_value=2),
)
def test_parser_structured_garbage(fields: dict[str, Any], body: bytes, version: int) -> None:
    doc = {k: base64.b64encode(v).decode() if isinstance(v, bytes) else v for k, v in fields.items()}
    header = json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()
    blob = env.PREFIX.pack(env.MAGIC, version, len(header)) + header + body
    try:
        parsed = env.parse(blob)
    except RecordAuthenticationError:
        return
    assert parsed.header.encode() == header  # only a well-formed, canonical header gets through


ARNS = st.text(
    alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E, exclude_characters='"\\'), min_size=1
)


@settings(max_examples=300, deadline=None)
@given(
    st.from_regex(r"[a-z0-9]{1,10}(-[a-z0-9]{1,10}){0,3}", fullmatch=True),
    st.from_regex(env.RECORD_ID_RE, fullmatch=True),
    ARNS,
    st.binary(min_size=1, max_size=300),
    st.binary(min_size=12, max_size=12),
    st.sampled_from(env.E2E_MODES),
    st.datetimes(min_value=datetime(1000, 1, 1)).map(
        lambda d: d.strftime("%Y-%m-%dT%H:%M:%S.") + f"{d.microsecond // 1000:03d}Z"
    ),
)
def test_header_is_canonical_json_and_round_trips(
    data_class: str, record_id: str, arn: str, edk: bytes, nonce: bytes, e2e: str | None, written: str
) -> None:
    header = env.Header(data_class, record_id, arn, edk, nonce, e2e, written)
    document = {
        "alg": "A256GCM",
        "data_class": data_class,
        "record_id": record_id,
        "kms_key_arn": arn,
        "edk": base64.b64encode(edk).decode(),
        "nonce": base64.b64encode(nonce).decode(),
        "e2e": e2e,
        "written": written,
    }
    assert header.encode() == canonical_json(document)
    assert env.parse(header.prefix() + bytes(16)).header == header


def test_header_refuses_unencodable_fields() -> None:
    for bad in (
        {"kms_key_arn": 'arn"x'},
        {"kms_key_arn": "a b"},
        {"record_id": "a/b"},
        {"e2e": "pgp"},
        {"written": "2026-13-01T00:00:00.000Z"},
        {"written": "yesterday"},
    ):
        fields = {**env.Header("c-1", "r1", "arn:x", b"k", bytes(12))._asdict(), **bad}
        with pytest.raises(InputError):
            env.Header(**fields).encode()


@pytest.fixture(scope="module")
def sealed_record(deployment: Deployment) -> tuple[EnvelopeCrypter, bytes, str]:
    crypter = EnvelopeCrypter.with_limits(lambda region: deployment.factory("kms", region))
    arn = deployment.target("appointments")["key_arn"]
    blob = bytes(
        crypter.encrypt("appointments", "prop-1", b"property test body" * 4, key_arn=arn, region=HOME)
    )
    return crypter, blob, arn


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.data())
def test_any_mutation_of_an_envelope_is_refused(
    sealed_record: tuple[EnvelopeCrypter, bytes, str], data: st.DataObject
) -> None:
    crypter, blob, arn = sealed_record
    index = data.draw(st.integers(min_value=0, max_value=len(blob) - 1))
    mask = data.draw(st.integers(min_value=1, max_value=255))
    mutated = bytearray(blob)
    mutated[index] ^= mask
    try:
        crypter.decrypt(
            bytes(mutated), data_class="appointments", record_id="prop-1", key_arn=arn, region=HOME
        )
    except RecordAuthenticationError:
        return
    raise AssertionError(f"a mutation at byte {index} was accepted")


def test_a_warm_reader_refuses_every_header_mutation_too(
    deployment: Deployment, sealed_record: tuple[EnvelopeCrypter, bytes, str]
) -> None:
    """Once a reader has opened a record, later headers with the same per-key part take the
    short parse (_parse_known): it must refuse exactly what the full parser refuses."""
    _, blob, arn = sealed_record
    reader = EnvelopeCrypter.with_limits(lambda region: deployment.factory("kms", region))
    opened = reader.decrypt(blob, data_class="appointments", record_id="prop-1", key_arn=arn, region=HOME)
    assert opened.header == env.parse(blob).header
    short = reader._parse_known(memoryview(blob), "appointments", "prop-1")
    assert short is not None and short[0] == opened.header  # the short parse is armed and agrees
    assert reader.decrypt(
        blob, data_class="appointments", record_id="prop-1", key_arn=arn, region=HOME
    ) == opened
    aad_end = len(env.parse(blob).aad)
    for index in range(aad_end):
        for mask in (0x01, 0x20, 0x80):
            mutated = bytearray(blob)
            mutated[index] ^= mask
            with pytest.raises(RecordAuthenticationError):
                reader.decrypt(
                    bytes(mutated), data_class="appointments", record_id="prop-1", key_arn=arn, region=HOME
                )
    with pytest.raises(RecordAuthenticationError, match="wrong class or record id"):
        reader.decrypt(blob, data_class="appointments", record_id="prop-2", key_arn=arn, region=HOME)


def test_written_times_are_checked_as_calendar_times() -> None:
    for good in ("2024-02-29T23:59:59.999Z", "1970-01-01T00:00:00.000Z", env.written_now()):
        assert env._valid_written(good), good
    for bad in (
        "2026-02-29T00:00:00.000Z",  # not a leap year
        "2026-13-01T00:00:00.000Z",
        "2026-01-01T24:00:00.000Z",
        "2026-01-01T00:00:60.000Z",
        "0000-01-01T00:00:00.000Z",
        "2026-01-01T00:00:00.000",
        "2026-01-01 00:00:00.000Z",
        "\u0662026-01-01T00:00:00.000Z",  # a non-ASCII digit
    ):
        assert not env._valid_written(bad), bad


# --------------------------------------------------------------------- CLI


def test_cli_put_get(
    deployment: Deployment,
    people: dict[str, pyrage.x25519.Identity],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name, value in deployment.localstack.client_env().items():
        monkeypatch.setenv(name, value)
    outputs = tmp_path / "stack-outputs.json"
    outputs.write_text(json.dumps({"primary_region": HOME, "classes": deployment.classes}))
    common = ["--outputs", str(outputs), "--lab", str(deployment.lab)]
    runner = CliRunner()
    note, document = tmp_path / "note.txt", tmp_path / "report.pdf"
    note.write_bytes(b"rendez-vous mardi")
    document.write_bytes(b"%PDF secret diagnostic")
    identity = tmp_path / "patient.key"
    identity.write_text(f"# patient\n{people['patient']}\n")
    stranger = tmp_path / "stranger.key"
    stranger.write_text(f"{people['stranger']}\n")

    def run(*args: str) -> Any:
        return runner.invoke(data_cli.app, [*args, *common])

    done = run("put", "--class", "appointments", "--id", "cli-1", "--file", str(note))
    assert done.exit_code == 0, done.output
    assert "s3://" in done.stdout and "TLS verified against the lab's own CA" in done.stdout
    out = tmp_path / "out" / "note.txt"
    done = run("get", "--class", "appointments", "--id", "cli-1", "--out", str(out))
    assert done.exit_code == 0 and out.read_bytes() == b"rendez-vous mardi"

    args = ["--class", "health-documents", "--id", "cli-doc"]
    rec = [x for r in recipients(people) for x in ("--recipient", r)]
    done = run("put", *args, "--file", str(document), *rec)
    assert done.exit_code == 0, done.output
    assert "end to end (age) to 2 recipient(s)" in done.stdout
    refused = run("get", *args)
    assert refused.exit_code == 1
    assert "end-to-end encrypted" in refused.stderr and len(refused.stderr.strip().splitlines()) == 1
    assert b"secret" not in refused.stdout_bytes
    done = run("get", *args, "--identity", str(identity))
    assert done.exit_code == 0 and done.stdout_bytes == b"%PDF secret diagnostic"
    sealed = tmp_path / "doc.age"
    done = run("get", *args, "--sealed", "--out", str(sealed))
    assert done.exit_code == 0
    assert pyrage.decrypt(sealed.read_bytes(), [people["practitioner"]]) == b"%PDF secret diagnostic"
    refused = run("get", *args, "--identity", str(stranger))
    assert refused.exit_code == 1 and "cannot open it" in refused.stderr

    for bad in (
        ["get", "--class", "appointments", "--id", "../x"],
        ["get", "--class", "nope", "--id", "x1"],
        ["get", "--class", "appointments", "--id", "missing-1"],
        ["put", "--class", "appointments", "--id", "x1", "--file", str(tmp_path / "absent")],
    ):
        refused = run(*bad)
        assert refused.exit_code == 1, bad
        assert refused.stderr.startswith("error:") and len(refused.stderr.strip().splitlines()) == 1, bad


def test_errors_are_clefs_errors() -> None:
    for error in (
        RecordAuthenticationError,
        env.KeyServiceError,
        DataPathError,
        RecordNotFound,
        EndToEndError,
    ):
        assert issubclass(error, ClefsError)


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
