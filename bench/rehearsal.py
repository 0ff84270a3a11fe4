"""Time the README's main command: the full rehearsal, LocalStack start and stop included.

Goal (issue 8): under 20 s on this 2-core machine once installed, LocalStack start
included. Each run uses a fresh lab and a free loopback port, so LocalStack really starts
(cold: a new data directory) and is stopped by the rehearsal. Prints figures; asserts nothing.
"""

from __future__ import annotations

import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

GOAL_SECONDS = 20.0
REPO = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def one_run() -> tuple[float, str]:
    with tempfile.TemporaryDirectory(prefix="clefs-bench-") as tmp:
        env = {
            k: v for k, v in os.environ.items() if not k.startswith(("CLEFS_", "LOCALSTACK_", "AWS_ENDPOINT"))
        }
        env.update(LOCALSTACK_HOST=f"127.0.0.1:{free_port()}", COLUMNS="200")
        start = time.perf_counter()
        result = subprocess.run(
            [str(REPO / ".venv/bin/hsm-lab"), "rehearse", "--lab", str(Path(tmp) / "lab")],
            env=env,
            capture_output=True,
            text=True,
            check=False,
            timeout=600,
        )
        wall = time.perf_counter() - start
    if result.returncode != 0:
        raise SystemExit(f"rehearsal failed: {result.stderr.strip()[-400:]}")
    timings = re.findall(r"^timings: (ceremony .*)$", result.stdout, re.MULTILINE)
    return wall, timings[-1] if timings else ""


def main(runs: int = 3) -> int:
    walls = []
    print(f"full rehearsal bench: {runs} runs of `hsm-lab rehearse`, each starting its own LocalStack")
    for number in range(1, runs + 1):
        wall, steps = one_run()
        walls.append(wall)
        print(f"run {number}: {wall:.1f} s wall  ({steps})")
    median = statistics.median(walls)
    verdict = "meets" if median < GOAL_SECONDS else "MISSES"
    print(
        f"median {median:.1f} s (min {min(walls):.1f}, max {max(walls):.1f}): "
        f"{verdict} the {GOAL_SECONDS:.0f} s goal"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(int(sys.argv[1]) if len(sys.argv) > 1 else 3))
