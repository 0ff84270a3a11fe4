"""Fixtures for the policy pack's tests: the default program, recorded once under mocks."""

from __future__ import annotations

import warnings

import pytest

from infra.mocks import Recording, run_program

warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"pulumi_aws.*")


@pytest.fixture(scope="session")
def recording() -> Recording:
    """The whole resource graph of the default stack config (as tests/infra/conftest.py)."""
    return run_program()
