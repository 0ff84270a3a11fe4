"""Clefs policy pack rules (importable; the pack itself is built in policy/__main__.py)."""
