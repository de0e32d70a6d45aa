"""A two-level space: one global prune ratio and bit-width, refined by small per-group offsets.

A space with a ``hierarchy`` section is searched as ``global.prune`` and ``global.bits`` (the
"one setting for the whole model" a person tries first) plus, per group, ``offset.prune.<g>``
(added to the global ratio) and ``offset.bits.<g>`` (steps along that group's bit-width
choices). With every offset at 0 a policy is uniform, so the sampler starts from the uniform
front and spends the remaining trials refining it rather than sampling 12 dimensions blind.

    hierarchy:
      prune_offsets: [-0.2, -0.1, 0.0, 0.1, 0.2]
      bits_offsets: [-1, 0, 1]

Every value still lands on a value its group's rule allows (the nearest one).
"""

from __future__ import annotations

# It lives in space.py (SearchSpace.resolve builds it); this module is its documented name.
from .space import GLOBAL_BITS, GLOBAL_PRUNE, HierarchicalSpace, Hierarchy

__all__ = ["GLOBAL_BITS", "GLOBAL_PRUNE", "HierarchicalSpace", "Hierarchy"]
