"""Shared fixtures: a private SoftHSM2 lab per test session, a dealt ceremony.

Everything here drives the real SoftHSM2 module; nothing PKCS#11 is mocked.
Each lab lives under pytest's tmp directory with its own softhsm2.conf and
token directory, never the system one.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import sys
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import pyrage
import pytest

from hsm_lab import ceremony
from hsm_lab.ceremony import shares
from hsm_lab.ceremony.custodians import Custodian
from hsm_lab.ceremony.manifest import SignedManifest
from hsm_lab.ceremony.shares import Share
from hsm_lab.hsm import HSM
from hsm_lab.lab import PRIMARY_TOKEN, Lab
from tests.support import is_caller_variable

if TYPE_CHECKING:
    from infra.mocks import Recording

pytest_plugins = ["tests.localstack_fixture"]  # the session `localstack` fixture

NAMES = ("alice", "bob", "carol", "dave", "erin", "frank", "grace")
PASSPHRASE_CUSTODIAN = "bob"


@dataclass
class LabUnderTest:
    """A lab with initialised tokens and known (random, in-memory) PINs."""

    lab: Lab
    hsm: HSM
    so_pin: str
    pin: str
    tokens: list[str] = field(default_factory=list)

    def new_token(self, label: str) -> str:
        """Another token in the lab: it pins the lab's signer, and signs once a quorum authorises it."""
        ceremony.init_token(
            self.hsm, self.lab, token=label, so_pin=self.so_pin, user_pin=self.pin, actor="pytest"
        )
        self.tokens.append(label)
        return label


def copy_lab(env: LabUnderTest, target: Path) -> LabUnderTest:
    """An independent copy of a lab: its files and its SoftHSM2 token store, same PINs."""
    shutil.copytree(env.lab.root, target, ignore=shutil.ignore_patterns("hsm.lock"))
    return LabUnderTest(Lab(target), HSM(target), env.so_pin, env.pin, list(env.tokens))


def make_lab(root: Path) -> LabUnderTest:
    """A lab whose first token (the primary) pins its signing key as the lab's signer."""
    lab = Lab(root)
    hsm = HSM(root)
    under_test = LabUnderTest(lab, hsm, secrets.token_urlsafe(10), secrets.token_urlsafe(10))
    under_test.new_token(PRIMARY_TOKEN)
    return under_test


@dataclass
class Dealt:
    """A 5-of-7 ceremony: 6 X25519 custodians and one passphrase custodian."""

    env: LabUnderTest
    manifest: SignedManifest
    identities: dict[str, pyrage.x25519.Identity]
    passphrase: str
    opened: dict[str, Share]  # each share opened once, copied on use

    def share(self, name: str) -> Share:
        original = self.opened[name]
        return Share(original.ceremony_id, original.custodian, bytearray(original.value))

    def source(self, name: str) -> Callable[[], Share]:
        return lambda: self.share(name)

    def sealed(self, name: str) -> bytes:
        return self.env.lab.share_path(self.manifest.ceremony_id, name).read_bytes()


def deal(env: LabUnderTest, names: tuple[str, ...] = NAMES, threshold: int = 5) -> Dealt:
    identities = {n: pyrage.x25519.Identity.generate() for n in names if n != PASSPHRASE_CUSTODIAN}
    passphrase = secrets.token_urlsafe(12)
    custodians = [Custodian(n, str(identities[n].to_public()) if n in identities else None) for n in names]
    manifest = ceremony.generate(
        env.hsm,
        env.lab,
        token=PRIMARY_TOKEN,
        user_pin=env.pin,
        custodians=custodians,
        threshold=threshold,
        passphrases={PASSPHRASE_CUSTODIAN: passphrase},
        actor="pytest",
    )
    opened = {}
    for n in names:
        blob = env.lab.share_path(manifest.ceremony_id, n).read_bytes()
        if n in identities:
            opened[n] = shares.unseal(blob, n, [identities[n]])
        else:
            opened[n] = shares.unseal(blob, n, passphrase=passphrase)
    return Dealt(env, manifest, identities, passphrase, opened)


@pytest.fixture(scope="session")
def recording() -> Recording:
    """The whole resource graph of the default stack config, recorded once under Pulumi mocks
    (tests/infra and tests/policy share it)."""
    from infra.mocks import run_program

    warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"pulumi_aws.*")
    return run_program()


@pytest.fixture(scope="session")
def lab_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LabUnderTest]:
    yield make_lab(tmp_path_factory.mktemp("lab"))


@pytest.fixture(scope="session")
def dealt(lab_env: LabUnderTest) -> Dealt:
    return deal(lab_env)


@pytest.fixture
def fresh_env(tmp_path: Path) -> LabUnderTest:
    return make_lab(tmp_path / "lab")


@pytest.fixture(scope="session")
def run_cli() -> Callable[..., subprocess.CompletedProcess[str]]:
    """Run `python -m hsm_lab` as a user would: env PINs, no terminal, wide output."""

    def run(
        *args: str,
        lab: Path,
        pin: str | None = None,
        so_pin: str | None = None,
        extra_env: dict[str, str] | None = None,
    ) -> subprocess.CompletedProcess[str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("CLEFS_")}
        env.update({"CLEFS_LAB": str(lab), "COLUMNS": "200", "CLEFS_ACTOR": "pytest-cli"})
        if pin is not None:
            env["CLEFS_USER_PIN"] = pin
        if so_pin is not None:
            env["CLEFS_SO_PIN"] = so_pin
        env.update(extra_env or {})
        return subprocess.run(
            [sys.executable, "-m", "hsm_lab", *args],
            env=env,
            capture_output=True,
            text=True,
            stdin=subprocess.DEVNULL,
            timeout=300,
            check=False,
        )

    return run


SLOW_MODULES = (
    "test_crash",
    "test_byok_crash",
    "test_walkthrough",
    "test_rehearse_full",
    "test_docs_commands",
)


def pytest_configure(config: pytest.Config) -> None:
    """Isolate the suite from the caller's AWS/LocalStack variables (subprocesses inherit this)."""
    for name in [n for n in os.environ if is_caller_variable(n)]:
        del os.environ[name]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """`-m "not localstack"` / `-m "not slow"`: markers from the fixtures and modules used."""
    for item in items:
        if "localstack" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.localstack)
        if item.module is not None and item.module.__name__.rsplit(".", 1)[-1] in SLOW_MODULES:
            item.add_marker(pytest.mark.slow)
