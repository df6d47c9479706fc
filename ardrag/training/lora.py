"""Low-rank adapters (peft's LoRA) on the student of an RL stage, and the plain model they merge into.

The RL stages (``grpo``, ``copo``) may train adapters instead of every weight (``TrainConfig.lora``):
:func:`add_adapters` puts one LoRA adapter per name on the Linear layers named by
``lora.target_modules`` (diffusers' ``add_adapter``, which the student has from ``PeftAdapterMixin``)
and freezes every other weight. Each adapter starts as a zero update (peft's default: B = 0, A random),
so before training the model computes exactly what the plain student computes.

Several adapters may live side by side (AR-CoPO trains its on-policy and its replay branch separately):
:func:`active` makes a chosen set of them the ones a forward pass adds, and :func:`adapter_parameters`
gives one adapter's parameters to its own optimizer. At the end :func:`merged` folds them into a fresh
plain model, W = W0 + sum_a scale_a dW_a (the paper merges W0 + dW_semi + s dW_on), which is what
``ardrag train`` exports: a diffusers folder that loads without peft.

Checkpoints need nothing special: the wrapped student's state dict holds the base weights under
``<layer>.base_layer.*`` and the adapters under ``<layer>.lora_A.<name>.*`` / ``lora_B``; a stage built
from the same config adds the same adapters, so the keys match and a resume loads them strictly.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator
from typing import TYPE_CHECKING

import torch
from torch import nn

from ardrag.errors import ConfigError

if TYPE_CHECKING:
    from ardrag.model.transformer_ardrag import CausalARDragTransformer
    from ardrag.training.config import LoRAConfig


def _layers(model: nn.Module) -> dict[str, nn.Module]:
    """The model's LoRA-wrapped layers by module name."""
    from peft.tuners.lora import LoraLayer

    return {name: m for name, m in model.named_modules() if isinstance(m, LoraLayer)}


def adapter_names(model: nn.Module) -> list[str]:
    """The adapters :func:`add_adapters` put on ``model``, in the order they were added."""
    return list(getattr(model, "peft_config", {}))


def _check_known(model: nn.Module, names: list[str], what: str) -> None:
    unknown = [n for n in names if n not in adapter_names(model)]
    if unknown:
        raise ValueError(f"{what}: no adapter named {unknown} on the model; it has {adapter_names(model)}")


def _matches(module_name: str, target: str) -> bool:
    """peft's rule for a name in a target_modules list: the module's whole name, or its last parts."""
    return module_name == target or module_name.endswith("." + target)


def add_adapters(model: CausalARDragTransformer, cfg: LoRAConfig, names: list[str]) -> None:
    """One LoRA adapter per name on ``cfg.target_modules``, each a zero update at start; then every
    weight but the adapters' frozen, and every adapter on the model trainable and active."""
    try:
        from peft import LoraConfig
    except ImportError as err:
        raise ImportError("lora needs peft: pip install 'ardrag[train]'") from err

    if not names or len(set(names)) != len(names):
        raise ValueError(f"adapter names {names}; expected one or more distinct names")
    taken = [n for n in names if n in adapter_names(model)]
    if taken:
        raise ValueError(f"the model already has adapters {taken}; expected new names")
    modules = [name for name, _ in model.named_modules()]
    for target in cfg.target_modules:
        if not any(_matches(name, target) for name in modules):
            linear = sorted(n[len("blocks.0.") :] for n, m in model.named_modules()
                            if n.startswith("blocks.0.") and isinstance(m, nn.Linear))  # fmt: skip
            raise ConfigError(
                f"lora.target_modules: {target!r} matches no module of the student; expected names of "
                f"its Linear layers (a block's: {linear})"
            )
    for name in names:
        peft_cfg = LoraConfig(r=cfg.rank, lora_alpha=cfg.alpha, lora_dropout=0.0,
                              target_modules=list(cfg.target_modules), init_lora_weights=True)  # fmt: skip
        with warnings.catch_warnings():  # peft warns that a second adapter is a second adapter
            warnings.filterwarnings("ignore", message="Already found a `peft_config` attribute")
            model.add_adapter(peft_cfg, adapter_name=name)
    model.requires_grad_(False)
    everything = adapter_names(model)  # those of an earlier call too
    _set_active(model, everything)
    for name in everything:
        for p in adapter_parameters(model, name):
            p.requires_grad_(True)


