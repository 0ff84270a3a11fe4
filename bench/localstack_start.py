"""LocalStack in host mode: venv check, cold and warm start-to-healthy, RSS, stop time.

    .venv/bin/python bench/localstack_start.py [--runs N]

Each run starts a LocalStack on a free loopback port in a fresh temporary lab (cold: no
service-catalog cache) and then again in the same lab (warm), makes one S3 and one KMS call,
and stops it by PID. Nothing is left running.
"""

from __future__ import annotations

import argparse
import socket
import tempfile
import time
from pathlib import Path

from hsm_lab.aws import localstack as ls


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def mib(size: int | None) -> str:
    return f"{(size or 0) / (1 << 20):.0f} MiB"


def one(lab: Path, label: str) -> None:
    instance = ls.start(lab, free_port())
    try:
        assert instance.pid is not None
        rss_idle = ls.status(lab).rss_bytes
        began = time.monotonic()
        kms = instance.client("kms")
        key = kms.create_key()["KeyMetadata"]["KeyId"]
        kms.encrypt(KeyId=key, Plaintext=b"x")
        instance.client("s3").list_buckets()
        first_calls = time.monotonic() - began
        rss_used = ls.status(lab).rss_bytes
    finally:
        began = time.monotonic()
        ls.stop(lab)
        stopped = time.monotonic() - began
    print(
        f"{label:5} start->healthy {instance.startup_seconds:5.2f} s | RSS idle {mib(rss_idle)}, "
        f"after first S3+KMS calls {mib(rss_used)} ({first_calls:.2f} s) | stop {stopped:.2f} s"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=1)
    args = parser.parse_args()
    began = time.monotonic()
    python = ls.ensure_venv(echo=print)
    print(f"venv  ensure_venv {time.monotonic() - began:.2f} s ({python})")
    for _ in range(args.runs):
        with tempfile.TemporaryDirectory(prefix="clefs-ls-bench-") as lab:
            one(Path(lab), "cold")
            one(Path(lab), "warm")


if __name__ == "__main__":
    main()
