"""Run the Clefs program under Pulumi mocks and record the whole resource graph.

Used by tests/infra, bench/program.py and `python -m policy.offline`. The mocks return
real-looking ids and ARNs (derived from the resource's provider region), so inputs that depend
on them are never silently dropped; unmocked invokes raise.
"""

from __future__ import annotations

import gc
import json
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import pulumi
from pulumi.runtime import rpc
from pulumi.runtime import settings as runtime_settings
from pulumi.runtime.mocks import MockCallArgs, MockMonitor, MockResourceArgs

from infra.mock_answers import answer, urn_hex

MOCK_ACCOUNT_ID = "000000000000"
CALLER_IDENTITY_INVOKE = "aws:index/getCallerIdentity:getCallerIdentity"
PROVIDER_TYPE = "pulumi:providers:aws"
STACK_TYPE = "pulumi:pulumi:Stack"
_REGIONAL_PREFIXES = ("aws:kms/", "aws:s3/", "aws:sns/", "aws:cloudwatch/")

SECRET_SIG = "4dabf18193072939515e22adb298388d"  # noqa: S105 - not a password: Pulumi's marker of a secret value on the wire


def is_secret(value: Any) -> bool:
    return isinstance(value, Mapping) and SECRET_SIG in value


def reveal(value: Any) -> Any:
    """The plain value of a (possibly) secret-wrapped input."""
    return value["value"] if is_secret(value) else value


class UnmockedInvokeError(RuntimeError):
    """The program called a provider function the mocks do not know."""


@dataclass
class RecordedResource:
    urn: str
    type: str
    name: str
    custom: bool
    parent: str
    provider: str  # "<provider urn>::<provider id>", "" for components or the default provider
    region: str | None
    id: str
    inputs: dict[str, Any]
    outputs: dict[str, Any]
    dependencies: list[str]
    property_dependencies: dict[str, list[str]]
    component_outputs: dict[str, Any] | None = None

    @property
    def provider_urn(self) -> str | None:
        return self.provider.rsplit("::", 1)[0] if self.provider else None

    @property
    def tags(self) -> dict[str, str]:
        return dict(self.inputs.get("tags") or {})


@dataclass
class Recording:
    resources: list[RecordedResource]
    outputs: dict[str, Any]
    calls: list[tuple[str, str]]
    project: str
    stack: str
    by_urn: dict[str, RecordedResource] = field(init=False)

    def __post_init__(self) -> None:
        self.by_urn = {r.urn: r for r in self.resources}

    def of_type(self, token: str) -> list[RecordedResource]:
        return [r for r in self.resources if r.type == token]

    def one(self, token: str, **tags: str) -> RecordedResource:
        found = [r for r in self.of_type(token) if all(r.tags.get(k) == v for k, v in tags.items())]
        if len(found) != 1:
            raise LookupError(f"expected one {token} with tags {tags}, found {len(found)}")
        return found[0]

    def custom_aws(self) -> Iterator[RecordedResource]:
        return (r for r in self.resources if r.custom and r.type.startswith("aws:"))

    def components(self) -> list[RecordedResource]:
        return [r for r in self.resources if not r.custom]

    def component(self, token: str, name: str) -> RecordedResource:
        for r in self.resources:
            if r.type == token and r.name == name:
                return r
        raise LookupError(f"no component {token} named {name}")

    def ancestors(self, resource: RecordedResource) -> list[RecordedResource]:
        chain: list[RecordedResource] = []
        parent = self.by_urn.get(resource.parent)
        while parent is not None:
            chain.append(parent)
            parent = self.by_urn.get(parent.parent)
        return chain


class RecordingMocks(pulumi.runtime.Mocks):
    """Mocks that answer like AWS would (ids, ARNs, regions), deterministically per URN."""

    def __init__(self, account_id: str = MOCK_ACCOUNT_ID) -> None:
        self.account_id = account_id
        self.calls: list[tuple[str, str]] = []
        self._lock = threading.Lock()
        self._provider_regions: dict[str, str] = {}
        self.local = threading.local()  # .urn set by the monitor, .result read back by it

    # -- helpers -----------------------------------------------------------------------------
    def region_for(self, provider_ref: str) -> str | None:
        if not provider_ref:
            return None
        with self._lock:
            return self._provider_regions.get(provider_ref.rsplit("::", 1)[-1])

    def call(self, args: MockCallArgs) -> tuple[dict[str, Any], list[tuple[str, str]] | None]:
        """The invoke's answer and its check failures (none)."""
        with self._lock:
            self.calls.append((args.token, args.provider or ""))
        if args.token == CALLER_IDENTITY_INVOKE:
            acct = self.account_id
            answer = {
                "accountId": acct,
                "arn": f"arn:aws:sts::{acct}:assumed-role/clefs-deployer/mock",
                "userId": "AROAMOCKDEPLOYER0000:mock",
                "id": acct,
            }
            return answer, []
        raise UnmockedInvokeError(f"unmocked invoke {args.token}: add it to RecordingMocks.call")

    def new_resource(self, args: MockResourceArgs) -> tuple[str | None, dict[str, Any]]:
        urn = getattr(self.local, "urn", None) or f"{args.typ}::{args.name}"
        inputs = dict(args.inputs)
        if not args.custom:
            self.local.result = (None, inputs)
            return "", {}
        if args.typ == PROVIDER_TYPE:
            pid = f"{urn_hex(urn, 8)}-{urn_hex(urn + 'a', 4)}-{urn_hex(urn + 'b', 4)}-{urn_hex(urn + 'c', 4)}"
            pid += f"-{urn_hex(urn + 'd', 12)}"
            with self._lock:
                self._provider_regions[pid] = str(inputs.get("region", ""))
            self.local.result = (inputs.get("region"), inputs)
            return pid, inputs
        region = self.region_for(args.provider or "") or ("us-east-1" if not args.provider else None)
        rid, state = self._answer(args.typ, args.name, urn, region, inputs)
        if args.typ.startswith(_REGIONAL_PREFIXES):
            state.setdefault("region", region)
        self.local.result = (region, inputs)
        return rid, state

    def _answer(
        self, typ: str, name: str, urn: str, region: str | None, inputs: dict[str, Any]
    ) -> tuple[str, dict[str, Any]]:
        """The id and outputs AWS would give a resource of type `typ` (infra/mock_answers.py)."""
        return answer(self.account_id, typ, name, urn, region, inputs)


