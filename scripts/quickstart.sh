#!/usr/bin/env bash
# Install the toolkit into .venv (created if missing) and run the main job.
#
#   bash scripts/quickstart.sh                 # install, then the main job
#   bash scripts/quickstart.sh --install-only  # install only
#
# Main job: `bash scripts/run_all.sh tiny` (every method on the embedded tiny benchmark, CPU) when that script exists;
# otherwise a tiny end-to-end run of the test-only TrivialProbe trainer on a generated image folder.
# Interpreter used to create .venv: $PYTHON_BOOTSTRAP (default python3).
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"

INSTALL_ONLY=0
for arg in "$@"; do
    case "$arg" in
        --install-only) INSTALL_ONLY=1 ;;
        -h|--help) sed -n '2,9p' "$0"; exit 0 ;;
        *) echo "quickstart.sh: unknown argument '$arg' (use --install-only or --help)" >&2; exit 2 ;;
    esac
done

if [[ ! -x .venv/bin/python ]]; then
    echo "== creating .venv with ${PYTHON_BOOTSTRAP:-python3}"
    "${PYTHON_BOOTSTRAP:-python3}" -m venv .venv
fi
echo "== installing requirements.txt into .venv"
.venv/bin/python -m pip install --disable-pip-version-check -q -r requirements.txt

if [[ "$INSTALL_ONLY" == 1 ]]; then
    echo "== installed (main job skipped: --install-only)"
    exit 0
fi

if [[ -f scripts/run_all.sh ]]; then
    echo "== main job: bash scripts/run_all.sh tiny"
    start=$SECONDS
    bash scripts/run_all.sh tiny
    echo "== main job took $(( (SECONDS - start) / 60 )) min $(( (SECONDS - start) % 60 )) s"
else
    OUT="output/quickstart"
    echo "== main job (fallback): TrivialProbe on a generated image folder -> $OUT"
    .venv/bin/python - "$OUT/data" <<'PY'
import sys
import numpy as np
sys.path.insert(0, ".")
from tests.conftest import write_image
rng = np.random.default_rng(0)
for name, color in (("red", (255, 0, 0)), ("green", (0, 255, 0)), ("blue", (0, 0, 255))):
    for i in range(6):
        write_image(f"{sys.argv[1]}/images/{name}/{i}.jpg", rng, color=color)
PY
    CLIPKIT_EXTRA_PLUGINS=tests.plugins.image_folder_dataset,tests.plugins.trivial_trainer \
        .venv/bin/python train.py --root "$OUT/data" --output-dir "$OUT/TrivialProbe/seed1" --seed 1 \
        --trainer TrivialProbe DATASET.NAME TestImageFolder USE_CUDA False DATALOADER.NUM_WORKERS 0 \
        INPUT.SIZE "(32, 32)" DATALOADER.TRAIN_X.BATCH_SIZE 4 OPTIM.NAME sgd OPTIM.LR 0.5 OPTIM.MAX_EPOCH 2
    echo "== result: $OUT/TrivialProbe/seed1/results.json"
fi
