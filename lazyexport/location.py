"""The location comparisons under their old name: :mod:`lazyexport.storage.location` is their
home ("does the output hold the source?" asked once, canonically); this module re-exports it."""

from __future__ import annotations

from .storage.location import (
    Node,
    below,
    canonical,
    holds,
    inside,
    internal_path,
    is_same_node,
    node,
    same,
    shown,
)

__all__ = [
    "Node",
    "below",
    "canonical",
    "holds",
    "inside",
    "internal_path",
    "is_same_node",
    "node",
    "same",
    "shown",
]
