"""Each coupled group pruned alone, once per model, on the example inputs: groups whose pruned
model does not run, or whose pruning removes the wrong input columns of a later layer, are
marked with the reason and the layer at fault, so spaces leave them out and policies keep them.

The column check cannot pass when torch-pruning maps channels to the wrong columns (a
permute/transpose before a flatten): in the teacher, the removed channels of the group's layers
are pushed far up and down, and the input positions of each consumer (the next Linear/Conv)
that move are the ones those channels really feed. The pruned consumer's weight must equal the
teacher's weight restricted to the positions that did not move. Where channels mix on their way
(a LayerNorm over them), the moved positions do not count the removed channels' share and the
check says nothing.
"""

from __future__ import annotations

import copy
from collections import OrderedDict
from collections.abc import Iterable
from typing import Any

import torch
from torch import nn

from autocompress.analysis.groups import _forward, choose_channels, graph_of
from autocompress.analysis.layers import PRUNABLE_TYPES

PROBE_RATIO = 0.5
_PUSH = 1e4

# structure key -> {layer path: why its group cannot be pruned}; a few models per process
_CACHE: OrderedDict[tuple, dict[str, str]] = OrderedDict()
_CACHED_MODELS = 8


def _structure_key(model: nn.Module, example_inputs, protected: tuple[str, ...]) -> tuple:
    """What the probe's answer depends on: the module tree, the parameter shapes, the
    protected layers and the input shapes (not the weights: a teacher shipped to another
    process, or copied, reuses the answer)."""
    modules = tuple((path, type(m).__qualname__) for path, m in model.named_modules())
    shapes = tuple((name, tuple(p.shape)) for name, p in model.named_parameters())
    inputs = tuple((tuple(t.shape), str(t.dtype)) for t in example_inputs)
    return (type(model).__module__, modules, shapes, protected, inputs)


def probe_groups(
    model: nn.Module, example_inputs: tuple[torch.Tensor, ...], protected: Iterable[str]
) -> dict[str, str]:
    """Layer path -> why its group cannot be pruned, for the groups that fail the probe.
    ``model`` is not changed; results are cached per model structure."""
    protected = tuple(protected)
    key = _structure_key(model, example_inputs, protected)
    if key not in _CACHE:
        _CACHE[key] = _probe(model, example_inputs, protected)
        while len(_CACHE) > _CACHED_MODELS:
            _CACHE.popitem(last=False)
    _CACHE.move_to_end(key)
    return dict(_CACHE[key])


def _probe(model: nn.Module, example_inputs, protected) -> dict[str, str]:
    was_training = model.training
    model.eval()
    listed = graph_of(copy.deepcopy(model), example_inputs, protected)
    failed: dict[str, str] = {}
    for index, group in enumerate(listed.groups):
        if not group.prunable:
            continue
        remove = choose_channels(group, PROBE_RATIO, torch.zeros(group.channels))
        if not remove:
            continue
        student = copy.deepcopy(model)
        graph = graph_of(student, example_inputs, protected)
        tp_group = graph.tp_groups[index]
        assert graph.groups[index].name == group.name, "tracing is deterministic"
        moved = _moved_inputs(model, example_inputs, tp_group, graph, set(remove))
        tp_group.prune(idxs=[tp_group[0].idxs[i] for i in remove])
        student.eval()
        reason = _breaks(student, example_inputs) or _mismapped(model, student, moved)
        if reason is not None:
            why = f"group {group.name}: pruning it alone {reason}"
            failed.update({layer: why for layer in group.layers})
    model.train(was_training)
    return failed


