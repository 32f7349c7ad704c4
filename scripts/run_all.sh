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
#          --check-data: first run the preflight `python -m clipkit.check_data` on the sweep's --data-root and
#          --datasets (decodes every image, checks sizes, classes and descriptions; DATASETS.md#preflight) and start
#          the sweep only if it passes. Options for the check go in $CHECK_DATA_OPTS, e.g.
#          CHECK_DATA_OPTS="--ignore-descriptions --workers 16" (training-free CLIP needs no descriptions).
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [[ -z "${PYTHON:-}" ]]; then
    if [[ -x "$REPO/.venv/bin/python" ]]; then PYTHON="$REPO/.venv/bin/python"; else PYTHON=python3; fi
fi
export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}"

check_data=0
sweep_args=()
for arg in "$@"; do
    if [[ "$arg" == "--check-data" ]]; then check_data=1; else sweep_args+=("$arg"); fi
done
if (( check_data )); then
    # shellcheck disable=SC2086  # CHECK_DATA_OPTS is a list of options, split on purpose
    "$PYTHON" -m clipkit.check_data ${CHECK_DATA_OPTS:-} --sweep-args "${sweep_args[@]+"${sweep_args[@]}"}" || {
        status=$?
        echo "run_all.sh: the data check failed (exit $status); fix the problems above or drop --check-data" >&2
        exit "$status"
    }
fi
exec "$PYTHON" -m clipkit.sweep "${sweep_args[@]+"${sweep_args[@]}"}"
