"""Ceremony day: the session custodians present to, the printed script, the auditor's report,
first-contact helpers (custodians, clefs.toml, doctor) and the JSON schemas of the outputs.

Only new modules: the lead mounts `hsm_lab.ceremony_day.cli` into `hsm-lab` once the package
restructure (issue 10) lands; until then `python -m hsm_lab.ceremony_day` runs it.
"""
