# The shared recipe of scripts/train_smollm2_heads.sh and scripts/continue_smollm2_heads.sh (sourced by both; $work
# names the work folder). `fit NAME [flags]` runs `jetspec-hf train fit` into $work/NAME; later flags override.
fit() {
  local name=$1; shift
  jetspec-hf train fit --target smollm2-135m-instruct --target-dtype bfloat16 --threads 1 \
    --train-data "$work/train.jsonl" --eval-data "$work/eval.jsonl" \
    --cache-features "$work/cache" --cache-layer-ids 1 8 14 21 27 29 --teacher-top-k 16 --cache-dtype bfloat16 \
    --cache-shard-size 128 --num-layers 1 --target-layer-ids 1 14 27 --draft-vocab-size 8192 \
    --batch-size 8 --anchors-per-seq 16 --lr 1e-3 --warmup-steps 30 --depth-gamma 4 --max-steps "$steps" \
    --log-steps 25 --eval-steps 250 --save-steps 250 --save-total-limit 1 --save-dtype bfloat16 --no-progress \
    --output-dir "$work/$name" "$@"
}
resume() {  # continue a fit that wrote checkpoints, else start it
  if ls -d "$work/$1"/checkpoint-* > /dev/null 2>&1; then echo --resume latest; fi
}
