"""Search spaces: YAML rules that turn a model's layers into named hyperparameters.

A space has global ranges (``distill.alpha``, ``distill.temperature``, ``finetune.lambda``,
optionally ``finetune.epochs`` and ``finetune.lr``) and layer ``rules``. The first rule that
matches a layer (glob on its module path, class name, role) sets its prune range and bit-width
choices; ``group`` ties layers into one parameter. Output layers are never pruned.

Two more pruning strategies (see ``policy``): a rule's ``sparsity`` range searches the
``weight`` strategy's per-layer sparsity (``sparsity.<group>``; output layers included, as
no output is removed), and a top-level ``drop`` section searches the ``structure`` strategy:
``drop: {blocks: auto}`` (every droppable block, see ``drop``) or a list of globs on block
paths, ``choices: [keep, drop]`` (the default) giving one categorical ``drop.<block>`` each
(``optional: true``: a model with none gets no drop parameters). With a ``hierarchy`` too, those
become depth: ``global.depth`` (blocks dropped per stage) plus ``offset.drop.<block>``.

>>> space = load_space("default")
>>> resolved = space.resolve(model, example_inputs)  # doctest: +SKIP
>>> policy = resolved.suggest(trial)  # doctest: +SKIP

The package reads top to bottom in this order: ``values`` (what a key may hold), ``rules``
(which layers get which values), ``units`` (layers pruned together), ``resolved`` (the space
applied to one model, and the uniform start policies in it), ``hierarchy`` (the two-level space)
and ``written`` (the YAML space and ``load_space``).
"""

from __future__ import annotations

from autocompress.study.space.hierarchy import (
    GLOBAL_BITS,
    GLOBAL_DEPTH,
    GLOBAL_PRUNE,
    HierarchicalSpace,
    Hierarchy,
)
from autocompress.study.space.resolved import (
    STARTS,
    LayerSpace,
    Param,
    ResolvedSpace,
    start_spec,
)
from autocompress.study.space.written import SearchSpace, load_space

__all__ = [
    "STARTS",
    "GLOBAL_BITS",
    "GLOBAL_DEPTH",
    "GLOBAL_PRUNE",
    "HierarchicalSpace",
    "Hierarchy",
    "LayerSpace",
    "Param",
    "ResolvedSpace",
    "SearchSpace",
    "start_spec",
    "load_space",
]
