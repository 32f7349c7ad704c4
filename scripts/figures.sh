#!/usr/bin/env bash
# Draw the paper's figures from the toolkit's runs (alias of `python -m clipkit.figures`):
#
#   bash scripts/figures.sh curves --root output/tiny
#   bash scripts/figures.sh deltas --root output/tiny
#   bash scripts/figures.sh attention --run output/tiny/tiny/MicroCLIP/seed1
#   bash scripts/figures.sh ablation --root output/ablations/vit_b32 --sweep gamma
#
# Interpreter: $PYTHON, else the repo's .venv/bin/python, else python3.
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [[ -z "${PYTHON:-}" ]]; then
    if [[ -x "$REPO/.venv/bin/python" ]]; then PYTHON="$REPO/.venv/bin/python"; else PYTHON=python3; fi
fi
export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}"
exec "$PYTHON" -m clipkit.figures "$@"