def _breaks(model: nn.Module, inputs: Any) -> str | None:
    """Where the pruned model stops running: the module running, else the last one done."""
    names = {id(m): p for p, m in model.named_modules()}
    running: list[str] = []
    done: list[str] = [""]
    hooks = []
    for m in model.modules():
        hooks.append(m.register_forward_pre_hook(lambda mod, a: running.append(names[id(mod)])))
        hooks.append(m.register_forward_hook(lambda mod, a, o: done.append(running.pop())))
    try:
        with torch.no_grad():
            _forward(model, inputs)
    except Exception as exc:
        error = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
        inner = running[-1] if running else ""
        if inner:
            where = f"in module {inner!r} ({type(model.get_submodule(inner)).__name__})"
        else:
            last = done[-1]
            after = f" after {last!r} ({type(model.get_submodule(last)).__name__})" if last else ""
            where = f"in the model's forward(){after}"
        return f"breaks the shapes {where}: {error}"
    finally:
        for h in hooks:
            h.remove()
    return None


def _channel_dim(mod: nn.Module) -> int:
    return -1 if isinstance(mod, nn.Linear) else 1


def _moved_inputs(model, example_inputs, tp_group, graph, remove: set[int]) -> dict[str, Any]:
    """Per consumer (a Linear/Conv reading the group): which of its input positions the
    removed channels move in the unpruned ``model``, and its input width."""
    names = {m: n for n, m in graph.dg.model.named_modules()}
    own = dict(model.named_modules())
    pushed: dict[str, list[int]] = {}
    readers: list[str] = []
    for item in tp_group:
        mod, handler = item.dep.target.module, item.dep.handler
        path = names.get(mod)
        if path is None or not isinstance(mod, PRUNABLE_TYPES):
            continue
        if graph.dg.is_out_channel_pruning_fn(handler):
            local = [int(i) for i, r in zip(item.idxs, item.root_idxs, strict=True) if r in remove]
            pushed.setdefault(path, []).extend(local)
        elif getattr(mod, "groups", 1) == 1:
            readers.append(path)
    if not readers:
        return {}
    seen: dict[str, torch.Tensor] = {}

    def push(path: str, sign: float):
        idx = torch.as_tensor(pushed[path])

        def hook(mod: nn.Module, args: Any, out: torch.Tensor) -> torch.Tensor:
            dim = _channel_dim(mod) % out.dim()
            return out.index_add(dim, idx, torch.full_like(out.index_select(dim, idx), sign))

        return hook

    def record(path: str):
        return lambda mod, args: seen.__setitem__(path, args[0].detach())

    runs = []
    for sign in (0.0, _PUSH, -_PUSH):
        hooks = [own[p].register_forward_pre_hook(record(p)) for p in readers]
        if sign:
            hooks += [own[p].register_forward_hook(push(p, sign)) for p in pushed]
        try:
            with torch.no_grad():
                _forward(model, example_inputs)
        finally:
            for h in hooks:
                h.remove()
        runs.append(dict(seen))
    moved = {}
    for path in readers:
        dim = _channel_dim(own[path])
        base = runs[0][path]
        flat = [
            (r[path] - base).abs().movedim(dim, 0).reshape(base.shape[dim], -1) for r in runs[1:]
        ]
        changed = torch.stack([f.amax(dim=1) for f in flat]).amax(dim=0) > 1e-3
        moved[path] = changed
    return moved


def _mismapped(
    teacher: nn.Module, student: nn.Module, moved: dict[str, torch.Tensor]
) -> str | None:
    """A consumer whose pruned weight is not the teacher's restricted to the unmoved inputs."""
    for path, changed in moved.items():
        kept = (~changed).nonzero().flatten()
        before = teacher.get_submodule(path).weight.detach()
        after = student.get_submodule(path).weight.detach()
        if after.shape[1] != len(kept) or after.shape[0] != before.shape[0]:
            continue  # channels mix on the way (or the consumer's rows changed): no verdict
        if not torch.equal(after, before[:, kept]):
            kind = type(student.get_submodule(path)).__name__
            return (
                f"removes the wrong input columns of {path!r} ({kind}): its input is a "
                "permute/transpose + reshape of the channels that the pruner cannot follow"
            )
    return None


__all__ = ["PROBE_RATIO", "probe_groups"]
