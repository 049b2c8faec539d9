"""Held-out chat and code prompt sets for the SmolLM2 pair, from the end of the packaged ShareGPT file.

The held-out split (`read_conversations("sharegpt", split="heldout")`, the file's last 400 conversations) is
never trained on (`jetspec-hf train generate-data --split train` leaves it out). Of those, prompts under 300 tokens go to `chat_prompts.jsonl`; the ones that ask
for code (a keyword rule below) also go to `code_prompts.jsonl`.

    python scripts/make_chat_prompts.py --output-dir jetspec_hf/bundled
"""

import argparse
import json
import re
from pathlib import Path

from transformers import AutoTokenizer

from jetspec_hf.conversations import first_user_turn, read_conversations
from jetspec_hf.targets import SMOLLM2_NAME, resolve_target

CODE_WORDS = re.compile(r"\b(code|function|python|javascript|java|c\+\+|sql|script|program|class|regex|html|css|"
                        r"bash|implement|typescript|react|api)\b", re.IGNORECASE)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output-dir", default="jetspec_hf/bundled")
    parser.add_argument("--max-prompt-tokens", type=int, default=300)
    args = parser.parse_args()
    tokenizer = AutoTokenizer.from_pretrained(resolve_target(SMOLLM2_NAME))
    conversations = read_conversations("sharegpt", split="heldout")
    chat, code = [], []
    for messages in conversations:
        prompt = first_user_turn(messages).strip()
        if not prompt or len(tokenizer(prompt)["input_ids"]) > args.max_prompt_tokens:
            continue
        chat.append({"prompt": prompt})
        if CODE_WORDS.search(prompt):
            code.append({"prompt": prompt})
    output = Path(args.output_dir)
    for name, rows in (("chat_prompts.jsonl", chat), ("code_prompts.jsonl", code)):
        (output / name).write_text("".join(json.dumps(row) + "\n" for row in rows))
        print(f"{output / name}: {len(rows)} prompts")


if __name__ == "__main__":
    main()
