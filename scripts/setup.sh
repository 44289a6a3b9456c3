#!/usr/bin/env bash
# One-command set-up: a virtual environment in .venv with jaxgeal and its test dependencies (CPU JAX).
# Usage: bash scripts/setup.sh [extra pip requirement ...]
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
if ! command -v uv >/dev/null 2>&1; then
  "$PY" -m pip install -q uv
fi
if [ ! -x .venv/bin/python ]; then
  uv venv -q .venv --python "$("$PY" -c 'import sys; print(sys.executable)')"
fi
uv pip install -q --python .venv/bin/python -e ".[test]" "$@"
.venv/bin/python -c "import jax, flax, jaxgeal; print('jaxgeal', jaxgeal.__version__, '| jax', jax.__version__, '| flax', flax.__version__, '| devices', jax.devices())"
