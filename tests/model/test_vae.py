"""Streaming Wan VAE decode: one latent frame per call gives what decode() gives for the whole video."""

import pytest
import torch

from ardrag.model.tiny import tiny_vae
from ardrag.model.vae import StreamingVaeDecoder, denormalize_latents

Z, H, W = 16, 6, 8
# The bound the streaming decoder and encoder promise. Not bitwise: they run the first frame's causal
# convolutions as 2-D ones and, on CPU, the RMS norms as sqrt(sum(x * x)) (ardrag.model.vae), which
# changes the order of float32 rounding; measured < 1e-6 here.
ATOL = 1e-5


@pytest.fixture(scope="module")
def vae():
    return tiny_vae(seed=0)


def latents(frames: int, seed: int = 0, batch: int = 1) -> torch.Tensor:
    """Normalised latents, as the transformer makes them."""
    return torch.randn(batch, Z, frames, H, W, generator=torch.Generator().manual_seed(seed))


def whole(vae, z: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return vae.decode(denormalize_latents(vae, z)).sample


def stream(vae, z: torch.Tensor) -> list[torch.Tensor]:
    decoder = StreamingVaeDecoder(vae)
    return [decoder.decode_next(z[:, :, i : i + 1]) for i in range(z.shape[2])]


def assert_same(a: torch.Tensor, b: torch.Tensor) -> None:
    assert a.shape == b.shape
    assert (a - b).abs().max().item() <= ATOL


@pytest.mark.parametrize(("frames", "batch"), [(5, 1), (6, 1), (7, 2)])
def test_streaming_equals_whole_video_decode(vae, frames, batch):
    z = latents(frames, seed=frames, batch=batch)
    expected = whole(vae, z)
    assert expected.shape == (batch, 3, 1 + 4 * (frames - 1), 8 * H, 8 * W)
    assert_same(torch.cat(stream(vae, z), dim=2), expected)


def test_one_pixel_frame_then_four_per_call_in_range(vae):
    decoder = StreamingVaeDecoder(vae)
    z = latents(5) * 50  # large enough that some outputs clamp
    counts = []
    for i in range(5):
        out = decoder.decode_next(z[:, :, i : i + 1])
        counts.append(out.shape[2])
        assert out.shape[:2] == (1, 3) and out.shape[3:] == (8 * H, 8 * W)
        assert out.min() >= -1 and out.max() <= 1
        assert decoder.frames_decoded == i + 1
    assert counts == [1, 4, 4, 4, 4]


def test_rollback_decodes_the_last_frame_again_as_if_never_decoded(vae):
    k = 3
    z = latents(k, seed=1)
    a, b = latents(1, seed=2), latents(1, seed=3)
    decoder = StreamingVaeDecoder(vae)
    before = [decoder.decode_next(z[:, :, i : i + 1]) for i in range(k)]
    kept = [t.clone() for t in before]
    state = decoder.snapshot()
    out_a = decoder.decode_next(a)
    decoder.restore(state)
    assert decoder.frames_decoded == k
    out_b = decoder.decode_next(b)
    assert not torch.equal(out_a, out_b)
    fresh = stream(vae, torch.cat([z, b], dim=2))
    assert_same(out_b, fresh[k])
    for old, new, again in zip(kept, before, fresh[:k], strict=True):
        assert torch.equal(old, new) and torch.equal(old, again)
    # The stream goes on without a seam after the rollback.
    nxt = latents(1, seed=4)
    assert_same(decoder.decode_next(nxt), stream(vae, torch.cat([z, b, nxt], dim=2))[k + 1])


def test_a_snapshot_can_be_restored_again_and_again(vae):
    z = latents(2, seed=5)
    decoder = StreamingVaeDecoder(vae)
    decoder.decode_next(z[:, :, :1])
    state = decoder.snapshot()
    outs = []
    for _ in range(3):
        decoder.restore(state)
        outs.append(decoder.decode_next(z[:, :, 1:]))
    assert torch.equal(outs[0], outs[1]) and torch.equal(outs[0], outs[2])
    assert state.nbytes > 0


def test_rollback_to_the_start_and_reset_begin_a_new_video(vae):
    z = latents(2, seed=6)
    decoder = StreamingVaeDecoder(vae)
    empty = decoder.snapshot()
    first = decoder.decode_next(z[:, :, :1])
    decoder.decode_next(z[:, :, 1:])
    decoder.restore(empty)
    assert decoder.frames_decoded == 0
    assert torch.equal(decoder.decode_next(z[:, :, :1]), first)
    decoder.reset()
    assert decoder.frames_decoded == 0
    assert decoder.decode_next(z[:, :, :1]).shape[2] == 1


def test_whole_video_decode_in_between_does_not_disturb_the_stream(vae):
    z = latents(4, seed=7)
    decoder = StreamingVaeDecoder(vae)
    outs = [decoder.decode_next(z[:, :, :1]), decoder.decode_next(z[:, :, 1:2])]
    whole(vae, latents(3, seed=8))
    outs += [decoder.decode_next(z[:, :, 2:3]), decoder.decode_next(z[:, :, 3:4])]
    assert_same(torch.cat(outs, dim=2), whole(vae, z))


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        (torch.zeros(1, Z, H, W), "5-D"),
        (torch.zeros(1, Z - 1, 1, H, W), "15 channels"),
        (torch.zeros(1, Z, 2, H, W), "2 frames"),
        ([[0.0]], "5-D"),
    ],
)
def test_bad_latents_are_refused_before_compute(vae, bad, message):
    decoder = StreamingVaeDecoder(vae)
    with pytest.raises(ValueError, match=message):
        decoder.decode_next(bad)
    assert decoder.frames_decoded == 0


