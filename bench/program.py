"""Time to evaluate the Clefs program under Pulumi mocks for 3, 30 and 300 data classes.

    .venv/bin/python bench/program.py [--calls] [N ...]

Goal: under 1 s for the default 3 classes (imports included), and a flat cost per resource as
classes grow. Each size is timed twice: with CPython's cyclic GC paused during evaluation (one
collection at the end, timed too; what the tests use) and with the GC left on, whose full-heap
collections are what makes the cost per resource grow with the size of the program.
`--calls` also counts Python function calls per resource (cProfile): the algorithmic cost,
independent of machine load and cache effects.
"""

from __future__ import annotations

import cProfile
import pstats
import resource
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

warnings.filterwarnings("ignore", category=DeprecationWarning)
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from infra.model.data_classes import DEFAULT_DATA_CLASSES, to_config  # noqa: E402


def data_classes(n: int) -> list[dict[str, object]]:
    """The three defaults, then class-0003, class-0004, ... up to n classes."""
    defaults = to_config(DEFAULT_DATA_CLASSES)[:n]
    return defaults + [{"name": f"class-{i:04d}"} for i in range(len(defaults), n)]


def calls_per_resource(run_program: Callable[..., Any], n: int) -> float:
    profile = cProfile.Profile()
    profile.enable()
    recording = run_program({"dataClasses": data_classes(n)})
    profile.disable()
    return pstats.Stats(profile).total_calls / len(recording.resources)  # type: ignore[attr-defined]


def main(argv: list[str]) -> int:
    calls = "--calls" in argv
    sizes = [int(a) for a in argv if a != "--calls"] or [3, 30, 300]
    t0 = time.perf_counter()
    from infra.mocks import run_program  # pulumi, pulumi_aws and the components

    imports = time.perf_counter() - t0
    t0 = time.perf_counter()
    first = run_program({"dataClasses": data_classes(3)})
    cold = time.perf_counter() - t0
    print(
        f"default 3 classes, cold: {(imports + cold) * 1000:.0f} ms "
        f"(imports {imports * 1000:.0f} ms + first evaluation {cold * 1000:.0f} ms, "
        f"{len(first.resources)} resources)"
    )
    print(f"{'classes':>7} {'resources':>9} {'gc paused ms':>12} {'ms/res':>7} {'gc on ms':>9} {'ms/res':>7}")
    for n in sizes:
        row = [f"{n:>7}"]
        for pause in (True, False):
            t0 = time.perf_counter()
            recording = run_program({"dataClasses": data_classes(n)}, pause_gc=pause)
            elapsed = (time.perf_counter() - t0) * 1000
            count = len(recording.resources)
            if pause:
                row.append(f"{count:>9}")
            row += [f"{elapsed:>{12 if pause else 9}.0f}", f"{elapsed / count:>7.2f}"]
        print(" ".join(row), flush=True)
    if calls:
        for n in sizes:
            print(f"{n:>7} classes: {calls_per_resource(run_program, n):,.0f} Python calls per resource")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak RSS {peak:.0f} MB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