class RecordingMonitor(MockMonitor):
    """MockMonitor that also records parents, providers, dependencies and component outputs."""

    def __init__(self, mocks: RecordingMocks) -> None:
        super().__init__(mocks)
        self.recording_mocks = mocks
        self.recorded: list[RecordedResource] = []
        self.component_outputs: dict[str, dict[str, Any]] = {}
        self._lock = threading.Lock()

    def RegisterResource(self, request: Any) -> Any:
        if request.type == STACK_TYPE:
            return super().RegisterResource(request)  # type: ignore[no-untyped-call]  # pulumi's MockMonitor is untyped
        local = self.recording_mocks.local
        local.urn = self.make_urn(request.parent, request.type, request.name)
        local.result = (None, {})
        try:
            response = super().RegisterResource(request)  # type: ignore[no-untyped-call]  # untyped upstream
            region, inputs = local.result
        finally:
            local.urn = None
        registration = self.resources[response.urn]
        record = RecordedResource(
            urn=response.urn,
            type=request.type,
            name=request.name,
            custom=bool(request.custom),
            parent=request.parent,
            provider=request.provider,
            region=region,
            id=registration.id or "",
            inputs=inputs,
            outputs=dict(registration.state),
            dependencies=list(request.dependencies),
            property_dependencies={k: list(v.urns) for k, v in request.propertyDependencies.items()},
        )
        with self._lock:
            self.recorded.append(record)
        return response

    def RegisterResourceOutputs(self, request: Any) -> Any:
        outputs = rpc.deserialize_properties(request.outputs)
        with self._lock:
            self.component_outputs[request.urn] = dict(outputs)
        return super().RegisterResourceOutputs(request)  # type: ignore[no-untyped-call]  # untyped upstream


def config_strings(config: Mapping[str, Any]) -> dict[str, str]:
    """Pulumi config values are strings: structured values are JSON-encoded."""
    out: dict[str, str] = {}
    for key, value in config.items():
        full = key if ":" in key else f"clefs:{key}"
        out[full] = value if isinstance(value, str) else json.dumps(value)
    return out


def run_program(
    config: Mapping[str, Any] | None = None,
    *,
    program: Callable[[], Mapping[str, Any]] | None = None,
    project: str = "clefs",
    stack: str = "unit",
    account_id: str = MOCK_ACCOUNT_ID,
    pause_gc: bool = True,
    mocks: RecordingMocks | None = None,
) -> Recording:
    """Run `program` (default: infra.program.stack.build) under fresh mocks; return the recording.

    `pause_gc` suspends CPython's cyclic GC while the program is evaluated and collects once
    at the end: full-heap collections otherwise make the cost per resource grow with the
    number of resources (see bench/program.py). `mocks` replaces the default answers, e.g.
    with infra.harness.LocalStackMocks, which create each resource for real.
    """
    if program is None:
        from infra.program.stack import build

        program = build
    mocks = mocks if mocks is not None else RecordingMocks(account_id)
    monitor = RecordingMonitor(mocks)
    runtime_settings.ROOT.set(None)
    pulumi.runtime.set_all_config(config_strings(config or {}), [])
    pulumi.runtime.set_mocks(mocks, project=project, stack=stack, preview=False, monitor=monitor)
    holder: dict[str, Any] = {}

    @pulumi.runtime.test  # type: ignore[untyped-decorator]  # pulumi.runtime.test is untyped
    def _run() -> pulumi.Output[Any]:
        outputs = program()
        return pulumi.Output.from_input(dict(outputs)).apply(lambda o: holder.update(o))

    gc_was_enabled = gc.isenabled()
    if pause_gc:
        gc.disable()
    try:
        _run()
    finally:
        if pause_gc and gc_was_enabled:
            gc.enable()
            gc.collect()
    resources = list(monitor.recorded)
    for r in resources:
        if r.urn in monitor.component_outputs:
            r.component_outputs = monitor.component_outputs[r.urn]
    return Recording(resources, holder, list(mocks.calls), project, stack)
