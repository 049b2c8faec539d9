"""Publishing draft heads on the Hugging Face Hub: model cards, Hub-ready folders, pushing.

- `prepare_hub_folder(head, output_dir, base_model=...)` writes weights, config, a `README.md` card rendered from
  the shipped templates, and `custom_generate/` (the tree loop for users without `jetspec_hf`), after checking
  that the head fits its base model and that the bench results are this head's; it replaces no file unasked.
- `push_head_to_hub(folder, repo_id)` checks such a folder again (`check_hub_folder`) and uploads only the files a
  model repository needs (`repository_files`).
- `render_head_card` / `render_causal_lm_card` render cards alone.
- `main(argv)` is the `jetspec-hf card` command.

Loading by repo id needs nothing from here: `JetSpecDraftModel.from_pretrained("org/name")` resolves through the
Hub client's cache like any model. `AutoModel` does too for heads saved in this package's format, once
`JetSpecDraftModel` is loaded; it refuses a head in the released format (`model_type: qwen3`) and names
`JetSpecDraftModel` as its loader.

Its names load on first use (see jetspec_hf/lazy_exports.py), so that `jetspec-hf card --help` imports no torch.
"""

from ..lazy_exports import lazy_exports

__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "check_hub_folder": ".checks",
        "count_safetensors_parameters": ".card_facts",
        "describe_causal_lm": ".card_facts",
        "describe_head": ".card_facts",
        "head_card_data": ".cards",
        "main": ".command",
        "prepare_hub_folder": ".folder",
        "push_head_to_hub": ".push",
        "render_causal_lm_card": ".cards",
        "render_head_card": ".cards",
        "repository_files": ".files",
        "summarize_bench": ".card_results",
        "summarize_training": ".card_training",
        "unresolved_repo_error": ".resolution",
        "write_custom_generate": ".remote_code",
    },
)

__all__ = [
    "check_hub_folder",
    "count_safetensors_parameters",
    "describe_causal_lm",
    "describe_head",
    "head_card_data",
    "main",
    "prepare_hub_folder",
    "push_head_to_hub",
    "render_causal_lm_card",
    "render_head_card",
    "repository_files",
    "summarize_bench",
    "summarize_training",
    "unresolved_repo_error",
    "write_custom_generate",
]
