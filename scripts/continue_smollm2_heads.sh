#!/bin/bash
# Trains the SmolLM2-135M-Instruct heads of scripts/train_smollm2_heads.sh further, on more conversations: extends
# the feature cache with conversations FROM+1..TO of the rendered ShareGPT text, then runs both fits again from the
# heads that script trained (`fit --init-from-head`: their weights and draft vocabulary, a fresh schedule) on the
# first TO conversations. This is how the shipped heads were trained (the defaults).
#
#   bash scripts/continue_smollm2_heads.sh [WORK_DIR]    # the WORK_DIR train_smollm2_heads.sh used
#   (FROM, TO: the conversations added; STEPS, LR: the second fits' length and peak learning rate)
#
# A later round starts from this one's heads: INIT and OUT name the folders' suffixes (the heads come from
# $WORK_DIR/jetspec$INIT and dflash$INIT and go to jetspec$OUT and dflash$OUT), CACHE the feature cache of the
# first TO conversations (built when missing), PRECISION the head's autocast (bf16: ~1.6x faster steps on a CPU with
# bf16 instructions, the same accuracy per step), PACKAGE=0 leaves jetspec_hf/bundled/ alone:
#   bash scripts/continue_smollm2_heads.sh                                   # round 2: the shipped heads
#   INIT=2 OUT=3 STEPS=2500 LR=5e-4 PRECISION=bf16 PACKAGE=0 bash scripts/continue_smollm2_heads.sh
#     # round 3 on the same conversations (examples/smollm2/README.md says what it bought)
#
# Resumable like the first script: the cache parts resume shard by shard, the fits from their checkpoints.
set -euo pipefail
work=${1:-smollm2_work}
from=${FROM:-1600}
to=${TO:-3200}
steps=${STEPS:-2000}
lr=${LR:-6e-4}
init=${INIT:-}
out=${OUT:-2}
cache=${CACHE:-cache2}
precision=${PRECISION:-no}
here=$(cd "$(dirname "$0")/.." && pwd)
source "$here/scripts/smollm2_recipe.sh"
for kind in jetspec dflash; do
  [ -f "$work/$kind$init/model.safetensors" ] || { echo "no $work/$kind$init: train it first" >&2; exit 1; }
done

half=$(( from + (to - from) / 2 ))
head -n "$to" "$work/sharegpt_tf.jsonl" > "$work/train2.jsonl"
sed -n "$(( from + 1 )),${half}p" "$work/sharegpt_tf.jsonl" > "$work/train_c.jsonl"
sed -n "$(( half + 1 )),${to}p" "$work/sharegpt_tf.jsonl" > "$work/train_d.jsonl"
if [ ! -f "$work/$cache/train/manifest.json" ]; then
  fit cache_c --cache-only --train-data "$work/train_c.jsonl" --cache-features "$work/cache_c" \
    --eval-data "" > "$work/cache_c.log" 2>&1 &
  fit cache_d --cache-only --train-data "$work/train_d.jsonl" --cache-features "$work/cache_d" \
    --eval-data "" > "$work/cache_d.log" 2>&1 &
  wait
  # train2.jsonl is train.jsonl (cache_a + cache_b) followed by the two new parts.
  python "$here/scripts/combine_feature_caches.py" --data "$work/train2.jsonl" --output "$work/$cache/train" \
    "$work/cache_a/train" "$work/cache_b/train" "$work/cache_c/train" "$work/cache_d/train"
  python "$here/scripts/combine_feature_caches.py" --data "$work/eval.jsonl" --output "$work/$cache/eval" \
    "$work/cache_a/eval"
fi
continued=(--train-data "$work/train2.jsonl" --cache-features "$work/$cache" --lr "$lr" --mixed-precision "$precision")
fit "jetspec$out" "${continued[@]}" --init-from-head "$work/jetspec$init" $(resume "jetspec$out") \
  > "$work/jetspec$out.log" 2>&1 &
fit "dflash$out" --bidirectional "${continued[@]}" --init-from-head "$work/dflash$init" $(resume "dflash$out") \
  > "$work/dflash$out.log" 2>&1 &
wait
[ "${PACKAGE:-1}" = 1 ] || exit 0

python "$here/scripts/package_smollm2_heads.py" --jetspec "$work/jetspec$out" --dflash "$work/dflash$out" \
  --conversations "$to" --made-by "${MADE_BY:-bash scripts/train_smollm2_heads.sh; bash scripts/continue_smollm2_heads.sh}"
