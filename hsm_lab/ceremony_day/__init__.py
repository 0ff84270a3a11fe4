"""Ceremony day: the session custodians present to, the printed script, the auditor's report,
first-contact helpers (custodians, clefs.toml, doctor) and the JSON schemas of the outputs.

Domain code only: the commands live in hsm_lab.cli.day and are part of `hsm-lab`.
"""
