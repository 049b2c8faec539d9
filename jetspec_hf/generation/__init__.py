"""Tree speculative decoding: draft → tree → verify → accept → cache update."""

from .integration import enable, generate_with_draft_head, is_enabled
from .outputs import JetSpecGenerateOutput
from .profiling import RoundProfiler
from .tree import DraftTree, build_tree
from .tree_decoding import tree_decoding

__all__ = [
    "DraftTree",
    "JetSpecGenerateOutput",
    "RoundProfiler",
    "build_tree",
    "enable",
    "generate_with_draft_head",
    "is_enabled",
    "tree_decoding",
]
