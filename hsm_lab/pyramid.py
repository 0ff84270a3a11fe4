"""The full rehearsal L0-L3: stable import path; the code lives in :mod:`hsm_lab.rehearsal.full`."""

from hsm_lab.rehearsal.full import (
    AES_WRAP_CLASS,
    DRILL_CLASS,
    EXPIRING_CLASS,
    SAMPLES,
    PyramidReport,
    rehearse_pyramid,
    revocation_drill,
    write_samples,
)

__all__ = [
    "AES_WRAP_CLASS",
    "DRILL_CLASS",
    "EXPIRING_CLASS",
    "SAMPLES",
    "PyramidReport",
    "rehearse_pyramid",
    "revocation_drill",
    "write_samples",
]
