"""LocalStack's own venv: a Python >= 3.12 and exactly PINS (docs/localstack.md)."""

from __future__ import annotations

import fcntl
import glob
import hashlib
import os
import re
import shutil
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path

from hsm_lab.aws.localstack.config import (
    _ENV_DENY,
    MIN_PYTHON,
    PINS,
    PYTHON_ENV,
    REPO_ROOT,
    VENV_NAME,
    LocalStackError,
)
from hsm_lab.aws.localstack.files import _atomic_write

_PIP_NOISE = re.compile(r"^WARNING: Location '.*' is ignored")


def _python_version(python: str) -> tuple[int, int] | None:
    try:
        out = subprocess.run(
            [python, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    match = re.fullmatch(r"(\d+)\.(\d+)", out.stdout.strip())
    if out.returncode != 0 or not match:
        return None  # e.g. a pyenv shim for a version that is not selected
    return int(match[1]), int(match[2])


def _fmt(version: tuple[int, int]) -> str:
    return f"{version[0]}.{version[1]}"


def find_python() -> tuple[Path, tuple[int, int]]:
    """The first Python >= 3.12: $CLEFS_LOCALSTACK_PYTHON, python3.13, python3.12, pyenv."""
    explicit = os.environ.get(PYTHON_ENV, "").strip()
    if explicit:
        version = _python_version(explicit)
        if version is None or version < MIN_PYTHON:
            got = "not runnable" if version is None else f"Python {_fmt(version)}"
            raise LocalStackError(f"{PYTHON_ENV}={explicit} is {got}; LocalStack needs Python >= 3.12")
        return Path(explicit), version
    candidates = [found for name in ("python3.13", "python3.12") if (found := shutil.which(name))]
    pyenv_root = os.environ.get("PYENV_ROOT") or str(Path.home() / ".pyenv")
    for pattern in ("3.13.*", "3.12.*"):
        candidates += sorted(glob.glob(f"{pyenv_root}/versions/{pattern}/bin/python"), reverse=True)
    for candidate in candidates:
        version = _python_version(candidate)
        if version is not None and version >= MIN_PYTHON:
            return Path(candidate), version
    raise LocalStackError(
        "no Python >= 3.12 found for LocalStack (tried $CLEFS_LOCALSTACK_PYTHON, python3.13, "
        f"python3.12, {pyenv_root}/versions/3.1[23]*): install one (e.g. `pyenv install 3.12`) "
        f"and/or set {PYTHON_ENV}=/path/to/python3.12"
    )


def venv_dir(root: str | os.PathLike[str] = REPO_ROOT) -> Path:
    return Path(root) / VENV_NAME


def _pins_digest(version: tuple[int, int]) -> str:
    text = "\n".join([*PINS, f"python {_fmt(version)}"])
    return hashlib.sha256(text.encode()).hexdigest()


def _pip(python: Path, args: list[str], log: Path, echo: Callable[[str], None] | None = None) -> int:
    """Run pip, appending its output minus the mirror-location noise to `log`.

    With `echo`, a line at least every 2 s (what pip last said), so a first install of a
    minute or two is never silent.
    """
    last = ["starting"]
    done = threading.Event()

    def tick() -> None:
        began = time.monotonic()
        while not done.wait(2.0):
            if echo is not None:
                echo(f"  pip, {time.monotonic() - began:.0f} s: {last[0][:90]}")

    ticker = threading.Thread(target=tick, daemon=True)
    with log.open("a", encoding="utf-8") as out:
        out.write(f"$ {python} -m pip {' '.join(args)}\n")
        out.flush()
        proc = subprocess.Popen(
            [str(python), "-m", "pip", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            text=True,
            env=_clean_env({"PIP_DISABLE_PIP_VERSION_CHECK": "1"}),
        )
        assert proc.stdout is not None
        ticker.start()
        try:
            for line in proc.stdout:
                if not _PIP_NOISE.match(line):
                    out.write(line)
                    if line.strip():
                        last[0] = line.strip()
            return proc.wait()
        finally:
            done.set()
            ticker.join()


def ensure_venv(
    root: str | os.PathLike[str] = REPO_ROOT, *, echo: Callable[[str], None] | None = None
) -> Path:
    """Make `<root>/.venv-localstack` hold exactly PINS; return its python. Idempotent.

    A stamp file records a hash of the pins and the Python version; when it matches and the
    venv's python runs, nothing is installed. pip's output goes to `<venv>/install.log`.
    """
    venv = venv_dir(root)
    python = venv / "bin" / "python"
    stamp = venv / ".clefs-pins.sha256"
    venv.mkdir(parents=True, exist_ok=True)
    with (venv / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # two test sessions may get here at once
        current = _python_version(str(python)) if python.exists() else None
        if (
            current is not None
            and current >= MIN_PYTHON
            and stamp.exists()
            and stamp.read_text().strip() == _pins_digest(current)
        ):
            return python
        if current is None or current < MIN_PYTHON:
            current = _recreate(venv, echo)
        _install(venv, python, echo)
        _atomic_write(stamp, _pins_digest(current) + "\n")
    return python


def _recreate(venv: Path, echo: Callable[[str], None] | None) -> tuple[int, int]:
    """A broken or too-old venv: empty it (keeping the lock) and make it again with a Python >=
    3.12; returns that Python's version."""
    base, current = find_python()
    for entry in venv.iterdir():  # a broken or too-old venv: rebuild, keep the lock
        if entry.name == ".lock":
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()
    if echo:
        echo(f"creating {venv} with Python {_fmt(current)} ({base})")
    made = subprocess.run(
        [str(base), "-m", "venv", str(venv)],
        capture_output=True,
        text=True,
        check=False,
        env=_clean_env(),
    )
    if made.returncode != 0:
        last = (made.stderr.strip().splitlines() or ["?"])[-1]
        raise LocalStackError(f"could not create {venv} with {base}: {last}")
    return current


def _install(venv: Path, python: Path, echo: Callable[[str], None] | None) -> None:
    """pip install PINS, check that LocalStack imports, record `pip freeze` in freeze.txt."""
    log = venv / "install.log"
    log.write_text("")
    if echo:
        echo(f"installing LocalStack into {venv} (first time: a minute or two); log: {log}")
    rc = _pip(python, ["install", *PINS], log, echo)
    if rc != 0:
        raise LocalStackError(f"installing LocalStack into {venv} failed (pip exit {rc}); see {log}")
    check = subprocess.run(
        [str(python), "-c", "import localstack.runtime.main"],
        capture_output=True,
        text=True,
        check=False,
        env=_clean_env(),
    )
    if check.returncode != 0:
        with log.open("a", encoding="utf-8") as out:
            out.write(check.stdout + check.stderr)
        raise LocalStackError(f"LocalStack installed in {venv} does not import; see {log}")
    freeze = subprocess.run([str(python), "-m", "pip", "freeze"], capture_output=True, text=True, check=False)
    (venv / "freeze.txt").write_text(freeze.stdout)


def _clean_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """For pip and venv: this environment minus our venv's Python settings and any secret."""
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP", "VIRTUAL_ENV")
        and (key.startswith("PIP_") or not _ENV_DENY.search(key))
    }
    env.update(extra or {})
    return env
