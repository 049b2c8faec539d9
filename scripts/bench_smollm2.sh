#!/bin/bash
# The SmolLM2-135M-Instruct benchmark in examples/smollm2/: plain decoding and every peer against the shipped heads,
# on held-out ShareGPT chat prompts and on code requests, fp32, one torch thread, methods interleaved call by call.
# The two prompt sets run at once, one core each (each run's ratios are measured within that run).
#
#   bash scripts/bench_smollm2.sh [OUTPUT_DIR]     # default: examples/smollm2
set -euo pipefail
out=${1:-examples/smollm2}
samples=${SAMPLES:-4}
tokens=${MAX_NEW_TOKENS:-64}
here=$(cd "$(dirname "$0")/.." && pwd)
mkdir -p "$out/chat" "$out/code"
common=(--target smollm2-135m-instruct --chat-template --samples "$samples" --max-new-tokens "$tokens"
        --threads 1 --repeats 2 --profile-samples 1 --no-progress)
jetspec-hf bench "${common[@]}" --budgets 2 4 8 16 32 \
  --methods lookup hf-dflash chain tree auto dflash-tree --output-dir "$out/chat" > "$out/chat/benchmark.md" \
  2> "$out/chat/bench.log" &
jetspec-hf bench "${common[@]}" --dataset "$here/jetspec_hf/bundled/code_prompts.jsonl" --budgets 4 8 16 32 \
  --methods lookup chain tree auto hybrid dflash-tree --output-dir "$out/code" > "$out/code/benchmark.md" \
  2> "$out/code/bench.log" &
wait
