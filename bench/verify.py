"""Time `verify` on 3 classes x 2 regions with N stored objects per bucket (goal: < 10 s at 1,000).

    .venv/bin/python bench/verify.py [--objects 1000] [--runs 3]

Starts its own LocalStack (free loopback port, temporary lab), applies the real program through
the harness, and stores N objects per bucket: well-formed clefs.envelope/v2 headers under each
class key (random wrapped key and body: verify reads headers, it does not decrypt), SSE-KMS
under the class key, the same bytes in the replica bucket (what S3 replication would copy).
Then times `assess` (the whole of `hsm-lab verify` after the outputs are read) and prints the
figures. Asserts nothing; stops the LocalStack it started.
"""

from __future__ import annotations

import argparse
import base64
import os
import socket
import statistics
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from hsm_lab.aws import localstack as ls
from hsm_lab.aws.deployment import lab_account, localstack_clients
from hsm_lab.compliance import assess
from hsm_lab.datapath import envelope
from infra.harness import apply

GOAL_SECONDS = 10.0


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def fake_record(data_class: str, record_id: str, key_arn: str, e2e: bool) -> bytes:
    header = envelope.encode_header(
        data_class,
        record_id,
        key_arn,
        base64.b64encode(os.urandom(184)).decode(),
        base64.b64encode(os.urandom(12)).decode(),
        envelope.E2E_AGE if e2e else None,
        envelope.written_now(),
    )
    return envelope.PREFIX.pack(envelope.MAGIC, envelope.VERSION, len(header)) + header + os.urandom(600)


def stock(outputs: dict, client_for, objects: int) -> float:
    began = time.perf_counter()
    primary = outputs["primary_region"]
    jobs = []
    for data_class, spec in outputs["classes"].items():
        source = spec["regions"][primary]
        for number in range(objects):
            record_id = f"r{number:06d}"
            blob = fake_record(data_class, record_id, source["key_arn"], bool(spec["end_to_end"]))
            for region, where in spec["regions"].items():
                jobs.append((region, where, f"{data_class}/{record_id}", blob))

    def put(job: tuple) -> None:
        region, where, key, blob = job
        client_for("s3", region).put_object(
            Bucket=where["bucket"], Key=key, Body=blob, ServerSideEncryption="aws:kms",
            SSEKMSKeyId=where["key_arn"], BucketKeyEnabled=True,
        )

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(put, jobs))
    return time.perf_counter() - began


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--objects", type=int, default=1000, help="objects per bucket")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--workers", type=int, nargs="+", default=[8], help="threads reading objects")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="clefs-verify-bench-") as tmp:
        lab = Path(tmp) / "lab"
        instance = ls.start(lab, free_port())
        try:
            client_for, _pin = localstack_clients(
                instance.endpoint, lab, ca=instance.ca, account_id=lab_account(lab)
            )
            recording, _mocks = apply(instance.endpoint, client_for, state_path=lab / "stack-state.json")
            outputs = recording.outputs
            buckets = 2 * len(outputs["classes"])
            spent = stock(outputs, client_for, args.objects)
            print(f"stored {args.objects} objects in each of {buckets} buckets in {spent:.1f} s")
            times = []
            for run, workers in enumerate(
                [w for w in args.workers for _ in range(args.runs)], start=1
            ):
                began = time.perf_counter()
                report = assess(outputs, client_for, workers=workers)
                times.append(time.perf_counter() - began)
                print(
                    f"run {run} ({workers} threads): verify {times[-1]:.2f} s, "
                    f"{report.objects_scanned} object versions read "
                    f"({report.objects_scanned / times[-1]:.0f}/s), {len(report.gaps)} gap(s) "
                    f"(keys not imported in this bench: {sum('key:' in g for g in report.gaps)})"
                )
            median = statistics.median(times)
            verdict = "meets" if median < GOAL_SECONDS else "MISSES"
            print(f"median {median:.2f} s for {buckets} x {args.objects} objects: {verdict} the "
                  f"{GOAL_SECONDS:.0f} s goal")
        finally:
            ls.stop(lab)


if __name__ == "__main__":
    main()