def test_a_frame_of_another_size_mid_stream_is_refused(vae):
    decoder = StreamingVaeDecoder(vae)
    decoder.decode_next(latents(1))
    with pytest.raises(ValueError, match=r"expected \(1, 6, 8\)"):
        decoder.decode_next(torch.zeros(1, Z, 1, H + 2, W))
    assert decoder.frames_decoded == 1


def test_streaming_encode_equals_encoding_the_whole_video():
    from ardrag.model.vae import StreamingVaeEncoder

    vae = tiny_vae()
    g = torch.Generator().manual_seed(3)
    video = torch.rand(1, 3, 1 + 4 * 3, 48, 64, generator=g) * 2 - 1
    with torch.no_grad():
        whole = vae.encode(video).latent_dist.mode()
    enc = StreamingVaeEncoder(vae)
    chunks = [video[:, :, :1]] + [video[:, :, 1 + 4 * i : 5 + 4 * i] for i in range(3)]
    streamed = torch.cat([enc.encode_next(c) for c in chunks], 2)
    assert_same(streamed, whole)
    state = enc.snapshot()
    a = enc.encode_next(torch.zeros(1, 3, 4, 48, 64))
    enc.restore(state)
    assert torch.equal(enc.encode_next(torch.zeros(1, 3, 4, 48, 64)), a)
    with pytest.raises(ValueError, match="expected 4"):
        enc.encode_next(video[:, :, :1])


def test_the_first_frame_conv_is_the_causal_conv_of_one_frame_after_zeros():
    """The streaming fast path: a causal conv over [0] * (k - 1) + [frame] is a 2-D conv with the last tap."""
    from diffusers.models.autoencoders.autoencoder_kl_wan import WanCausalConv3d

    from ardrag.model.vae import _causal_conv

    g = torch.Generator().manual_seed(0)
    convs = [
        WanCausalConv3d(8, 16, 3, padding=1),
        WanCausalConv3d(8, 16, 1),
        WanCausalConv3d(8, 16, (3, 1, 1), padding=(1, 0, 0)),
        WanCausalConv3d(8, 8, 3, stride=(1, 2, 2), padding=1),
    ]
    for conv in convs:
        x = torch.randn(2, 8, 1, 10, 12, generator=g)
        with torch.no_grad():
            expected = WanCausalConv3d.forward(conv, x)
            fast = _causal_conv(conv, x)
            assert fast.shape == expected.shape
            assert (fast - expected).abs().max().item() <= 1e-6
            # Anything else (a cached frame before it, several frames) is diffusers' own computation.
            cache, two = torch.randn(2, 8, 2, 10, 12, generator=g), torch.randn(2, 8, 2, 10, 12, generator=g)
            assert torch.equal(_causal_conv(conv, x, cache), WanCausalConv3d.forward(conv, x, cache))
            assert torch.equal(_causal_conv(conv, two), WanCausalConv3d.forward(conv, two))


