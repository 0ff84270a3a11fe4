"""The record archived where auditors look: the transcript bucket (S3 Object Lock, compliance mode).

After each BYOK step, and whenever `hsm-lab transcript upload` runs (after each ceremony step
on ceremony day), the ceremony role writes the signed transcript, its head and the pinned
signer under `transcripts/<pinned signer>/<seq>-<head>/`. The bucket's default retention
(clefs:transcriptRetentionDays, COMPLIANCE mode) keeps every version from deletion or
overwrite on AWS; LocalStack stores the setting but enforces nothing (docs/localstack.md).
`verify` reads the newest archive back, checks it as an auditor's bundle would (chain,
manifest-free signer check, head signature by an authorised signer) and compares it with the
lab's own record: it must be a prefix of the lab's chain.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from hsm_lab import errors
from hsm_lab.ceremony.record import RecordState
from hsm_lab.ceremony.transcripts import check_chain, parse_lines, verify_head_signature

PREFIX = "transcripts"


class ArchiveError(errors.ClefsError):
    """The archive could not be written, read, or does not match the lab's record."""


def folder(state: RecordState) -> str:
    head = state.entries[-1]
    return f"{PREFIX}/{state.anchor.fingerprint[:16]}/{head['seq']:08d}-{head['hash'][:16]}/"


def upload(state: RecordState, transcript: bytes, head: bytes, s3: Any, bucket: str) -> str:
    """Write this head's archive (three objects); returns its folder. Idempotent per head."""
    if not state.entries:
        raise ArchiveError("the record is empty: nothing to archive")
    where = folder(state)
    anchor = json.dumps(state.anchor.to_doc(), indent=2).encode()
    try:
        for name, body in (
            ("transcript.jsonl", transcript),
            ("transcript.head.json", head),
            ("anchor.json", anchor),
        ):
            s3.put_object(Bucket=bucket, Key=where + name, Body=body, ChecksumAlgorithm="SHA256")
    except (ClientError, BotoCoreError) as exc:
        raise ArchiveError(f"archiving the transcript to s3://{bucket}/{where} failed: {_why(exc)}") from None
    return where


@dataclass(frozen=True)
class Archived:
    folder: str
    seq: int
    head: str
    lab_entries: int


def latest(state: RecordState, s3: Any, bucket: str) -> Archived:
    """The newest archive of this lab's pinned signer, verified, and checked against the lab's chain."""
    prefix = f"{PREFIX}/{state.anchor.fingerprint[:16]}/"
    try:
        pages = s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
        heads = sorted(
            o["Key"] for page in pages for o in page.get("Contents", []) if o["Key"].endswith(".head.json")
        )
    except (ClientError, BotoCoreError) as exc:
        raise ArchiveError(f"cannot list s3://{bucket}/{prefix}: {_why(exc)}") from None
    if not heads:
        raise ArchiveError(
            f"no transcript archived in s3://{bucket}/{prefix}: run `hsm-lab transcript upload`"
        )
    where = heads[-1].rsplit("/", 1)[0] + "/"
    try:
        text = s3.get_object(Bucket=bucket, Key=where + "transcript.jsonl")["Body"].read().decode("utf-8")
        doc = json.loads(s3.get_object(Bucket=bucket, Key=heads[-1])["Body"].read())
    except (ClientError, BotoCoreError) as exc:
        raise ArchiveError(f"cannot read the archive {where}: {_why(exc)}") from None
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise ArchiveError(f"the archive {where} is not a Clefs transcript") from None
    entries = parse_lines(text)
    check_chain(entries)
    head, signature = doc.get("head") or {}, doc.get("signature") or {}
    last = entries[-1] if entries else {}
    if head.get("seq") != last.get("seq") or head.get("hash") != last.get("hash"):
        raise ArchiveError(f"the archive {where}: its head does not name its last entry")
    signer = state.key_ids().get(str(head.get("key_id")))
    if signer is None:
        raise ArchiveError(f"the archive {where} is signed by {head.get('key_id')}, not an authorised signer")
    verify_head_signature(signer, head, signature)
    seq = int(head["seq"])
    if seq > len(state.entries) or state.entries[seq - 1]["hash"] != head["hash"]:
        raise ArchiveError(
            f"the archive {where} holds entry {seq} {str(head['hash'])[:16]}…, which is not in the lab's "
            "record: the lab or the archive was rewritten"
        )
    return Archived(where, seq, str(head["hash"]), len(state.entries))


def _why(exc: Exception) -> str:
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        return f"{error.get('Code', 'error')}: {error.get('Message', '')}".strip()
    return " ".join(str(exc).split())[:160]
