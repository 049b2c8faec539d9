#!/usr/bin/env bash
# GPU check of the tree loop in one command (issue 11): `jetspec-hf bench --synthetic` at Qwen3-8B shapes, bf16,
# sdpa and flash-attention 2 targets, compiled and not, τ forced to 2/4/6/8 at budgets 16/64/256. Needs no download.
# The bench starts no new measurement after 230 s and `timeout` stops it at 270 s, so the whole command (with its
# installs and imports) ends within 5 minutes on one H200; whatever was measured by then is in the reports, which
# are rewritten after every measurement.
#
#   examples/gpu_check.sh [OUTPUT_DIR] [more `jetspec-hf bench --synthetic` options]
#
# OUTPUT_DIR defaults to $OUT when set (the device machine's return folder), else bench_results/gpu_check. It gets
# synthetic.json, synthetic.md (the tables, also printed at the end) and gpu_check.log.
#
# Needs python3 with a CUDA build of torch and transformers >= 5.24. Where transformers is older (the H200 image had
# 5.17), carry wheels in .whl/ (git-ignored there via .git/info/exclude), made beforehand on a machine with pip:
#   echo /.whl/ >> .git/info/exclude
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#       --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 -d .whl transformers==5.24.0 regex
# This script installs them into a private folder first. flash-attn is not on that image and has no wheel to
# carry for its torch; without it the flash_attention_2 rows say "skipped".
set -uo pipefail
cd "$(dirname "$0")/.."

out="${1:-${OUT:-bench_results/gpu_check}}"
shift || true
mkdir -p "$out"

if compgen -G ".whl/*.whl" > /dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/jetspec_site \
        .whl/*.whl || exit 1
    export PYTHONPATH="/tmp/jetspec_site${PYTHONPATH:+:$PYTHONPATH}"
fi
# The package runs from this checkout, uninstalled.
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1

python3 - << 'EOF' 2>&1 | tee "$out/gpu_check.log" || exit 1
import sys

import torch
import transformers
from packaging.version import Version

print(f"python {sys.version.split()[0]}, torch {torch.__version__}, transformers {transformers.__version__}")
if Version(transformers.__version__) < Version("5.24"):
    sys.exit("transformers >= 5.24 is needed: carry its wheel in .whl/ (see examples/gpu_check.sh)")
if torch.cuda.is_available():
    print(f"GPU: {torch.cuda.get_device_name()}, {torch.cuda.get_device_properties(0).total_memory / 2**30:.0f} GiB")
else:
    print("no CUDA device: pass --device cpu --shapes tiny to try this script on a CPU")
EOF

timeout 270 python3 -m jetspec_hf.cli bench --synthetic --shapes 8b --output-dir "$out" "$@" 2>&1 \
    | tee -a "$out/gpu_check.log"
status=$?
if [ "$status" -ne 0 ]; then
    # Cut short or failed: the tables were not printed, but the report holds what was measured.
    echo
    cat "$out/synthetic.md" 2> /dev/null || echo "no report was written (see $out/gpu_check.log)"
fi
exit $status
