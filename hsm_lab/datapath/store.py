"""The data path: put/get records per data class, envelope-encrypted, in the class bucket.

* Every record is a ``clefs.envelope/v2`` (see :mod:`hsm_lab.datapath.envelope`): AES-256-GCM under a
  data key from the class's KMS key, KMS context ``{"data_class": <class>}``, class and record
  id bound by GCM. Data keys are cached with limits, so KMS is not called per record.
* It is stored as ``<class>/<record id>`` in the class's bucket of the chosen region with
  SSE-KMS under the same class key (``BucketKeyEnabled``) and the metadata
  ``clefs-format`` / ``clefs-e2e``; S3 and KMS are reached over HTTPS only.
* End-to-end classes (``health-documents``): the plaintext is first encrypted with age to the
  patient's and the practitioner's X25519 recipients; the platform's roles (KMS + S3) only ever
  obtain that age ciphertext. :func:`open_document` is what the patient's or practitioner's
  device runs.

The deployment description is the Pulumi stack output ``classes``:
``{class: {"end_to_end": bool, "regions": {region: {"key_arn": str, "bucket": str, ...}}}}``
(other keys are ignored).
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyrage

from hsm_lab.aws import deployment
from hsm_lab.aws.deployment import ClientFactory
from hsm_lab.datapath.crypter import EnvelopeCrypter, Opened

# parse_recipients: still importable from here, where it was
from hsm_lab.datapath.e2e import (  # noqa: F401
    EndToEndError,
    Identities,
    open_document,
    parse_recipients,
    seal_document,
)
from hsm_lab.datapath.envelope_format import (
    E2E_AGE,
    FORMAT,
    RecordAuthenticationError,
    check_record_id,
)
from hsm_lab.datapath.keycache import CacheLimits
from hsm_lab.datapath.versions import VersionHistory
from hsm_lab.errors import ClefsError, InputError
from infra.model import outputs
from infra.model.outputs import ClassOutputs, RegionOutputs
from infra.model.settings import DEFAULT_PRIMARY_REGION

DEFAULT_REGION = DEFAULT_PRIMARY_REGION
KEY_STATE_TTL = 30.0  # seconds a DescribeKey answer is trusted before `put` asks again
META_FORMAT = "clefs-format"
META_E2E = "clefs-e2e"
E2E_NONE = "none"
OUTPUTS_NAME = deployment.OUTPUTS_FILE  # one name for the file (hsm_lab.aws.deployment)



class DataPathError(ClefsError):
    """The data path cannot do what was asked (unknown class/region, plain HTTP, S3 failure)."""


class RecordNotFound(DataPathError):
    """No object for that record in the class bucket."""


class KeyNotReady(DataPathError):
    """The class key is not Enabled with imported material: writing would not be what AWS does."""


class RolledBack(DataPathError):
    """The current S3 version of a record is older than another authentic version of it."""


@dataclass(frozen=True)
class Record:
    """One record read back: its plaintext, its authenticated write time and its S3 version."""

    plaintext: bytes
    written: str
    version_id: str | None
    newer_versions: int = 0  # authentic versions written after this one (0: not rolled back)


# --------------------------------------------------------------------------- deployment


RegionTarget = RegionOutputs  # the typed stack-outputs contract (infra/model/outputs.py)
ClassTarget = ClassOutputs


def parse_classes(classes: object, source: str = "deployment") -> dict[str, ClassOutputs]:
    """The `classes` stack output, checked by the one stack-outputs parser (docs/stack-outputs.md)."""
    if not isinstance(classes, Mapping) or not classes:
        raise InputError(f"{source}: 'classes' must be a non-empty object of class -> settings")
    try:
        return outputs.parse_classes(classes, source)
    except outputs.OutputsError as exc:
        raise InputError(str(exc)) from None


def load_outputs(path: Path) -> tuple[dict[str, ClassOutputs], str | None]:
    """Read a stack-outputs JSON file: its `classes` and its `primary_region`, both checked."""
    stack = deployment.load_stack(path)
    return dict(stack.classes), stack.primary_region


# --------------------------------------------------------------------------- data path


class DataPath(VersionHistory):
    """Put and get records per data class (library API).

    ``clients(service, region)`` must return HTTPS clients (checked); use
    :func:`localstack_clients` for the lab, or a role's clients from :mod:`hsm_lab.aws.access`.
    """

    def __init__(
        self,
        clients: ClientFactory,
        classes: Mapping[str, Any],
        *,
        primary_region: str | None = None,
        limits: CacheLimits | None = None,
        crypter: EnvelopeCrypter | None = None,
        reader: ClientFactory | None = None,
    ) -> None:
        self.classes = {
            name: spec if isinstance(spec, ClassOutputs) else parse_classes({name: spec})[name]
            for name, spec in classes.items()
        }
        if not self.classes:
            raise InputError("the deployment describes no data class")
        self._factory = clients
        # DescribeKey is the auditor's on AWS (the key policies deny it to the app role, docs/aws.md);
        # on LocalStack one identity plays both.
        self._reader = reader or clients
        self._clients: dict[tuple[str, str], Any] = {}
        self._lock = threading.Lock()
        first = next(iter(self.classes.values()))
        self.primary_region = primary_region or (
            DEFAULT_REGION if DEFAULT_REGION in first.regions else next(iter(first.regions))
        )
        self.crypter = crypter or EnvelopeCrypter.with_limits(
            lambda region: self._client("kms", region), limits
        )
        self.key_state_ttl = KEY_STATE_TTL
        self._key_states: dict[str, tuple[float, str, str]] = {}  # key ARN -> (when, state, origin)

    # -- plumbing

    def _client(self, service: str, region: str) -> Any:
        with self._lock:
            client = self._clients.get((service, region))
            if client is None:
                client = self._factory(service, region)
                url = str(getattr(client.meta, "endpoint_url", ""))
                if not url.lower().startswith("https://"):
                    raise DataPathError(
                        f"{service} in {region} would be reached over {url or '?'}: HTTPS only"
                    )
                self._clients[(service, region)] = client
            return client

    def target(self, data_class: str, region: str | None = None) -> tuple[ClassTarget, str, RegionTarget]:
        spec = self.classes.get(data_class)
        if spec is None:
            known = ", ".join(sorted(self.classes))
            raise InputError(f"unknown data class {data_class[:40]!r}: known are {known}")
        region = region or self.primary_region
        where = spec.regions.get(region)
        if where is None:
            raise InputError(
                f"class {data_class} is not deployed in {region[:30]!r}: {', '.join(spec.regions)}"
            )
        return spec, region, where

    @staticmethod
    def object_key(data_class: str, record_id: str) -> str:
        return f"{data_class}/{check_record_id(record_id)}"

    @property
    def kms_calls(self) -> Counter[tuple[str, str]]:
        """KMS calls so far, by (operation, region)."""
        return Counter(self.crypter.kms_calls)

    def _s3(self, operation: str, region: str, data_class: str, record_id: str, **kwargs: Any) -> Any:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return getattr(self._client("s3", region), operation)(**kwargs)
        except ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code", "error"))
            if code in ("NoSuchKey", "404", "NotFound"):
                raise RecordNotFound(f"no record {data_class}/{record_id} in {region}") from None
            raise DataPathError(
                f"S3 {operation} {data_class}/{record_id} in {region} refused: {code}"
            ) from None
        except BotoCoreError as exc:
            message = " ".join(str(exc).split())[:200]
            raise DataPathError(
                f"S3 {operation} {data_class}/{record_id} in {region} failed: {message}"
            ) from None

    def _key_state(self, key_arn: str, region: str) -> tuple[str, str]:
        """(KeyState, Origin) from DescribeKey, cached for `key_state_ttl` seconds per process."""
        from botocore.exceptions import BotoCoreError, ClientError

        now = time.monotonic()
        with self._lock:
            cached = self._key_states.get(key_arn)
        if cached is not None and now - cached[0] < self.key_state_ttl:
            return cached[1], cached[2]
        try:
            meta = self._reader("kms", region).describe_key(KeyId=key_arn)["KeyMetadata"]
        except ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code", "error"))
            raise KeyNotReady(
                f"class key {key_arn} cannot be described ({code}); refusing to write"
            ) from None
        except BotoCoreError as exc:
            raise DataPathError(
                f"KMS DescribeKey {key_arn} failed: {' '.join(str(exc).split())[:160]}"
            ) from None
        answer = (str(meta.get("KeyState")), str(meta.get("Origin")))
        with self._lock:
            self._key_states[key_arn] = (now, *answer)
        return answer

    def require_key_ready(self, data_class: str) -> None:
        """Refuse a class whose key, in any of its regions, is not Enabled with its material.

        On AWS a PendingImport key refuses GenerateDataKey; LocalStack does not always (a late
        replica even works without material, docs/localstack.md), so the data path asks first.
        Every region counts: S3 replication writes the replica under the replica key.
        """
        spec = self.classes.get(data_class)
        if spec is None:
            self.target(data_class)  # the usual "unknown data class" error
            return
        for region, where in spec.regions.items():
            state, origin = self._key_state(where.key_arn, region)
            if state == "Enabled":
                continue
            why = "no key material imported" if state == "PendingImport" else f"key state {state}"
            hint = (
                f"run `hsm-lab byok import --class {data_class}` first"
                if origin == "EXTERNAL"
                else "enable it first"
            )
            raise KeyNotReady(
                f"class {data_class}: its key in {region} is not usable ({why}); {hint}; refusing to write"
            )

    # -- API

    def put(
        self,
        data_class: str,
        record_id: str,
        plaintext: bytes | bytearray | memoryview,
        region: str | None = None,
        recipients: Sequence[str | pyrage.x25519.Recipient] | None = None,
    ) -> str:
        """Encrypt and store one record; returns its object key. E2E classes need recipients."""
        key = self.object_key(data_class, record_id)
        spec, region, where = self.target(data_class, region)
        self.require_key_ready(data_class)
        if spec.end_to_end:
            payload: bytes | bytearray | memoryview = seal_document(bytes(plaintext), recipients or [])
            mode: str | None = E2E_AGE
        else:
            if recipients:
                raise InputError(f"class {data_class} is not end-to-end: recipients are not used, refusing")
            payload, mode = plaintext, None
        blob = self.crypter.encrypt(
            data_class, record_id, payload, key_arn=where.key_arn, region=region, e2e=mode
        )
        self._s3(
            "put_object",
            region,
            data_class,
            record_id,
            Bucket=where.bucket,
            Key=key,
            Body=blob,
            ContentType="application/octet-stream",
            ServerSideEncryption="aws:kms",
            SSEKMSKeyId=where.key_arn,
            BucketKeyEnabled=True,
            Metadata={META_FORMAT: FORMAT, META_E2E: mode or E2E_NONE},
        )
        return key

    def _open(
        self, data_class: str, record_id: str, region: str | None, version_id: str | None = None
    ) -> tuple[ClassTarget, Opened, str | None]:
        key = self.object_key(data_class, record_id)
        spec, region, where = self.target(data_class, region)
        extra = {"VersionId": version_id} if version_id else {}
        response = self._s3(
            "get_object", region, data_class, record_id, Bucket=where.bucket, Key=key, **extra
        )
        blob = response["Body"].read()
        opened = self.crypter.decrypt(
            blob, data_class=data_class, record_id=record_id, key_arn=where.key_arn, region=region
        )
        expected = E2E_AGE if spec.end_to_end else None
        if opened.header.e2e != expected:  # authentic, but not what this class requires
            raise RecordAuthenticationError(
                f"record {data_class}/{record_id}: end-to-end mode {opened.header.e2e or 'none'} "
                f"does not match the class ({expected or 'none'}); refusing"
            )
        return spec, opened, response.get("VersionId")

    def read(
        self,
        data_class: str,
        record_id: str,
        region: str | None = None,
        identity: Identities | None = None,
        *,
        check_history: bool = True,
        sealed: bool = False,
    ) -> Record:
        """A record with its authenticated write time and S3 version; RolledBack if the current
        version is older than another authentic version (`check_history`)."""
        spec, opened, version_id = self._open(data_class, record_id, region)
        if check_history:
            newer = self.newer_versions(data_class, record_id, opened.header.written, version_id, region)
            if newer:
                newest_id, newest_written = newer[-1]
                raise RolledBack(
                    f"record {data_class}/{record_id} was rolled back: the current S3 version was written "
                    f"{opened.header.written}, but an authentic version written {newest_written} exists "
                    f"(version {newest_id}); refusing"
                )
        if sealed:
            if not spec.end_to_end:
                raise InputError(f"class {data_class} is not end-to-end: there is no sealed form")
            plaintext = opened.plaintext
        elif not spec.end_to_end:
            plaintext = opened.plaintext
        elif identity is None:
            raise EndToEndError(
                f"record {data_class}/{record_id} is end-to-end encrypted: only the patient's or "
                "practitioner's age identity opens it (the platform holds ciphertext only)"
            )
        else:
            plaintext = open_document(opened.plaintext, identity, f"record {data_class}/{record_id}")
        return Record(plaintext, opened.header.written, version_id)

    def get(
        self,
        data_class: str,
        record_id: str,
        region: str | None = None,
        identity: Identities | None = None,
    ) -> bytes:
        """The plaintext of one record. End-to-end classes need the reader's age identity:
        without one this raises EndToEndError (the platform holds only age ciphertext)."""
        return self.read(data_class, record_id, region, identity, check_history=False).plaintext

    def get_sealed(self, data_class: str, record_id: str, region: str | None = None) -> bytes:
        """An end-to-end record as the platform can read it: the age ciphertext for the device."""
        return self.read(data_class, record_id, region, check_history=False, sealed=True).plaintext
