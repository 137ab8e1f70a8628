# Sourced by scripts/serve and scripts/test: make .venv and install the project into it with the extra
# the caller names (EXTRA: `local` to run the service, `dev` to test it; dev includes local), once per
# change of pyproject.toml. Needs only Python 3.11+ on PATH.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PYTHON=${PYTHON:-python3}
EXTRA=${EXTRA:-dev}
if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
  echo "taskevents needs Python 3.11 or newer as \$PYTHON or python3" >&2
  exit 1
fi
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
stamp=$("$PYTHON" -c 'import hashlib,sys; print(hashlib.sha256(open("pyproject.toml","rb").read()).hexdigest())')
read -r have_stamp have_extra < .venv/.installed 2>/dev/null || true
if [ "${have_stamp:-}" != "$stamp" ] || { [ "${have_extra:-}" != "$EXTRA" ] && [ "${have_extra:-}" != dev ]; }; then
  .venv/bin/python -m pip install --quiet --upgrade pip
  .venv/bin/python -m pip install --quiet -e ".[$EXTRA]"
  echo "$stamp $EXTRA" > .venv/.installed
fi
export PATH="$PWD/.venv/bin:$PATH"
