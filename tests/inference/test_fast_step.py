"""The streaming fast path (StreamOptions) against the reference path, and streams of any length.

Tolerance: once full, the ring cache holds the window's frames in ring order, not in time order, so the
attention's float32 sums run in another order; batched guidance changes the matmul's batch. Neither
changes the arithmetic, only its rounding: the clean latents agree to 1e-5 (absolute; they are O(1)),
and a decoded frame's uint8 values differ by at most 1 where a value sits on a rounding boundary. The
cached cross-attention keys and values are the same computations on the same inputs: bit for bit.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ardrag.inference.session import StreamOptions, StreamSession
from ardrag.model.pipeline import ARDragPipeline
from ardrag.model.tiny import tiny_transformer
from ardrag.model.transformer_ardrag import CausalARDragTransformer, KVCache, RingKVCache

LATENT_FRAMES = 11  # 1 + 10 x 4 = 41 pixel frames
ATOL = 1e-5


def reference_image(h: int, w: int) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w]
    return np.stack([xx * 255 // w, yy * 255 // h, (xx + yy) % 256], -1).astype(np.uint8)


def drag(m: int, n: int, moved: bool) -> np.ndarray:
    """Two points for latent frame m's n pixel frames; ``moved``: the first point dragged elsewhere."""
    start = 0 if m == 0 else 1 + 4 * (m - 1)
    t = np.arange(start, start + n, dtype=np.float32)
    first = np.stack([20 + 1.5 * t, 30 + 0.5 * t], -1)
    if moved:
        first = first + np.array([9.0, -6.0], np.float32)
    second = np.tile(np.array([70.0, 40.0], np.float32), (n, 1))
    return np.stack([first, second], 1)


def stream(pipe: ARDragPipeline, options: StreamOptions, frames: int = LATENT_FRAMES):
    """A session of ``frames`` latent frames: the drag changes at frame 4; frame 6 is regenerated with
    the drag moved; frame 8 is flushed into the cache and then regenerated (the ring cache undoes a
    write). Returns (uint8 frames, clean latents)."""
    session = StreamSession(pipe, reference_image(pipe.config.height, pipe.config.width), "a kite", seed=7,
                            options=options)  # fmt: skip
    video, latents = [], []
    for m in range(frames):
        n = session.pixel_frames_next
        out = session.step(drag(m, n, moved=m >= 4))
        if m == 6:
            out = session.regenerate(drag(m, n, moved=False))
        if m == 8:
            session.flush()
            out = session.regenerate(drag(m, n, moved=True) + 2)
        video.append(out)
        latents.append(session.latent.clone())
    return np.concatenate(video), torch.cat(latents, 2)


def assert_same_frames(fast, reference, bitwise: bool) -> None:
    (video, latents), (ref_video, ref_latents) = fast, reference
    assert video.shape == ref_video.shape and video.shape[0] == 1 + 4 * (LATENT_FRAMES - 1)
    if bitwise:
        assert torch.equal(latents, ref_latents)
        np.testing.assert_array_equal(video, ref_video)
    else:
        torch.testing.assert_close(latents, ref_latents, rtol=0, atol=ATOL)
        assert np.abs(video.astype(int) - ref_video).max() <= 1


@pytest.fixture(scope="module")
def guided():
    return ARDragPipeline.tiny(0, guidance_scale=3.0)


@pytest.fixture(scope="module")
def guided_reference(guided):
    return stream(guided, StreamOptions.reference())


def test_the_fast_path_gives_the_reference_frames_on_the_tiny_preset(guided, guided_reference):
    assert_same_frames(stream(guided, StreamOptions()), guided_reference, bitwise=False)


@pytest.mark.parametrize(
    "part, bitwise",
    [("cross_cache", True), ("ring_cache", False), ("batched_cfg", False)],
)
def test_each_part_alone_gives_the_reference_frames(guided, guided_reference, part, bitwise):
    options = StreamOptions.reference(**{part: True, "rope_once": part == "ring_cache"})
    assert_same_frames(stream(guided, options), guided_reference, bitwise=bitwise)


def test_rotating_the_ring_once_per_frame_changes_nothing(guided):
    """Once per frame or once per pass, the same rotation of the same keys: bit for bit."""
    once = stream(guided, StreamOptions(rope_once=True))
    every_pass = stream(guided, StreamOptions(rope_once=False))
    assert_same_frames(once, every_pass, bitwise=True)


def test_the_fast_path_gives_the_reference_frames_at_the_small_shape():
    """Two layers of the 1.3B width (1536, 12 heads x 128), the real encoder widths and Wan VAE, at
    96x64: the real width's sums are longer, the tolerance is the same."""
    pipe = ARDragPipeline.tiny(0, "small", height=64, width=96)
    assert pipe.transformer.config.num_attention_heads * pipe.transformer.config.attention_head_dim == 1536
    assert_same_frames(stream(pipe, StreamOptions()), stream(pipe, StreamOptions.reference()), bitwise=False)


