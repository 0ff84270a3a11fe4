"""Time the ceremony steps and the whole rehearsal on the real SoftHSM2 module.

Goal (issue 2): the rehearsal under 5 s on a 2-core machine once installed.
Prints figures; asserts nothing.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

from hsm_lab.rehearsal import rehearse

GOAL_SECONDS = 5.0


def main(runs: int = 5) -> int:
    totals: dict[str, list[float]] = {}
    for run in range(runs):
        with tempfile.TemporaryDirectory(prefix="clefs-bench-") as tmp:
            start = time.perf_counter()
            report = rehearse(Path(tmp) / "lab", seed=run)
            wall = time.perf_counter() - start
        for step, seconds in report.timings.items():
            totals.setdefault(step, []).append(seconds)
        totals.setdefault("wall (incl. lab setup)", []).append(wall)
    print(f"ceremony bench: {runs} rehearsals on SoftHSM2, 5-of-7 then rekey to 5-of-8")
    print(f"{'step':<26}{'median ms':>12}{'min ms':>10}{'max ms':>10}")
    for step, values in totals.items():
        print(f"{step:<26}{statistics.median(values) * 1000:>12.0f}{min(values) * 1000:>10.0f}"
              f"{max(values) * 1000:>10.0f}")
    median_total = statistics.median(totals["total"])
    verdict = "meets" if median_total < GOAL_SECONDS else "MISSES"
    print(f"rehearsal median {median_total:.2f} s: {verdict} the {GOAL_SECONDS:.0f} s goal")
    return 0


if __name__ == "__main__":
    sys.exit(main(int(sys.argv[1]) if len(sys.argv) > 1 else 5))
