"""Shared helpers of the data-path tests (the deployment they run against, record helpers)."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyrage

from hsm_lab.aws.deployment import TlsPin
from hsm_lab.aws.localstack import LocalStack
from hsm_lab.datapath import DataPath
from hsm_lab.datapath import envelope as env
from hsm_lab.datapath import store as dp
from hsm_lab.datapath.envelope import (
    DataKey,
)

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


def rid() -> str:
    return f"rec-{uuid.uuid4().hex[:12]}"


def recipients(people: dict[str, pyrage.x25519.Identity]) -> list[str]:
    return [str(people["patient"].to_public()), str(people["practitioner"].to_public())]


def flip(blob: bytes, index: int) -> bytes:
    tampered = bytearray(blob)
    tampered[index] ^= 0x01
    return bytes(tampered)


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


def reencode(blob: bytes, **changes: Any) -> bytes:
    """The same envelope with header fields changed (a forgery: the AAD changes too)."""
    parsed = env.parse(blob)
    return parsed.header._replace(**changes).prefix() + bytes(parsed.body)


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
