"""The object scan: every object version of a bucket (paginated, bounded), its first bytes read."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from hsm_lab import errors
from hsm_lab.compliance.report import _call, _code
from hsm_lab.datapath import envelope
from hsm_lab.datapath.envelope_format import HEADER_BYTES as HEADER_BYTES


@dataclass
class Stored:
    """One object version as S3 returns it (first bytes only)."""

    key: str
    version_id: str
    sse: str | None
    kms_key: str | None
    header: envelope.Header | None
    aad: bytes | None
    error: str | None = None


@dataclass
class Scan:
    objects: list[Stored]
    truncated: bool
    error: str | None = None


def list_versions(s3: Any, bucket: str, limit: int) -> tuple[list[dict[str, Any]], bool, str | None]:
    """Every object version of the bucket (delete markers aside), at most `limit` (+ truncated)."""
    found: list[dict[str, Any]] = []
    try:
        for page in s3.get_paginator("list_object_versions").paginate(Bucket=bucket):
            found += page.get("Versions", [])
            if len(found) > limit:
                return found[:limit], True, None
    except ClientError as exc:
        return [], False, _code(exc)
    except BotoCoreError as exc:
        raise errors.ClefsError(f"cannot read live state: {' '.join(str(exc).split())[:200]}") from None
    return found, False, None


def read_stored(s3: Any, bucket: str, version: Mapping[str, Any]) -> Stored:
    key, version_id = str(version["Key"]), str(version.get("VersionId") or "null")
    extra = {"VersionId": version_id} if version_id != "null" else {}
    answer, error = _call(
        lambda: s3.get_object(Bucket=bucket, Key=key, Range=f"bytes=0-{HEADER_BYTES - 1}", **extra)
    )
    if error:
        return Stored(key, version_id, None, None, None, None, error)
    parsed = envelope.read_header(answer["Body"].read())
    header, aad = parsed if parsed else (None, None)
    return Stored(key, version_id, answer.get("ServerSideEncryption"), answer.get("SSEKMSKeyId"), header, aad)
