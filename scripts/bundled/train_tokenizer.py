"""Train the bundled byte-level BPE tokenizer on the stdlib train split.

    python scripts/bundled/train_tokenizer.py [--out jetspec_hf/bundled/models/tokenizer]

The result is a transformers `PreTrainedTokenizerFast` folder; the model training scripts
copy it into each model folder so that every model loads with AutoTokenizer on its own.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
import time
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

# Running the file directly puts its own folder on sys.path, which is how the sibling
# corpus module is found without making examples/ a package that needs installing.
sys.path.insert(0, str(Path(__file__).resolve().parent))
import corpus  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
DEFAULT_OUT = REPO / "jetspec_hf" / "bundled" / "models" / "tokenizer"

VOCAB_SIZE = 4096
# EOS doubles as pad: Qwen3 itself pads with <|endoftext|>, and a separate pad id would be
# an embedding row that training never sees. The mask token is for JetSpec draft heads,
# which feed it in place of the not-yet-known future tokens.
EOS = "<|endoftext|>"
MASK = "<|mask|>"
SPECIAL_TOKENS = [EOS, MASK]  # in this order, so EOS is id 0 and MASK is id 1


def build_tokenizer(texts) -> Tokenizer:
    """A GPT-2/Qwen-style byte-level BPE trained on `texts` (an iterable of strings)."""
    tok = Tokenizer(models.BPE())
    # add_prefix_space=False: code starts lines without a space; a forced prefix space
    # would make decode(encode(x)) != x. use_regex keeps the GPT-2 split, which separates
    # runs of indentation from words so that indents become their own reusable tokens.
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        special_tokens=SPECIAL_TOKENS,
        # Seeding all 256 byte symbols guarantees any input (any Unicode) is encodable.
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        min_frequency=2,
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    # No post-processor: nothing (no BOS, no EOS) is added around encoded text.
    return tok


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)

    t0 = time.time()
    train, _ = corpus.split_files()
    texts = [corpus.read_text(path) for _, path in train]
    print(f"training BPE on {len(texts)} files, {sum(map(len, texts)):,} characters")
    tok = build_tokenizer(texts)
    assert tok.token_to_id(EOS) == 0 and tok.token_to_id(MASK) == 1, "special token ids moved"
    assert tok.get_vocab_size() == VOCAB_SIZE, tok.get_vocab_size()

    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token=EOS,
        pad_token=EOS,
        mask_token=MASK,
        # Code must round-trip exactly; the clean-up pass would eat spaces before punctuation.
        clean_up_tokenization_spaces=False,
        # Long files are fine to tokenize for training; the model's own limit is 2048.
        model_max_length=2048,
    )
    args.out.mkdir(parents=True, exist_ok=True)
    fast.save_pretrained(args.out)

    # Round-trip check on a held-out file: byte-level BPE must reproduce the text exactly.
    _, heldout = corpus.split_files()
    sample = corpus.read_text(heldout[0][1])
    ids = fast(sample)["input_ids"]
    assert fast.decode(ids) == sample, "tokenizer does not round-trip"
    digest = hashlib.sha1((args.out / "tokenizer.json").read_bytes()).hexdigest()[:12]
    print(
        f"saved to {args.out} (tokenizer.json sha1 {digest}); held-out sample "
        f"{len(sample)} chars -> {len(ids)} tokens ({len(sample) / len(ids):.2f} chars/token); "
        f"{time.time() - t0:.1f}s"
    )


if __name__ == "__main__":
    main()
