"""What keeps a ceremony session's shares from outliving it: no core dump, no ptrace, a janitor
that removes the socket even after SIGKILL, and signals turned into a clean stop.
"""

from __future__ import annotations

import contextlib
import ctypes
import resource
import signal
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any


class Stop(BaseException):
    """A signal asked the session to stop: wipe and leave."""


def alive(path: Path) -> bool:
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(1.0)
    try:
        probe.connect(str(path))
    except OSError:
        return False
    finally:
        probe.close()
    return True


def harden_process() -> None:
    """No core dump and no ptrace by other processes of the same user (best effort, Linux)."""
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(4, 0, 0, 0, 0)  # PR_SET_DUMPABLE = 4


JANITOR = """
import os, sys
path, inode = sys.argv[1], int(sys.argv[2])
sys.stdin.buffer.read()  # returns when the session closes the pipe or dies (even SIGKILL)
try:
    if os.lstat(path).st_ino == inode:
        os.unlink(path)
except FileNotFoundError:
    pass
try:
    os.rmdir(os.path.dirname(path))
except OSError:
    pass
"""


def start_janitor(path: Path, inode: int) -> subprocess.Popen[bytes] | None:
    """A tiny process that removes the socket when the session dies, however it dies."""
    try:
        return subprocess.Popen(
            [sys.executable, "-I", "-c", JANITOR, str(path), str(inode)],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,  # a Ctrl-C at the session's terminal does not reach it
            env={},
        )
    except OSError:
        return None


def stop_janitor(janitor: subprocess.Popen[bytes] | None) -> None:
    if janitor is None:
        return
    with contextlib.suppress(OSError):
        assert janitor.stdin is not None
        janitor.stdin.close()
    with contextlib.suppress(subprocess.TimeoutExpired):
        janitor.wait(timeout=5)


Handler = Callable[[int, FrameType | None], Any] | int | None


def trap_signals() -> dict[int, Handler]:
    def stop(_signum: int, _frame: FrameType | None) -> None:
        raise Stop

    previous: dict[int, Handler] = {}
    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        with contextlib.suppress(ValueError):  # not the main thread: leave signals alone
            previous[signum] = signal.signal(signum, stop)
    return previous


def restore_signals(previous: dict[int, Handler]) -> None:
    for signum, handler in previous.items():
        signal.signal(signum, handler)
