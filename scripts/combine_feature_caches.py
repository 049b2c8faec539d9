"""One feature cache over several caches built apart (e.g. one per core), without copying their shards.

    python scripts/combine_feature_caches.py --data TRAIN.jsonl --output CACHE/train PART_A/train PART_B/train ...

The parts must cover the sequences of --data in order (the first part's sequences first); the combined manifest
carries --data's fingerprint, so that `jetspec-hf train fit --train-data TRAIN.jsonl --cache-features CACHE` finds it.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from jetspec_hf.training.batches import usable_records
from jetspec_hf.training.data import fingerprint_sequences, load_sequences
from jetspec_hf.training.features import combine_feature_caches


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("parts", nargs="+", type=Path, help="the caches to combine, in the order of --data")
    parser.add_argument("--data", type=Path, required=True, help="the token sequences the parts cover together")
    parser.add_argument("--output", type=Path, required=True, help="the combined cache's folder")
    parser.add_argument("--block-size", type=int, default=16, help="the heads' block size (sequences shorter "
                        "than a block after their prompt are not in a cache)")
    args = parser.parse_args(argv)
    records = usable_records(load_sequences(args.data), args.block_size, None)
    combine_feature_caches(args.parts, args.output, fingerprint_sequences(records))
    print(f"{args.output}: {len(records)} sequences from {len(args.parts)} parts")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
