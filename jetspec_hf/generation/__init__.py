"""Tree speculative decoding: draft → tree → verify → accept → cache update."""

from .routing import enable, generate_with_draft_head, is_enabled
from .lookup import PromptLookup
from .outputs import JetSpecGenerateOutput
from .per_row import mark_row_safe
from .profiling import RoundProfiler
from .tree import DraftTree, build_tree, depth_candidates
from .loop import tree_decoding

__all__ = [
    "DraftTree",
    "JetSpecGenerateOutput",
    "PromptLookup",
    "RoundProfiler",
    "build_tree",
    "depth_candidates",
    "enable",
    "generate_with_draft_head",
    "is_enabled",
    "mark_row_safe",
    "tree_decoding",
]
