"""The teacher equals the base before training; the causal student's cache is exact (float32).

Tolerance: 2e-6 absolute on outputs whose mean magnitude is about 0.5, where the two computations take
the same arithmetic in another order (cache vs. mask; window-relative vs absolute RoPE positions, equal in
exact arithmetic). Measured: 6e-7 (a) and 5e-7 (c). Recomputing the cache is bitwise equal (b)."""

import pytest
import torch
from diffusers import WanTransformer3DModel

from ardrag.model.tiny import TINY_TRANSFORMER_CONFIG
from ardrag.model.transformer_ardrag import ARDragTransformer, CausalARDragTransformer

TINY = {**TINY_TRANSFORMER_CONFIG, "rope_max_seq_len": 16}
B, F_, H, W = 1, 6, 4, 6  # latent frames and size: 6 tokens per frame


def inputs(frames=F_, seed=0):
    g = torch.Generator().manual_seed(seed)
    return {
        "x": torch.randn(B, 36, frames, H, W, generator=g),
        "control": torch.randn(B, 16, frames, H, W, generator=g),
        "text": torch.randn(B, 512, 32, generator=g),  # the I2V processor assumes 512 text tokens
        "image": torch.randn(B, 5, 32, generator=g),
        "t": torch.rand(B, frames, generator=g) * 1000,
    }


@pytest.fixture(scope="module")
def base():
    torch.manual_seed(0)
    return WanTransformer3DModel(**TINY).eval()


@pytest.fixture(scope="module")
def student(base):
    model = CausalARDragTransformer.from_wan(base, cache_window=3).eval()
    with torch.no_grad():  # trained control weights, so the control path is exercised
        torch.nn.init.normal_(model.control_embedding.weight, std=0.2)
    return model


@torch.no_grad()
def test_zero_initialised_control_leaves_the_teacher_equal_to_the_base(base):
    teacher = ARDragTransformer.from_wan(base).eval()
    i = inputs()
    t = torch.tensor([500.0])
    ref = base(i["x"], t, i["text"], i["image"]).sample
    out = teacher(i["x"], t, i["text"], i["image"], control=i["control"]).sample
    assert torch.equal(out, ref)
    assert set(base.state_dict()) < set(teacher.state_dict())  # base keys unchanged; control added
    with torch.no_grad():
        teacher.control_embedding.weight.add_(0.1)
    assert not torch.allclose(teacher(i["x"], t, i["text"], i["image"], control=i["control"]).sample, ref)


def frames_one_by_one(model, i, cache):
    outs = []
    for m in range(i["x"].shape[2]):
        outs.append(
            model.forward_frame(
                i["x"][:, :, m : m + 1],
                i["t"][:, m],
                i["text"],
                cache,
                i["image"],
                control=i["control"][:, :, m : m + 1],
                write=True,
            )  # fmt: skip
        )
    return torch.cat(outs, 2)


@torch.no_grad()
def test_a_frame_by_frame_with_a_long_cache_equals_the_block_causal_sequence(student):
    i = inputs()
    ref = student.forward_sequence(i["x"], i["t"], i["text"], i["image"], control=i["control"])
    out = frames_one_by_one(student, i, student.new_cache(window=F_))
    assert (out - ref).abs().max() <= 2e-6
    # and causality is real: changing the last frame's input leaves earlier outputs alone
    j = {**i, "x": i["x"].clone()}
    j["x"][:, :, -1] += 1.0
    changed = student.forward_sequence(j["x"], j["t"], j["text"], j["image"], control=j["control"])
    assert torch.equal(changed[:, :, :-1], ref[:, :, :-1]) and not torch.allclose(
        changed[:, :, -1], ref[:, :, -1]
    )


@torch.no_grad()
def test_b_cached_equals_recomputed_from_scratch(student):
    i = inputs()
    cache = student.new_cache(window=F_)
    out = frames_one_by_one(student, i, cache)
    m = F_ - 1
    fresh = student.new_cache(window=F_)
    sub = {k: (v[:, :, :m] if k in ("x", "control") else v[:, :m] if k == "t" else v) for k, v in i.items()}
    frames_one_by_one(student, sub, fresh)  # the cache rebuilt from the same frames
    again = student.forward_frame(
        i["x"][:, :, m : m + 1],
        i["t"][:, m],
        i["text"],
        fresh,
        i["image"],
        control=i["control"][:, :, m : m + 1],
    )
    assert torch.equal(again, out[:, :, m : m + 1])


