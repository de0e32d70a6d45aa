"""A compression policy: distillation, per-layer pruning and bits, fine-tuning — one JSON object.

Pruning comes in three strategies, which compose (applied in this order):

- ``drop.blocks``: **structure** — whole residual blocks or transformer layers (module paths
  or globs, see ``drop``) replaced by their identity path;
- ``prune.default`` / ``prune.layers``: **unit** (the default) — the fraction of each layer's
  output channels, neurons or heads removed (tensors shrink);
- ``prune.sparsity.default`` / ``prune.sparsity.layers``: **weight** — the fraction of each
  layer's individual weights zeroed (unstructured, see ``sparsify``); stored in a sparse
  encoding, run by dense kernels.

Three strategy fields (see ``scope``), each optional and written by ``to_dict`` only when set:

- ``quant.scope``: ``{"default": "weight", "layers": {"fc": "weight+activation"}}`` —
  ``weight`` (weight-only storage, or integer weights with float activations) or
  ``weight+activation`` (static uint8 activation scales, calibrated then fake-quantized in
  fine-tuning, integer compute where the target has kernels). Absent: the target's default
  (``onnxruntime``: weight+activation on 8-bit Conv/Linear; ``torch``: weight).
- ``finetune.scope``: ``full`` (default), ``pruned-only`` (the layers the policy changed),
  ``head`` (the output layers) or ``norm-and-head`` (normalization layers plus the head).
- ``distill.feature_weight``: weight w of the feature term added to L_KD (0 = logits only);
  absent: the task's own ``feature_weight`` on the task's ``feature_layers``.

``prune.sparsity`` and ``drop`` are optional: a policy without them is unchanged, and
``to_dict`` writes them only when set.

>>> p = Policy.from_dict({"prune": {"default": 0.5}, "quant": {"default": 8}})
>>> Policy.from_json(p.to_json()) == p
True
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any, TypeVar

from autocompress.errors import PolicyError, reject_unknown_keys

SUPPORTED_BITS = (2, 3, 4, 8, 16, 32)


class QuantScope(StrEnum):
    """What a layer's quantization covers (``quant.scope``); equal to its JSON string."""

    WEIGHT = "weight"
    WEIGHT_ACTIVATION = "weight+activation"


QUANT_SCOPES = tuple(QuantScope)
FINETUNE_SCOPES = ("full", "pruned-only", "head", "norm-and-head")
# learning-rate schedules of fine-tuning (``techniques.finetune``): constant, or a linear
# warm-up over ``warmup`` of the steps then a cosine / linear decay to zero
LR_SCHEDULES = ("constant", "cosine", "linear")
_V = TypeVar("_V")


def _word(key: str, value: Any, allowed: tuple[str, ...]) -> str:
    if value not in allowed:
        raise PolicyError(f"policy key {key} = {value!r}: choose one of {', '.join(allowed)}")
    return value


def _check_keys(section: str, given: Mapping[str, Any], allowed: tuple[str, ...]) -> None:
    def error(key: str | None) -> PolicyError:
        if key is None:
            return PolicyError(f"policy key {section!r} must be an object, got {given!r}")
        return PolicyError(
            f"unknown policy key {section + '.' if section else ''}{key}; "
            f"allowed: {', '.join(allowed)}"
        )

    reject_unknown_keys(given, allowed, error)


