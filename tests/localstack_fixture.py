"""The `localstack` session fixture: one real LocalStack shared by the whole test session.

Loaded from tests/conftest.py (``pytest_plugins = ["tests.localstack_fixture"]``). It uses the
configured LocalStack when one is healthy (CLEFS_LOCALSTACK_ENDPOINT, or the localstack-client
conventions: AWS_ENDPOINT_URL, LOCALSTACK_HOST, USE_SSL, default http://localhost:4566) and
otherwise starts one in host mode for the lab ($CLEFS_LAB, else <repo>/lab) and stops it at
the end of the session. Usage::

    def test_kms(localstack: LocalStack) -> None:
        kms = localstack.client("kms", "eu-west-3")   # dummy credentials test/test
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from hsm_lab.localstack import LAB_ENV, REPO_ROOT, LocalStack, LocalStackError, running


def localstack_lab() -> Path:
    """Where a LocalStack started for the tests keeps its data, log and pid file."""
    return Path(os.environ.get(LAB_ENV) or REPO_ROOT / "lab").resolve()


@pytest.fixture(scope="session")
def localstack() -> Iterator[LocalStack]:
    """A healthy LocalStack (S3, KMS, IAM, STS) on loopback for the whole session."""
    try:
        with running(localstack_lab()) as instance:
            yield instance
    except LocalStackError as error:
        pytest.fail(str(error), pytrace=False)
