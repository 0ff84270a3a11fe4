"""`python -m hsm_lab` is the same CLI as `hsm-lab`."""

from hsm_lab.cli import main

main()
