"""The JetSpec / DFlash draft head as a `PreTrainedModel`.

The head is a stack of Qwen3 decoder layers whose attention takes queries from the drafted block only, and
keys/values from ``concat(projected target context, block)`` with the same k/v projections for both. It owns no
embedding table and no lm_head: callers embed the block and read logits with the target's own modules.

Weight names match the released checkpoints exactly (``layers.{i}.*``, ``fc``, ``hidden_norm``, ``norm``, no prefix).
"""

from __future__ import annotations

import copy
import json
import os

import torch
from torch import nn
from transformers import AutoModel, GenerationConfig, PreTrainedModel
from transformers.cache_utils import Cache, DynamicCache
from transformers.modeling_outputs import BaseModelOutputWithPast
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS
from transformers.models.qwen3.modeling_qwen3 import (
    Qwen3Attention,
    Qwen3DecoderLayer,
    Qwen3RMSNorm,
    Qwen3RotaryEmbedding,
    eager_attention_forward,
    rotate_half,
)

from .configuration_jetspec import TREE_SETTING_NAMES, JetSpecConfig
from .head_masks import block_attention_mask, windowed_attention_mask
from .released_format import guard_auto_model, hub_arguments, released_config_dict
from .speculators_format import is_speculators_config
from .speculators_weights import folder_config_dict, load_arguments, speculators_layout

# The layouts `JetSpecDraftModel.save_pretrained` writes (`checkpoint_format`).
CHECKPOINT_FORMATS = ("jetspec", "released", "speculators")


class JetSpecNotEnabledError(RuntimeError):
    """A JetSpec head was asked to generate on its own: handed to stock `generate(assistant_model=...)` on a target
    that was not enabled, or called as `head.generate(...)`."""


