"""The `localstack` session fixture: one real LocalStack shared by the whole test session.

Loaded from tests/conftest.py (``pytest_plugins = ["tests.localstack_fixture"]``). With
CLEFS_LOCALSTACK_ENDPOINT set (and CLEFS_LOCALSTACK_CA, the CA that issued its certificate) it
uses that one and never stops it. Otherwise it starts one in host mode, on a free loopback port
in a lab of its own under pytest's temporary directory, and stops it by PID at the end: a
LocalStack someone else runs on this machine (another checkout, port 4566) is never touched nor
trusted. Usage::

    def test_kms(localstack: LocalStack) -> None:
        kms = localstack.client("kms", "eu-west-3")   # dummy credentials test/test
        env = localstack.client_env()                 # endpoint + CA for a CLI subprocess
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from hsm_lab.aws.localstack import ENDPOINT_ENV, LocalStack, LocalStackError, connect, start, stop
from tests.support import free_port


@pytest.fixture(scope="session")
def localstack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    """A healthy LocalStack (S3, KMS, IAM, STS) on loopback for the whole session."""
    try:
        if os.environ.get(ENDPOINT_ENV, "").strip():
            yield connect()
            return
        lab = tmp_path_factory.mktemp("localstack-lab")
        instance = start(lab, free_port())
    except LocalStackError as error:
        pytest.fail(str(error), pytrace=False)
    try:
        yield instance
    finally:
        stop(lab)
