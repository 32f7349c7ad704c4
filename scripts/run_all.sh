#!/usr/bin/env bash
# Run every registered method on every dataset for one backbone; the work is done by clipkit/sweep.py.
#
#   bash scripts/run_all.sh tiny                                        # the embedded tiny benchmark, on CPU
#   bash scripts/run_all.sh vit_b32 --data-root /data --gpus 0,1,2,3    # paper Table 1 (13 datasets x 3 seeds)
#   bash scripts/run_all.sh vit_b16 --datasets dtd,ucf101 --methods MicroCLIP,ZeroshotCLIP --seeds 1
#
# Options: --methods A,B  --datasets x,y  --seeds 1,2,3  --data-root DIR  --output-root DIR (default output/)
#          --gpus 0,1  --dry-run  (see: bash scripts/run_all.sh --help). Interpreter: $PYTHON, else the repo's
#          .venv/bin/python, else python3. Re-running the same command skips finished runs and resumes the others.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [[ -z "${PYTHON:-}" ]]; then
    if [[ -x "$REPO/.venv/bin/python" ]]; then PYTHON="$REPO/.venv/bin/python"; else PYTHON=python3; fi
fi
export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}"
exec "$PYTHON" -m clipkit.sweep "$@"
