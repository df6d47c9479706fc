"""Where and in what precision a model runs: the one place that turns ``--device`` / ``--dtype`` (or
None, "the default") into a ``torch.device`` and a ``torch.dtype``.

Defaults: CUDA when torch sees a GPU, else the CPU; bfloat16 on a GPU (the precision Wan's weights are
published and run in), float32 on a CPU (bf16 matmuls on a CPU are slower than float32 and exist for
checks, not for speed). ``generate``, ``eval``, the benchmarks and :class:`ARDragPipeline`'s ``tiny`` /
``from_pretrained`` all resolve through here, so they agree on what "the default" is.
"""

from __future__ import annotations

import torch

from ardrag.errors import ConfigError

DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32,
    "bfloat16": torch.bfloat16,
    "float16": torch.float16,
}


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def resolve_device(name: str | torch.device | None = None, option: str = "--device") -> torch.device:
    """``name`` ("cpu", "cuda", "cuda:1", a ``torch.device``) checked against this machine; None: the
    default. ``option`` names the setting in error messages."""
    if name is None:
        return default_device()
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError):
        raise ConfigError(f"{option} {name}: not a device name; expected cpu, cuda or cuda:N") from None
    if device.type == "cpu":
        return device
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"{option} {name}: CUDA is not available on this machine; expected cpu")
        count = torch.cuda.device_count()
        if device.index is not None and device.index >= count:
            expected = f"cuda:0 .. cuda:{count - 1}"
            raise ConfigError(
                f"{option} {name}: this machine has {count} CUDA device(s); expected {expected}"
            )
        return device
    raise ConfigError(f"{option} {name}: device type {device.type!r} is not supported; expected cpu or cuda")


def resolve_dtype(
    name: str | torch.dtype | None, device: torch.device | str, option: str = "--dtype"
) -> torch.dtype:
    """``name`` (float32, bfloat16, float16, or a ``torch.dtype`` of these); None: bfloat16 on a GPU,
    float32 on a CPU."""
    if name is None:
        return torch.bfloat16 if torch.device(device).type == "cuda" else torch.float32
    if isinstance(name, torch.dtype):
        if name not in DTYPES.values():
            raise ConfigError(f"{option} {name}: not a supported dtype; expected one of {list(DTYPES)}")
        return name
    dtype = DTYPES.get(str(name).lower().removeprefix("torch."))
    if dtype is None:
        raise ConfigError(f"{option} {name}: not a supported dtype; expected one of {list(DTYPES)}")
    return dtype


def dtype_name(dtype: torch.dtype) -> str:
    """The name ``--dtype`` takes ("bfloat16" for ``torch.bfloat16``), for summaries."""
    return str(dtype).removeprefix("torch.")


def cast_keeping_fp32(model: torch.nn.Module, dtype: torch.dtype) -> torch.nn.Module:
    """``model``'s floating-point parameters and buffers in ``dtype``, but for those under the names in
    its ``_keep_in_fp32_modules`` (diffusers' and transformers' convention: for Wan's transformer the
    RoPE tables, the time embedding, the norms and the ``scale_shift_table`` parameters), which stay in
    float32 as ``from_pretrained(torch_dtype=...)`` keeps them. Tensor by tensor, from their current
    values: a kept tensor is never rounded through ``dtype`` on the way."""
    keep = set(getattr(model, "_keep_in_fp32_modules", None) or [])
    with torch.no_grad():
        for name, tensor in [*model.named_parameters(), *model.named_buffers()]:
            if tensor.is_floating_point():
                target = torch.float32 if dtype != torch.float32 and keep & set(name.split(".")) else dtype
                if tensor.dtype != target:
                    tensor.data = tensor.data.to(target)
    return model


def load_dtype(
    torch_dtype: torch.dtype | str | None, dtype: torch.dtype | str | None, device: torch.device | str | None
) -> tuple[torch.dtype | str | None, dict[str, torch.dtype]]:
    """``dtype`` or its older name ``torch_dtype`` (giving both is an error), and the ``from_pretrained``
    keyword arguments that load in it (none when neither is given: the weights as saved)."""
    if torch_dtype is not None and dtype is not None:
        raise ConfigError(f"torch_dtype={torch_dtype} and dtype={dtype}: give one (dtype; torch_dtype is "
                          "its older name)")  # fmt: skip
    dtype = dtype if dtype is not None else torch_dtype
    return dtype, {} if dtype is None else {"torch_dtype": resolve_dtype(dtype, resolve_device(device))}