def _number(section: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise PolicyError(f"policy key {section} must be a finite number, got {value!r}")
    return float(value)


def _ratio(key: str, value: Any) -> float:
    value = _number(key, value)
    if not 0.0 <= value < 1.0:
        raise PolicyError(f"policy key {key} = {value} is outside [0, 1): a prune ratio")
    return value


def _bits(key: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value not in SUPPORTED_BITS:
        raise PolicyError(
            f"policy key {key} = {value!r}: bits must be one of {list(SUPPORTED_BITS)}"
        )
    return value


def _per_layer(
    section: str, given: Mapping[str, Any], read: Callable[[str, Any], _V]
) -> dict[str, _V]:
    """``<section>.layers``: an object of layer path -> value, each value ``read`` (checked)."""
    layers = given.get("layers", {})
    if not isinstance(layers, Mapping):
        raise PolicyError(
            f"policy key {section}.layers must be an object of layer path -> value, got {layers!r}"
        )
    _check_keys(f"{section}.layers", layers, tuple(layers))
    return {k: read(f"{section}.layers[{k!r}]", v) for k, v in layers.items()}


def _blocks(section: Any) -> tuple[str, ...]:
    _check_keys("drop", section, ("blocks",))
    blocks = section.get("blocks", [])
    if not isinstance(blocks, list) or not all(isinstance(b, str) and b for b in blocks):
        raise PolicyError(
            f"policy key drop.blocks must be a list of module paths or globs, got {blocks!r}"
        )
    if len(set(blocks)) != len(blocks):
        raise PolicyError(f"policy key drop.blocks lists a block twice: {blocks!r}")
    return tuple(blocks)


@dataclass(frozen=True)
class Distill:
    alpha: float = 1.0
    temperature: float = 4.0
    feature_weight: float | None = None  # None: the task's own feature matching


@dataclass(frozen=True)
class Finetune:
    lambda_: float = 0.0
    epochs: int = 0
    lr: float = 1e-3
    scope: str = "full"
    schedule: str = "constant"  # one of LR_SCHEDULES
    warmup: float = 0.0  # the fraction of the steps the learning rate warms up over
    steps: int | None = None  # at most this many optimizer steps in all (None: every batch)


@dataclass(frozen=True)
class Policy:
    """What to do to a model. ``bits == 32`` means float (unquantized)."""

    distill: Distill = field(default_factory=Distill)
    prune_default: float = 0.0
    prune_layers: dict[str, float] = field(default_factory=dict)
    quant_default: int = 32
    quant_layers: dict[str, int] = field(default_factory=dict)
    finetune: Finetune = field(default_factory=Finetune)
    sparsity_default: float = 0.0
    sparsity_layers: dict[str, float] = field(default_factory=dict)
    drop_blocks: tuple[str, ...] = ()
    quant_scope_default: str | None = None  # None: the target's default
    quant_scope_layers: dict[str, str] = field(default_factory=dict)

    def __hash__(self) -> int:
        return hash(self.to_json())

    # -- serialization -------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "distill": {"alpha": self.distill.alpha, "temperature": self.distill.temperature},
            "prune": {"default": self.prune_default, "layers": dict(self.prune_layers)},
            "quant": {"default": self.quant_default, "layers": dict(self.quant_layers)},
            "finetune": {
                "lambda": self.finetune.lambda_,
                "epochs": self.finetune.epochs,
                "lr": self.finetune.lr,
            },
        }
        if self.sparsity_default or self.sparsity_layers:
            out["prune"]["sparsity"] = {
                "default": self.sparsity_default,
                "layers": dict(self.sparsity_layers),
            }
        if self.drop_blocks:
            out["drop"] = {"blocks": list(self.drop_blocks)}
        if self.distill.feature_weight is not None:
            out["distill"]["feature_weight"] = self.distill.feature_weight
        if self.finetune.scope != "full":
            out["finetune"]["scope"] = self.finetune.scope
        if self.finetune.schedule != "constant":  # written only when set: old records unchanged
            out["finetune"]["schedule"] = self.finetune.schedule
        if self.finetune.warmup:
            out["finetune"]["warmup"] = self.finetune.warmup
        if self.finetune.steps is not None:
            out["finetune"]["steps"] = self.finetune.steps
        if self.quant_scope_default is not None or self.quant_scope_layers:
            scope: dict[str, Any] = {"layers": dict(self.quant_scope_layers)}
            if self.quant_scope_default is not None:
                scope = {"default": self.quant_scope_default, **scope}
            out["quant"]["scope"] = scope
        return out

    def to_json(self, *, indent: int | None = None) -> str:
        return json.dumps(self.to_dict(), indent=indent, sort_keys=False)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Policy:
        _check_keys("", data, ("distill", "prune", "quant", "finetune", "drop"))
        d = data.get("distill", {})
        _check_keys("distill", d, ("alpha", "temperature", "feature_weight"))
        alpha = _number("distill.alpha", d.get("alpha", 1.0))
        if not 0.0 <= alpha <= 1.0:
            raise PolicyError(f"policy key distill.alpha = {alpha} is outside [0, 1]")
        temperature = _number("distill.temperature", d.get("temperature", 4.0))
        if temperature <= 0:
            raise PolicyError(f"policy key distill.temperature = {temperature} must be > 0")
        feature_weight = d.get("feature_weight")
        if feature_weight is not None:
            feature_weight = _number("distill.feature_weight", feature_weight)
            if feature_weight < 0:
                raise PolicyError(
                    f"policy key distill.feature_weight = {feature_weight} must be >= 0"
                )

        p = data.get("prune", {})
        _check_keys("prune", p, ("default", "layers", "sparsity"))
        prune_layers = _per_layer("prune", p, _ratio)
        s = p.get("sparsity", {})
        _check_keys("prune.sparsity", s, ("default", "layers"))
        sparsity_layers = _per_layer("prune.sparsity", s, _ratio)

        q = data.get("quant", {})
        _check_keys("quant", q, ("default", "layers", "scope"))
        quant_layers = _per_layer("quant", q, _bits)
        qs = q.get("scope", {})
        _check_keys("quant.scope", qs, ("default", "layers"))
        qs_layers = _per_layer("quant.scope", qs, lambda key, value: value)  # words checked below
        scope_default = qs.get("default")
        if scope_default is not None:
            scope_default = _word("quant.scope.default", scope_default, QUANT_SCOPES)

        f = data.get("finetune", {})
        _check_keys(
            "finetune", f, ("lambda", "epochs", "lr", "scope", "schedule", "warmup", "steps")
        )
        lam = _number("finetune.lambda", f.get("lambda", 0.0))
        if lam < 0:
            raise PolicyError(f"policy key finetune.lambda = {lam} must be >= 0")
        epochs = f.get("epochs", 0)
        if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 0:
            raise PolicyError(f"policy key finetune.epochs = {epochs!r} must be an integer >= 0")
        lr = _number("finetune.lr", f.get("lr", 1e-3))
        if lr <= 0:
            raise PolicyError(f"policy key finetune.lr = {lr} must be > 0")
        warmup = _number("finetune.warmup", f.get("warmup", 0.0))
        if not 0.0 <= warmup < 1.0:
            raise PolicyError(f"policy key finetune.warmup = {warmup} is outside [0, 1)")
        steps = f.get("steps")
        if steps is not None and (
            isinstance(steps, bool) or not isinstance(steps, int) or steps < 1
        ):
            raise PolicyError(f"policy key finetune.steps = {steps!r} must be an integer >= 1")

        return cls(
            distill=Distill(alpha=alpha, temperature=temperature, feature_weight=feature_weight),
            prune_default=_ratio("prune.default", p.get("default", 0.0)),
            prune_layers=prune_layers,
            quant_default=_bits("quant.default", q.get("default", 32)),
            quant_layers=quant_layers,
            finetune=Finetune(
                lambda_=lam,
                epochs=epochs,
                lr=lr,
                scope=_word("finetune.scope", f.get("scope", "full"), FINETUNE_SCOPES),
                schedule=_word("finetune.schedule", f.get("schedule", "constant"), LR_SCHEDULES),
                warmup=warmup,
                steps=steps,
            ),
            sparsity_default=_ratio("prune.sparsity.default", s.get("default", 0.0)),
            sparsity_layers=sparsity_layers,
            drop_blocks=_blocks(data.get("drop", {})),
            quant_scope_default=scope_default,
            quant_scope_layers={
                k: _word(f"quant.scope.layers[{k!r}]", v, QUANT_SCOPES)
                for k, v in qs_layers.items()
            },
        )

    @classmethod
    def from_json(cls, text: str) -> Policy:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise PolicyError(f"policy is not valid JSON: {exc}") from None
        return cls.from_dict(data)

    @classmethod
    def identity(cls) -> Policy:
        """The teacher itself: no distillation, no pruning, float weights, no fine-tuning."""
        return cls()


def load_policy(path: str | Path) -> Policy:
    """Read a policy JSON file; errors name the file."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise PolicyError(f"cannot read policy file {path}: {exc.strerror}") from None
    try:
        return Policy.from_json(text)
    except PolicyError as exc:
        raise PolicyError(f"{path}: {exc}") from None
