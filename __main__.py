"""Pulumi entry point for project `clefs`: all logic lives in infra/ (see docs/infra.md)."""

import pulumi

from infra.program.stack import build

for _name, _value in build().items():
    pulumi.export(_name, _value)
