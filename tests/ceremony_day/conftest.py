"""Ceremony-day tests: the `slow` marker (real headless Chromium) and helpers to run the sub-app."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "slow: drives a real browser or other heavy tool (seconds)")


def day_env(lab: Path, pin: str | None = None, extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment a person would have: no CLEFS_* leftovers, the lab, the PIN if given."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLEFS_")}
    env.update({"CLEFS_LAB": str(lab), "CLEFS_ACTOR": "pytest-day", "PYTHONPATH": str(REPO)})
    if pin is not None:
        env["CLEFS_USER_PIN"] = pin
    env.update(extra or {})
    return env


def day_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "hsm_lab", *args]


def run_day(
    *args: str, lab: Path, pin: str | None = None, extra: dict[str, str] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        day_cmd(*args),
        env=day_env(lab, pin, extra),
        cwd=REPO,
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=timeout,
        check=False,
    )


@pytest.fixture(scope="module")
def day_dealt(tmp_path_factory: pytest.TempPathFactory):
    """A lab of our own (init, generate 5-of-7): other tests may change the session's `dealt`."""
    from tests.conftest import deal, make_lab

    return deal(make_lab(tmp_path_factory.mktemp("day") / "lab"))