def adapter_parameters(model: nn.Module, name: str) -> list[nn.Parameter]:
    """The parameters of adapter ``name`` (its A and B of every wrapped layer), in module order."""
    _check_known(model, [name], "adapter_parameters")
    out: list[nn.Parameter] = []
    for layer in _layers(model).values():
        for attr in layer.adapter_layer_names:
            holder = getattr(layer, attr)
            if name in holder:
                part = holder[name]
                out.extend(part.parameters() if isinstance(part, nn.Module) else [part])
    return out


def active_adapters(model: nn.Module) -> list[str]:
    """The adapters a forward pass adds now."""
    layers = list(_layers(model).values())
    return list(layers[0].active_adapters) if layers else []


def _set_active(model: nn.Module, names: list[str]) -> None:
    for layer in _layers(model).values():
        layer.set_adapter(names)


@contextlib.contextmanager
def active(model: nn.Module, names: list[str]) -> Iterator[None]:
    """Exactly the adapters ``names`` (none: the plain base) added by every forward pass inside; the
    previous set, and every adapter's ``requires_grad``, restored on exit. An adapter outside the set
    takes no part in the pass, so its parameters get no gradient from it."""
    _check_known(model, list(names), "active")
    before = active_adapters(model)
    flags = {n: [p.requires_grad for p in adapter_parameters(model, n)] for n in adapter_names(model)}
    _set_active(model, list(names))
    try:
        yield
    finally:
        _set_active(model, before)
        for name, kept in flags.items():  # peft's set_adapter freezes the inactive ones
            for p, flag in zip(adapter_parameters(model, name), kept, strict=True):
                p.requires_grad_(flag)


def fresh_like(model: CausalARDragTransformer) -> CausalARDragTransformer:
    """A new model of ``model``'s class and config with the same adapters, active alike, and fresh
    weights: what a state dict of ``model`` (e.g. gathered from shards) loads into."""
    import copy

    fresh = type(model).from_config(model.config)
    for name, cfg in getattr(model, "peft_config", {}).items():
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Already found a `peft_config` attribute")
            fresh.add_adapter(copy.deepcopy(cfg), adapter_name=name)
    if adapter_names(model):
        _set_active(fresh, active_adapters(model))
    return fresh


@torch.no_grad()
def merged(model: CausalARDragTransformer, scales: dict[str, float]) -> CausalARDragTransformer:
    """A fresh plain model of ``model``'s class and config, W = W0 + sum_a scales[a] dW_a on every wrapped
    layer, every other weight copied: no peft module, no adapter key. Each sum is taken in float32 and
    rounded once to the base weight's dtype. ``model`` is left as it is."""
    from accelerate import init_empty_weights

    _check_known(model, list(scales), "merged")
    layers = _layers(model)
    state: dict[str, torch.Tensor] = {}
    for key, value in model.state_dict().items():
        owner = next((name for name in layers if key.startswith(name + ".")), None)
        if owner is None:
            state[key] = value.detach().clone()
            continue
        rest = key[len(owner) + 1 :]
        if not rest.startswith("base_layer."):
            continue  # the adapters' own weights
        plain = f"{owner}.{rest[len('base_layer.') :]}"
        if rest == "base_layer.weight":
            layer, total = layers[owner], value.float()
            for name, scale in scales.items():
                if name in layer.lora_A:
                    total = total + scale * layer.get_delta_weight(name).float()
            state[plain] = total.to(value.dtype)
        else:
            state[plain] = value.detach().clone()
    with init_empty_weights():  # parameters on the meta device (no random init); buffers real
        fresh = type(model).from_config(model.config)
    fresh.load_state_dict(state, strict=True, assign=True)
    device = next(model.parameters()).device
    return fresh.to(device).train(model.training)