@pytest.mark.parametrize(
    ("kwargs", "shape"),
    [
        ({"images": False}, (2, 8, 3, 6, 7)),
        ({"images": True}, (2, 8, 6, 7)),
        ({"channel_first": False, "bias": True}, (2, 5, 8)),
    ],
)
def test_the_cpu_rms_norm_equals_diffusers(kwargs, shape):
    from diffusers.models.autoencoders.autoencoder_kl_wan import WanRMS_norm

    from ardrag.model.vae import _rms_norm

    g = torch.Generator().manual_seed(1)
    norm = WanRMS_norm(8, **kwargs)
    with torch.no_grad():
        norm.gamma.copy_(torch.rand(norm.gamma.shape, generator=g) + 0.5)
        if kwargs.get("bias"):
            norm.bias.copy_(torch.randn(norm.bias.shape, generator=g))
        for scale in (1e-3, 1.0, 100.0):
            x = torch.randn(shape, generator=g) * scale
            expected = norm(x)
            assert (_rms_norm(norm, x) - expected).abs().max().item() <= 1e-6 * expected.abs().max().item()
        x = torch.randn(shape, generator=g).bfloat16()
        assert _rms_norm(norm, x).dtype == norm(x).dtype
        assert (_rms_norm(norm, x).float() - norm(x).float()).abs().max().item() <= 2e-2
        assert torch.equal(_rms_norm(norm, torch.zeros(shape)), norm(torch.zeros(shape)))  # eps, no NaN


def test_the_fast_paths_last_one_call_only_and_leave_hooks_alone(vae):
    z = latents(2, seed=9)
    before = whole(vae, z)
    decoder = StreamingVaeDecoder(vae)
    decoder.decode_next(z[:, :, :1])
    with pytest.raises(ValueError):
        decoder.decode_next(torch.zeros(1, Z, 2, H, W))
    assert not any("forward" in m.__dict__ for m in vae.modules())
    assert torch.equal(whole(vae, z), before)  # vae.decode() is diffusers' own, bitwise as before
    conv = vae.decoder.conv_in
    seen = []
    conv.forward = lambda x, cache_x=None: seen.append(1) or type(conv).forward(conv, x, cache_x)
    try:
        StreamingVaeDecoder(vae).decode_next(z[:, :, :1])
        assert seen and "forward" in conv.__dict__  # a hook (e.g. accelerate's offload) keeps its forward
    finally:
        del conv.forward


def test_a_batched_first_chunk_then_select_continues_as_a_stream_of_its_own(vae):
    """StreamSession encodes the reference image with frame 0's controls in one call, then keeps the
    control row: the reference's latent is vae.encode()'s and the control stream goes on as if alone."""
    from ardrag.model.vae import StreamingVaeEncoder

    g = torch.Generator().manual_seed(4)
    reference = torch.rand(1, 3, 1, 48, 64, generator=g) * 2 - 1
    video = torch.rand(1, 3, 1 + 4 * 2, 48, 64, generator=g) * 2 - 1
    chunks = [video[:, :, :1], video[:, :, 1:5], video[:, :, 5:9]]
    alone = StreamingVaeEncoder(vae)
    expected = [alone.encode_next(c) for c in chunks]
    batched = StreamingVaeEncoder(vae)
    first = batched.encode_next(torch.cat([reference, chunks[0]]))
    batched.select(slice(1, None))
    got = [first[1:]] + [batched.encode_next(c) for c in chunks[1:]]
    for a, b in zip(got, expected, strict=True):
        assert_same(a, b)
    with torch.no_grad():
        assert_same(first[:1], vae.encode(reference).latent_dist.mode())
