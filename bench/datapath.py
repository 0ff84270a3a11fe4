"""Data path: envelope throughput vs raw AES-256-GCM, and KMS calls per 10,000 records.

    .venv/bin/python bench/datapath.py [--rounds N] [--mib N] [--s3-records N] [--threads N]

Throughput, for 4 KiB, 64 KiB and 1 MiB records, in this one process and run, on the same
plaintext, raw and clefs alternating loop by loop:
  raw    AESGCM(key).encrypt(random nonce, data) / .decrypt -- cryptography, nothing else
  clefs  EnvelopeCrypter.encrypt / .decrypt: clefs.envelope/v2 with cached KMS data keys,
         KMS = the real LocalStack over pinned HTTPS; put-shaped (plaintext -> S3 body) and
         get-shaped (S3 body -> plaintext, class and record id checked), without the S3 trip.
Encrypt loops drop each output (as a put hands it to S3); decrypt loops cycle over 16 stored
bodies. Raw and clefs run as adjacent loops in random order; the ratio is taken per pair and
its median printed with the median MB/s. Loops are timed in CPU time of the benchmarking thread
(time.thread_time): the machine may be shared, and wall time then counts the other processes'
turns (at load 5 single 4 KiB loops moved by 3x in wall time). KMS calls inside timed loops are
counted and shown (their network wait is not CPU time: there are 0-3 per size).

KMS calls per 10,000 records: 10,000 records of 4 KiB sealed by a fresh writer and opened by
a fresh reader (empty caches), counting GenerateDataKey and Decrypt. Then --s3-records records
go through the whole DataPath (put/get with S3 SSE-KMS over HTTPS) and their KMS calls are
shown too (S3's own calls to KMS for SSE-KMS are not the application's and are not counted).

DataPath vs plain S3 (same run): --compare-records records of 4 KiB with --compare-threads
threads, DataPath.put / DataPath.get against boto3 put_object / get_object with SSE-KMS under the
same class key (BucketKeyEnabled, as DataPath stores them), alternating, median of the pair ratios
(wall time: threads and network).

AWS Encryption SDK reference (what a user would otherwise pick): the same plaintexts through
EncryptionSDKClient with a caching CMM (same limits: 300 s, 4096 messages) over the same KMS key,
committing suite without signature (AES_256_GCM_HKDF_SHA512_COMMIT_KEY), context {"data_class"}
(CPU time, as the throughput loops).

LocalStack: a healthy configured one is used (docs/localstack.md); otherwise one is started in
a temporary lab on the configured loopback port and stopped at the end.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from cryptography import __version__ as cryptography_version
from cryptography.hazmat.backends.openssl import backend
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from datapath_reference import (  # bench/ is on sys.path when this script runs
    CLASS,
    REGION,
    RING,
    SIZES,
    S3Compare,
    esdk_reference,
    print_compare,
    print_esdk,
    s3_compare,
    seconds,
)

from hsm_lab.aws import localstack as ls
from hsm_lab.aws.deployment import ClientFactory, localstack_clients
from hsm_lab.datapath import DataPath
from hsm_lab.datapath.envelope import EnvelopeCrypter

GOAL_RATIO = {"4 KiB": 0.50, "64 KiB": 0.85}  # of raw AES-256-GCM, encrypt and decrypt
GOAL_S3 = 0.90  # DataPath put/get at least 90% of plain S3 SSE-KMS records/s
GOAL_KMS = 10
KMS_RECORDS = 10_000


@dataclass
class Row:
    label: str
    count: int
    mbps: dict[str, float]
    ratio_enc: float
    ratio_dec: float
    kms_calls: int


class Case:
    """One record size: raw AES-GCM and clefs, encrypt and decrypt loops."""

    def __init__(self, factory: ClientFactory, key_arn: str, size: int, count: int) -> None:
        self.size, self.count, self.key_arn = size, count, key_arn
        self.data = os.urandom(size)
        self.ids = [f"bench-{i}" for i in range(count)]
        self.raw = AESGCM(AESGCM.generate_key(256))
        self.writer = EnvelopeCrypter.with_limits(lambda region: factory("kms", region))
        self.reader = EnvelopeCrypter.with_limits(lambda region: factory("kms", region))
        self.raw_ring = []
        for _ in range(RING):
            nonce = os.urandom(12)
            self.raw_ring.append((nonce, self.raw.encrypt(nonce, self.data, None)))
        self.blob_ring = [bytes(self.seal(self.ids[i])) for i in range(RING)]
        for i in range(RING):  # warm the reader's cache and check
            assert self.open(i) == self.data

    def seal(self, record: str) -> bytes | bytearray:
        return self.writer.encrypt(CLASS, record, self.data, key_arn=self.key_arn, region=REGION)

    def open(self, i: int) -> bytes:
        return self.reader.decrypt(
            self.blob_ring[i % RING],
            data_class=CLASS,
            record_id=self.ids[i % RING],
            key_arn=self.key_arn,
            region=REGION,
        ).plaintext

    @property
    def kms_calls(self) -> int:
        return self.writer.kms_call_count + self.reader.kms_call_count

    def raw_enc(self) -> None:
        encrypt, data = self.raw.encrypt, self.data
        for _ in range(self.count):
            encrypt(os.urandom(12), data, None)

    def clefs_enc(self) -> None:
        for record in self.ids:
            self.seal(record)

    def raw_dec(self) -> None:
        decrypt, ring = self.raw.decrypt, self.raw_ring
        for i in range(self.count):
            nonce, sealed = ring[i % RING]
            decrypt(nonce, sealed, None)

    def clefs_dec(self) -> None:
        for i in range(self.count):
            self.open(i)


def throughput(factory: ClientFactory, key_arn: str, rounds: int, mib: int) -> list[Row]:
    rows = []
    for label, size in SIZES:
        count = max(RING, min(20_000, (mib << 20) // size))
        case = Case(factory, key_arn, size, count)
        calls_before = case.kms_calls
        times: dict[str, list[float]] = {"raw enc": [], "clefs enc": [], "raw dec": [], "clefs dec": []}
        order = random.Random(size)  # noqa: S311 -- loop order, not crypto
        for _ in range(rounds):
            for pair in (
                (("raw enc", case.raw_enc), ("clefs enc", case.clefs_enc)),
                (("raw dec", case.raw_dec), ("clefs dec", case.clefs_dec)),
            ):
                for name, loop in order.sample(pair, 2):  # which goes first is random per round
                    times[name].append(seconds(loop))
        volume = count * size / 1e6
        rows.append(
            Row(
                label,
                count,
                {name: volume / statistics.median(values) for name, values in times.items()},
                statistics.median(r / c for r, c in zip(times["raw enc"], times["clefs enc"], strict=True)),
                statistics.median(r / c for r, c in zip(times["raw dec"], times["clefs dec"], strict=True)),
                case.kms_calls - calls_before,
            )
        )
    return rows


def kms_calls_envelope(factory: ClientFactory, key_arn: str, records: int) -> tuple[int, int]:
    writer = EnvelopeCrypter.with_limits(lambda region: factory("kms", region))
    reader = EnvelopeCrypter.with_limits(lambda region: factory("kms", region))
    data = os.urandom(4 << 10)
    for i in range(records):
        blob = writer.encrypt(CLASS, f"k-{i}", data, key_arn=key_arn, region=REGION)
        assert (
            reader.decrypt(
                blob, data_class=CLASS, record_id=f"k-{i}", key_arn=key_arn, region=REGION
            ).plaintext
            == data
        )
    return writer.kms_call_count, reader.kms_call_count


def kms_calls_s3(
    factory: ClientFactory, key_arn: str, bucket: str, records: int, threads: int
) -> tuple[int, int, float]:
    classes = {CLASS: {"end_to_end": False, "regions": {REGION: {"key_arn": key_arn, "bucket": bucket}}}}
    writer, reader = DataPath(factory, classes), DataPath(factory, classes)
    ids = [f"s3-{i:05d}" for i in range(records)]
    data = os.urandom(4 << 10)
    began = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(lambda record: writer.put(CLASS, record, data), ids))
        assert all(plain == data for plain in pool.map(lambda record: reader.get(CLASS, record), ids))
    return sum(writer.kms_calls.values()), sum(reader.kms_calls.values()), time.perf_counter() - began


def drop_bucket(s3, bucket: str) -> None:
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        keys = [{"Key": item["Key"]} for item in page.get("Contents", [])]
        if keys:
            s3.delete_objects(Bucket=bucket, Delete={"Objects": keys, "Quiet": True})
    s3.delete_bucket(Bucket=bucket)


def verdict(ok: bool) -> str:
    return "met" if ok else "MISSED"


def print_throughput(args: argparse.Namespace, rows: list[Row]) -> None:

    print()
    print(
        f"throughput, MB/s of CPU time: median of {args.rounds} loops of {args.mib} MiB; "
        "ratio = median of adjacent pairs"
    )
    print(
        f"{'record':>7} {'n/loop':>6} | {'raw enc':>8} {'clefs enc':>9} {'ratio':>6} | "
        f"{'raw dec':>8} {'clefs dec':>9} {'ratio':>6} | KMS calls in timed loops"
    )
    for row in rows:
        m = row.mbps
        print(
            f"{row.label:>7} {row.count:>6} | {m['raw enc']:>8.0f} {m['clefs enc']:>9.0f} "
            f"{row.ratio_enc:>6.0%} | {m['raw dec']:>8.0f} {m['clefs dec']:>9.0f} {row.ratio_dec:>6.0%} | "
            f"{row.kms_calls}"
        )


def print_kms(
    args: argparse.Namespace, total: int, writes: int, reads: int, s3_pass: tuple[int, int, float] | None
) -> None:
    print()
    print(
        f"KMS calls for {KMS_RECORDS} records of 4 KiB (fresh caches): sealing {writes} GenerateDataKey, "
        f"opening {reads} Decrypt, total {total}"
    )
    if s3_pass:
        print(
            f"through S3 (DataPath put then get, {args.s3_records} records, {args.threads} threads, "
            f"{s3_pass[2]:.1f} s): put {s3_pass[0]} GenerateDataKey, get {s3_pass[1]} Decrypt"
        )


def print_goals(rows: list[Row], compared: S3Compare | None, total: int) -> bool:
    print()
    ok = True
    for row in rows:
        goal = GOAL_RATIO.get(row.label)
        if goal is None:
            continue
        met = row.ratio_enc >= goal and row.ratio_dec >= goal
        ok &= met
        print(
            f"goal: {row.label} encrypt and decrypt at least {goal:.0%} of raw AES-256-GCM: "
            f"{row.ratio_enc:.0%} / {row.ratio_dec:.0%} -> {verdict(met)}"
        )
    if compared:
        met = compared.ratio_put >= GOAL_S3 and compared.ratio_get >= GOAL_S3
        ok &= met
        print(
            f"goal: DataPath put/get within {1 - GOAL_S3:.0%} of plain S3 SSE-KMS: "
            f"{compared.ratio_put:.0%} / {compared.ratio_get:.0%} -> {verdict(met)}"
        )
    print(
        f"goal: at most {GOAL_KMS} KMS calls per {KMS_RECORDS} records: {total} "
        f"-> {verdict(total <= GOAL_KMS)}"
    )
    return ok and total <= GOAL_KMS


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=21, help="timed loops per size and kind (median)")
    parser.add_argument("--mib", type=int, default=16, help="MiB per timed loop")
    parser.add_argument("--s3-records", type=int, default=1000, help="records through S3 (0: skip)")
    parser.add_argument("--threads", type=int, default=8, help="client threads for the S3 pass")
    parser.add_argument("--compare-records", type=int, default=400, help="records per DataPath vs S3 loop")
    parser.add_argument("--compare-threads", type=int, default=4, help="client threads, DataPath vs S3")
    parser.add_argument("--compare-rounds", type=int, default=5, help="loops per kind, DataPath vs S3")
    parser.add_argument("--esdk-rounds", type=int, default=5, help="loops per size and kind, ESDK")
    args = parser.parse_args()

    lab = Path(tempfile.mkdtemp(prefix="clefs-bench-datapath-"))
    try:
        with ls.running(lab, echo=lambda m: print(f"  {m}", file=sys.stderr)) as instance:
            started = "started for this bench, stopped at the end" if instance.owned else "already running"
            factory, pin = localstack_clients(instance.endpoint, lab, ca=instance.ca)
            print(f"LocalStack {instance.version or ''} at {instance.endpoint} ({started})")
            print(f"clients: {pin.url}; {pin.describe()}")
            print(
                f"cryptography {cryptography_version}, {backend.openssl_version_text()}, "
                f"Python {sys.version.split()[0]}, {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}"
            )
            kms, s3 = factory("kms", REGION), factory("s3", REGION)
            key = kms.create_key(Description="clefs bench datapath")["KeyMetadata"]
            bucket = f"clefs-bench-{uuid.uuid4().hex[:12]}"
            s3.create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": REGION})
            try:
                rows = throughput(factory, key["Arn"], args.rounds, args.mib)
                writes, reads = kms_calls_envelope(factory, key["Arn"], KMS_RECORDS)
                s3_pass = (
                    kms_calls_s3(factory, key["Arn"], bucket, args.s3_records, args.threads)
                    if args.s3_records
                    else None
                )
                compared = (
                    s3_compare(
                        factory,
                        key["Arn"],
                        bucket,
                        args.compare_records,
                        args.compare_threads,
                        args.compare_rounds,
                    )
                    if args.compare_records
                    else None
                )
                esdk = esdk_reference(factory, key["Arn"], args.esdk_rounds)
            finally:
                drop_bucket(s3, bucket)
                kms.schedule_key_deletion(KeyId=key["KeyId"], PendingWindowInDays=7)
    finally:
        shutil.rmtree(lab, ignore_errors=True)

    total = writes + reads
    print_throughput(args, rows)
    print_kms(args, total, writes, reads, s3_pass)
    print_compare(args, compared)
    print_esdk(args, esdk, rows)
    return 0 if print_goals(rows, compared, total) else 1


if __name__ == "__main__":
    sys.exit(main())