def test_the_sink_keeps_the_first_frame_on_both_paths():
    pipe = ARDragPipeline.tiny(0)
    window = pipe.transformer.config.cache_window
    with_sink = stream(pipe, StreamOptions.reference(attention_sink=1))
    assert_same_frames(stream(pipe, StreamOptions(attention_sink=1)), with_sink, bitwise=False)
    without = stream(pipe, StreamOptions.reference(attention_sink=0))
    # frames 0 .. window see the same cache with or without the sink; frame window + 1 is the first
    # whose window has let frame 0 go, unless the sink keeps it
    torch.testing.assert_close(
        with_sink[1][:, :, : window + 1], without[1][:, :, : window + 1], rtol=0, atol=0
    )
    assert not torch.allclose(with_sink[1][:, :, window + 1], without[1][:, :, window + 1], atol=1e-3)


def test_the_caches_keep_their_size_however_long_the_stream():
    pipe = ARDragPipeline.tiny(0)
    session = StreamSession(pipe, reference_image(64, 96), "a kite", options=StreamOptions(attention_sink=1))
    sizes = []
    for m in range(24):
        session.step(drag(m, session.pixel_frames_next, moved=False))
        session.flush()
        sizes.append((session.caches[0].nbytes(), session.decoder.snapshot().nbytes))
    assert len(set(sizes[1:])) == 1  # allocated by the first pass, fixed from then on
    ring = session.caches[0]
    assert ring.cached_frames == 1 + ring.window
    assert sorted(ring.positions()) == list(range(ring.slots + 1))


def test_rope_positions_stay_in_range_at_10000_frames():
    """A one-layer student (its keys depend on its own frame only) streams 10,000 frames through the
    ring cache with a sink. The positions stay within the window; and frame 10,000 attends to what a
    fresh reference cache holding only the sink frame and the last window of frames gives it."""
    torch.manual_seed(0)
    base = tiny_transformer(0, num_layers=1)
    model = CausalARDragTransformer.from_wan(base, cache_window=3).eval()
    text, clip = torch.randn(1, 512, 32), torch.randn(1, 257, 32)
    frame_input = torch.randn(64, 1, 36, 1, 2, 2)  # one 2x2 latent (one token) per frame, recycled
    ring, t0 = model.new_ring_cache(sink=1), torch.tensor([0.0])
    with torch.no_grad():
        for f in range(10_000):
            model.forward_frame(frame_input[f % 64], t0, text, ring, clip, write=True)
            if f in (100, 9_999):
                assert max(ring.positions()) == ring.slots  # the current frame's, 4: within the table
                assert sorted(ring.positions()) == list(range(ring.slots + 1))
        assert ring.frames_written == 10_000
        probe = torch.randn(1, 36, 1, 2, 2)
        fast = model.forward_frame(probe, torch.tensor([500.0]), text, ring, clip)
        fresh = KVCache(1, 3, sink=1)
        for f in (0, 9_997, 9_998, 9_999):
            model.forward_frame(frame_input[f % 64], t0, text, fresh, clip, write=True)
        reference = model.forward_frame(probe, torch.tensor([500.0]), text, fresh, clip)
    torch.testing.assert_close(fast, reference, rtol=0, atol=ATOL)


def test_the_ring_cache_undoes_only_its_last_write():
    ring = RingKVCache(1, window=2)
    ring.tokens = 1
    ring.raw[0], ring.values[0] = torch.zeros(1, 2, 1, 1), torch.zeros(1, 3, 1, 1)
    for f in range(3):
        ring.write(0, torch.full((1, 1, 1, 1), f + 1.0), torch.full((1, 1, 1, 1), f + 1.0))
        ring.frames_written += 1
    ring.restore({"frames": 2})  # undo frame 2's write, which evicted frame 0 from slot 0
    assert ring.raw[0].flatten().tolist() == [1.0, 2.0]
    with pytest.raises(Exception, match="one write to undo"):
        ring.restore({"frames": 0})


def test_compiled_blocks_give_the_frames_without_recompiling_per_frame():
    """torch.compile of the blocks (inductor on the CPU): the cache's bookkeeping stays outside the
    graphs, so a stream compiles a bounded number of graphs, not one per frame. Inductor fuses and
    reorders float32 arithmetic: the reference tolerance holds."""
    from torch._dynamo.utils import counters

    pipe = ARDragPipeline.tiny(0)  # its own model: compiling changes the blocks in place
    eager = stream(pipe, StreamOptions())
    counters.clear()
    compiled = stream(pipe, StreamOptions(compile="default"))
    assert_same_frames(compiled, eager, bitwise=False)
    assert 0 < counters["stats"]["unique_graphs"] <= 8
    assert not counters["recompiles"]


def test_while_the_ring_fills_the_fast_path_is_bitwise_the_reference():
    """Before the ring is full its slots hold the frames in time order, so without guidance (no batched
    pass) the fast path sums what the reference sums, in the same order: frames 0 .. window - 1 are
    bit for bit the reference's; from the first frame that sees a full ring, ring order applies."""
    pipe = ARDragPipeline.tiny(0)
    window = pipe.transformer.config.cache_window
    (_, fast), (_, reference) = stream(pipe, StreamOptions()), stream(pipe, StreamOptions.reference())
    assert torch.equal(fast[:, :, :window], reference[:, :, :window])
    torch.testing.assert_close(fast, reference, rtol=0, atol=ATOL)
