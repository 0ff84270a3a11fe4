"""S3 versions of a record: the rollback check and what S3 replication would copy.

Methods of :class:`hsm_lab.datapath.store.DataPath` (a base class of it), kept apart from the
put/get path: `newer_versions` (docs/datapath.md, "Rollback") and `replicate`
(docs/datapath.md, "Replication on LocalStack").
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from hsm_lab.datapath.crypter import Opened
from hsm_lab.datapath.envelope_format import (
    HEADER_BYTES,
    KeyServiceError,
    RecordAuthenticationError,
    read_header,
)


class VersionHistory:
    """DataPath's methods over the S3 versions of records; DataPath provides the plumbing."""

    if TYPE_CHECKING:  # what DataPath (store.py) provides, declared for the type checker only
        classes: Mapping[str, Any]

        def target(self, data_class: str, region: str | None = None) -> tuple[Any, str, Any]: ...

        @staticmethod
        def object_key(data_class: str, record_id: str) -> str: ...

        def _client(self, service: str, region: str) -> Any: ...

        def _s3(self, operation: str, region: str, data_class: str, record_id: str, **kwargs: Any) -> Any: ...

        def _open(
            self, data_class: str, record_id: str, region: str | None, version_id: str | None = None
        ) -> tuple[Any, Opened, str | None]: ...

    def newer_versions(
        self, data_class: str, record_id: str, written: str, current: str | None, region: str | None = None
    ) -> list[tuple[str, str]]:
        """Other S3 versions of the record that are authentic and were written after `written`.

        Someone with s3:PutObject can make an older version current again (copy it over the
        newest); its authenticated `written` then predates another authentic version still in
        the history. Someone who may also delete versions leaves no such trace: only an index
        outside the bucket stops that (docs/datapath.md, "Rollback").
        """
        key = self.object_key(data_class, record_id)
        _spec, region, where = self.target(data_class, region)
        versions = self._s3(
            "list_object_versions", region, data_class, record_id, Bucket=where.bucket, Prefix=key
        ).get("Versions", [])
        newer: list[tuple[str, str]] = []
        for version in versions:
            if version.get("Key") != key or version.get("VersionId") in (current, None, "null"):
                continue
            response = self._s3(
                "get_object",
                region,
                data_class,
                record_id,
                Bucket=where.bucket,
                Key=key,
                VersionId=version["VersionId"],
                Range=f"bytes=0-{HEADER_BYTES - 1}",
            )
            parsed = read_header(response["Body"].read())
            if parsed is None or parsed[0].written <= written:
                continue
            try:  # a claim of being newer counts only once the version is proved authentic
                _s, opened, _v = self._open(data_class, record_id, region, version["VersionId"])
            except (RecordAuthenticationError, KeyServiceError):
                continue
            newer.append((str(version["VersionId"]), opened.header.written))
        return sorted(newer, key=lambda item: item[1])

    def replicate(self, data_class: str | None = None) -> dict[str, int]:
        """Do what S3 replication does and LocalStack does not: copy every version of every record
        of the primary bucket that its replica lacks, byte for byte, oldest first, stored with
        SSE-KMS under the replica's class key. Returns {class: versions copied}.

        A replica is recognised by its envelope header (class, record, wrapped key, nonce,
        written: unique per write), as version ids cannot be carried over outside S3.
        """
        copied: dict[str, int] = {}
        for name in [data_class] if data_class else sorted(self.classes):
            spec, primary, source = self.target(name)
            copied[name] = 0
            for region, target in spec.regions.items():
                if region == primary:
                    continue
                present = {header for _key, _v, header in self._headers(name, region, target.bucket)}
                for key, version_id, header in self._headers(name, primary, source.bucket):
                    if header in present:
                        continue
                    record_id = key.split("/", 1)[-1]
                    response = self._s3(
                        "get_object",
                        primary,
                        name,
                        record_id,
                        Bucket=source.bucket,
                        Key=key,
                        VersionId=version_id,
                    )
                    self._s3(
                        "put_object",
                        region,
                        name,
                        record_id,
                        Bucket=target.bucket,
                        Key=key,
                        Body=response["Body"].read(),
                        ContentType="application/octet-stream",
                        ServerSideEncryption="aws:kms",
                        SSEKMSKeyId=target.key_arn,
                        BucketKeyEnabled=True,
                        Metadata=response.get("Metadata") or {},
                    )
                    copied[name] += 1
        return copied

    def _headers(self, data_class: str, region: str, bucket: str) -> list[tuple[str, str, bytes]]:
        """(key, version id, envelope AAD bytes) of every envelope version under <class>/, oldest
        written first (S3's LastModified has one-second granularity; `written` has milliseconds)."""
        client = self._client("s3", region)
        versions = []
        for page in client.get_paginator("list_object_versions").paginate(
            Bucket=bucket, Prefix=f"{data_class}/"
        ):
            versions += page.get("Versions", [])
        found = []
        for version in versions:
            response = client.get_object(
                Bucket=bucket,
                Key=version["Key"],
                VersionId=version["VersionId"],
                Range=f"bytes=0-{HEADER_BYTES - 1}",
            )
            parsed = read_header(response["Body"].read())
            if parsed is not None:
                found.append((parsed[0].written, version["Key"], version["VersionId"], parsed[1]))
        return [(key, version_id, aad) for _w, key, version_id, aad in sorted(found)]
