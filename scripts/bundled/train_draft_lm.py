"""Train the bundled tiny Qwen3 draft LM for the assisted-generation baseline.

    python scripts/bundled/train_tokenizer.py      # first, once
    python scripts/bundled/train_draft_lm.py [--steps N] [--out jetspec_hf/bundled/models/draft_lm]

This is the plain small-model drafter that transformers' `assistant_model=` uses; it
shares the target's tokenizer (a requirement of assisted generation without token
translation) and is trained on the same data with the same loop, only smaller.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from train_target import REPO, run  # noqa: E402

DEFAULT_OUT = REPO / "jetspec_hf" / "bundled" / "models" / "draft_lm"

# Fixed for reproducibility and a known cost; chosen from a measured trial run on one
# thread of the 2-core build machine: 60 steps ran at ~0.56 s/step, so 620 steps is ~5.8
# minutes of training plus ~20 s of tokenizing, the held-out pass and saving.
# (The committed model's run took 8 minutes at 0.73 s/step: other jobs shared the VM.)
STEPS = 620

DRAFT_CONFIG = dict(
    hidden_size=128,
    num_hidden_layers=2,
    num_attention_heads=2,
    num_key_value_heads=1,
    head_dim=64,
    intermediate_size=384,
    max_position_embeddings=2048,
    tie_word_embeddings=True,
    rope_theta=10000.0,
)


def main(argv=None) -> None:
    # The same lr as the target (run's default): at this size (~0.9M parameters) 1e-3 is still stable.
    run(DRAFT_CONFIG, "draft_lm", __doc__.splitlines()[0], DEFAULT_OUT, STEPS, argv)


if __name__ == "__main__":
    main()
