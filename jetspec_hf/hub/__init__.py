"""Publishing draft heads on the Hugging Face Hub: model cards, Hub-ready folders, pushing.

- `prepare_hub_folder(head, output_dir, base_model=...)` writes weights, config, a `README.md` card rendered from
  `hub_cards/`, and `custom_generate/` (the tree loop for users without `jetspec_hf`).
- `push_head_to_hub(folder, repo_id)` uploads such a folder.
- `render_head_card` / `render_causal_lm_card` render cards alone.
- `main(argv)` is the `jetspec-hf card` command.

Loading by repo id needs nothing from here: `JetSpecDraftModel.from_pretrained("org/name")` resolves through the
Hub client's cache like any model (and `AutoModel` does too, after `import jetspec_hf`, for heads saved in this
package's format; a head in the released format declares `model_type: qwen3`, so `AutoModel` would build a plain
Qwen3 model from it: load those with `JetSpecDraftModel`).
"""

from .cards import (
    count_safetensors_parameters,
    describe_head,
    head_card_data,
    render_causal_lm_card,
    render_head_card,
    summarize_bench,
    summarize_training,
)
from .command import main
from .folder import check_hub_folder, prepare_hub_folder, push_head_to_hub
from .remote_code import write_custom_generate
from .resolution import unresolved_repo_error

__all__ = [
    "check_hub_folder",
    "count_safetensors_parameters",
    "describe_head",
    "head_card_data",
    "main",
    "prepare_hub_folder",
    "push_head_to_hub",
    "render_causal_lm_card",
    "render_head_card",
    "summarize_bench",
    "summarize_training",
    "unresolved_repo_error",
    "write_custom_generate",
]
