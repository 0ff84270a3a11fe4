"""Fault injection for the crash tests: die like `kill -9` at a named point.

`CLEFS_TEST_FAULT=<point>` makes the process SIGKILL itself when it reaches
`fault(<point>)`. Points are named `<step>:<phase>` (see docs/threat-model.md).
Only the tests set it; anyone who can set a process's environment can kill that
process anyway, so honouring it gives nobody a new power.
"""

from __future__ import annotations

import os
import signal

FAULT_ENV = "CLEFS_TEST_FAULT"


def fault(point: str) -> None:
    if os.environ.get(FAULT_ENV) == point:
        os.kill(os.getpid(), signal.SIGKILL)
