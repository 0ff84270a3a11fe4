"""Time the ceremony steps, the whole rehearsal, and the per-command record check.

Goals (issue 7): the ceremony rehearsal under 1 s on this 2-core machine with
the integrity checks; the verification every command runs first (chain,
manifests, signers, head signature, the token's committed heads) under 50 ms
for a 1,000-entry transcript. Prints figures; asserts nothing.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

from hsm_lab.rehearsal import rehearse

REHEARSAL_GOAL = 1.0
VERIFY_GOAL_MS = 50.0


def rehearsal_figures(runs: int) -> None:
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
        print(
            f"{step:<26}{statistics.median(values) * 1000:>12.0f}{min(values) * 1000:>10.0f}"
            f"{max(values) * 1000:>10.0f}"
        )
    median_total = statistics.median(totals["total"])
    verdict = "meets" if median_total < REHEARSAL_GOAL else "MISSES"
    print(f"rehearsal median {median_total:.2f} s: {verdict} the {REHEARSAL_GOAL:.0f} s goal")


def verification_figures(entries: int, committed_every: int, runs: int = 7) -> None:
    """A lab with `entries` transcript entries, one in `committed_every` holding a token head."""
    import secrets

    import pyrage

    from hsm_lab import ceremony
    from hsm_lab.ceremony.custodians import Custodian
    from hsm_lab.ceremony.record import Record, verify_lab
    from hsm_lab.hsm import HSM
    from hsm_lab.lab import PRIMARY_TOKEN, Lab

    with tempfile.TemporaryDirectory(prefix="clefs-bench-") as tmp:
        lab = Lab(Path(tmp) / "lab")
        hsm = HSM(lab.root)
        pin, so = secrets.token_urlsafe(12), secrets.token_urlsafe(12)
        ceremony.init_token(hsm, lab, token=PRIMARY_TOKEN, so_pin=so, user_pin=pin)
        people = [Custodian(f"c{i}", str(pyrage.x25519.Identity.generate().to_public())) for i in range(7)]
        ceremony.generate(hsm, lab, token=PRIMARY_TOKEN, user_pin=pin, custodians=people)
        with hsm.session(PRIMARY_TOKEN, user_pin=pin) as session:
            opened = Record.open(lab, session)
            while len(opened.state.entries) < entries:
                n = len(opened.state.entries)
                action = "recover" if n % committed_every == 0 else "verify-share"
                opened.append("bench", action, {"token": PRIMARY_TOKEN, "n": n, "destroyed": []})
            heads = None
        open_ms, files_ms = [], []
        for _ in range(runs):
            with hsm.session(PRIMARY_TOKEN, user_pin=pin) as session:
                start = time.perf_counter()
                state = Record.open(lab, session).state
                open_ms.append((time.perf_counter() - start) * 1000)
                heads = state.token_heads
            start = time.perf_counter()
            verify_lab(lab)
            files_ms.append((time.perf_counter() - start) * 1000)
        verdict = "meets" if statistics.median(open_ms) < VERIFY_GOAL_MS else "MISSES"
        print(
            f"record check, {entries} entries, {heads} committed heads in the token: "
            f"per command (files + token heads) median {statistics.median(open_ms):.1f} ms "
            f"(min {min(open_ms):.1f}), files only {statistics.median(files_ms):.1f} ms: "
            f"{verdict} the {VERIFY_GOAL_MS:.0f} ms goal"
        )


def main(runs: int = 5) -> int:
    rehearsal_figures(runs)
    verification_figures(1000, committed_every=20)
    verification_figures(1000, committed_every=1)
    return 0


if __name__ == "__main__":
    sys.exit(main(int(sys.argv[1]) if len(sys.argv) > 1 else 5))
