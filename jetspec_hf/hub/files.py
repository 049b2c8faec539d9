"""The files of a head's model repository: their names, and which files of a folder belong in the repository.

Kept free of heavy imports: the command line reads these names to build its help.
"""

from __future__ import annotations

CARD_FILE = "README.md"
BENCH_FILE = "bench_results.json"
TRAINING_ARGS_FILE = "training_args.json"
# Training records looked for in a model folder, in this order: the head trainer's, then the bundled LM scripts'.
TRAINING_RECORD_FILES = (TRAINING_ARGS_FILE, "training_summary.json")

# Files of a training output folder that belong in the repository as they are: the target's tokenizer (the trainer
# saves it beside the head, handy for users) and the training record.
COPIED_FILES = (
    TRAINING_ARGS_FILE,
    "eval_results.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.json",
    "merges.txt",
    "chat_template.jinja",
    "generation_config.json",
)

__all__ = ["BENCH_FILE", "CARD_FILE", "COPIED_FILES", "TRAINING_ARGS_FILE", "TRAINING_RECORD_FILES"]
