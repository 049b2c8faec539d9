#!/bin/bash
# Which change to the SmolLM2 head recipe buys held-out accuracy: short fits from scratch, identical but for one
# setting each, on the feature cache scripts/continue_smollm2_heads.sh built (3,054 conversations), two at a time
# (one core each). Each fit writes eval_results.json with its held-out top-1 per depth; the table comes from
#
#   bash scripts/smollm2_head_variants.sh [WORK_DIR]      # the WORK_DIR the training scripts used
#   python scripts/smollm2_variant_table.py WORK_DIR/variants
#   (STEPS: each fit's length, default 500; VARIANTS: which ones, default all of them, in this order)
#
# The variants (JetSpec, causal; the baseline is the shipped recipe: 1 layer, taps 1/14/27, block 16, lr 1e-3):
#   baseline      the recipe as shipped
#   from_target   the layer, final norm and fc start from the target's last layer (--init-from-target)
#   tap_last      taps 1/14/29: the target's last layer instead of layer 27
#   block8        blocks of 8 instead of 16 (deep depths are rarely reached at this acceptance)
#   lr2e-3        twice the peak learning rate
#   two_layers    2 decoder layers (about twice the step time)
#   bf16          the head's forward and backward under bf16 autocast (--mixed-precision bf16): the same recipe,
#                 faster on a CPU with bf16 matrix instructions
set -euo pipefail
work=${1:-smollm2_work}
steps=${STEPS:-500}
here=$(cd "$(dirname "$0")/.." && pwd)
source "$here/scripts/smollm2_recipe.sh"
[ -f "$work/cache2/train/manifest.json" ] || { echo "no $work/cache2: run scripts/continue_smollm2_heads.sh first" >&2; exit 1; }
mkdir -p "$work/variants"
for data in train2 eval; do  # the records a 16-token block can use (the fit's own rule, `usable_records`)
  python -c 'import json, sys
from jetspec_hf.training.batches import usable_records
records = [json.loads(line) for line in sys.stdin]
sys.stdout.writelines(json.dumps(r) + "\n" for r in usable_records(records, 16, None))' \
    < "$work/$data.jsonl" > "$work/${data}_block16.jsonl"
done

flags_of() {
  case $1 in
    baseline) ;;
    from_target) echo --init-from-target ;;
    tap_last) echo --target-layer-ids 1 14 29 ;;
    # The records a 16-token block can use, so that the cache (built for those) fits a block of 8 too.
    block8) echo --block-size 8 --train-data "$work/train2_block16.jsonl" --eval-data "$work/eval_block16.jsonl" ;;
    lr2e-3) echo --lr 2e-3 ;;
    two_layers) echo --num-layers 2 ;;
    bf16) echo --mixed-precision bf16 ;;
    *) echo "unknown variant $1" >&2; exit 2 ;;
  esac
}

run_variant() {
  local name=$1
  [ -f "$work/variants/$name/eval_results.json" ] && return 0
  # The variant's flags come last: they override the recipe's.
  fit "variants/$name" --train-data "$work/train2.jsonl" --cache-features "$work/cache2" --eval-steps 250 \
    --save-steps 250 $(flags_of "$name") $(resume "variants/$name") > "$work/variants/$name.log" 2>&1
}

# Two lanes, one core each, take the variants in order: each claims the next unclaimed one (mkdir is atomic).
read -r -a variants <<< "${VARIANTS:-baseline from_target tap_last block8 two_layers lr2e-3 bf16}"
lane() {
  for name in "${variants[@]}"; do
    mkdir "$work/variants/$name.claim" 2> /dev/null || continue
    run_variant "$name" || echo "variant $name failed: see $work/variants/$name.log" >&2
  done
}
rm -rf "$work"/variants/*.claim
lane & lane &
wait
rm -rf "$work"/variants/*.claim
