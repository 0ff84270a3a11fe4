"""The references a Clefs data-path figure is compared with, for bench/datapath.py.

- plain S3: boto3 put_object / get_object with SSE-KMS under the same class key
  (BucketKeyEnabled, as DataPath stores them), against DataPath.put / DataPath.get;
- the AWS Encryption SDK (caching CMM, committing suite without signature), the library a
  user would otherwise pick for envelope encryption.

Also the measurement helpers and the record sizes both scripts share. Split out of
bench/datapath.py so each script stays one readable page; run bench/datapath.py, not this.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Protocol

from hsm_lab.aws.deployment import ClientFactory
from hsm_lab.datapath import DataPath
from infra.model.settings import DEFAULT_PRIMARY_REGION

REGION = DEFAULT_PRIMARY_REGION
CLASS = "appointments"
SIZES = (("4 KiB", 4 << 10), ("64 KiB", 64 << 10), ("1 MiB", 1 << 20))
RING = 16
ESDK_MIB = 2  # MiB per ESDK loop (it is far slower per record; enough for a stable median)


class ClefsRates(Protocol):
    label: str
    mbps: dict[str, float]


def seconds(loop: Callable[[], None], clock: Callable[[], float] = time.thread_time) -> float:
    """How long `loop` took: CPU time of this thread by default (in-process crypto loops: what
    other processes on a shared machine do is not counted), wall time for threaded I/O loops."""
    began = clock()
    loop()
    return clock() - began


@dataclass
class S3Compare:
    records: int
    threads: int
    rate: dict[str, float]  # records/s, median
    ratio_put: float
    ratio_get: float


def s3_compare(
    factory: ClientFactory, key_arn: str, bucket: str, records: int, threads: int, rounds: int
) -> S3Compare:
    """DataPath.put/get against plain put_object/get_object with SSE-KMS, same 4 KiB records."""
    classes = {CLASS: {"end_to_end": False, "regions": {REGION: {"key_arn": key_arn, "bucket": bucket}}}}
    path = DataPath(factory, classes)
    s3 = factory("s3", REGION)
    data = os.urandom(4 << 10)
    ids = [f"cmp-{i:05d}" for i in range(records)]

    def plain_put(record: str) -> None:
        s3.put_object(
            Bucket=bucket,
            Key=f"plain/{record}",
            Body=data,
            ContentType="application/octet-stream",
            ServerSideEncryption="aws:kms",
            SSEKMSKeyId=key_arn,
            BucketKeyEnabled=True,
        )

    def plain_get(record: str) -> None:
        assert s3.get_object(Bucket=bucket, Key=f"plain/{record}")["Body"].read() == data

    def clefs_get(record: str) -> None:
        assert path.get(CLASS, record) == data

    loops: dict[str, Callable[[str], object]] = {
        "clefs put": lambda record: path.put(CLASS, record, data),
        "plain put": plain_put,
        "clefs get": clefs_get,
        "plain get": plain_get,
    }
    times: dict[str, list[float]] = {name: [] for name in loops}
    order = random.Random(records)  # noqa: S311 -- loop order, not crypto
    with ThreadPoolExecutor(threads) as pool:
        for name in loops:  # warm-up: clients, connections, data keys, key state; objects exist
            list(pool.map(loops[name], ids[:threads]))
        for _ in range(rounds):
            for pair in (("clefs put", "plain put"), ("clefs get", "plain get")):
                for name in order.sample(pair, 2):
                    loop = lambda name=name: list(pool.map(loops[name], ids))  # noqa: E731
                    times[name].append(seconds(loop, time.perf_counter))
    return S3Compare(
        records,
        threads,
        {name: records / statistics.median(values) for name, values in times.items()},
        statistics.median(p / c for p, c in zip(times["plain put"], times["clefs put"], strict=True)),
        statistics.median(p / c for p, c in zip(times["plain get"], times["clefs get"], strict=True)),
    )


def esdk_reference(factory: ClientFactory, key_arn: str, rounds: int) -> list[tuple[str, float, float]] | str:
    """(record size, encrypt MB/s, decrypt MB/s) with the AWS Encryption SDK, or why not."""
    try:
        import aws_encryption_sdk
        from aws_encryption_sdk.caches.local import LocalCryptoMaterialsCache
        from aws_encryption_sdk.identifiers import Algorithm, CommitmentPolicy
        from aws_encryption_sdk.key_providers.kms import KMSMasterKey
        from aws_encryption_sdk.materials_managers.caching import CachingCryptoMaterialsManager
    except ImportError as exc:
        return f"not installed ({exc})"
    client = aws_encryption_sdk.EncryptionSDKClient(
        commitment_policy=CommitmentPolicy.REQUIRE_ENCRYPT_REQUIRE_DECRYPT
    )
    cmm = CachingCryptoMaterialsManager(
        master_key_provider=KMSMasterKey(key_id=key_arn, client=factory("kms", REGION)),
        cache=LocalCryptoMaterialsCache(capacity=100),
        max_age=300.0,
        max_messages_encrypted=4096,
    )
    context = {"data_class": CLASS}
    suite = Algorithm.AES_256_GCM_HKDF_SHA512_COMMIT_KEY
    rows = []
    for label, size in SIZES:
        data = os.urandom(size)
        count = max(RING, (ESDK_MIB << 20) // size)
        ring = [
            client.encrypt(source=data, materials_manager=cmm, algorithm=suite, encryption_context=context)[0]
            for _ in range(RING)
        ]
        for sealed in ring:  # warm the decryption cache and check
            assert client.decrypt(source=sealed, materials_manager=cmm)[0] == data

        def enc(data: bytes = data, count: int = count) -> None:
            for _ in range(count):
                client.encrypt(
                    source=data, materials_manager=cmm, algorithm=suite, encryption_context=context
                )

        def dec(ring: list[bytes] = ring, count: int = count) -> None:
            for i in range(count):
                client.decrypt(source=ring[i % RING], materials_manager=cmm)

        volume = count * size / 1e6
        rows.append(
            (
                label,
                volume / statistics.median(seconds(enc) for _ in range(rounds)),
                volume / statistics.median(seconds(dec) for _ in range(rounds)),
            )
        )
    return rows


def print_compare(args: argparse.Namespace, compared: S3Compare | None) -> None:
    if compared:
        r = compared.rate
        print()
        print(
            f"DataPath vs plain S3 SSE-KMS, records/s: {compared.records} records of 4 KiB, "
            f"{compared.threads} threads, median of {args.compare_rounds} loops"
        )
        print(
            f"  put: DataPath {r['clefs put']:.0f}, put_object {r['plain put']:.0f}"
            f" -> {compared.ratio_put:.0%}"
        )
        print(
            f"  get: DataPath {r['clefs get']:.0f}, get_object {r['plain get']:.0f}"
            f" -> {compared.ratio_get:.0%}"
        )


def print_esdk(
    args: argparse.Namespace, esdk: list[tuple[str, float, float]] | str, rows: Sequence[ClefsRates]
) -> None:
    print()
    if isinstance(esdk, str):
        print(f"ESDK reference: {esdk}")
    else:
        print(
            f"ESDK reference (caching CMM, AES_256_GCM_HKDF_SHA512_COMMIT_KEY), MB/s: "
            f"median of {args.esdk_rounds} loops of {ESDK_MIB} MiB"
        )
        print(f"{'record':>7} | {'ESDK enc':>8} {'clefs/ESDK':>10} | {'ESDK dec':>8} {'clefs/ESDK':>10}")
        for (label, enc, dec), row in zip(esdk, rows, strict=True):
            print(
                f"{label:>7} | {enc:>8.1f} {row.mbps['clefs enc'] / enc:>9.1f}x | "
                f"{dec:>8.1f} {row.mbps['clefs dec'] / dec:>9.1f}x"
            )
