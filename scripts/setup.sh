#!/usr/bin/env bash
# Idempotent set-up on a fresh Debian machine: system packages, then the project venv.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v softhsm2-util >/dev/null 2>&1 || need_apt+=(softhsm2)
command -v pkcs11-tool >/dev/null 2>&1 || need_apt+=(opensc)
command -v age >/dev/null 2>&1 || need_apt+=(age)
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "setup: installing ${need_apt[*]} (apt)"
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

# Headless Chromium for the auditor's report test (marked slow) and bench/report_html.py.
bash scripts/install-chromium.sh

# pip, minus the noise of this machine's local index mirrors; keeps pip's exit code. A line at
# least every 2 s while it runs (a first install takes minutes: never silent).
pipq() {
  local start=$SECONDS ticker
  ( while sleep 2; do echo "setup: still installing ($((SECONDS - start)) s)"; done ) &
  ticker=$!
  "$@" 2>&1 | { grep -v '^WARNING: Location' || true; }
  local rc=${PIPESTATUS[0]}
  kill "$ticker" 2>/dev/null; wait "$ticker" 2>/dev/null || true
  return "$rc"
}

PY=${CLEFS_PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv with $($PY --version)"
  "$PY" -m venv .venv
fi
stamp=.venv/.requirements.sha256
want=$(cat requirements.txt pyproject.toml | sha256sum | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "setup: installing pinned requirements into .venv"
  pipq .venv/bin/python -m pip install -q --upgrade pip
  pipq .venv/bin/python -m pip install -q -r requirements.txt
  if ! .venv/bin/python -m pip install -q --no-deps -e . > .venv/editable-install.log 2>&1; then
    cat .venv/editable-install.log >&2
    exit 1
  fi
  .venv/bin/python -c "import pkcs11, pyshamir, pyrage, pulumi, pulumi_aws, boto3, typer, rich"
  echo "$want" > "$stamp"
fi

# LocalStack runs in its own venv on Python >= 3.12 (idempotent: a stamp skips it when up to date).
if [ "${CLEFS_SKIP_LOCALSTACK_VENV:-0}" != "1" ] && [ -z "${CLEFS_LOCALSTACK_ENDPOINT:-}" ]; then
  .venv/bin/python -c "from hsm_lab.aws.localstack import ensure_venv; ensure_venv(echo=lambda m: print(m, flush=True))"
fi
