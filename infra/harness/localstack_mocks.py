"""LocalStackMocks: Pulumi mocks whose `new_resource` makes each resource in LocalStack.

Per resource type, a Kind (infra/harness/kms.py, iam.py, s3.py, alarms.py) says how to create
it, whether the state's copy still exists, and how to reconcile it; a type without a Kind fails
the apply. A resource in the state (same URN and type) that still exists is reconciled; one
that vanished is recreated; anything else is created, and creating what already exists
outside the state fails (as `pulumi up` would).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Mapping
from typing import Any, ClassVar

from botocore.exceptions import ClientError, ParamValidationError

from infra.harness.alarms import KINDS as ALARM_KINDS
from infra.harness.common import GONE, ClientFactory, HarnessError, Kind, error_code, is_loopback_url
from infra.harness.iam import KINDS as IAM_KINDS
from infra.harness.kms import KINDS as KMS_KINDS
from infra.harness.s3 import KINDS as S3_KINDS
from infra.mocks import CALLER_IDENTITY_INVOKE, PROVIDER_TYPE, RecordingMocks, UnmockedInvokeError

KINDS: dict[str, Kind] = {**KMS_KINDS, **IAM_KINDS, **S3_KINDS, **ALARM_KINDS}


class LocalStackMocks(RecordingMocks):
    """Mocks whose resources really exist in LocalStack."""

    SUPPORTED = frozenset(KINDS)

    def __init__(
        self, endpoint: str, client_for: ClientFactory, suffix: str, state: Mapping[str, Any] | None = None
    ) -> None:
        if not is_loopback_url(endpoint):
            raise HarnessError(f"refusing endpoint {endpoint}: the LocalStack harness only talks to loopback")
        self.endpoint = endpoint
        self.client_for = client_for
        self.suffix = suffix
        identity = client_for("sts", "us-east-1").get_caller_identity()
        super().__init__(identity["Account"])
        known = dict((state or {}).get("resources") or {})
        same_account = (state or {}).get("account_id") in (None, self.account_id)
        self.known: dict[str, dict[str, Any]] = known if same_account else {}
        self.created: list[tuple[str, str]] = []
        self.reconciled: list[tuple[str, str]] = []
        self.recreated: list[tuple[str, str]] = []  # in the state, but gone from LocalStack
        self.resources: dict[str, dict[str, Any]] = {}  # urn -> what the next state records
        self._created_lock = threading.Lock()
        self._warm_lock = threading.Lock()
        self._warmed: set[tuple[str, str]] = set()
        self._fresh: set[str] = set()  # buckets and roles created by this run (not found existing)

    _WARM_UP: ClassVar[dict[str, str]] = {
        "iam": "list_roles",
        "kms": "list_keys",
        "s3": "list_buckets",
        "sns": "list_topics",
        "events": "list_rules",
    }
    _SERVICES = ("iam", "kms", "s3", "sns", "events")

    def warm(self, service: str, region: str) -> Any:
        """The client, after one harmless call made alone: LocalStack builds an account's service
        backend on first use, and two first calls at once can fail (iam CreateRole => 501)."""
        client = self.client_for(service, region)
        with self._warm_lock:
            if (service, region) not in self._warmed:
                getattr(client, self._WARM_UP[service])()
                self._warmed.add((service, region))
        return client

    def mark_fresh(self, name: str) -> None:
        """`name` (a bucket, role, topic ARN or rule) was created by this run, not found existing."""
        with self._created_lock:
            self._fresh.add(name)

    def is_fresh(self, name: str) -> bool:
        return name in self._fresh

    def call(self, args: Any) -> tuple[dict[str, Any], list[tuple[str, str]] | None]:
        if args.token != CALLER_IDENTITY_INVOKE:
            raise UnmockedInvokeError(f"the LocalStack harness does not support invoke {args.token}")
        answer = self.client_for("sts", "us-east-1").get_caller_identity()
        with self._lock:
            self.calls.append((args.token, args.provider or ""))
        identity = {
            "accountId": answer["Account"],
            "arn": answer["Arn"],
            "userId": answer["UserId"],
            "id": answer["Account"],
        }
        return identity, []

    def new_resource(self, args: Any) -> tuple[str | None, dict[str, Any]]:
        if args.custom and args.typ == PROVIDER_TYPE:
            self._check_provider(dict(args.inputs))
        elif args.custom and args.typ not in self.SUPPORTED:
            raise HarnessError(f"the LocalStack harness does not support resource type {args.typ}")
        return super().new_resource(args)

    def _check_provider(self, inputs: dict[str, Any]) -> None:
        endpoints = inputs.get("endpoints") or []
        if isinstance(endpoints, str):
            endpoints = json.loads(endpoints)
        urls = [str(u) for block in endpoints for u in dict(block).values() if u]
        if not urls:
            raise HarnessError("a provider has no endpoints: it would talk to real AWS; refusing")
        for url in urls:
            if not is_loopback_url(url):
                raise HarnessError(f"refusing provider endpoint {url}: not loopback")

    def _answer(
        self, typ: str, name: str, urn: str, region: str | None, inputs: dict[str, Any]
    ) -> tuple[str, dict[str, Any]]:
        if region is None:
            raise HarnessError(f"{typ} {name} has no explicit provider region; refusing the default provider")
        record = self.known.get(urn)
        try:
            if record is not None and record.get("type") == typ and self._exists(typ, record, region):
                rid, extra = str(record["id"]), dict(record.get("outputs") or {})
                extra.update(self._kind(typ).reconcile(self, rid, region, inputs, extra))
                outcome = self.reconciled
            else:
                rid, extra = self._create(typ, name, region, inputs)
                outcome = self.recreated if record is not None else self.created
        except ClientError as exc:
            error = exc.response.get("Error", {})
            raise HarnessError(
                f"LocalStack refused {typ} {name}: {error.get('Code')}: {error.get('Message')}"
            ) from None
        except ParamValidationError as exc:
            raise HarnessError(f"{typ} {name}: inputs do not map to the AWS API: {exc}") from None
        with self._created_lock:
            outcome.append((typ, rid))
            self.resources[urn] = {"type": typ, "id": rid, "region": region, "outputs": extra}
        state = dict(inputs)
        state.update(extra)
        return rid, state

    @staticmethod
    def _kind(typ: str) -> Kind:
        kind = KINDS.get(typ)
        if kind is None:
            raise HarnessError(f"the LocalStack harness does not support resource type {typ}")
        return kind

    def _warm_all(self, region: str) -> None:
        for service in self._SERVICES:
            self.warm(service, region)

    def _exists(self, typ: str, record: Mapping[str, Any], region: str) -> bool:
        """A second apply: is the state's resource still in LocalStack (never created twice)?"""
        self._warm_all(region)
        try:
            return self._kind(typ).exists(self, str(record["id"]), record, region)
        except ClientError as exc:
            if error_code(exc) in GONE:
                return False
            raise

    def _create(self, typ: str, name: str, region: str, inputs: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        self._warm_all(region)
        return self._kind(typ).create(self, name, region, inputs)
