"""Device and dtype: one resolution of the defaults, clear errors, and every component moved."""

import numpy as np
import pytest
import torch

from ardrag.errors import ConfigError
from ardrag.model.device import dtype_name, resolve_device, resolve_dtype
from ardrag.model.pipeline import ARDragPipeline


def test_defaults_follow_the_machine(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device(None) == torch.device("cpu")
    assert resolve_dtype(None, "cpu") is torch.float32
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device(None) == torch.device("cuda")
    assert resolve_dtype(None, torch.device("cuda")) is torch.bfloat16
    assert resolve_dtype(None, "cuda:0") is torch.bfloat16


def test_names_and_dtypes_are_accepted():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device(torch.device("cpu")) == torch.device("cpu")
    for name, dtype in (("float32", torch.float32), ("bfloat16", torch.bfloat16), ("float16", torch.float16)):
        assert resolve_dtype(name, "cpu") is dtype and resolve_dtype(dtype, "cpu") is dtype
        assert dtype_name(dtype) == name
    assert resolve_dtype("torch.bfloat16", "cpu") is torch.bfloat16


def test_bad_values_name_the_option_the_value_and_what_was_expected(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ConfigError) as err:
        resolve_device("cuda")
    assert str(err.value) == "--device cuda: CUDA is not available on this machine; expected cpu"
    with pytest.raises(ConfigError, match=r"--device gpu0: not a device name; expected cpu, cuda or cuda:N"):
        resolve_device("gpu0")
    with pytest.raises(ConfigError, match=r"--device meta: device type 'meta' is not supported"):
        resolve_device("meta")
    with pytest.raises(ConfigError) as err:
        resolve_dtype("fp8", "cpu")
    assert (
        str(err.value)
        == "--dtype fp8: not a supported dtype; expected one of ['float32', 'bfloat16', 'float16']"
    )
    with pytest.raises(ConfigError, match="dtype torch.int8: not a supported dtype"):
        resolve_dtype(torch.int8, "cpu", option="dtype")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(
        ConfigError, match=r"--device cuda:3: this machine has 1 CUDA device\(s\); expected cuda:0"
    ):
        resolve_device("cuda:3")


def _dtypes(module):
    return {p.dtype for p in module.parameters()}


def test_a_bf16_tiny_pipeline_holds_every_component_in_bf16_and_streams_on_the_cpu():
    """Every model in bf16 but the modules each keeps in float32 (``_keep_in_fp32_modules``: Wan's norms,
    time embedding and modulation table), as diffusers' ``from_pretrained(torch_dtype=...)`` loads them."""
    from ardrag.inference.session import StreamSession

    pipe = ARDragPipeline.tiny(dtype="bfloat16")
    assert pipe.device == torch.device("cpu")
    for model in (pipe.wan.text_encoder, pipe.wan.image_encoder, pipe.vae):
        assert torch.bfloat16 in _dtypes(model), type(model).__name__
    assert _dtypes(pipe.vae) == {torch.bfloat16}
    assert _dtypes(pipe.transformer) == {torch.bfloat16, torch.float32}
    kept = {n for n, p in pipe.transformer.named_parameters() if p.dtype == torch.float32}
    assert kept and all({"norm1", "norm2", "norm3", "time_embedder", "scale_shift_table", "rope"}
                        & set(n.split(".")) for n in kept)  # fmt: skip
    assert pipe.transformer.patch_embedding.weight.dtype == torch.bfloat16
    image = (np.random.default_rng(0).random((64, 96, 3)) * 255).astype(np.uint8)
    session = StreamSession(pipe, image, "a ball rolls")
    first = session.step(np.array([[[40.0, 30.0]]], np.float32))
    later = session.step(np.full((4, 1, 2), 40.0, np.float32))
    assert first.shape == (1, 64, 96, 3) and later.shape == (4, 64, 96, 3) and later.dtype == np.uint8


def test_float32_defaults_leave_the_tiny_pipeline_as_built():
    """``tiny()`` without device or dtype is the CPU float32 model training builds on; asking for the
    CPU in float32 gives the same weights."""
    plain, moved = ARDragPipeline.tiny(3), ARDragPipeline.tiny(3, device="cpu", dtype="float32")
    assert _dtypes(plain.transformer) == {torch.float32}
    for (name, a), b in zip(plain.transformer.state_dict().items(), moved.transformer.state_dict().values(),
                            strict=True):  # fmt: skip
        assert a.equal(b), name


def test_model_folders_load_on_a_device_in_a_dtype(tmp_path):
    from factories import toy_model_folder

    from ardrag.model.model_folder import load_model_folder

    toy_model_folder(tmp_path / "toy")
    pipe = ARDragPipeline.from_pretrained(str(tmp_path / "toy"), device="cpu", dtype="bfloat16")
    assert pipe.vae.dtype == torch.bfloat16 and pipe.wan.text_encoder.dtype == torch.bfloat16
    assert pipe.transformer.patch_embedding.weight.dtype == torch.bfloat16
    alias = load_model_folder(tmp_path / "toy", None, torch.bfloat16)  # the older torch_dtype name
    assert alias.transformer.patch_embedding.weight.dtype == torch.bfloat16
    with pytest.raises(ConfigError, match="give one"):
        ARDragPipeline.from_pretrained(str(tmp_path / "toy"), torch_dtype=torch.float16, dtype="bfloat16")


def test_the_float32_modules_are_kept_without_rounding_through_bf16():
    """Wan keeps RoPE, the time embedding, the norms and the scale_shift_table parameters in float32:
    cast tensor by tensor, they keep their float32 values exactly (a whole-model cast to bf16 and back
    would round them), and the student made from a bf16 base keeps them too."""
    from ardrag.model.device import cast_keeping_fp32
    from ardrag.model.tiny import tiny_transformer
    from ardrag.model.transformer_ardrag import CausalARDragTransformer

    model = tiny_transformer(0)
    before = {k: v.clone() for k, v in [*model.named_parameters(), *model.named_buffers()]}
    cast_keeping_fp32(model, torch.bfloat16)
    kept = {"rope", "time_embedder", "scale_shift_table", "norm1", "norm2", "norm3"}
    tensors = dict([*model.named_parameters(), *model.named_buffers()])
    assert any(name.startswith("rope.") for name in tensors) and "scale_shift_table" in tensors
    for name, tensor in tensors.items():
        if kept & set(name.split(".")):
            assert tensor.dtype == torch.float32 and torch.equal(tensor, before[name]), name
        elif tensor.is_floating_point():
            assert tensor.dtype == torch.bfloat16, name
    student = CausalARDragTransformer.from_wan(model)
    for name, tensor in [*student.named_parameters(), *student.named_buffers()]:
        if kept & set(name.split(".")):
            assert tensor.dtype == torch.float32, name
    assert student.control_embedding.weight.dtype == torch.bfloat16