def _apply_rotary(states: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    # states: [batch, heads, seq, head_dim]; cos/sin: [batch, seq, head_dim]
    cos, sin = cos.unsqueeze(1), sin.unsqueeze(1)
    return states * cos + rotate_half(states) * sin


class JetSpecAttention(Qwen3Attention):
    """Qwen3 attention whose keys/values also cover the projected target context."""

    def __init__(self, config: JetSpecConfig, layer_idx: int):
        super().__init__(config, layer_idx)
        # The mask is always explicit (or absent = fully visible), never the backend's implicit causal one.
        self.is_causal = False
        self.sliding_window = None

    def forward(
        self,
        hidden_states: torch.Tensor,
        context_states: torch.Tensor | None,
        position_embeddings: tuple[torch.Tensor, torch.Tensor],
        attention_mask: torch.Tensor | None,
        cache: Cache | None = None,
        **kwargs,
    ) -> torch.Tensor:
        batch_size, query_length, _ = hidden_states.shape
        kv_inputs = hidden_states if context_states is None else torch.cat([context_states, hidden_states], dim=1)
        kv_length = kv_inputs.shape[1]

        query = self.q_norm(self.q_proj(hidden_states).view(batch_size, query_length, -1, self.head_dim))
        key = self.k_norm(self.k_proj(kv_inputs).view(batch_size, kv_length, -1, self.head_dim))
        value = self.v_proj(kv_inputs).view(batch_size, kv_length, -1, self.head_dim)
        query, key, value = query.transpose(1, 2), key.transpose(1, 2), value.transpose(1, 2)

        # Rotary tables cover the new key rows; the queries are the last `query_length` of them.
        cos, sin = position_embeddings
        query = _apply_rotary(query, cos[:, -query_length:], sin[:, -query_length:])
        key = _apply_rotary(key, cos, sin)

        if cache is not None:
            key, value = cache.update(key, value, self.layer_idx)

        attention_interface = ALL_ATTENTION_FUNCTIONS.get_interface(
            self.config._attn_implementation, eager_attention_forward
        )
        attn_output, _ = attention_interface(
            self,
            query,
            key,
            value,
            attention_mask,
            dropout=self.attention_dropout if self.training else 0.0,
            scaling=self.scaling,
            **kwargs,
        )
        return self.o_proj(attn_output.reshape(batch_size, query_length, -1).contiguous())


class JetSpecDecoderLayer(Qwen3DecoderLayer):
    """A Qwen3 decoder layer with context-aware attention; the same parameter names as Qwen3's."""

    def __init__(self, config: JetSpecConfig, layer_idx: int):
        super().__init__(config, layer_idx)
        self.self_attn = JetSpecAttention(config, layer_idx)

    def forward(
        self,
        hidden_states: torch.Tensor,
        context_states: torch.Tensor | None,
        position_embeddings: tuple[torch.Tensor, torch.Tensor],
        attention_mask: torch.Tensor | None,
        cache: Cache | None = None,
        **kwargs,
    ) -> torch.Tensor:
        residual = hidden_states
        hidden_states = self.self_attn(
            self.input_layernorm(hidden_states), context_states, position_embeddings, attention_mask, cache, **kwargs
        )
        hidden_states = residual + hidden_states
        residual = hidden_states
        hidden_states = self.mlp(self.post_attention_layernorm(hidden_states))
        return residual + hidden_states


class JetSpecPreTrainedModel(PreTrainedModel):
    """Base class: weight initialisation and loading conventions for JetSpec heads."""

    config_class = JetSpecConfig
    config: JetSpecConfig
    base_model_prefix = "model"
    main_input_name = "noise_embeds"
    supports_gradient_checkpointing = False
    _no_split_modules = ["JetSpecDecoderLayer"]
    _supports_sdpa = True
    _supports_flash_attn = False
    _supports_flex_attn = False
    _supports_attention_backend = False


class JetSpecDraftModel(JetSpecPreTrainedModel):
    """JetSpec (causal) or DFlash (bidirectional) draft head for a Qwen3 target.

    One forward drafts a block: the input is the target's embeddings of ``[anchor, MASK, ..., MASK]``
    (`block_size` rows), the features of newly committed target positions (the tapped layers' outputs,
    concatenated), and a cache holding the already projected context; the output is the final-normed hidden state
    of every block row. Row ``d`` (``d >= 1``) fed through the target's lm_head predicts the token at depth ``d``.

    The forward follows the calling convention of transformers' built-in DFlash candidate generator, so the same
    weights also run through `generate(..., speculation_type="dflash")` (a linear chain, for comparison).

    Example:

    ```python
    >>> import jetspec_hf
    >>> from jetspec_hf import JetSpecDraftModel
    >>> head = JetSpecDraftModel.from_pretrained("path/or/repo-id")
    >>> jetspec_hf.enable(target)
    >>> out = target.generate(**inputs, assistant_model=head, max_new_tokens=256)
    ```
    """

    def __init__(self, config: JetSpecConfig):
        super().__init__(config)
        num_tapped = len(config.target_layer_ids) if config.dflash_config.get("target_layer_ids") else 1
        self.layers = nn.ModuleList(JetSpecDecoderLayer(config, i) for i in range(config.num_hidden_layers))
        self.fc = nn.Linear(num_tapped * config.hidden_size, config.hidden_size, bias=False)
        self.hidden_norm = Qwen3RMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.norm = Qwen3RMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.rotary_emb = Qwen3RotaryEmbedding(config=config)
        if config.draft_vocab_size is not None:
            # Target token ids the head ranks (see `JetSpecConfig.draft_vocab_size`); saved with the weights.
            self.register_buffer("draft_vocab_ids", torch.arange(config.draft_vocab_size, dtype=torch.long))
        else:
            self.draft_vocab_ids = None
        self.post_init()
        # transformers gives a generation config only to models that can generate; a head cannot, but tools that
        # introspect models read this attribute, so it exists like on any model (from_pretrained replaces it with
        # the folder's generation_config.json when there is one).
        self.generation_config = with_tree_defaults(GenerationConfig.from_model_config(config), config)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *model_args, **kwargs):
        """`PreTrainedModel.from_pretrained`, plus what transformers does not do for a model that cannot generate:
        `head.generation_config` comes from the folder's `generation_config.json` when there is one (or from
        `generation_config=`), and a repo id that is neither cached nor reachable gets an error naming the repo,
        revision and cache (transformers' own offline message names none of them). A folder in the released format
        or in vLLM's `speculators` layout (see `jetspec_hf.speculators_format`) loads as well."""
        generation_config = kwargs.pop("generation_config", None)
        folder_config = None if kwargs.get("state_dict") is not None else folder_config_dict(
            pretrained_model_name_or_path, kwargs)
        try:
            if folder_config is not None and is_speculators_config(folder_config):
                # speculators' layout: the weights are renamed and checked here, then loaded like a state dict.
                arguments = load_arguments(pretrained_model_name_or_path, folder_config, kwargs)
                loaded = super().from_pretrained(None, *model_args, **arguments)
                head = loaded[0] if isinstance(loaded, tuple) else loaded
                head.name_or_path = head.config.name_or_path = str(pretrained_model_name_or_path)
            else:
                loaded = super().from_pretrained(pretrained_model_name_or_path, *model_args, **kwargs)
        except OSError as error:
            from .hub.resolution import unresolved_repo_error  # jetspec_hf.hub imports this module

            clearer = unresolved_repo_error(
                pretrained_model_name_or_path, error, revision=kwargs.get("revision"), cache_dir=kwargs.get("cache_dir")
            )
            if clearer is None:
                raise
            raise clearer from error
        head = loaded[0] if isinstance(loaded, tuple) else loaded  # (head, loading info) with output_loading_info
        generation_config = generation_config or _saved_generation_config(pretrained_model_name_or_path, kwargs)
        if generation_config is None:
            generation_config = GenerationConfig.from_model_config(head.config)
        head.generation_config = with_tree_defaults(generation_config, head.config)
        # Whether the caller chose the dtype: tree decoding says so when an unchosen dtype differs from the target's.
        head._requested_dtype = kwargs.get("dtype", kwargs.get("torch_dtype"))
        return loaded

    def save_pretrained(self, save_directory, *args, checkpoint_format: str = "jetspec", target=None, **kwargs):
        """`PreTrainedModel.save_pretrained`, in this package's format, the released one or speculators' layout.

        Args:
            save_directory: the folder to write.
            checkpoint_format: `"jetspec"` (default): `model_type: jetspec`, with the tree defaults; `AutoModel`
                loads it after `import jetspec_hf`. `"released"`: the exact layout of the published JetSpec / DFlash
                heads (`model_type: qwen3`, `architectures: ["DFlashDraftModel"]`, `block_size`, `num_target_layers`,
                `dflash_config`, RoPE as `rope_theta` / `rope_scaling`), which SGLang, vLLM and the JetSpec engine
                load as a draft model; the tree defaults are not part of it. `"speculators"`: the DFlash layout of
                vLLM's `speculators` library (see `jetspec_hf.speculators_format`); needs `target`.
            target: the target model the head was trained for (`"speculators"` only): the layout stores its lm_head
                rows for a draft vocabulary and names it as the verifier.
            args, kwargs: passed to `PreTrainedModel.save_pretrained` (`push_to_hub` only with the default format:
                export first, then upload the folder).

        The weights have the released names in every format. A `generation_config.json` is written (default format
        only) when the head's generation config says more than its model config does.
        """
        if checkpoint_format not in CHECKPOINT_FORMATS:
            raise ValueError(f"checkpoint_format must be one of {CHECKPOINT_FORMATS}, got {checkpoint_format!r}.")
        if target is not None and checkpoint_format != "speculators":
            raise ValueError(f"target= is used by checkpoint_format='speculators' only, not {checkpoint_format!r}.")
        written_config = None
        if checkpoint_format != "jetspec":
            if kwargs.get("push_to_hub"):
                raise ValueError(
                    f"push_to_hub cannot be combined with checkpoint_format={checkpoint_format!r}: save the folder "
                    "first, then upload it (e.g. `huggingface_hub.upload_folder`)."
                )
            # Built before anything is written, so that a config the format cannot express fails cleanly.
            if checkpoint_format == "released":
                written_config = released_config_dict(self.config, self.dtype)
            else:
                written_config, kwargs["state_dict"] = speculators_layout(self, target)
        super().save_pretrained(save_directory, *args, **kwargs)
        is_main_process = args[0] if args else kwargs.get("is_main_process", True)
        if not is_main_process:
            return
        if written_config is not None:
            config_path = os.path.join(save_directory, "config.json")
            with open(config_path, "w", encoding="utf-8") as handle:
                handle.write(json.dumps(written_config, indent=2) + "\n")
        elif self.generation_config != GenerationConfig.from_model_config(self.config):
            generation_config = copy.deepcopy(self.generation_config)
            # A config flagged as derived from the model config drops custom entries (the tree settings) on load.
            generation_config._from_model_config = False
            generation_config.save_pretrained(save_directory)

    def generate(self, *args, **kwargs):
        """Always raises `JetSpecNotEnabledError`: a head drafts a tree from the target's hidden states and cannot
        generate text by itself.

        Stock assisted decoding calls this to draft its candidates, before the target's first forward pass, which
        makes it the place where a head handed to a target that was not enabled is told what to do instead.
        """
        raise JetSpecNotEnabledError(
            "A JetSpecDraftModel cannot generate by itself, nor serve stock assisted decoding (it drafts a tree from "
            "the target's hidden states). Call `jetspec_hf.enable(target)` once, then "
            "`target.generate(..., assistant_model=head)` runs JetSpec tree decoding."
        )

    def _supports_logits_to_keep(self) -> bool:
        # Asked by stock assisted decoding before it drafts; the honest answer (the forward takes no `logits_to_keep`)
        # lets it go on to `generate`, which raises the error that says how to use a head.
        return False

    def get_input_embeddings(self):
        # The head borrows the target's embedding table at run time and owns none.
        return None

    def project_context(self, context_hidden_states: torch.Tensor) -> torch.Tensor:
        """Project concatenated tapped-layer features `(batch, T, k*H)` to context rows `(batch, T, H)`."""
        return self.hidden_norm(self.fc(context_hidden_states))

    def forward(
        self,
        noise_embeds: torch.Tensor,
        context_hidden_states: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        cache: Cache | None = None,
        use_cache: bool | None = None,
        **kwargs,
    ) -> BaseModelOutputWithPast:
        r"""
        Args:
            noise_embeds (`torch.Tensor` of shape `(batch, Q, hidden_size)`):
                Target embeddings of the block rows (anchor then mask tokens).
            context_hidden_states (`torch.Tensor` of shape `(batch, C, k * hidden_size)`, *optional*):
                Tapped-layer features of the target positions not yet in `cache`; projected here by `fc` and
                `hidden_norm`, then used as keys/values by every layer.
            position_ids (`torch.LongTensor` of shape `(batch, C + Q)`, *optional*):
                Positions of the new key rows (context then block). Defaults to continuing after `cache`.
            attention_mask (`torch.Tensor`, *optional*):
                `None` for the config's block mask (causal for JetSpec, full for DFlash); a 2D key padding mask
                `(batch, cached + C + Q)` combined with it; or a ready 4D additive mask `(batch, 1, Q, cached + C + Q)`
                used as is (training packs many blocks this way).
            cache (`Cache`, *optional*):
                Keys/values of earlier context rows; the new context AND block rows are appended to it, so the
                caller crops the block rows away before the next round.
        """
        if use_cache and cache is None:
            cache = DynamicCache(config=self.config)
        context_states = None
        if context_hidden_states is not None and context_hidden_states.shape[1] > 0:
            context_states = self.project_context(context_hidden_states).to(noise_embeds.dtype)
        query_length = noise_embeds.shape[1]
        new_key_length = query_length + (0 if context_states is None else context_states.shape[1])
        past_length = cache.get_seq_length() if cache is not None else 0

        if position_ids is None:
            position_ids = torch.arange(past_length, past_length + new_key_length, device=noise_embeds.device)
            position_ids = position_ids.unsqueeze(0).expand(noise_embeds.shape[0], -1)
        windows = self.config.layer_windows
        if any(windows) and attention_mask is not None and attention_mask.dim() == 4:
            raise NotImplementedError(
                "This head has sliding-window layers (layer_types / sliding_window), and a ready 4D attention mask "
                "(as packed training builds) does not say where the window falls. Pass no mask or a 2D padding mask."
            )
        if attention_mask is None or attention_mask.dim() == 2:
            attention_mask = block_attention_mask(
                query_length,
                past_length + new_key_length,
                causal=self.config.causal_head,
                dtype=noise_embeds.dtype,
                device=noise_embeds.device,
                key_padding_mask=attention_mask,
            )

        # Rotary tables for the new key rows; queries take the trailing `query_length` rows.
        rotary_input = noise_embeds if context_states is None else torch.cat([context_states, noise_embeds], 1)
        position_embeddings = self.rotary_emb(rotary_input, position_ids)

        layer_masks = [attention_mask] * len(self.layers)
        if any(windows):
            # Cached context rows sit at positions 0..past_length-1 (the drafting convention); the new rows at
            # `position_ids`.
            past_positions = torch.arange(past_length, device=position_ids.device).expand(position_ids.shape[0], -1)
            key_positions = torch.cat([past_positions, position_ids], dim=1)
            query_positions = position_ids[:, -query_length:]
            by_window = {window: windowed_attention_mask(attention_mask, query_positions, key_positions, window,
                                                         noise_embeds.dtype)
                         for window in set(windows) if window is not None}
            layer_masks = [by_window[window] if window is not None else layer_masks[index]
                           for index, window in enumerate(windows)]

        hidden_states = noise_embeds
        for layer, layer_mask in zip(self.layers, layer_masks):
            hidden_states = layer(hidden_states, context_states, position_embeddings, layer_mask, cache, **kwargs)
        return BaseModelOutputWithPast(last_hidden_state=self.norm(hidden_states), cache=cache)


