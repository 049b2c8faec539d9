#!/bin/bash
# Trains the SmolLM2-135M-Instruct heads of scripts/train_smollm2_heads.sh further, on more conversations: extends
# the feature cache with conversations FROM+1..TO of the rendered ShareGPT text, then runs both fits again from the
# heads that script trained (`fit --init-from-head`: their weights and draft vocabulary, a fresh schedule) on the
# first TO conversations. This is how the shipped heads were trained (the defaults).
#
#   bash scripts/continue_smollm2_heads.sh [WORK_DIR]    # the WORK_DIR train_smollm2_heads.sh used
#   (FROM, TO: the conversations added; STEPS, LR: the second fits' length and peak learning rate)
#
# Resumable like the first script: the cache parts resume shard by shard, the fits from their checkpoints.
set -euo pipefail
work=${1:-smollm2_work}
from=${FROM:-1600}
to=${TO:-3200}
steps=${STEPS:-2000}
lr=${LR:-6e-4}
here=$(cd "$(dirname "$0")/.." && pwd)
source "$here/scripts/smollm2_recipe.sh"
for kind in jetspec dflash; do
  [ -f "$work/$kind/model.safetensors" ] || { echo "no $work/$kind: run scripts/train_smollm2_heads.sh first" >&2; exit 1; }
done

half=$(( from + (to - from) / 2 ))
head -n "$to" "$work/sharegpt_tf.jsonl" > "$work/train2.jsonl"
sed -n "$(( from + 1 )),${half}p" "$work/sharegpt_tf.jsonl" > "$work/train_c.jsonl"
sed -n "$(( half + 1 )),${to}p" "$work/sharegpt_tf.jsonl" > "$work/train_d.jsonl"
if [ ! -f "$work/cache2/train/manifest.json" ]; then
  fit cache_c --cache-only --train-data "$work/train_c.jsonl" --cache-features "$work/cache_c" \
    --eval-data "" > "$work/cache_c.log" 2>&1 &
  fit cache_d --cache-only --train-data "$work/train_d.jsonl" --cache-features "$work/cache_d" \
    --eval-data "" > "$work/cache_d.log" 2>&1 &
  wait
  # train2.jsonl is train.jsonl (cache_a + cache_b) followed by the two new parts.
  python "$here/scripts/combine_feature_caches.py" --data "$work/train2.jsonl" --output "$work/cache2/train" \
    "$work/cache_a/train" "$work/cache_b/train" "$work/cache_c/train" "$work/cache_d/train"
  python "$here/scripts/combine_feature_caches.py" --data "$work/eval.jsonl" --output "$work/cache2/eval" \
    "$work/cache_a/eval"
fi
continued=(--train-data "$work/train2.jsonl" --cache-features "$work/cache2" --lr "$lr")
fit jetspec2 "${continued[@]}" --init-from-head "$work/jetspec" $(resume jetspec2) > "$work/jetspec2.log" 2>&1 &
fit dflash2 --bidirectional "${continued[@]}" --init-from-head "$work/dflash" $(resume dflash2) \
  > "$work/dflash2.log" 2>&1 &
wait

python "$here/scripts/package_smollm2_heads.py" --jetspec "$work/jetspec2" --dflash "$work/dflash2" \
  --conversations "$to" --made-by "bash scripts/train_smollm2_heads.sh; bash scripts/continue_smollm2_heads.sh"
