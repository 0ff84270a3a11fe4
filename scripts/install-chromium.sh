#!/usr/bin/env bash
# Headless Chromium (Debian package `chromium`) for the auditor's report test (tests/ceremony_day,
# marked slow) and bench/report_html.py. Idempotent: does nothing when chromium is already there.
# The lead calls it from scripts/setup.sh; the test itself never installs anything and skips,
# printing why, when chromium is absent.
set -euo pipefail
if command -v chromium >/dev/null 2>&1; then
  exit 0
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  SUDO="sudo"
fi
echo "install-chromium: apt-get install chromium (headless use only)" >&2
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends chromium >/dev/null
command -v chromium >/dev/null
