"""`python -m hsm_lab.ceremony_day`: the ceremony-day commands until they are mounted in `hsm-lab`."""

from hsm_lab.ceremony_day.cli import main

main()