def with_tree_defaults(generation_config: GenerationConfig, config: JetSpecConfig) -> GenerationConfig:
    """`generation_config` with the tree defaults that a version-0.1 folder kept in config.json filled in, where it
    sets none of its own: the head's generation config is where its tree defaults live."""
    for name in TREE_SETTING_NAMES:
        in_config = getattr(config, name, None)
        if in_config is not None and getattr(generation_config, name, None) is None:
            setattr(generation_config, name, in_config)
    return generation_config


def _saved_generation_config(pretrained_model_name_or_path, load_kwargs: dict) -> GenerationConfig | None:
    """The `generation_config.json` beside the head's weights, fetched like them; `None` when there is none."""
    try:
        return GenerationConfig.from_pretrained(pretrained_model_name_or_path, **hub_arguments(load_kwargs))
    except OSError:
        return None


# Registered when this module loads: AutoModel builds a JetSpecDraftModel from `model_type: jetspec`, and refuses a
# released-format head (`model_type: qwen3`) instead of building a plain Qwen3Model from it.
AutoModel.register(JetSpecConfig, JetSpecDraftModel, exist_ok=True)
guard_auto_model()

__all__ = ["CHECKPOINT_FORMATS", "JetSpecDraftModel", "JetSpecNotEnabledError", "JetSpecPreTrainedModel",
           "block_attention_mask", "windowed_attention_mask"]
