"""Rehearsals: the ceremony alone (:mod:`.ceremony`) and the full pyramid L0-L3 (:mod:`.full`).

`from hsm_lab.rehearsal import rehearse` is the ceremony-only run; the full one is
`from hsm_lab.rehearsal.full import rehearse_pyramid` .
"""

from hsm_lab.rehearsal.ceremony import (
    FIRST_CUSTODIANS,
    JOINING,
    LEAVING,
    Rehearsal,
    SimulatedCustodian,
    random_pin,
    rehearse,
    share_source,
)

__all__ = [
    "FIRST_CUSTODIANS",
    "JOINING",
    "LEAVING",
    "Rehearsal",
    "SimulatedCustodian",
    "random_pin",
    "rehearse",
    "share_source",
]