@torch.no_grad()
def test_c_eviction_equals_a_sliding_window_mask(student):
    i = inputs(frames=8)
    window = student.config.cache_window  # 3 previous frames
    ref = student.forward_sequence(i["x"], i["t"], i["text"], i["image"], control=i["control"], window=window)
    cache = student.new_cache()
    out = frames_one_by_one(student, i, cache)
    assert cache.cached_frames == window and cache.frames_written == 8
    assert (out - ref).abs().max() <= 2e-6
    full = student.forward_sequence(i["x"], i["t"], i["text"], i["image"], control=i["control"])
    assert (out[:, :, -1] - full[:, :, -1]).abs().max() > 1e-3  # the window did cut something


@torch.no_grad()
def test_streams_longer_than_the_rope_table_run_on(student):
    i = inputs(frames=student.config.rope_max_seq_len + 8, seed=1)
    out = frames_one_by_one(student, i, student.new_cache())
    assert out.shape[2] == i["x"].shape[2] and torch.isfinite(out).all()


@torch.no_grad()
def test_reading_the_cache_does_not_change_it_and_snapshots_roll_back(student):
    i = inputs()
    cache = student.new_cache()
    frames_one_by_one(
        student,
        {k: (v[:, :, :4] if k in ("x", "control") else v[:, :4] if k == "t" else v) for k, v in i.items()},
        cache,
    )
    state = cache.snapshot()

    def step(x):
        return student.forward_frame(
            x, i["t"][:, 4], i["text"], cache, i["image"], control=i["control"][:, :, 4:5]
        )

    first = step(i["x"][:, :, 4:5])
    assert cache.frames_written == 4 and torch.equal(step(i["x"][:, :, 4:5]), first)
    student.forward_frame(i["x"][:, :, 4:5], i["t"][:, 4], i["text"], cache, i["image"], write=True)
    cache.restore(state)
    assert cache.frames_written == 4 and torch.equal(step(i["x"][:, :, 4:5]), first)


def test_one_frame_at_a_time(student):
    i = inputs()
    with pytest.raises(ValueError, match="one latent frame"):
        student.forward_frame(i["x"][:, :, :2], i["t"][:, 0], i["text"], student.new_cache())


@torch.no_grad()
def test_checkpoints_load_across_teacher_student_and_a_wan_folder(base, tmp_path):
    """Keys are diffusers' names: a Wan folder loads into the teacher, the teacher's into the student."""
    base.save_pretrained(tmp_path / "wan" / "transformer")
    teacher = ARDragTransformer.from_wan(str(tmp_path / "wan"))  # a local folder, as a hub id would be
    i = inputs()
    t = torch.tensor([300.0])
    assert torch.equal(
        teacher(i["x"], t, i["text"], i["image"]).sample, base(i["x"], t, i["text"], i["image"]).sample
    )
    torch.nn.init.normal_(teacher.control_embedding.weight, std=0.2)  # as if fine-tuned
    teacher.save_pretrained(tmp_path / "teacher")
    student = CausalARDragTransformer.from_pretrained(tmp_path / "teacher").eval()
    assert student.config.control_channels == 16 and student.config.cache_window == 7
    for name, value in teacher.state_dict().items():
        assert torch.equal(student.state_dict()[name], value), name
    # with no mask and no cache the student's attention is the teacher's: same output on one frame
    one = {k: (v[:, :, :1] if k in ("x", "control") else v) for k, v in i.items()}
    ref = teacher(one["x"], t, one["text"], one["image"], control=one["control"]).sample
    out = student.forward_frame(
        one["x"], t, one["text"], student.new_cache(), one["image"], control=one["control"]
    )
    assert (out - ref).abs().max() <= 2e-6
