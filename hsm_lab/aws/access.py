"""Who talks to real AWS, and where: one AWS profile per role, and an endpoint nobody can swap.

The program's key policies split the work (docs/aws.md): the ceremony role imports key
material (GetParametersForImport, ImportKeyMaterial, DeleteImportedKeyMaterial), the app role
uses the keys and the buckets (Encrypt, Decrypt, GenerateDataKey, S3 objects), the auditor
reads (DescribeKey, GetKeyPolicy, bucket configuration). Each role gets its own boto3 session
from standard AWS config (`--ceremony-profile` or CLEFS_CEREMONY_PROFILE, and so on; MFA and
assume-role come from the profile, as botocore does them), and each call is made by the
session of its role.

In real-AWS mode every way of sending those credentials elsewhere is refused before any
call: AWS_ENDPOINT_URL and its per-service forms, the lab's LocalStack variables, a CA bundle
that would change who is trusted, and endpoint or CA settings in the profiles themselves.
The regional endpoint and TLS verification are botocore's own.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from hsm_lab import errors

ROLES = ("ceremony", "app", "auditor")
ClientFactory = Callable[[str, str], Any]
"""(service, region) -> boto3 client: a role's (:meth:`RealAws.clients`) or LocalStack's
(hsm_lab.aws.deployment.localstack_clients). The one name for it in hsm_lab."""
# Anything that could point real credentials at another host. A CA bundle changes which CAs
# are trusted: refused too, unless --trust-ca-bundle says so (a corporate proxy), then shown.
OVERRIDE_VARIABLES = ("LOCALSTACK_HOST", "CLEFS_LOCALSTACK_ENDPOINT")
OVERRIDE_PREFIXES = ("AWS_ENDPOINT_URL",)
CA_VARIABLE = "AWS_CA_BUNDLE"  # botocore's; it ignores REQUESTS_CA_BUNDLE
TRUST_CA_ENV = "CLEFS_TRUST_CA_BUNDLE"


class EndpointRefused(errors.ClefsError):
    """Real-AWS mode found a setting that would send the credentials somewhere else."""


def profile_env(role: str) -> str:
    return f"CLEFS_{role.upper()}_PROFILE"


def endpoint_overrides(environ: Mapping[str, str]) -> list[str]:
    """Environment variables that would redirect or re-trust real-AWS calls."""
    return sorted(
        name
        for name, value in environ.items()
        if value and (name in OVERRIDE_VARIABLES or name.startswith(OVERRIDE_PREFIXES))
    )


def profile_overrides(session: Any, *, trust_ca_bundle: bool = False) -> list[str]:
    """Endpoint (and, unless trusted, CA) settings in a session's profile and `services` section."""
    core = session._session  # botocore's session: the only public way to the scoped config
    scoped = core.get_scoped_config()
    keys = ("endpoint_url",) if trust_ca_bundle else ("endpoint_url", "ca_bundle")
    found = [key for key in keys if scoped.get(key)]
    services = scoped.get("services")
    if services:
        section = (core.full_config.get("services") or {}).get(services) or {}
        found += [
            f"services.{services}.{service}.endpoint_url"
            for service, settings in section.items()
            if isinstance(settings, Mapping) and settings.get("endpoint_url")
        ]
    return found


@dataclass
class RealAws:
    """Client factories per role, each from its own boto3 session (one per profile)."""

    profiles: dict[str, str | None]
    sessions: dict[str, Any]
    config: Any = None
    ca_bundle: str | None = None  # trusted on purpose (--trust-ca-bundle), shown by describe()
    _made: dict[tuple[str, str, str], Any] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def clients(self, role: str) -> ClientFactory:
        if role not in self.sessions:
            raise errors.InputError(f"unknown AWS role {role!r}: one of {', '.join(ROLES)}")

        def factory(service: str, region: str) -> Any:
            with self._lock:
                key = (role, service, region)
                if key not in self._made:  # no endpoint_url, verify on: botocore's endpoint, TLS checked
                    self._made[key] = self.sessions[role].client(
                        service, region_name=region, config=self.config, verify=True
                    )
                return self._made[key]

        return factory

    def describe(self) -> str:
        who = ", ".join(f"{role} as {self.profiles[role] or 'the default profile'}" for role in ROLES)
        trust = "TLS verified"
        if self.ca_bundle:
            trust += f" against the CA bundle {self.ca_bundle} (--trust-ca-bundle)"
        return f"AWS over HTTPS (botocore's regional endpoints, {trust}); {who}"


def real_aws(
    profiles: Mapping[str, str | None] | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    session_factory: Callable[..., Any] | None = None,
    config: Any = None,
    trust_ca_bundle: bool | None = None,
) -> RealAws:
    """Sessions per role after refusing every endpoint override; nothing is called yet."""
    environ = os.environ if environ is None else environ
    if trust_ca_bundle is None:
        trust_ca_bundle = environ.get(TRUST_CA_ENV, "") in ("1", "true", "yes")
    overrides = endpoint_overrides(environ)
    if overrides:
        raise EndpointRefused(
            f"real AWS refuses endpoint overrides: unset {', '.join(overrides)} (they would send real "
            "credentials to another host or trust another CA), or drop --aws to use LocalStack"
        )
    if environ.get(CA_VARIABLE) and not trust_ca_bundle:
        raise EndpointRefused(
            f"real AWS refuses {CA_VARIABLE}={environ[CA_VARIABLE]}: it changes which CAs are trusted; "
            f"unset it, or pass --trust-ca-bundle ({TRUST_CA_ENV}=1) if a proxy of yours requires it"
        )
    if session_factory is None:
        import boto3

        session_factory = boto3.Session
    from botocore.exceptions import BotoCoreError

    chosen = {role: (profiles or {}).get(role) or environ.get(profile_env(role)) or None for role in ROLES}
    sessions = {}
    for role, profile in chosen.items():
        try:
            session = session_factory(profile_name=profile)
        except BotoCoreError as exc:
            raise errors.InputError(
                f"AWS profile {profile!r} for the {role} role: {' '.join(str(exc).split())}; "
                f"pass --{role}-profile or set {profile_env(role)}"
            ) from None
        bad = profile_overrides(session, trust_ca_bundle=trust_ca_bundle)
        if bad:
            raise EndpointRefused(
                f"AWS profile {profile or 'default'} (the {role} role) sets {', '.join(bad)}: "
                "real AWS refuses endpoint and CA overrides; use a profile without them"
            )
        sessions[role] = session
    return RealAws(chosen, sessions, config, environ.get(CA_VARIABLE) if trust_ca_bundle else None)
